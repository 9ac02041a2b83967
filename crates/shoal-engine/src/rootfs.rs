//! A container's root filesystem: the image layers as overlayfs lowerdirs, a private upper
//! and work dir, mounted at `merged`; plus the generated /etc/hostname, /etc/hosts and
//! /etc/resolv.conf.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, IoContext, Result};

/// Directories of one container's root filesystem.
pub struct RootfsDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub etc: PathBuf,
}

impl RootfsDirs {
    pub fn new(container_dir: &Path) -> Self {
        RootfsDirs {
            upper: container_dir.join("fs/upper"),
            work: container_dir.join("fs/work"),
            merged: container_dir.join("fs/merged"),
            etc: container_dir.join("etc"),
        }
    }

    pub fn create(&self) -> Result<()> {
        for d in [&self.upper, &self.work, &self.merged, &self.etc] {
            fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(())
    }

    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.merged)
    }

    /// Mount the overlay; `layers` topmost first.
    pub fn mount(&self, layers: &[PathBuf]) -> Result<()> {
        if self.is_mounted() {
            return Ok(());
        }
        let lower = if layers.is_empty() {
            // overlayfs needs at least one lower layer.
            let empty = self.upper.parent().unwrap_or(&self.upper).join("empty");
            fs::create_dir_all(&empty).ctx(|| format!("create {}", empty.display()))?;
            empty.display().to_string()
        } else {
            layers
                .iter()
                .map(|l| escape(l))
                .collect::<Vec<_>>()
                .join(":")
        };
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            escape(&self.upper),
            escape(&self.work)
        );
        if data.len() > 4000 {
            return Err(Error::InvalidArgument(format!(
                "image has too many layers ({}) for one overlay mount",
                layers.len()
            )));
        }
        mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .ctx(|| format!("mount overlay at {}", self.merged.display()))
    }

    pub fn unmount(&self) -> Result<()> {
        while self.is_mounted() {
            umount2(&self.merged, MntFlags::MNT_DETACH)
                .ctx(|| format!("unmount {}", self.merged.display()))?;
        }
        Ok(())
    }
}

/// Commas and colons separate overlay options and layers: escape them in paths.
fn escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.display().to_string().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// Write /etc/hostname, /etc/hosts and /etc/resolv.conf for the container.
pub fn write_etc_files(etc: &Path, hostname: &str, hosts: &str, resolv_conf: &str) -> Result<()> {
    let write = |name: &str, text: &str| {
        let p = etc.join(name);
        fs::write(&p, text).ctx(|| format!("write {}", p.display()))
    };
    write("hostname", &format!("{hostname}\n"))?;
    write("hosts", hosts)?;
    write("resolv.conf", resolv_conf)
}
