//! A container's security settings in the OCI spec: capabilities (docker's default set,
//! --cap-add/--cap-drop, --privileged), no_new_privileges, seccomp (docker's default profile
//! for the container's capabilities, a custom profile, or unconfined), ulimits and sysctls.

use std::collections::HashSet;

use serde_json::{json, Value};
use shoal_api::v1::HostConfig;

use crate::error::{Error, Result};
use crate::spec::DEFAULT_CAPS;

/// `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` all mean `CAP_NET_ADMIN`; `ALL` stays.
fn normalize(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capability set after --privileged, --cap-drop and --cap-add (docker's order: ALL in
/// add means every capability; ALL in drop means only what is added).
pub fn effective_caps(host: &HostConfig) -> Result<Vec<String>> {
    let known: HashSet<String> = shoal_runtime::process::known_capabilities()
        .into_iter()
        .collect();
    let check = |list: &[String]| -> Result<Vec<String>> {
        list.iter()
            .map(|c| {
                let n = normalize(c);
                if n == "ALL" || known.contains(&n) {
                    Ok(n)
                } else {
                    Err(Error::InvalidArgument(format!("unknown capability {c:?}: use a name from capabilities(7) such as NET_ADMIN, or ALL")))
                }
            })
            .collect()
    };
    let add = check(&host.cap_add)?;
    let drop = check(&host.cap_drop)?;
    if host.privileged || add.iter().any(|c| c == "ALL") {
        // "All" is all that shoald itself may hand out (docker: the daemon's bounding set).
        let mut all: Vec<String> = shoal_runtime::process::own_bounding_capabilities()
            .into_iter()
            .filter(|c| !drop.contains(c))
            .collect();
        all.sort();
        return Ok(all);
    }
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in add {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The `linux.seccomp` section, or `None` for unconfined.
pub fn seccomp(host: &HostConfig, caps: &[String]) -> Result<Option<Value>> {
    if host.privileged || host.seccomp_profile == "unconfined" {
        return Ok(None);
    }
    if host.seccomp_profile.is_empty() {
        return Ok(Some(default_profile(caps)));
    }
    let caps: HashSet<String> = caps.iter().cloned().collect();
    let profile = shoal_runtime::seccomp::parse_docker_profile(&host.seccomp_profile, &caps)
        .map_err(|e| Error::InvalidArgument(format!("invalid seccomp profile: {e}")))?;
    serde_json::to_value(profile)
        .map(Some)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// docker's default profile for a capability set, built once per set: building it is
/// milliseconds of work that every container start would otherwise repeat.
fn default_profile(caps: &[String]) -> Value {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, Value>>> = OnceLock::new();
    let mut key = caps.to_vec();
    key.sort();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().expect("profile cache lock").get(&key) {
        return v.clone();
    }
    let set: HashSet<String> = key.iter().cloned().collect();
    let v = serde_json::to_value(shoal_runtime::seccomp::docker_default_profile(&set))
        .expect("the default profile serialises");
    cache
        .lock()
        .expect("profile cache lock")
        .insert(key, v.clone());
    v
}

/// `--ulimit nofile=1024:2048` as OCI rlimits.
pub fn rlimits(host: &HostConfig) -> Result<Vec<Value>> {
    host.ulimits
        .iter()
        .map(|u| {
            let to = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
            if u.name.is_empty() || !u.name.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(Error::InvalidArgument(format!("invalid ulimit name {:?}", u.name)));
            }
            Ok(json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "soft": to(u.soft), "hard": to(u.hard)}))
        })
        .collect()
}

/// Sysctls a container may set: namespaced ones, and no net.* with the host's network.
pub fn check_sysctls(host: &HostConfig) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    for key in host.sysctls.keys() {
        let namespaced =
            IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") || key.starts_with("net.");
        if !namespaced {
            return Err(Error::InvalidArgument(format!(
                "sysctl {key:?} is not allowed: only namespaced sysctls (net.*, kernel.shm*/msg*/sem, fs.mqueue.*) can be set per container"
            )));
        }
        if key.starts_with("net.") && host.network_mode == "host" {
            return Err(Error::InvalidArgument(format!(
                "sysctl {key:?} is not allowed with --network host: it would change the host"
            )));
        }
    }
    Ok(())
}

/// Every device node of the host, for --privileged (docker gives them all).
pub fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !matches!(path.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                    stack.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if matches!(
                path.to_str(),
                Some("/dev/console" | "/dev/ptmx" | "/dev/tty")
            ) {
                continue;
            }
            let rdev = meta.rdev();
            out.push(json!({
                "path": path,
                "type": typ,
                "major": nix::sys::stat::major(rdev),
                "minor": nix::sys::stat::minor(rdev),
                "fileMode": meta.mode() & 0o777,
                "uid": meta.uid(),
                "gid": meta.gid(),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(add: &[&str], drop: &[&str]) -> HostConfig {
        HostConfig {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn capability_arithmetic() {
        let d = effective_caps(&host(&[], &[])).unwrap();
        assert_eq!(d.len(), DEFAULT_CAPS.len());
        let c = effective_caps(&host(&["net_admin"], &["CHOWN"])).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(
            effective_caps(&host(&["KILL"], &["ALL"])).unwrap(),
            vec!["CAP_KILL"]
        );
        assert!(effective_caps(&host(&["ALL"], &[]))
            .unwrap()
            .contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(effective_caps(&host(&["FLY"], &[]))
            .unwrap_err()
            .to_string()
            .contains("unknown capability"));
    }

    #[test]
    fn sysctls() {
        let mut h = HostConfig::default();
        h.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        assert!(check_sysctls(&h).is_ok());
        h.network_mode = "host".into();
        assert!(check_sysctls(&h).is_err());
        let mut h = HostConfig::default();
        h.sysctls.insert("kernel.panic".into(), "1".into());
        assert!(check_sysctls(&h).is_err());
    }
}
