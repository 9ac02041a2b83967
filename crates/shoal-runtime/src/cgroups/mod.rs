//! cgroups v1 and v2 behind one interface.
//!
//! The layout is detected once from `/proc/self/mountinfo`: a `cgroup2` filesystem at
//! `/sys/fs/cgroup` means the unified hierarchy (v2); otherwise the v1 controllers are used
//! wherever they are mounted (a hybrid host's empty `unified` mount is ignored). The
//! environment variable `SHOAL_CGROUP_VERSION=v1|v2` overrides detection; with `v2` the
//! unified mount is used wherever it is (tests use this to exercise v2 on hybrid hosts).

pub mod devices;
mod ebpf;
mod mountinfo;
pub mod v1;
pub mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use mountinfo::{cgroup_mounts, CgroupMount};

/// Which cgroup API a container uses, persisted in its state so later commands reopen the
/// same hierarchy even if detection would now say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// Persisted description of a container's cgroup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupConfig {
    pub version: Version,
    /// The container's cgroup path inside each hierarchy, e.g. `/shoal/abc`.
    pub path: PathBuf,
    /// Directories this container created (deepest last); `destroy` removes the empty ones.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

/// Resource usage read from the container's cgroup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub memory_usage: u64,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub memory_max_usage: u64,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub pids_current: u64,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
    /// Bytes read from and written to block devices.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// The operations the runtime needs from a cgroup, for either version.
pub trait CgroupManager {
    /// Create the cgroup (and missing parents), without adding processes.
    fn create(&mut self) -> Result<()>;
    /// Apply resource limits.
    fn set(&self, resources: &LinuxResources) -> Result<()>;
    /// Move a process into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// PIDs of all processes in the cgroup.
    fn pids(&self) -> Result<Vec<i32>>;
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn is_frozen(&self) -> Result<bool>;
    fn stats(&self) -> Result<Stats>;
    /// Remove the cgroup and the empty parents it created. Processes must be gone.
    fn destroy(&self) -> Result<()>;
    /// Persistable description.
    fn config(&self) -> CgroupConfig;
}

/// Pick the cgroup version for a new container.
pub fn detect() -> Result<Version> {
    if let Ok(forced) = std::env::var("SHOAL_CGROUP_VERSION") {
        return match forced.as_str() {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            other => Err(Error::InvalidArgument(format!(
                "SHOAL_CGROUP_VERSION={other:?}: use v1 or v2"
            ))),
        };
    }
    let mounts = cgroup_mounts()?;
    let unified_at_root = mounts
        .iter()
        .any(|m| m.is_v2() && m.mount_point == Path::new("/sys/fs/cgroup"));
    if unified_at_root {
        return Ok(Version::V2);
    }
    if mounts
        .iter()
        .any(|m| !m.is_v2() && !m.controllers.is_empty())
    {
        return Ok(Version::V1);
    }
    if mounts.iter().any(|m| m.is_v2()) {
        return Ok(Version::V2);
    }
    Err(Error::cgroup(
        "/sys/fs/cgroup",
        "no cgroup filesystem is mounted",
    ))
}

/// A manager for a new container's cgroup at `path`.
pub fn new_manager(version: Version, path: &Path) -> Result<Box<dyn CgroupManager>> {
    let config = CgroupConfig {
        version,
        path: path.to_path_buf(),
        created: Vec::new(),
    };
    open(&config)
}

/// Reopen the cgroup of an existing container.
pub fn open(config: &CgroupConfig) -> Result<Box<dyn CgroupManager>> {
    Ok(match config.version {
        Version::V1 => Box::new(v1::Manager::open(config)?),
        Version::V2 => Box::new(v2::Manager::open(config)?),
    })
}

/// Validate a cgroupsPath from a spec and make it absolute.
pub fn normalize_path(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            std::path::Component::Normal(c) => out.push(c),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "cgroupsPath {}: must not contain '..'",
                    path.display()
                )))
            }
        }
    }
    if out == Path::new("/") {
        return Err(Error::InvalidArgument(
            "cgroupsPath must not be the root cgroup".into(),
        ));
    }
    Ok(out)
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::cgroup(path, format!("write {value:?}: {e}")))
}

pub(crate) fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::cgroup(path, format!("read: {e}")))
}

pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>> {
    let s = read_file(path)?;
    let s = s.trim();
    if s == "max" {
        return Ok(None);
    }
    s.parse::<u64>()
        .map(Some)
        .map_err(|e| Error::cgroup(path, format!("parse {s:?}: {e}")))
}

/// Value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>> {
    let s = read_file(path)?;
    Ok(s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    }))
}

pub(crate) fn read_pids(procs: &Path) -> Result<Vec<i32>> {
    let s = match fs::read_to_string(procs) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::cgroup(procs, format!("read: {e}"))),
    };
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// `mkdir -p` that records which directories it made.
pub(crate) fn mkdir_recording(dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_recording(parent, created)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            created.push(dir.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::cgroup(dir, format!("create: {e}"))),
    }
}

/// Remove a cgroup directory; the kernel may report EBUSY for a moment after the last task
/// exits, so retry briefly. A missing directory is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::cgroup(dir, format!("remove: {e}"))),
        }
    }
}

/// Remove the directories this container created, deepest first. A parent still used by
/// another container is not empty and stays; that is not an error.
pub(crate) fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_weight_to_io(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (weight.clamp(10, 1000) - 10) * 9999 / 990
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
    }

    #[test]
    fn cgroup_paths_are_normalized() {
        assert_eq!(normalize_path(Path::new("a/b")).unwrap(), Path::new("/a/b"));
        assert_eq!(
            normalize_path(Path::new("/a/./b")).unwrap(),
            Path::new("/a/b")
        );
        assert!(normalize_path(Path::new("/a/../b")).is_err());
        assert!(normalize_path(Path::new("/")).is_err());
    }
}
