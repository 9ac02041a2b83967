//! `run`/`create` flags → a CreateContainerRequest, with docker's parsing rules.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use shoal_api::v1::{
    ContainerConfig, CreateContainerRequest, HealthCheck, HostConfig, MountSpec, PortBinding,
    RestartPolicy, StringList, Ulimit,
};

#[derive(Args, Debug, Clone)]
pub struct CreateFlags {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID, optionally with group (user[:group]).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Overwrite the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long = "hostname")]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long = "memory")]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Keep STDIN open.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Set metadata (key=value).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Network mode: none or host.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Signal to stop the container (default: the image's, else SIGTERM).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i32>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Bind mount or volume: [SOURCE:]DESTINATION[:ro|rw|nocopy|PROPAGATION].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,…].
    #[arg(long = "mount")]
    pub mount: Vec<String>,
    /// tmpfs mount: PATH[:size=64m,mode=1777].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:max-retries].
    #[arg(long)]
    pub restart: Option<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Add Linux capabilities (name, CAP_NAME or ALL).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (name, CAP_NAME or ALL).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give all capabilities and devices; no seccomp or masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// no-new-privileges[:true|false], seccomp=unconfined|PROFILE.json.
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Additional groups (names from the image or numbers).
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Resource limit: NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long = "ulimit")]
    pub ulimit: Vec<String>,
    /// Namespaced kernel parameter: KEY=VALUE.
    #[arg(long = "sysctl")]
    pub sysctl: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every exposed port on a random host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port (or range) without publishing it.
    #[arg(long)]
    pub expose: Vec<String>,
    /// IPv4 address on the network given with --network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Alias on the network given with --network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// DNS server for the container.
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// DNS resolver option (e.g. ndots:2).
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// Extra /etc/hosts entry: HOST:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "IMAGE [COMMAND] [ARG...]")]
    pub image_and_command: Vec<String>,
}

/// docker's RAMInBytes: "64m", "1.5g", "512k", "100b" or bytes (binary units).
pub fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        anyhow!("invalid size {s:?}: use a number with an optional unit b, k, m or g")
    })?;
    let mult: f64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        _ => bail!("invalid size {s:?}: unknown unit {unit:?}"),
    };
    if n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult) as i64)
}

/// "1.5" CPUs in units of 1e-9 CPUs.
pub fn parse_cpus(s: &str) -> Result<i64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid --cpus {s:?}: use a number such as 0.5 or 2"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("invalid --cpus {s:?}: must be a positive number");
    }
    Ok((v * 1e9).round() as i64)
}

/// `KEY=VAL` as is; `KEY` takes this shell's value or is dropped when unset (docker).
fn resolve_env(entry: &str, env: &HashMap<String, String>) -> Result<Option<String>> {
    let key = entry.split('=').next().unwrap_or_default();
    if key.is_empty() {
        bail!("invalid environment variable {entry:?}: the name is empty");
    }
    if key.contains(char::is_whitespace) {
        bail!("invalid environment variable {entry:?}: names cannot contain whitespace");
    }
    if entry.contains('=') {
        return Ok(Some(entry.to_string()));
    }
    Ok(env.get(key).map(|v| format!("{key}={v}")))
}

fn read_env_file(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(path))
        .with_context(|| format!("read env file {path}"))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl CreateFlags {
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    pub fn to_request(&self) -> Result<CreateContainerRequest> {
        let shell_env: HashMap<String, String> = std::env::vars().collect();
        let mut env = Vec::new();
        for f in &self.env_file {
            for e in read_env_file(f)? {
                env.extend(resolve_env(&e, &shell_env)?);
            }
        }
        for e in &self.env {
            env.extend(resolve_env(e, &shell_env)?);
        }
        let mut labels = HashMap::new();
        for l in &self.label {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                bail!("invalid label {l:?}: the key is empty");
            }
            labels.insert(k.to_string(), v.to_string());
        }
        let command = &self.image_and_command[1..];
        let memory = self
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()?
            .unwrap_or(0);
        let nano_cpus = self
            .cpus
            .as_deref()
            .map(parse_cpus)
            .transpose()?
            .unwrap_or(0);
        let network = self.network.clone().unwrap_or_default();
        let security = parse_security_opts(&self.security_opt)?;
        Ok(CreateContainerRequest {
            name: self.name.clone().unwrap_or_default(),
            config: Some(ContainerConfig {
                hostname: self.hostname.clone().unwrap_or_default(),
                user: self.user.clone().unwrap_or_default(),
                env,
                cmd: (!command.is_empty()).then(|| StringList {
                    values: command.to_vec(),
                }),
                entrypoint: self.entrypoint.as_ref().map(|e| StringList {
                    values: if e.is_empty() {
                        Vec::new()
                    } else {
                        vec![e.clone()]
                    },
                }),
                image: self.image().to_string(),
                working_dir: self.workdir.clone().unwrap_or_default(),
                labels,
                tty: self.tty,
                open_stdin: self.interactive,
                stop_signal: self.stop_signal.clone().unwrap_or_default(),
                stop_timeout: self.stop_timeout,
                healthcheck: self.health.healthcheck()?,
                exposed_ports: self.exposed()?,
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: network,
                memory,
                nano_cpus,
                pids_limit: self.pids_limit.unwrap_or(0),
                auto_remove: self.rm,
                restart_policy: self.restart.as_deref().map(parse_restart).transpose()?,
                mounts: self.mounts()?,
                cap_add: self.cap_add.clone(),
                cap_drop: self.cap_drop.clone(),
                privileged: self.privileged,
                no_new_privileges: security.no_new_privileges,
                seccomp_profile: security.seccomp,
                readonly_rootfs: self.read_only,
                group_add: self.group_add.clone(),
                ulimits: self
                    .ulimit
                    .iter()
                    .map(|u| parse_ulimit(u))
                    .collect::<Result<_>>()?,
                sysctls: self
                    .sysctl
                    .iter()
                    .map(|s| parse_kv("--sysctl", s))
                    .collect::<Result<_>>()?,
                init: self.init,
                port_bindings: self.port_bindings()?,
                publish_all_ports: self.publish_all,
                dns: self
                    .dns
                    .iter()
                    .map(|d| check_ip("--dns", d))
                    .collect::<Result<_>>()?,
                dns_search: self.dns_search.clone(),
                dns_options: self.dns_option.clone(),
                extra_hosts: self
                    .add_host
                    .iter()
                    .map(|h| check_add_host(h))
                    .collect::<Result<_>>()?,
            }),
            ip: match &self.ip {
                Some(ip) => check_ip("--ip", ip)?,
                None => String::new(),
            },
            aliases: self.network_alias.clone(),
        })
    }
}

fn check_ip(flag: &str, s: &str) -> Result<String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| anyhow!("invalid {flag} {s:?}: use an IPv4 address such as 10.0.0.5"))
}

/// `--add-host name:ip` (docker also accepts `name=ip`).
fn check_add_host(s: &str) -> Result<String> {
    let (name, ip) = s
        .rsplit_once(['=', ':'])
        .ok_or_else(|| anyhow!("invalid --add-host {s:?}: use HOST:IP"))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("invalid --add-host {s:?}: the host name is empty or has spaces");
    }
    let ip = if ip == "host-gateway" {
        ip.to_string()
    } else {
        check_ip("--add-host address", ip)?
    };
    Ok(format!("{name}:{ip}"))
}

impl CreateFlags {
    fn port_bindings(&self) -> Result<Vec<PortBinding>> {
        let mut out = Vec::new();
        for p in &self.publish {
            for spec in shoal_net::ports::parse(p)? {
                out.push(PortBinding {
                    container_port: spec.container_port.into(),
                    protocol: spec.protocol.as_str().into(),
                    host_ip: spec.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    host_port: spec.host_port.into(),
                });
            }
        }
        Ok(out)
    }

    /// `--expose PORT[-PORT][/PROTO]`, ranges expanded.
    fn exposed(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in &self.expose {
            let (ports, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            if !matches!(proto, "tcp" | "udp") {
                bail!("invalid protocol {proto:?} in --expose {e:?}: use tcp or udp");
            }
            let one = |v: &str| -> Result<u16> {
                match v.parse::<u16>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("invalid --expose {e:?}: ports are 1 to 65535"),
                }
            };
            let (a, b) = match ports.split_once('-') {
                Some((a, b)) => (one(a)?, one(b)?),
                None => (one(ports)?, one(ports)?),
            };
            if b < a {
                bail!("invalid --expose range {e:?}");
            }
            out.extend((a..=b).map(|p| format!("{p}/{proto}")));
        }
        Ok(out)
    }

    fn mounts(&self) -> Result<Vec<MountSpec>> {
        let mut out = Vec::new();
        for v in &self.volume {
            out.push(crate::mountspec::parse_volume(v)?);
        }
        for m in &self.mount {
            out.push(crate::mountspec::parse_mount(m)?);
        }
        for t in &self.tmpfs {
            out.push(crate::mountspec::parse_tmpfs(t)?);
        }
        Ok(out)
    }
}

/// Go-style duration: `1h2m3s`, `500ms`, `1.5s`; in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty duration");
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            bail!("expected a number: use e.g. 30s, 1m30s, 500ms");
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| anyhow!("bad number"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => bail!("missing unit: use ns, us, ms, s, m or h"),
            other => bail!("unknown unit {other:?}: use ns, us, ms, s, m or h"),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(total as i64)
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<RestartPolicy> {
    let (name, max) = s.split_once(':').unwrap_or((s, ""));
    let maximum_retry_count = if max.is_empty() {
        0
    } else {
        max.parse().map_err(|_| {
            anyhow!("invalid restart policy {s:?}: the maximum retry count must be a number")
        })?
    };
    match name {
        "no" | "always" | "unless-stopped" if max.is_empty() => {}
        "on-failure" => {}
        "no" | "always" | "unless-stopped" => bail!("invalid restart policy {s:?}: only on-failure takes a maximum retry count"),
        _ => bail!("invalid restart policy {s:?}: use no, always, unless-stopped or on-failure[:max-retries]"),
    }
    Ok(RestartPolicy {
        name: name.into(),
        maximum_retry_count,
    })
}

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `nofile=1024:2048` or `nofile=1024`.
pub fn parse_ulimit(s: &str) -> Result<Ulimit> {
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid --ulimit {s:?}: use NAME=SOFT[:HARD]"))?;
    if !ULIMITS.contains(&name) {
        bail!(
            "invalid --ulimit name {name:?}: use one of {}",
            ULIMITS.join(", ")
        );
    }
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| anyhow!("invalid --ulimit {s:?}: limits must be numbers"))
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    if soft > hard && hard != -1 {
        bail!("invalid --ulimit {s:?}: soft limit {soft} is above hard limit {hard}");
    }
    Ok(Ulimit {
        name: name.into(),
        soft,
        hard,
    })
}

fn parse_kv(flag: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid {flag} {s:?}: use KEY=VALUE"))?;
    if k.is_empty() {
        bail!("invalid {flag} {s:?}: the key is empty");
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Default)]
struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: String,
}

fn parse_security_opts(opts: &[String]) -> Result<SecurityOpts> {
    let mut out = SecurityOpts::default();
    for o in opts {
        let (k, v) = match o.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("no-new-privileges", None | Some("true")) => out.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => out.no_new_privileges = false,
            ("seccomp", Some("unconfined")) => out.seccomp = "unconfined".into(),
            ("seccomp", Some(path)) if !path.is_empty() => {
                out.seccomp = std::fs::read_to_string(path)
                    .with_context(|| format!("read seccomp profile {path}"))?;
            }
            ("apparmor", _) | ("label", _) => {
                bail!("--security-opt {o:?}: AppArmor and SELinux are not supported on this engine")
            }
            _ => bail!("invalid --security-opt {o:?}: use no-new-privileges[:true|false] or seccomp=unconfined|PROFILE.json"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5x").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("two").is_err());
    }

    #[test]
    fn env_resolution() {
        let shell: HashMap<String, String> = [("HOME".to_string(), "/root".to_string())].into();
        assert_eq!(resolve_env("A=1", &shell).unwrap().as_deref(), Some("A=1"));
        assert_eq!(
            resolve_env("HOME", &shell).unwrap().as_deref(),
            Some("HOME=/root")
        );
        assert_eq!(resolve_env("UNSET_X", &shell).unwrap(), None);
        assert!(resolve_env("=x", &shell).is_err());
        assert!(resolve_env("A B=1", &shell).is_err());
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            parse_restart("on-failure:3").unwrap().maximum_retry_count,
            3
        );
        assert_eq!(parse_restart("always").unwrap().name, "always");
        assert!(parse_restart("always:3").is_err());
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("on-failure:x").is_err());
    }

    #[test]
    fn ulimits_and_security() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        assert_eq!(parse_ulimit("nproc=50").unwrap().hard, 50);
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("files=1").is_err());
        let s = parse_security_opts(&["no-new-privileges".into(), "seccomp=unconfined".into()])
            .unwrap();
        assert!(s.no_new_privileges);
        assert_eq!(s.seccomp, "unconfined");
        assert!(parse_security_opts(&["apparmor=x".into()]).is_err());
        assert!(parse_security_opts(&["seccomp=/no/such/profile.json".into()]).is_err());
    }
}

/// docker's --health-* flags, for `run`/`create` and services alike.
#[derive(Args, Debug, Clone, Default)]
pub struct HealthArgs {
    /// Command to run to check health (run through /bin/sh -c).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 1m30s).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Maximum time one check may take.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Consecutive failures before unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<i32>,
    /// Time to initialise before failures count.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Disable any health check (including the image's).
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
}

impl HealthArgs {
    pub fn healthcheck(&self) -> Result<Option<HealthCheck>> {
        let any_flag = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if self.no_healthcheck {
            if any_flag {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            return Ok(Some(HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }));
        }
        if !any_flag {
            return Ok(None);
        }
        let dur = |flag: &str, v: &Option<String>| -> Result<i64> {
            match v {
                None => Ok(0),
                Some(s) => {
                    let d = parse_duration(s).map_err(|e| anyhow!("invalid {flag} {s:?}: {e}"))?;
                    if d < 1_000_000 {
                        bail!("{flag} {s:?} is too short: use at least 1ms");
                    }
                    Ok(d)
                }
            }
        };
        if self.health_retries.is_some_and(|r| r < 0) {
            bail!("--health-retries cannot be negative");
        }
        Ok(Some(HealthCheck {
            test: self
                .health_cmd
                .iter()
                .flat_map(|c| ["CMD-SHELL".to_string(), c.clone()])
                .collect(),
            interval_ns: dur("--health-interval", &self.health_interval)?,
            timeout_ns: dur("--health-timeout", &self.health_timeout)?,
            start_period_ns: dur("--health-start-period", &self.health_start_period)?,
            retries: self.health_retries.unwrap_or(0),
        }))
    }
}
