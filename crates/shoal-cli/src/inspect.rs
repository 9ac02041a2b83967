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
        },
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
        },
    })
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
