//! Operations on existing containers besides start/stop: pause, unpause, rename, update,
//! top, and the raw samples `stats` is computed from.

use std::collections::HashMap;

use shoal_api::v1::{HostConfig, RestartPolicy};
use shoal_api::ContainerStatus;

use crate::error::{Error, Result};
use crate::lifecycle::is_running;
use crate::{names, Engine};

/// What `update` may change.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
}

/// One reading of a container's counters; two make a `stats` line.
#[derive(Debug, Clone, Default)]
pub struct StatsSample {
    pub id: String,
    pub name: String,
    pub cpu_ns: u64,
    pub system_ns: u64,
    pub online_cpus: u64,
    pub memory_usage: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
}

impl StatsSample {
    /// docker's formula: container CPU time over host CPU time, times the CPUs.
    pub fn cpu_percent(&self, prev: &StatsSample) -> f64 {
        let dc = self.cpu_ns.saturating_sub(prev.cpu_ns) as f64;
        let ds = self.system_ns.saturating_sub(prev.system_ns) as f64;
        if ds <= 0.0 {
            return 0.0;
        }
        dc / ds * self.online_cpus as f64 * 100.0
    }
}

impl Engine {
    async fn runtime_call<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&mut shoal_runtime::Container) -> shoal_runtime::Result<T> + Send + 'static,
    ) -> Result<T> {
        let rt = self.inner.runtime.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            let mut c = rt.load(&id)?;
            f(&mut c)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::from)
    }

    pub async fn pause(&self, reference: &str) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        let c = entry.snapshot();
        match c.status() {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is already paused",
                    c.name
                )))
            }
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is not running",
                    c.name
                )))
            }
        }
        self.runtime_call(&c.id, |rc| rc.pause()).await?;
        self.update(&entry, |r| {
            r.state.get_or_insert_with(Default::default).status = ContainerStatus::Paused as i32;
        })?;
        self.emit("pause", &c.id, &[]);
        Ok(())
    }

    pub async fn unpause(&self, reference: &str) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        let c = entry.snapshot();
        if c.status() != ContainerStatus::Paused {
            return Err(Error::Conflict(format!(
                "container {} is not paused",
                c.name
            )));
        }
        self.runtime_call(&c.id, |rc| rc.resume()).await?;
        self.update(&entry, |r| {
            r.state.get_or_insert_with(Default::default).status = ContainerStatus::Running as i32;
        })?;
        self.emit("unpause", &c.id, &[]);
        Ok(())
    }

    pub fn rename(&self, reference: &str, new_name: &str) -> Result<()> {
        let new_name = names::validate_name(new_name)?;
        let entry = self.lookup(reference)?;
        let old = entry.snapshot().name;
        if old == new_name {
            return Err(Error::InvalidArgument(format!(
                "renaming container {old} to its own name: nothing to do"
            )));
        }
        {
            let mut reg = self.inner.registry.lock().expect("registry lock");
            if let Some(other) = reg.names.get(&new_name) {
                return Err(Error::Conflict(format!(
                    "container name {new_name:?} is already in use by container {}",
                    &other[..12]
                )));
            }
            reg.names.remove(&old);
            reg.names.insert(new_name.clone(), entry.id.clone());
        }
        self.update(&entry, |r| r.name = new_name.clone())?;
        self.emit("rename", &entry.id, &[("oldName", old)]);
        Ok(())
    }

    /// Change limits and restart policy; limits apply at once to a running container.
    pub async fn update_container(
        &self,
        reference: &str,
        req: UpdateRequest,
    ) -> Result<Vec<String>> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        let c = entry.snapshot();
        let mut host = c.host_config.clone().unwrap_or_default();
        if let Some(m) = req.memory {
            host.memory = m;
        }
        if let Some(n) = req.nano_cpus {
            host.nano_cpus = n;
        }
        if let Some(p) = req.pids_limit {
            host.pids_limit = p;
        }
        if let Some(rp) = &req.restart_policy {
            host.restart_policy = Some(rp.clone());
        }
        let mut warnings = Vec::new();
        crate::create::validate_host_config(&host, &mut warnings)?;
        if is_running(c.status())
            && (req.memory.is_some() || req.nano_cpus.is_some() || req.pids_limit.is_some())
        {
            let resources = resources_json(&host, &req);
            let res: oci_spec::runtime::LinuxResources =
                serde_json::from_value(resources).map_err(|e| Error::Internal(e.to_string()))?;
            self.runtime_call(&c.id, move |rc| rc.update(&res)).await?;
        }
        self.update(&entry, |r| r.host_config = Some(host.clone()))?;
        self.emit("update", &c.id, &[]);
        Ok(warnings)
    }

    /// `ps` output for the processes in the container's cgroup (docker top).
    pub async fn top(
        &self,
        reference: &str,
        ps_args: &[String],
    ) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let entry = self.lookup(reference)?;
        let c = entry.snapshot();
        if !is_running(c.status()) {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.name
            )));
        }
        let pids = self.runtime_call(&c.id, |rc| rc.pids()).await?;
        let args: Vec<String> = if ps_args.is_empty() {
            vec!["-ef".into()]
        } else {
            ps_args.to_vec()
        };
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| Error::Internal(format!("run ps: {e}")))?;
        if !out.status.success() {
            return Err(Error::InvalidArgument(format!(
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let titles: Vec<String> = header.split_whitespace().map(str::to_string).collect();
        let pid_col = titles.iter().position(|t| t == "PID").ok_or_else(|| {
            Error::InvalidArgument(format!("ps {} has no PID column", args.join(" ")))
        })?;
        let cols = titles.len();
        let mut rows = Vec::new();
        for line in lines {
            // The last column (the command) may contain spaces.
            let Some(fields) = resplit(line, cols) else {
                continue;
            };
            let pid = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|p| pids.contains(&p)) {
                rows.push(fields);
            }
        }
        Ok((titles, rows))
    }

    /// Counters of running containers (all of them when `references` is empty).
    pub async fn stats_sample(&self, references: &[String]) -> Result<Vec<StatsSample>> {
        let entries: Vec<_> = if references.is_empty() {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id
                .values()
                .filter(|e| is_running(e.status()))
                .cloned()
                .collect()
        } else {
            references
                .iter()
                .map(|r| self.lookup(r))
                .collect::<Result<_>>()?
        };
        let mut out = Vec::new();
        for e in entries {
            let c = e.snapshot();
            if !is_running(c.status()) {
                out.push(StatsSample {
                    id: c.id,
                    name: c.name,
                    ..Default::default()
                });
                continue;
            }
            let pid = c.state.as_ref().map_or(0, |s| s.pid);
            let stats = self
                .runtime_call(&c.id, |rc| rc.stats())
                .await
                .unwrap_or_default();
            let (net_rx, net_tx) = net_dev(pid);
            out.push(StatsSample {
                id: c.id,
                name: c.name,
                cpu_ns: stats.cpu_usage_ns,
                system_ns: system_cpu_ns(),
                online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
                memory_usage: stats.memory_usage,
                memory_limit: stats.memory_limit,
                pids: stats.pids_current,
                net_rx,
                net_tx,
                block_read: stats.io_read_bytes,
                block_write: stats.io_write_bytes,
            });
        }
        Ok(out)
    }
}

/// Split a `ps` line into `cols` fields, the last one keeping its spaces.
fn resplit(line: &str, cols: usize) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(cols);
    let mut rest = line.trim_start();
    for _ in 0..cols.saturating_sub(1) {
        let end = rest.find(char::is_whitespace)?;
        out.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
    }
    out.push(rest.to_string());
    Some(out)
}

fn resources_json(host: &HostConfig, req: &UpdateRequest) -> serde_json::Value {
    let mut res = serde_json::json!({});
    if req.memory.is_some() {
        let limit = if host.memory > 0 { host.memory } else { -1 };
        let mut mem = serde_json::json!({"limit": limit});
        if crate::spec::swap_supported() {
            mem["swap"] = serde_json::json!(if limit > 0 { limit * 2 } else { -1 });
        }
        res["memory"] = mem;
    }
    if req.nano_cpus.is_some() {
        let period: i64 = 100_000;
        let quota = if host.nano_cpus > 0 {
            host.nano_cpus * period / 1_000_000_000
        } else {
            -1
        };
        res["cpu"] = serde_json::json!({"quota": quota, "period": period});
    }
    if req.pids_limit.is_some() {
        res["pids"] =
            serde_json::json!({"limit": if host.pids_limit > 0 { host.pids_limit } else { -1 }});
    }
    res
}

/// Total host CPU time in nanoseconds, from the first line of /proc/stat.
fn system_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let jiffies: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    jiffies * (1_000_000_000 / hz)
}

/// Received and sent bytes on the container's interfaces (without lo).
fn net_dev(pid: i32) -> (u64, u64) {
    if pid <= 0 {
        return (0, 0);
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut per_if: HashMap<&str, (u64, u64)> = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            per_if.insert(name, (f[0], f[8]));
        }
    }
    per_if
        .values()
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_keep_spaces_in_the_command() {
        let f = resplit("root  12  1  0 10:00 ?  00:00:00 sh -c sleep 1", 8).unwrap();
        assert_eq!(f[1], "12");
        assert_eq!(f[7], "sh -c sleep 1");
    }

    #[test]
    fn cpu_percent_like_docker() {
        let a = StatsSample {
            cpu_ns: 0,
            system_ns: 0,
            online_cpus: 2,
            ..Default::default()
        };
        let b = StatsSample {
            cpu_ns: 500_000_000,
            system_ns: 2_000_000_000,
            online_cpus: 2,
            ..Default::default()
        };
        assert!((b.cpu_percent(&a) - 50.0).abs() < 1e-9);
    }
}
