//! Named and anonymous volumes of the `local` driver: a directory per volume under
//! `<data-root>/volumes/<name>/_data`, with its metadata beside it in `volume.json`.
//! Options `type`, `device` and `o` (docker's local driver) make the directory a mount point
//! while a running container uses the volume.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shoal_api::v1::Volume;

use crate::error::{Error, IoContext, Result};
use crate::lifecycle::is_running;
use crate::{names, Engine};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct VolumeMeta {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub options: HashMap<String, String>,
    pub created: String,
    #[serde(default)]
    pub anonymous: bool,
}

const LOCAL_OPTIONS: &[&str] = &["type", "device", "o"];

impl Engine {
    fn volumes_dir(&self) -> PathBuf {
        self.inner.cfg.data_root.join("volumes")
    }

    pub(crate) fn volume_data(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    fn read_volume(&self, name: &str) -> Result<VolumeMeta> {
        let path = self.volumes_dir().join(name).join("volume.json");
        let data =
            std::fs::read(&path).map_err(|_| Error::NotFound(format!("no such volume: {name}")))?;
        serde_json::from_slice(&data).map_err(|e| Error::Internal(format!("volume {name}: {e}")))
    }

    /// Create a volume, or return the existing one of that name (docker is idempotent here).
    pub fn create_volume(
        &self,
        name: &str,
        driver: &str,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
    ) -> Result<Volume> {
        self.create_volume_meta(name, driver, labels, options, false)
            .map(|m| self.volume_message(m))
    }

    pub(crate) fn create_volume_meta(
        &self,
        name: &str,
        driver: &str,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
        anonymous: bool,
    ) -> Result<VolumeMeta> {
        if !matches!(driver, "" | "local") {
            return Err(Error::InvalidArgument(format!(
                "volume driver {driver:?} is not available: only \"local\" is"
            )));
        }
        for k in options.keys() {
            if !LOCAL_OPTIONS.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "invalid option {k:?} for the local volume driver: use type, device and o"
                )));
            }
        }
        let name = if name.is_empty() {
            names::new_id()
        } else {
            validate_volume_name(name)?
        };
        if let Ok(existing) = self.read_volume(&name) {
            return Ok(existing);
        }
        let meta = VolumeMeta {
            name: name.clone(),
            driver: "local".into(),
            labels,
            options,
            created: crate::now(),
            anonymous,
        };
        let dir = self.volumes_dir().join(&name);
        std::fs::create_dir_all(dir.join("_data")).ctx(|| format!("create volume {name}"))?;
        let data = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = dir.join(".volume.json.tmp");
        std::fs::write(&tmp, data).ctx(|| format!("write volume {name}"))?;
        std::fs::rename(&tmp, dir.join("volume.json")).ctx(|| format!("save volume {name}"))?;
        self.emit_raw(
            "volume",
            "create",
            &name,
            HashMap::from([("driver".into(), "local".into())]),
        );
        Ok(meta)
    }

    /// Containers (any state) that mount a volume.
    fn volume_users(&self, name: &str) -> Vec<String> {
        let reg = self.inner.registry.lock().expect("registry lock");
        reg.by_id
            .values()
            .map(|e| e.snapshot())
            .filter(|c| {
                c.mount_points
                    .iter()
                    .any(|m| m.r#type == "volume" && m.name == name)
            })
            .map(|c| c.id)
            .collect()
    }

    fn volume_message(&self, m: VolumeMeta) -> Volume {
        let data = self.volume_data(&m.name);
        Volume {
            used_by: self.volume_users(&m.name),
            size: crate::prune::dir_size(&data),
            mountpoint: data.display().to_string(),
            name: m.name,
            driver: m.driver,
            labels: m.labels,
            options: m.options,
            created: m.created,
            anonymous: m.anonymous,
        }
    }

    pub fn inspect_volume(&self, name: &str) -> Result<Volume> {
        Ok(self.volume_message(self.read_volume(name)?))
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        let dir = self.volumes_dir();
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            if let Ok(m) = self.read_volume(&e.file_name().to_string_lossy()) {
                out.push(self.volume_message(m));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove a volume no container uses. `force` only makes a missing volume not an error.
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let meta = match self.read_volume(name) {
            Ok(m) => m,
            Err(_) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let users = self.volume_users(&meta.name);
        if !users.is_empty() {
            let short: Vec<&str> = users.iter().map(|u| &u[..12]).collect();
            return Err(Error::Conflict(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                short.join(", ")
            )));
        }
        let data = self.volume_data(&meta.name);
        if crate::rootfs::is_mount_point(&data) {
            let _ = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH);
        }
        let dir = self.volumes_dir().join(&meta.name);
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove volume {name}"))?;
        self.emit_raw("volume", "destroy", &meta.name, HashMap::new());
        Ok(())
    }

    /// Remove every volume no container uses; names and bytes reclaimed.
    pub fn prune_volumes(&self, filters: &[(String, String)]) -> Result<(Vec<String>, u64)> {
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for v in self.volumes()? {
            if !v.used_by.is_empty()
                || !crate::prune::matches_filters(&v.labels, &v.created, filters)
            {
                continue;
            }
            let size = v.size;
            if self.remove_volume(&v.name, false).is_ok() {
                deleted.push(v.name);
                reclaimed += size;
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Mount a volume that has local-driver options, if no running container did already.
    pub(crate) fn mount_volume_if_needed(&self, name: &str) -> Result<()> {
        let meta = self.read_volume(name)?;
        if meta.options.is_empty() {
            return Ok(());
        }
        let data = self.volume_data(name);
        if crate::rootfs::is_mount_point(&data) {
            return Ok(());
        }
        let typ = meta
            .options
            .get("type")
            .map(String::as_str)
            .unwrap_or("none");
        let device = meta
            .options
            .get("device")
            .map(String::as_str)
            .unwrap_or("none");
        let o = meta.options.get("o").cloned().unwrap_or_default();
        let (mut flags, mut data_opts) = (nix::mount::MsFlags::empty(), Vec::new());
        for opt in o.split(',').filter(|s| !s.is_empty()) {
            match opt {
                "bind" => flags |= nix::mount::MsFlags::MS_BIND,
                "ro" => flags |= nix::mount::MsFlags::MS_RDONLY,
                other => data_opts.push(other),
            }
        }
        let joined = data_opts.join(",");
        nix::mount::mount(
            Some(device),
            &data,
            (typ != "none").then_some(typ),
            flags,
            (!joined.is_empty()).then_some(joined.as_str()),
        )
        .ctx(|| format!("mount volume {name} ({typ} {device} {o})"))
    }

    /// Unmount a volume's options mount when no running container uses it any more.
    pub(crate) fn unmount_volume_if_unused(&self, name: &str) {
        let data = self.volume_data(name);
        if !crate::rootfs::is_mount_point(&data) {
            return;
        }
        let running_users = {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id
                .values()
                .map(|e| e.snapshot())
                .filter(|c| is_running(c.status()) && c.mount_points.iter().any(|m| m.name == name))
                .count()
        };
        if running_users == 0 {
            let _ = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume_name(name: &str) -> Result<String> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; if you meant a host directory, use an absolute path"
        )))
    }
}
