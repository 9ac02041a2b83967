//! `create`: validate the request, resolve the image, merge ENTRYPOINT/CMD/Env/WorkingDir/
//! User/StopSignal with the image config exactly as docker does, and write the record.

use shoal_api::v1::{Container, ContainerConfig, ContainerState, HostConfig, StringList};
use shoal_api::ContainerStatus;
use shoal_image::ImageConfig;

use crate::error::{Error, IoContext, Result};
use crate::names;
use crate::rootfs::RootfsDirs;
use crate::Engine;

pub struct CreateRequest {
    pub name: String,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    /// `--ip` and `--network-alias` on the `--network` network.
    pub ip: String,
    pub aliases: Vec<String>,
}

/// Program and arguments from the image and the request (docker's rules):
/// - `--entrypoint` replaces the image ENTRYPOINT and clears the image CMD;
/// - arguments after the image replace CMD but not ENTRYPOINT;
/// - a shell-form ENTRYPOINT (`/bin/sh -c "..."`) gets CMD as extra arguments, which the
///   shell ignores, so it effectively ignores CMD.
pub fn merge_command(
    image: &ImageConfig,
    entrypoint: Option<&StringList>,
    cmd: Option<&StringList>,
) -> Result<Vec<String>> {
    let entry: Vec<String> = match entrypoint {
        Some(e) => e.values.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = match cmd {
        Some(c) if !c.values.is_empty() => c.values.clone(),
        _ if entrypoint.is_some() => Vec::new(),
        _ => image.cmd.clone().unwrap_or_default(),
    };
    let all: Vec<String> = entry.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(Error::InvalidArgument(
            "no command specified: give one after the image name or use --entrypoint".into(),
        ));
    }
    Ok(all)
}

/// Image env overridden key by key by the request's.
pub fn merge_env(image: &[String], request: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or(e).to_string();
    let mut out: Vec<String> = image.to_vec();
    for e in request {
        let k = key(e);
        match out.iter_mut().find(|x| key(x) == k) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

impl Engine {
    pub async fn create(&self, req: CreateRequest) -> Result<(String, Vec<String>)> {
        let mut warnings = Vec::new();
        let cfg = req.config;
        let mut host = req.host_config;
        if cfg.image.is_empty() {
            return Err(Error::InvalidArgument("no image given".into()));
        }
        let image = self.image(&cfg.image).await?;
        let command = merge_command(&image.config, cfg.entrypoint.as_ref(), cfg.cmd.as_ref())?;
        let working_dir = if !cfg.working_dir.is_empty() {
            cfg.working_dir.clone()
        } else if !image.config.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            "/".to_string()
        };
        if !working_dir.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "the working directory {working_dir:?} is invalid: it needs to be an absolute path"
            )));
        }
        let stop_signal = if !cfg.stop_signal.is_empty() {
            cfg.stop_signal.clone()
        } else {
            image
                .config
                .stop_signal
                .clone()
                .unwrap_or_else(|| "SIGTERM".into())
        };
        if shoal_runtime::sys::parse_signal(&stop_signal).is_none() {
            return Err(Error::InvalidArgument(format!(
                "invalid stop signal {stop_signal:?}"
            )));
        }
        validate_host_config(&host, &mut warnings)?;
        let (network_mode, networks) = self
            .initial_endpoints(&host.network_mode, &req.ip, &req.aliases)
            .await?;
        validate_network_options(&network_mode, &mut host, &mut warnings)?;
        host.network_mode = network_mode;
        let mut exposed_ports: Vec<String> = image.config.exposed_ports.clone();
        for e in &cfg.exposed_ports {
            let normalized = normalize_exposed(e)?;
            if !exposed_ports.contains(&normalized) {
                exposed_ports.push(normalized);
            }
        }
        for b in &host.port_bindings {
            let e = format!("{}/{}", b.container_port, b.protocol);
            if !exposed_ports.contains(&e) {
                exposed_ports.push(e);
            }
        }
        exposed_ports.sort();
        crate::security::check_sysctls(&host)?;
        let caps = crate::security::effective_caps(&host)?;
        crate::security::seccomp(&host, &caps)?;
        crate::security::rlimits(&host)?;
        for e in &cfg.env {
            if e.starts_with('=') || e.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "invalid environment variable {e:?}"
                )));
            }
        }
        if cfg.stop_timeout.is_some_and(|t| t < -1) {
            return Err(Error::InvalidArgument(
                "stop timeout must be -1 (wait forever) or more".into(),
            ));
        }

        let id = names::new_id();
        let name = if req.name.is_empty() {
            self.unused_random_name()
        } else {
            names::validate_name(&req.name)?
        };
        let env = merge_env(&image.config.env, &cfg.env);
        let user = if cfg.user.is_empty() {
            image.config.user.clone()
        } else {
            cfg.user.clone()
        };
        let mut config = cfg;
        config.user = user;
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_string();
        }
        {
            let reg = self.inner.registry.lock().expect("registry lock");
            if let Some(other) = reg.names.get(&name) {
                return Err(Error::Conflict(format!(
                    "container name {name:?} is already in use by container {}: remove or rename that container, or pick another name",
                    &other[..12]
                )));
            }
        }
        let healthcheck = resolve_healthcheck(
            config.healthcheck.as_ref(),
            image.config.healthcheck.as_ref(),
        );
        let (mount_points, new_volumes) =
            self.resolve_mounts(&host.mounts, &image.config.volumes)?;
        let container = Container {
            id: id.clone(),
            name,
            networks,
            exposed_ports,
            mount_points,
            resolved_healthcheck: healthcheck,
            image: config.image.clone(),
            image_id: image.id.clone(),
            created: crate::now(),
            path: command[0].clone(),
            args: command[1..].to_vec(),
            log_path: self
                .inner
                .cfg
                .container_dir(&id)
                .join(format!("{id}-json.log"))
                .display()
                .to_string(),
            resolved_env: env,
            resolved_working_dir: working_dir,
            resolved_stop_signal: stop_signal,
            config: Some(config),
            host_config: Some(host),
            state: Some(ContainerState {
                status: ContainerStatus::Created as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let dir = self.inner.cfg.container_dir(&id);
        let made = std::fs::create_dir_all(&dir)
            .ctx(|| format!("create {}", dir.display()))
            .and_then(|()| RootfsDirs::new(&dir).create())
            .and_then(|()| self.persist(&container))
            .and_then(|()| self.register(container).map(|_| ()));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            for v in &new_volumes {
                let _ = self.remove_volume(v, true);
            }
            return Err(e);
        }
        tracing::info!(container_id = %id, image = %image.id, "created container");
        self.emit("create", &id, &[]);
        Ok((id, warnings))
    }

    fn unused_random_name(&self) -> String {
        let reg = self.inner.registry.lock().expect("registry lock");
        loop {
            let n = names::random_name();
            if !reg.names.contains_key(&n) {
                return n;
            }
        }
    }
}

/// The health check in effect: the request's, completed by the image's; none if either says
/// NONE (or neither has one).
fn resolve_healthcheck(
    request: Option<&shoal_api::v1::HealthCheck>,
    image: Option<&shoal_image::HealthConfig>,
) -> Option<shoal_api::v1::HealthCheck> {
    let from_image = image.map(|h| shoal_api::v1::HealthCheck {
        test: h.test.clone(),
        interval_ns: h.interval as i64,
        timeout_ns: h.timeout as i64,
        start_period_ns: h.start_period as i64,
        retries: h.retries as i32,
    });
    let hc = match (request, from_image) {
        (Some(r), img) => {
            let img = img.unwrap_or_default();
            shoal_api::v1::HealthCheck {
                test: if r.test.is_empty() {
                    img.test
                } else {
                    r.test.clone()
                },
                interval_ns: if r.interval_ns > 0 {
                    r.interval_ns
                } else {
                    img.interval_ns
                },
                timeout_ns: if r.timeout_ns > 0 {
                    r.timeout_ns
                } else {
                    img.timeout_ns
                },
                start_period_ns: if r.start_period_ns > 0 {
                    r.start_period_ns
                } else {
                    img.start_period_ns
                },
                retries: if r.retries > 0 {
                    r.retries
                } else {
                    img.retries
                },
            }
        }
        (None, Some(img)) => img,
        (None, None) => return None,
    };
    match hc.test.first().map(String::as_str) {
        None | Some("NONE") => None,
        _ => Some(hc),
    }
}

/// `--expose 80`, `80/udp`, `8000-8002/tcp` → one "port/proto" (ranges are not expanded
/// here: only their first port is checked).
fn normalize_exposed(e: &str) -> Result<String> {
    let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
    let proto = shoal_net::ports::Protocol::parse(proto)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(format!("{p}/{}", proto.as_str())),
        _ => Err(Error::InvalidArgument(format!(
            "invalid --expose {e:?}: use PORT[/tcp|udp]"
        ))),
    }
}

/// Ports, DNS and host entries against the network mode, as docker decides them.
fn validate_network_options(
    mode: &str,
    host: &mut HostConfig,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let publishes = !host.port_bindings.is_empty() || host.publish_all_ports;
    if mode.starts_with("container:") {
        if publishes {
            return Err(Error::InvalidArgument(
                "conflicting options: port publishing and --network container: (the ports belong to the other container)".into(),
            ));
        }
        if !host.dns.is_empty() || !host.dns_search.is_empty() || !host.dns_options.is_empty() {
            return Err(Error::InvalidArgument(
                "conflicting options: --dns and --network container: (the other container's resolv.conf is used)".into(),
            ));
        }
        if !host.extra_hosts.is_empty() {
            return Err(Error::InvalidArgument(
                "conflicting options: --add-host and --network container: (the other container's hosts file is used)".into(),
            ));
        }
    }
    if (mode == "host" || mode == "none") && publishes {
        warnings.push(format!(
            "published ports are discarded when using --network {mode}"
        ));
        host.port_bindings.clear();
        host.publish_all_ports = false;
    }
    for b in &mut host.port_bindings {
        if b.protocol.is_empty() {
            b.protocol = "tcp".into();
        }
        if b.container_port == 0 || b.container_port > 65535 || b.host_port > 65535 {
            return Err(Error::InvalidArgument(format!(
                "invalid port mapping {}:{}: ports are 1-65535",
                b.host_port, b.container_port
            )));
        }
        shoal_net::ports::Protocol::parse(&b.protocol)?;
        if !b.host_ip.is_empty() && b.host_ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid host address {:?} in a port mapping: use an IPv4 address",
                b.host_ip
            )));
        }
    }
    for d in &host.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid --dns {d:?}: use an IP address"
            )));
        }
    }
    for h in &host.extra_hosts {
        let ok = h.split_once(':').is_some_and(|(n, ip)| {
            !n.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
        });
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "invalid --add-host {h:?}: use name:ip or name:host-gateway"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_host_config(host: &HostConfig, warnings: &mut Vec<String>) -> Result<()> {
    if host.memory != 0 && host.memory < 6 * 1024 * 1024 {
        return Err(Error::InvalidArgument(
            "minimum memory limit allowed is 6MB".into(),
        ));
    }
    if host.memory > 0 && !crate::spec::swap_supported() {
        warnings
            .push("the kernel does not support swap limits: memory is limited without swap".into());
    }
    if host.memory < 0 {
        return Err(Error::InvalidArgument(
            "memory limit cannot be negative".into(),
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    if host.nano_cpus < 0 || host.nano_cpus > cpus * 1_000_000_000 {
        return Err(Error::InvalidArgument(format!(
            "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        )));
    }
    if host.nano_cpus > 0 && host.nano_cpus < 10_000_000 {
        return Err(Error::InvalidArgument(format!(
            "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        )));
    }
    if let Some(rp) = &host.restart_policy {
        match rp.name.as_str() {
            "" | "no" | "always" | "unless-stopped" if rp.maximum_retry_count == 0 => {}
            "" | "no" | "always" | "unless-stopped" => {
                return Err(Error::InvalidArgument(format!(
                    "maximum retry count cannot be used with restart policy {:?}: only with on-failure",
                    rp.name
                )))
            }
            "on-failure" if rp.maximum_retry_count >= 0 => {}
            "on-failure" => {
                return Err(Error::InvalidArgument("maximum retry count cannot be negative".into()))
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "invalid restart policy {other:?}: use no, always, unless-stopped or on-failure[:max-retries]"
                )))
            }
        }
        if host.auto_remove && !matches!(rp.name.as_str(), "" | "no") {
            return Err(Error::InvalidArgument(
                "conflicting options: --restart and --rm".into(),
            ));
        }
    }
    if host.pids_limit < -1 {
        return Err(Error::InvalidArgument(
            "pids limit must be -1 (unlimited) or more".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> StringList {
        StringList {
            values: v.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: entry.map(|e| e.iter().map(|s| s.to_string()).collect()),
            cmd: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    /// docker's ENTRYPOINT/CMD table, one row per case.
    #[test]
    fn entrypoint_cmd_table() {
        let sh_form = ["/bin/sh", "-c", "echo hi"];
        type Row<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
        );
        // (image entrypoint, image cmd, --entrypoint, args, expected; None = error)
        let rows: &[Row<'_>] = &[
            (None, Some(&["sh"]), None, None, Some(&["sh"])),
            (
                None,
                Some(&["sh"]),
                None,
                Some(&["echo", "x"]),
                Some(&["echo", "x"]),
            ),
            (Some(&["/ep"]), None, None, None, Some(&["/ep"])),
            (
                Some(&["/ep", "-a"]),
                Some(&["c1"]),
                None,
                None,
                Some(&["/ep", "-a", "c1"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                None,
                Some(&["x"]),
                Some(&["/ep", "x"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some(&["/new"]),
                None,
                Some(&["/new"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some(&["/new"]),
                Some(&["x"]),
                Some(&["/new", "x"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some(&[""]),
                Some(&["echo"]),
                Some(&["echo"]),
            ),
            (Some(&["/ep"]), Some(&["c1"]), Some(&[""]), None, None),
            (
                Some(&sh_form),
                Some(&["ignored"]),
                None,
                None,
                Some(&["/bin/sh", "-c", "echo hi", "ignored"]),
            ),
            (None, None, None, None, None),
            (None, Some(&[]), None, None, None),
        ];
        for (i, (ie, ic, ep, args, want)) in rows.iter().enumerate() {
            let img = image(*ie, *ic);
            let got = merge_command(&img, ep.map(list).as_ref(), args.map(list).as_ref());
            match want {
                Some(w) => assert_eq!(
                    got.unwrap(),
                    w.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "row {i}"
                ),
                None => assert!(got.is_err(), "row {i}: expected an error, got {got:?}"),
            }
        }
    }

    #[test]
    fn env_overrides_by_key() {
        let image = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let req = vec!["A=2".to_string(), "B=3".to_string(), "C".to_string()];
        assert_eq!(
            merge_env(&image, &req),
            vec!["PATH=/bin", "A=2", "B=3", "C"]
        );
    }
}
