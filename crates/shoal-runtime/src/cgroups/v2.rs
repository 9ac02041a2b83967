//! cgroup v2: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::{
    blkio_weight_to_io, mkdir_recording, read_file, read_keyed, read_pids, read_u64,
    remove_created, remove_dir, shares_to_weight, write_file, CgroupConfig, CgroupManager, Stats,
    Version,
};
use crate::error::{Error, Result};

pub struct Manager {
    config: CgroupConfig,
    root: PathBuf,
    dir: PathBuf,
}

/// The unified hierarchy's mount point: `/sys/fs/cgroup` on a v2 host, else wherever cgroup2
/// is mounted (hybrid hosts: `/sys/fs/cgroup/unified`).
pub fn unified_root() -> Result<PathBuf> {
    let mounts = super::cgroup_mounts()?;
    let mut v2 = mounts.iter().filter(|m| m.is_v2());
    let first = v2
        .next()
        .ok_or_else(|| Error::cgroup("/sys/fs/cgroup", "cgroup2 is not mounted"))?;
    Ok(mounts
        .iter()
        .find(|m| m.is_v2() && m.mount_point == Path::new("/sys/fs/cgroup"))
        .unwrap_or(first)
        .mount_point
        .clone())
}

impl Manager {
    pub fn open(config: &CgroupConfig) -> Result<Self> {
        let root = unified_root()?;
        let dir = root.join(config.path.strip_prefix("/").unwrap_or(&config.path));
        Ok(Manager {
            config: config.clone(),
            root,
            dir,
        })
    }

    /// Write a resource file, explaining a missing controller instead of "no such file".
    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        if !path.exists() {
            let controller = file.split('.').next().unwrap_or(file);
            return Err(Error::cgroup(
                &self.dir,
                format!(
                    "cannot set {file}: the {controller} controller is not enabled for this \
                     cgroup (available: {:?})",
                    read_file(&self.dir.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .trim()
                ),
            ));
        }
        write_file(&path, value)
    }

    /// Enable every available controller on the path from the root to our parent, so the
    /// leaf gets its interface files.
    fn enable_controllers(&self) {
        let Ok(available) = read_file(&self.root.join("cgroup.controllers")) else {
            return;
        };
        let wanted: Vec<String> = available
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut dir = self.root.clone();
        let rel = self.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut comps = rel.components().peekable();
        loop {
            // Enabling is best effort: a level that has processes of its own cannot delegate
            // (the "no internal processes" rule); `write` reports the missing file later.
            for c in &wanted {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), c);
            }
            match comps.next() {
                Some(c) if comps.peek().is_some() => dir.push(c),
                _ => break,
            }
        }
    }
}

impl CgroupManager for Manager {
    fn create(&mut self) -> Result<()> {
        let mut created = Vec::new();
        mkdir_recording(&self.dir, &mut created)?;
        self.config.created = created;
        self.enable_controllers();
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> Result<()> {
        if let Some(mem) = res.memory() {
            if let Some(limit) = mem.limit() {
                self.write("memory.max", &max_or(limit))?;
            }
            if let Some(r) = mem.reservation() {
                self.write("memory.low", &max_or(r))?;
            }
            if let Some(swap) = mem.swap() {
                // OCI swap is memory+swap (v1 semantics); v2 limits swap alone.
                let value = match (swap, mem.limit()) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 && s >= l => (s - l).to_string(),
                    (0, _) => "0".to_string(),
                    (s, _) => {
                        return Err(Error::InvalidArgument(format!(
                            "memory swap {s} must be -1 or at least the memory limit"
                        )))
                    }
                };
                self.write("memory.swap.max", &value)?;
            }
            if mem.disable_oom_killer() == Some(true) {
                return Err(Error::Unsupported(
                    "disableOOMKiller does not exist in cgroup v2".into(),
                ));
            }
        }
        if let Some(cpu) = res.cpu() {
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                self.write("cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                let period = cpu.period().unwrap_or(100_000);
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                self.write("cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                self.write("cpuset.mems", mems)?;
            }
        }
        if let Some(pids) = res.pids() {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            self.write("pids.max", &v)?;
        }
        if let Some(io) = res.block_io() {
            if let Some(w) = io.weight() {
                let weight = blkio_weight_to_io(u64::from(w));
                if self.dir.join("io.weight").exists() {
                    self.write("io.weight", &format!("default {weight}"))?;
                } else {
                    self.write("io.bfq.weight", &format!("default {w}"))?;
                }
            }
            let throttles = [
                ("rbps", io.throttle_read_bps_device()),
                ("wbps", io.throttle_write_bps_device()),
                ("riops", io.throttle_read_iops_device()),
                ("wiops", io.throttle_write_iops_device()),
            ];
            for (key, devices) in throttles {
                for d in devices.iter().flatten() {
                    let line = format!("{}:{} {key}={}", d.major(), d.minor(), d.rate());
                    self.write("io.max", &line)?;
                }
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            self.write(
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        for (key, value) in res.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') {
                return Err(Error::InvalidArgument(format!(
                    "unified cgroup key {key:?}"
                )));
            }
            self.write(key, value)?;
        }
        if let Some(rules) = res.devices() {
            super::ebpf::attach_device_filter(&self.dir, &super::devices::effective_rules(rules)?)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn freeze(&self) -> Result<()> {
        write_file(&self.dir.join("cgroup.freeze"), "1")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_keyed(&self.dir.join("cgroup.events"), "frozen")? != Some(1) {
            if Instant::now() > deadline {
                let _ = write_file(&self.dir.join("cgroup.freeze"), "0");
                return Err(Error::cgroup(
                    &self.dir,
                    "timed out waiting for the cgroup to freeze",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        write_file(&self.dir.join("cgroup.freeze"), "0")
    }

    fn is_frozen(&self) -> Result<bool> {
        match std::fs::read_to_string(self.dir.join("cgroup.freeze")) {
            Ok(s) => Ok(s.trim() == "1"),
            Err(_) => Ok(false),
        }
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let file = |f: &str| self.dir.join(f);
        if file("memory.current").exists() {
            s.memory_usage = read_u64(&file("memory.current"))?.unwrap_or(0);
            s.memory_limit = read_u64(&file("memory.max"))?;
            if file("memory.peak").exists() {
                s.memory_max_usage = read_u64(&file("memory.peak"))?.unwrap_or(0);
            }
            s.oom_kills = read_keyed(&file("memory.events"), "oom_kill")?.unwrap_or(0);
        }
        if file("cpu.stat").exists() {
            s.cpu_usage_ns = read_keyed(&file("cpu.stat"), "usage_usec")?.unwrap_or(0) * 1000;
        }
        if file("io.stat").exists() {
            for line in read_file(&file("io.stat"))?.lines() {
                for kv in line.split_whitespace().skip(1) {
                    match kv.split_once('=') {
                        Some(("rbytes", v)) => s.io_read_bytes += v.parse().unwrap_or(0),
                        Some(("wbytes", v)) => s.io_write_bytes += v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        if file("pids.current").exists() {
            s.pids_current = read_u64(&file("pids.current"))?.unwrap_or(0);
            s.pids_limit = read_u64(&file("pids.max"))?;
        }
        Ok(s)
    }

    fn destroy(&self) -> Result<()> {
        remove_dir(&self.dir)?;
        remove_created(&self.config.created);
        Ok(())
    }

    fn config(&self) -> CgroupConfig {
        CgroupConfig {
            version: Version::V2,
            ..self.config.clone()
        }
    }
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}
