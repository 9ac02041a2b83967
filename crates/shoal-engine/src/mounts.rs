//! Turning -v/--mount/--tmpfs specs and the image's VOLUMEs into the container's mounts:
//! resolved once at create (volumes created, bind sources checked), written into the OCI
//! spec at each start, with docker's copy-up of image content into a new volume.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use shoal_api::v1::{MountPoint, MountSpec};

use crate::error::{Error, IoContext, Result};
use crate::Engine;

fn check_target(target: &str, seen: &mut HashSet<String>) -> Result<String> {
    if !target.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "invalid mount config: the target {target:?} must be an absolute path"
        )));
    }
    let clean = Path::new(target)
        .components()
        .collect::<PathBuf>()
        .display()
        .to_string();
    if clean == "/" {
        return Err(Error::InvalidArgument(
            "invalid mount config: the target cannot be \"/\"".into(),
        ));
    }
    if !seen.insert(clean.clone()) {
        return Err(Error::InvalidArgument(format!(
            "duplicate mount point: {clean}"
        )));
    }
    Ok(clean)
}

impl Engine {
    /// Resolve a new container's mounts; volumes it creates are returned so a failed create
    /// can remove them again.
    pub(crate) fn resolve_mounts(
        &self,
        specs: &[MountSpec],
        image_volumes: &[String],
    ) -> Result<(Vec<MountPoint>, Vec<String>)> {
        let mut points = Vec::new();
        let mut created = Vec::new();
        let mut seen = HashSet::new();
        let result = (|| -> Result<()> {
            for m in specs {
                let target = check_target(&m.target, &mut seen)?;
                match m.r#type.as_str() {
                    "bind" => {
                        let src = Path::new(&m.source);
                        if !src.is_absolute() {
                            return Err(Error::InvalidArgument(format!(
                                "invalid mount config for type \"bind\": the source {:?} must be an absolute path",
                                m.source
                            )));
                        }
                        if !src.exists() {
                            if !m.create_source {
                                return Err(Error::InvalidArgument(format!(
                                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                                    m.source
                                )));
                            }
                            std::fs::create_dir_all(src)
                                .ctx(|| format!("create bind source {}", m.source))?;
                        }
                        points.push(MountPoint {
                            r#type: "bind".into(),
                            name: String::new(),
                            source: m.source.clone(),
                            destination: target,
                            rw: !m.read_only,
                            propagation: if m.propagation.is_empty() {
                                "rprivate".into()
                            } else {
                                m.propagation.clone()
                            },
                        });
                    }
                    "volume" => {
                        let anonymous = m.source.is_empty();
                        let existed = !anonymous && self.inspect_volume(&m.source).is_ok();
                        let meta = self.create_volume_meta(
                            &m.source,
                            "local",
                            m.volume_labels.clone(),
                            m.volume_options.clone(),
                            anonymous,
                        )?;
                        if !existed {
                            created.push(meta.name.clone());
                        }
                        points.push(MountPoint {
                            r#type: "volume".into(),
                            source: self.volume_data(&meta.name).display().to_string(),
                            name: meta.name,
                            destination: target,
                            rw: !m.read_only,
                            propagation: if m.no_copy {
                                "nocopy".into()
                            } else {
                                String::new()
                            },
                        });
                    }
                    "tmpfs" => {}
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "invalid mount type {other:?}: use bind, volume or tmpfs"
                        )))
                    }
                }
            }
            // Image VOLUMEs not covered by a user mount get an anonymous volume each.
            for v in image_volumes {
                let clean = Path::new(v)
                    .components()
                    .collect::<PathBuf>()
                    .display()
                    .to_string();
                if seen.contains(&clean) {
                    continue;
                }
                let target = check_target(v, &mut seen)?;
                let meta = self.create_volume_meta(
                    "",
                    "local",
                    Default::default(),
                    Default::default(),
                    true,
                )?;
                created.push(meta.name.clone());
                points.push(MountPoint {
                    r#type: "volume".into(),
                    source: self.volume_data(&meta.name).display().to_string(),
                    name: meta.name,
                    destination: target,
                    rw: true,
                    propagation: String::new(),
                });
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((points, created)),
            Err(e) => {
                for v in &created {
                    let _ = self.remove_volume(v, true);
                }
                Err(e)
            }
        }
    }

    /// Before a start: mount volumes that have options, and fill new (empty) volumes with
    /// the image's content at their mount point (docker's copy-up; `nocopy` skips it).
    pub(crate) fn prepare_volumes(&self, points: &[MountPoint], rootfs: &Path) -> Result<()> {
        for p in points.iter().filter(|p| p.r#type == "volume") {
            self.mount_volume_if_needed(&p.name)?;
            let data = Path::new(&p.source);
            let empty = std::fs::read_dir(data)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if p.propagation == "nocopy" || !empty {
                continue;
            }
            let Ok(src) = shoal_runtime::paths::secure_join(rootfs, Path::new(&p.destination))
            else {
                continue;
            };
            if src.is_dir() {
                copy_tree(&src, data)?;
                copy_owner_and_mode(&src, data)?;
            }
        }
        Ok(())
    }
}

/// Spec entries for the container's mounts (after the default ones).
pub fn spec_mounts(points: &[MountPoint], specs: &[MountSpec]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in points {
        let mut options = vec!["rbind".to_string()];
        options.push(match p.propagation.as_str() {
            "" | "nocopy" => "rprivate".to_string(),
            other => other.to_string(),
        });
        if !p.rw {
            options.push("ro".into());
        }
        out.push(json!({"destination": p.destination, "type": "bind", "source": p.source, "options": options}));
    }
    for m in specs.iter().filter(|m| m.r#type == "tmpfs") {
        let mut options = vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ];
        if m.read_only {
            options.push("ro".into());
        }
        if m.tmpfs_size > 0 {
            options.push(format!("size={}", m.tmpfs_size));
        }
        options.push(format!(
            "mode={:o}",
            if m.tmpfs_mode == 0 {
                0o1777
            } else {
                m.tmpfs_mode
            }
        ));
        out.push(json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options}));
    }
    out
}

/// `cp -a` of a directory's content: files, directories, symlinks, owners, modes, mtimes.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src).ctx(|| format!("read {}", src.display()))? {
        let entry = entry.ctx(|| format!("read {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).ctx(|| format!("stat {}", from.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).ctx(|| format!("create {}", to.display()))?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&from).ctx(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(target, &to).ctx(|| format!("symlink {}", to.display()))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).ctx(|| format!("copy {}", from.display()))?;
        } else {
            continue; // devices, fifos and sockets are not copied up (docker neither)
        }
        copy_owner_and_mode(&from, &to)?;
    }
    Ok(())
}

fn copy_owner_and_mode(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).ctx(|| format!("stat {}", from.display()))?;
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        to,
        Some(meta.uid().into()),
        Some(meta.gid().into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", to.display()))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx(|| format!("chmod {}", to.display()))?;
    }
    Ok(())
}
