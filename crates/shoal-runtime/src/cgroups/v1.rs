//! cgroup v1: one directory per mounted controller hierarchy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices::effective_rules;

use super::{
    mkdir_recording, read_file, read_keyed, read_pids, read_u64, remove_created, remove_dir,
    write_file, CgroupConfig, CgroupManager, Stats, Version,
};
use crate::error::{Error, Result};

/// Controllers a container joins when they are mounted.
const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

pub struct Manager {
    config: CgroupConfig,
    /// controller name → the container's directory in that controller's hierarchy.
    /// Co-mounted controllers (cpu,cpuacct) share a directory.
    dirs: BTreeMap<String, PathBuf>,
}

impl Manager {
    pub fn open(config: &CgroupConfig) -> Result<Self> {
        let rel = config.path.strip_prefix("/").unwrap_or(&config.path);
        let mut dirs = BTreeMap::new();
        for m in super::cgroup_mounts()? {
            if m.is_v2() {
                continue;
            }
            for c in &m.controllers {
                if CONTROLLERS.contains(&c.as_str()) {
                    dirs.entry(c.clone())
                        .or_insert_with(|| m.mount_point.join(rel));
                }
            }
        }
        if dirs.is_empty() {
            return Err(Error::cgroup(
                &config.path,
                "no cgroup v1 controllers are mounted",
            ));
        }
        Ok(Manager {
            config: config.clone(),
            dirs,
        })
    }

    fn dir(&self, controller: &str) -> Result<&Path> {
        self.dirs
            .get(controller)
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                Error::cgroup(
                    &self.config.path,
                    format!("the {controller} controller is not mounted on this host"),
                )
            })
    }

    fn unique_dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.dirs.values().map(PathBuf::as_path).collect();
        v.sort();
        v.dedup();
        v
    }

    /// A new cpuset cgroup starts with empty cpus/mems; copy them down from the parent at every
    /// level that has none, top down, or adding a task fails with ENOSPC. Every level, not only
    /// those this runtime created: another one starting at the same moment may have created a
    /// shared parent and not filled it in yet.
    fn init_cpuset(&self) -> Result<()> {
        let Ok(dir) = self.dir("cpuset") else {
            return Ok(());
        };
        // The levels of the hierarchy, from the mount's root (which has its cpus) down.
        let mut levels: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| d.join("cpuset.cpus").exists())
            .collect();
        levels.reverse();
        for pair in levels.windows(2) {
            let (parent, d) = (pair[0], pair[1]);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if read_file(&d.join(file))?.trim().is_empty() {
                    write_file(&d.join(file), read_file(&parent.join(file))?.trim())?;
                }
            }
        }
        Ok(())
    }

    fn set_memory(&self, res: &LinuxResources) -> Result<()> {
        let Some(mem) = res.memory() else {
            return Ok(());
        };
        let dir = || self.dir("memory");
        if let Some(limit) = mem.limit() {
            let limit_file = dir()?.join("memory.limit_in_bytes");
            let swap_file = dir()?.join("memory.memsw.limit_in_bytes");
            match mem.swap() {
                Some(swap) if swap != 0 => {
                    if !swap_file.exists() {
                        return Err(Error::cgroup(
                            dir()?,
                            "a swap limit was requested but the kernel has no swap accounting \
                             (boot with swapaccount=1 or drop the swap limit)",
                        ));
                    }
                    // memsw must stay >= limit: order the writes by direction.
                    let current = read_u64(&limit_file)?.unwrap_or(u64::MAX);
                    if limit == -1 || (limit as u64) > current {
                        write_file(&swap_file, &swap.to_string())?;
                        write_file(&limit_file, &limit.to_string())?;
                    } else {
                        write_file(&limit_file, &limit.to_string())?;
                        write_file(&swap_file, &swap.to_string())?;
                    }
                }
                _ => write_file(&limit_file, &limit.to_string())?,
            }
        } else if let Some(swap) = mem.swap() {
            write_file(
                &dir()?.join("memory.memsw.limit_in_bytes"),
                &swap.to_string(),
            )?;
        }
        if let Some(r) = mem.reservation() {
            write_file(&dir()?.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        if let Some(s) = mem.swappiness() {
            if s > 100 {
                return Err(Error::InvalidArgument(format!(
                    "memory swappiness {s} is out of range 0-100"
                )));
            }
            write_file(&dir()?.join("memory.swappiness"), &s.to_string())?;
        }
        if mem.disable_oom_killer() == Some(true) {
            write_file(&dir()?.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn set_cpu(&self, res: &LinuxResources) -> Result<()> {
        let Some(cpu) = res.cpu() else { return Ok(()) };
        if let Some(shares) = cpu.shares() {
            write_file(&self.dir("cpu")?.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(period) = cpu.period() {
            write_file(
                &self.dir("cpu")?.join("cpu.cfs_period_us"),
                &period.to_string(),
            )?;
        }
        if let Some(quota) = cpu.quota() {
            write_file(
                &self.dir("cpu")?.join("cpu.cfs_quota_us"),
                &quota.to_string(),
            )?;
        }
        if let Some(rt) = cpu.realtime_period() {
            write_file(&self.dir("cpu")?.join("cpu.rt_period_us"), &rt.to_string())?;
        }
        if let Some(rt) = cpu.realtime_runtime() {
            write_file(&self.dir("cpu")?.join("cpu.rt_runtime_us"), &rt.to_string())?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            write_file(&self.dir("cpuset")?.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            write_file(&self.dir("cpuset")?.join("cpuset.mems"), mems)?;
        }
        Ok(())
    }

    fn set_blkio(&self, res: &LinuxResources) -> Result<()> {
        let Some(io) = res.block_io() else {
            return Ok(());
        };
        if let Some(weight) = io.weight() {
            let dir = self.dir("blkio")?;
            let file = ["blkio.weight", "blkio.bfq.weight"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::cgroup(
                        dir,
                        "block IO weight is not supported by this kernel's IO scheduler \
                         (no blkio.weight or blkio.bfq.weight); drop the weight",
                    )
                })?;
            write_file(&file, &weight.to_string())?;
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                io.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                io.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                io.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                io.throttle_write_iops_device(),
            ),
        ];
        for (file, devices) in throttles {
            for d in devices.iter().flatten() {
                let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
                write_file(&self.dir("blkio")?.join(file), &line)?;
            }
        }
        Ok(())
    }

    fn set_devices(&self, res: &LinuxResources) -> Result<()> {
        let Some(rules) = res.devices() else {
            return Ok(());
        };
        let Ok(dir) = self.dir("devices") else {
            return Ok(());
        };
        for rule in effective_rules(rules)? {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write_file(&dir.join(file), &rule.v1_line())?;
        }
        Ok(())
    }

    fn set_pids(&self, res: &LinuxResources) -> Result<()> {
        if let Some(pids) = res.pids() {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write_file(&self.dir("pids")?.join("pids.max"), &v)?;
        }
        Ok(())
    }

    fn set_misc(&self, res: &LinuxResources) -> Result<()> {
        for h in res.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.limit_in_bytes", h.page_size());
            write_file(&self.dir("hugetlb")?.join(file), &h.limit().to_string())?;
        }
        if let Some(net) = res.network() {
            if let Some(id) = net.class_id() {
                write_file(
                    &self.dir("net_cls")?.join("net_cls.classid"),
                    &id.to_string(),
                )?;
            }
            for p in net.priorities().iter().flatten() {
                let line = format!("{} {}", p.name(), p.priority());
                write_file(&self.dir("net_prio")?.join("net_prio.ifpriomap"), &line)?;
            }
        }
        if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::Unsupported(
                "linux.resources.unified needs cgroup v2; this host uses cgroup v1".into(),
            ));
        }
        Ok(())
    }
}

impl CgroupManager for Manager {
    fn create(&mut self) -> Result<()> {
        let mut created = Vec::new();
        for dir in self.unique_dirs() {
            mkdir_recording(dir, &mut created)?;
        }
        self.init_cpuset()?;
        self.config.created = created;
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> Result<()> {
        self.set_memory(res)?;
        self.set_cpu(res)?;
        self.set_blkio(res)?;
        self.set_devices(res)?;
        self.set_pids(res)?;
        self.set_misc(res)
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.unique_dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "memory", "cpu"]
            .iter()
            .find_map(|c| self.dirs.get(*c))
            .or_else(|| self.dirs.values().next())
            .ok_or_else(|| Error::cgroup(&self.config.path, "no controller to list tasks"))?;
        read_pids(&dir.join("cgroup.procs"))
    }

    fn freeze(&self) -> Result<()> {
        let file = self.dir("freezer")?.join("freezer.state");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            write_file(&file, "FROZEN")?;
            if read_file(&file)?.trim() == "FROZEN" {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = write_file(&file, "THAWED");
                return Err(Error::cgroup(&file, "timed out waiting for the freezer"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn thaw(&self) -> Result<()> {
        write_file(&self.dir("freezer")?.join("freezer.state"), "THAWED")
    }

    fn is_frozen(&self) -> Result<bool> {
        let Ok(dir) = self.dir("freezer") else {
            return Ok(false);
        };
        match std::fs::read_to_string(dir.join("freezer.state")) {
            Ok(s) => Ok(s.trim() == "FROZEN"),
            Err(_) => Ok(false),
        }
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Ok(dir) = self.dir("memory") {
            s.memory_usage = read_u64(&dir.join("memory.usage_in_bytes"))?.unwrap_or(0);
            s.memory_max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"))?.unwrap_or(0);
            // An unlimited v1 cgroup reports a huge page-rounded number.
            s.memory_limit = read_u64(&dir.join("memory.limit_in_bytes"))?
                .filter(|v| *v < (i64::MAX as u64) / 2);
            s.oom_kills = read_keyed(&dir.join("memory.oom_control"), "oom_kill")?.unwrap_or(0);
        }
        if let Ok(dir) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage"))?.unwrap_or(0);
        }
        if let Ok(dir) = self.dir("blkio") {
            let file = [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists());
            if let Some(file) = file {
                for line in read_file(&file)?.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let [_, op, v] = f[..] {
                        let v: u64 = v.parse().unwrap_or(0);
                        match op {
                            "Read" => s.io_read_bytes += v,
                            "Write" => s.io_write_bytes += v,
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Ok(dir) = self.dir("pids") {
            s.pids_current = read_u64(&dir.join("pids.current"))?.unwrap_or(0);
            s.pids_limit = read_u64(&dir.join("pids.max"))?;
        }
        Ok(s)
    }

    fn destroy(&self) -> Result<()> {
        for dir in self.unique_dirs() {
            remove_dir(dir)?;
        }
        remove_created(&self.config.created);
        Ok(())
    }

    fn config(&self) -> CgroupConfig {
        CgroupConfig {
            version: Version::V1,
            ..self.config.clone()
        }
    }
}
