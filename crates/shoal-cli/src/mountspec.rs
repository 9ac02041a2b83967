//! `-v`, `--mount` and `--tmpfs` as docker parses them.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use shoal_api::v1::MountSpec;

use crate::opts::parse_size;

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn is_volume_name(s: &str) -> bool {
    let mut c = s.chars();
    s.len() >= 2
        && c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `-v [SRC:]DST[:OPTS]`.
pub fn parse_volume(spec: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts[..] {
        [dst] => ("", dst, ""),
        [src, dst] => (src, dst, ""),
        [src, dst, opts] => (src, dst, opts),
        _ => bail!("invalid volume specification {spec:?}: use [SOURCE:]DESTINATION[:OPTIONS]"),
    };
    if dst.is_empty() || !dst.starts_with('/') {
        bail!("invalid volume specification {spec:?}: the destination {dst:?} must be an absolute path");
    }
    let mut m = MountSpec {
        target: dst.into(),
        ..Default::default()
    };
    if src.is_empty() {
        m.r#type = "volume".into();
    } else if src.starts_with('/') {
        m.r#type = "bind".into();
        m.source = src.into();
        m.create_source = true;
    } else if is_volume_name(src) {
        m.r#type = "volume".into();
        m.source = src.into();
    } else {
        bail!(
            "{src:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; if you meant a host directory, use an absolute path"
        );
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.read_only = true,
            "rw" => m.read_only = false,
            "z" | "Z" => {}
            "nocopy" if m.r#type == "volume" => m.no_copy = true,
            p if PROPAGATIONS.contains(&p) && m.r#type == "bind" => m.propagation = p.into(),
            other => bail!("invalid mode {other:?} in volume specification {spec:?}"),
        }
    }
    Ok(m)
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => bail!("invalid value {other:?} for {key}: use true or false"),
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,readonly,…`.
pub fn parse_mount(spec: &str) -> Result<MountSpec> {
    let mut m = MountSpec {
        r#type: "volume".into(),
        ..Default::default()
    };
    let mut volume_options = HashMap::new();
    let mut volume_labels = HashMap::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        let val = || {
            v.ok_or_else(|| {
                anyhow!("invalid field {field:?} in --mount {spec:?}: {k} needs a value")
            })
        };
        match k.to_ascii_lowercase().as_str() {
            "type" => m.r#type = val()?.into(),
            "source" | "src" => m.source = val()?.into(),
            "target" | "destination" | "dst" => m.target = val()?.into(),
            "readonly" | "ro" => m.read_only = parse_bool(k, v)?,
            "bind-propagation" => {
                let p = val()?;
                if !PROPAGATIONS.contains(&p) {
                    bail!(
                        "invalid bind-propagation {p:?}: use one of {}",
                        PROPAGATIONS.join(", ")
                    );
                }
                m.propagation = p.into();
            }
            "volume-nocopy" => m.no_copy = parse_bool(k, v)?,
            "volume-opt" => {
                let (ok, ov) = val()?.split_once('=').ok_or_else(|| {
                    anyhow!("invalid volume-opt {field:?}: use volume-opt=key=value")
                })?;
                volume_options.insert(ok.to_string(), ov.to_string());
            }
            "volume-label" => {
                let l = val()?;
                let (lk, lv) = l.split_once('=').unwrap_or((l, ""));
                volume_labels.insert(lk.to_string(), lv.to_string());
            }
            "tmpfs-size" => m.tmpfs_size = parse_size(val()?)?,
            "tmpfs-mode" => {
                m.tmpfs_mode = u32::from_str_radix(val()?, 8).map_err(|_| {
                    anyhow!(
                        "invalid tmpfs-mode {:?}: use octal such as 1777",
                        v.unwrap_or_default()
                    )
                })?
            }
            "consistency" | "bind-nonrecursive" => {}
            other => bail!("unexpected key {other:?} in --mount {spec:?}"),
        }
    }
    m.volume_options = volume_options;
    m.volume_labels = volume_labels;
    if m.target.is_empty() {
        bail!("invalid --mount {spec:?}: target is required");
    }
    match m.r#type.as_str() {
        "bind" if m.source.is_empty() => {
            bail!("invalid mount config for type \"bind\": field source must not be empty")
        }
        "bind" | "volume" => {}
        "tmpfs" if !m.source.is_empty() => {
            bail!("invalid mount config for type \"tmpfs\": source is not allowed")
        }
        "tmpfs" => {}
        other => bail!("invalid mount type {other:?}: use bind, volume or tmpfs"),
    }
    if m.r#type != "bind" && !m.propagation.is_empty() {
        bail!("bind-propagation is only for type=bind");
    }
    if m.r#type != "volume"
        && (m.no_copy || !m.volume_options.is_empty() || !m.volume_labels.is_empty())
    {
        bail!("volume-* options are only for type=volume");
    }
    if m.r#type != "tmpfs" && (m.tmpfs_size != 0 || m.tmpfs_mode != 0) {
        bail!("tmpfs-* options are only for type=tmpfs");
    }
    Ok(m)
}

/// `--tmpfs PATH[:size=64m,mode=1777,ro]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec> {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') {
        bail!("invalid --tmpfs {spec:?}: the path must be absolute");
    }
    let mut m = MountSpec {
        r#type: "tmpfs".into(),
        target: path.into(),
        ..Default::default()
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => m.tmpfs_size = parse_size(v)?,
            Some(("mode", v)) => {
                m.tmpfs_mode = u32::from_str_radix(v, 8)
                    .map_err(|_| anyhow!("invalid tmpfs mode {v:?}: use octal"))?
            }
            None if o == "ro" => m.read_only = true,
            None if matches!(
                o,
                "rw" | "exec" | "noexec" | "nosuid" | "suid" | "nodev" | "dev"
            ) => {}
            _ => bail!("invalid --tmpfs option {o:?}: use size=, mode=, ro"),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs() {
        let anon = parse_volume("/data").unwrap();
        assert_eq!((anon.r#type.as_str(), anon.source.as_str()), ("volume", ""));
        let named = parse_volume("db:/var/lib/db:ro").unwrap();
        assert_eq!(
            (
                named.r#type.as_str(),
                named.source.as_str(),
                named.read_only
            ),
            ("volume", "db", true)
        );
        let bind = parse_volume("/srv:/srv:rslave").unwrap();
        assert_eq!(
            (
                bind.r#type.as_str(),
                bind.propagation.as_str(),
                bind.create_source
            ),
            ("bind", "rslave", true)
        );
        assert!(parse_volume("./rel:/x")
            .unwrap_err()
            .to_string()
            .contains("use an absolute path"));
        assert!(parse_volume("db:relative").is_err());
        assert!(parse_volume("db:/x:bogus").is_err());
        assert!(parse_volume("a:b:c:d").is_err());
    }

    #[test]
    fn mount_specs() {
        let b = parse_mount("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!(
            (
                b.r#type.as_str(),
                b.source.as_str(),
                b.target.as_str(),
                b.read_only,
                b.create_source
            ),
            ("bind", "/srv", "/data", true, false)
        );
        let t = parse_mount("type=tmpfs,dst=/run,tmpfs-size=64m,tmpfs-mode=700").unwrap();
        assert_eq!((t.tmpfs_size, t.tmpfs_mode), (64 << 20, 0o700));
        let v = parse_mount("src=cache,target=/c,volume-opt=type=tmpfs,volume-nocopy").unwrap();
        assert_eq!(
            v.volume_options.get("type").map(String::as_str),
            Some("tmpfs")
        );
        assert!(v.no_copy);
        assert!(parse_mount("type=bind,target=/x").is_err());
        assert!(parse_mount("source=x").is_err());
        assert!(parse_mount("type=volume,target=/x,color=red")
            .unwrap_err()
            .to_string()
            .contains("unexpected key"));
        assert!(parse_mount("type=tmpfs,source=x,target=/t").is_err());
    }

    #[test]
    fn tmpfs_specs() {
        let t = parse_tmpfs("/run:size=64m,mode=1777").unwrap();
        assert_eq!(
            (t.target.as_str(), t.tmpfs_size, t.tmpfs_mode),
            ("/run", 64 << 20, 0o1777)
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:color=red").is_err());
    }
}
