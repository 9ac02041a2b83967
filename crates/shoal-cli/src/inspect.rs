//! docker-shaped inspect documents from shoal's messages, so scripts written against
//! `docker inspect` keep working.

use serde_json::{json, Value};
use shoal_api::v1::{Container, Image};
use shoal_api::ContainerStatus;

fn list(l: &Option<shoal_api::v1::StringList>) -> Value {
    match l {
        Some(l) => json!(l.values),
        None => Value::Null,
    }
}

pub fn container(c: &Container) -> Value {
    let st = c.state.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let status = st.status();
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": {
            "Status": status.docker_name(),
            "Running": matches!(status, ContainerStatus::Running | ContainerStatus::Paused),
            "Paused": status == ContainerStatus::Paused,
            "Restarting": status == ContainerStatus::Restarting,
            "OOMKilled": st.oom_killed,
            "Dead": status == ContainerStatus::Dead,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "Health": st.health.as_ref().map(|h| json!({
                "Status": h.status,
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|l| json!({"Start": l.start, "End": l.end, "ExitCode": l.exit_code, "Output": l.output})).collect::<Vec<_>>(),
            })),
            "StartedAt": if st.started_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { st.started_at.clone() },
            "FinishedAt": if st.finished_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { st.finished_at.clone() },
        },
        "Image": c.image_id,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name),
                "RestartCount": c.restart_count,
        "NetworkSettings": network_settings(c),
        "Driver": "overlay",
        "HostConfig": {
                        "NetworkMode": if host.network_mode.is_empty() { "bridge" } else { host.network_mode.as_str() },
            "PortBindings": port_bindings(&host.port_bindings),
            "PublishAllPorts": host.publish_all_ports,
            "Dns": host.dns,
            "DnsSearch": host.dns_search,
            "DnsOptions": host.dns_options,
            "ExtraHosts": host.extra_hosts,
            "AutoRemove": host.auto_remove,
            "Memory": host.memory,
            "NanoCpus": host.nano_cpus,
            "PidsLimit": if host.pids_limit == 0 { Value::Null } else { json!(host.pids_limit) },
            "RestartPolicy": {
                "Name": host.restart_policy.as_ref().map_or("no", |p| if p.name.is_empty() { "no" } else { p.name.as_str() }),
                "MaximumRetryCount": host.restart_policy.as_ref().map_or(0, |p| p.maximum_retry_count),
            },
            "CapAdd": host.cap_add,
            "CapDrop": host.cap_drop,
            "Privileged": host.privileged,
            "ReadonlyRootfs": host.readonly_rootfs,
            "SecurityOpt": security_opt(&host),
            "GroupAdd": host.group_add,
            "Ulimits": host.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
            "Sysctls": host.sysctls,
            "Init": host.init,
            "Tmpfs": host.mounts.iter().filter(|m| m.r#type == "tmpfs").map(|m| (m.target.clone(), json!(format!("size={},mode={:o}", m.tmpfs_size, if m.tmpfs_mode == 0 { 0o1777 } else { m.tmpfs_mode })))).collect::<serde_json::Map<_, _>>(),
        },
        "Mounts": c.mount_points.iter().map(|m| json!({
            "Type": m.r#type,
            "Name": if m.name.is_empty() { Value::Null } else { json!(m.name) },
            "Source": m.source,
            "Destination": m.destination,
            "Driver": if m.r#type == "volume" { json!("local") } else { Value::Null },
            "Mode": if m.rw { "rw" } else { "ro" },
            "RW": m.rw,
            "Propagation": if m.r#type == "bind" { m.propagation.as_str() } else { "" },
        })).collect::<Vec<_>>(),
        "Config": {
            "Hostname": cfg.hostname,
            "Domainname": cfg.domainname,
            "User": cfg.user,
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "Env": c.resolved_env,
            "Cmd": list(&cfg.cmd),
            "Image": cfg.image,
            "WorkingDir": c.resolved_working_dir,
            "Entrypoint": list(&cfg.entrypoint),
            "Labels": cfg.labels,
                        "StopSignal": c.resolved_stop_signal,
            "ExposedPorts": c.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
            "StopTimeout": cfg.stop_timeout,
            "Healthcheck": c.resolved_healthcheck.as_ref().map(|h| json!({
                "Test": h.test, "Interval": h.interval_ns, "Timeout": h.timeout_ns,
                "StartPeriod": h.start_period_ns, "Retries": h.retries,
            })),
        },
    })
}

/// docker's NetworkSettings: endpoints by network, and ports (exposed ones without a
/// binding map to null).
fn network_settings(c: &Container) -> Value {
    let mut ports = serde_json::Map::new();
    for e in &c.exposed_ports {
        ports.insert(e.clone(), Value::Null);
    }
    for b in &c.ports {
        let key = format!("{}/{}", b.container_port, b.protocol);
        let entry = json!({
            "HostIp": if b.host_ip.is_empty() { "0.0.0.0" } else { b.host_ip.as_str() },
            "HostPort": b.host_port.to_string(),
        });
        match ports.get_mut(&key) {
            Some(Value::Array(a)) => a.push(entry),
            _ => {
                ports.insert(key, json!([entry]));
            }
        }
    }
    let networks: serde_json::Map<String, Value> = c
        .networks
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                json!({
                    "NetworkID": e.network_id,
                    "Aliases": e.aliases,
                    "IPAMConfig": if e.requested_ip.is_empty() { Value::Null } else { json!({"IPv4Address": e.requested_ip}) },
                    "IPAddress": e.ip_address,
                    "IPPrefixLen": e.prefix_len,
                    "Gateway": e.gateway,
                    "MacAddress": e.mac_address,
                }),
            )
        })
        .collect();
    let primary = c.networks.get("bridge");
    json!({
        "Ports": ports,
        "IPAddress": primary.map(|e| e.ip_address.as_str()).unwrap_or(""),
        "IPPrefixLen": primary.map(|e| e.prefix_len).unwrap_or(0),
        "Gateway": primary.map(|e| e.gateway.as_str()).unwrap_or(""),
        "MacAddress": primary.map(|e| e.mac_address.as_str()).unwrap_or(""),
        "SandboxKey": "",
        "Networks": networks,
    })
}

fn port_bindings(bindings: &[shoal_api::v1::PortBinding]) -> Value {
    let mut out = serde_json::Map::new();
    for b in bindings {
        let key = format!("{}/{}", b.container_port, b.protocol);
        let entry = json!({
            "HostIp": b.host_ip,
            "HostPort": if b.host_port == 0 { String::new() } else { b.host_port.to_string() },
        });
        match out.get_mut(&key) {
            Some(Value::Array(a)) => a.push(entry),
            _ => {
                out.insert(key, json!([entry]));
            }
        }
    }
    out.into()
}

fn security_opt(host: &shoal_api::v1::HostConfig) -> Vec<String> {
    let mut out = Vec::new();
    if host.no_new_privileges {
        out.push("no-new-privileges".to_string());
    }
    match host.seccomp_profile.as_str() {
        "" => {}
        "unconfined" => out.push("seccomp=unconfined".into()),
        _ => out.push("seccomp=<custom profile>".into()),
    }
    out
}

pub fn image(i: &Image) -> Value {
    let cfg = i.config.clone().unwrap_or_default();
    let set = |v: &[String]| -> Value {
        v.iter()
            .map(|k| (k.clone(), json!({})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "Id": i.id,
        "RepoTags": i.repo_tags,
        "RepoDigests": i.repo_digests,
        "Created": i.created,
        "Size": i.size,
        "Architecture": i.architecture,
        "Os": i.os,
        "Config": {
            "Env": cfg.env,
            "Cmd": list(&cfg.cmd),
            "Entrypoint": list(&cfg.entrypoint),
            "WorkingDir": cfg.working_dir,
            "User": cfg.user,
            "StopSignal": cfg.stop_signal,
            "Labels": cfg.labels,
            "ExposedPorts": set(&cfg.exposed_ports),
            "Volumes": set(&cfg.volumes),
        },
        "RootFS": { "Type": "layers", "Layers": i.layers },
    })
}
