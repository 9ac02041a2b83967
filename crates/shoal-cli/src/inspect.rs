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
        "Driver": "overlay",
        "HostConfig": {
            "NetworkMode": if host.network_mode.is_empty() { "none" } else { host.network_mode.as_str() },
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
                        "StopTimeout": cfg.stop_timeout,
            "Healthcheck": c.resolved_healthcheck.as_ref().map(|h| json!({
                "Test": h.test, "Interval": h.interval_ns, "Timeout": h.timeout_ns,
                "StartPeriod": h.start_period_ns, "Retries": h.retries,
            })),
        },
    })
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
