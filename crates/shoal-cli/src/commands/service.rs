//! `shoal service …` (also `shoal svc …`): docker's flags and output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use shoal_api::v1 as api;

use crate::client::{connect_services, err};
use crate::format::table;
use crate::opts::{parse_cpus, parse_duration, parse_size, HealthArgs};

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// List services.
    Ls(LsArgs),
    /// List a service's tasks (with their history).
    Ps(PsArgs),
    /// Show services (JSON, or --pretty).
    Inspect(InspectArgs),
    /// Remove services (their tasks are stopped).
    Rm(RmArgs),
    /// Scale replicated services: SERVICE=REPLICAS…
    Scale(ScaleArgs),
    /// Change a service: its tasks are replaced per its update config.
    Update(Box<UpdateArgs>),
    /// Go back to the service's previous spec (per its rollback config).
    Rollback(RollbackArgs),
    /// The logs of a service's tasks (or one task's), from every node.
    Logs(LogsArgs),
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output (new tasks' too).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines from the end of each task's log ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Leave task ids out of the prefix.
    #[arg(long = "no-task-ids")]
    no_task_ids: bool,
    /// Full task ids.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Node and task ids instead of names.
    #[arg(long = "no-resolve")]
    no_resolve: bool,
    /// Only the lines, with no prefix.
    #[arg(long)]
    raw: bool,
    /// A service (name or id) or a task id.
    target: String,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[arg(long)]
    image: Option<String>,
    /// Send the credentials `shoal login` stored for the image's registry to the swarm.
    #[arg(long = "with-registry-auth")]
    with_registry_auth: bool,
    #[arg(long)]
    replicas: Option<u64>,
    /// The command's arguments (split at spaces).
    #[arg(long)]
    args: Option<String>,
    #[arg(long = "env-add")]
    env_add: Vec<String>,
    #[arg(long = "env-rm")]
    env_rm: Vec<String>,
    #[arg(long = "label-add")]
    label_add: Vec<String>,
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    #[arg(long = "constraint-add")]
    constraint_add: Vec<String>,
    #[arg(long = "constraint-rm")]
    constraint_rm: Vec<String>,
    #[command(flatten)]
    restart: RestartFlags,
    #[arg(long = "stop-grace-period")]
    stop_grace_period: Option<String>,
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    #[command(flatten)]
    process: ProcessFlags,
    #[arg(long = "container-label-add")]
    container_label_add: Vec<String>,
    #[arg(long = "container-label-rm")]
    container_label_rm: Vec<String>,
    /// A mount to add (--mount syntax).
    #[arg(long = "mount-add")]
    mount_add: Vec<String>,
    /// A mount to remove, by its target path.
    #[arg(long = "mount-rm")]
    mount_rm: Vec<String>,
    #[arg(long = "placement-pref-add")]
    placement_pref_add: Vec<String>,
    #[arg(long = "placement-pref-rm")]
    placement_pref_rm: Vec<String>,
    #[arg(long = "max-replicas-per-node")]
    max_replicas_per_node: Option<u64>,
    #[command(flatten)]
    resources: ResourceFlags,
    /// Publish a port (as --publish).
    #[arg(long = "publish-add")]
    publish_add: Vec<String>,
    /// Stop publishing a port, by its target port.
    #[arg(long = "publish-rm")]
    publish_rm: Vec<u32>,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    update: UpdateFlags,
    #[command(flatten)]
    rollback_cfg: RollbackFlags,
    /// Replace every task even without a change.
    #[arg(long)]
    force: bool,
    /// Go back to the previous spec.
    #[arg(long)]
    rollback: bool,
    #[command(flatten)]
    target: RollbackArgs,
}

/// How the task's process runs, the same for create and update.
#[derive(Args)]
pub struct ProcessFlags {
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// The entrypoint (split at spaces).
    #[arg(long)]
    entrypoint: Option<String>,
}

impl ProcessFlags {
    fn apply(&self, task: &mut api::TaskSpec) {
        if let Some(e) = &self.entrypoint {
            task.entrypoint = e.split_whitespace().map(str::to_string).collect();
        }
        for (flag, field) in [
            (&self.workdir, &mut task.workdir),
            (&self.user, &mut task.user),
            (&self.hostname, &mut task.hostname),
        ] {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
    }
}

/// `--publish mode=host,target=80,published=8080[,protocol=udp]`. Only host mode: the
/// routing mesh (docker's default, ingress) comes with overlay networks.
fn parse_publish(s: &str) -> Result<api::PortConfig> {
    let mesh = || {
        anyhow!(
            "--publish {s:?} would use the routing mesh, which comes with overlay networks: publish on each task's node with --publish mode=host,target=PORT,published=PORT"
        )
    };
    if !s.contains('=') {
        return Err(mesh());
    }
    let mut p = api::PortConfig {
        protocol: "tcp".into(),
        publish_mode: "ingress".into(),
        ..Default::default()
    };
    let port = |v: &str| -> Result<u32> {
        v.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .map(u32::from)
            .ok_or_else(|| anyhow!("invalid port {v:?} in --publish {s:?}: use 1-65535"))
    };
    for kv in s.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --publish {s:?}: use key=value pairs"))?;
        match k {
            "mode" => p.publish_mode = v.into(),
            "target" => p.target_port = port(v)?,
            "published" => p.published_port = port(v)?,
            "protocol" => p.protocol = v.into(),
            other => {
                bail!("invalid --publish key {other:?}: use mode, target, published or protocol")
            }
        }
    }
    if p.publish_mode != "host" {
        return Err(mesh());
    }
    if !matches!(p.protocol.as_str(), "tcp" | "udp") {
        bail!(
            "invalid protocol {:?} in --publish {s:?}: use tcp or udp",
            p.protocol
        );
    }
    if p.target_port == 0 || p.published_port == 0 {
        bail!("--publish {s:?} needs target=PORT and published=PORT (a random host port is not supported yet)");
    }
    Ok(p)
}

/// Resource flags, the same for create and update.
#[derive(Args)]
pub struct ResourceFlags {
    #[arg(long = "reserve-cpu")]
    reserve_cpu: Option<String>,
    #[arg(long = "reserve-memory")]
    reserve_memory: Option<String>,
    #[arg(long = "limit-cpu")]
    limit_cpu: Option<String>,
    #[arg(long = "limit-memory")]
    limit_memory: Option<String>,
    #[arg(long = "limit-pids")]
    limit_pids: Option<i64>,
}

impl ResourceFlags {
    /// Set the resources these flags name.
    fn apply(&self, r: &mut api::Resources) -> Result<()> {
        let cpus =
            |flag: &str, v: &str| parse_cpus(v).map_err(|e| anyhow!("invalid {flag} {v:?}: {e}"));
        let bytes =
            |flag: &str, v: &str| parse_size(v).map_err(|e| anyhow!("invalid {flag} {v:?}: {e}"));
        if let Some(v) = &self.reserve_cpu {
            r.reserve_nano_cpus = cpus("--reserve-cpu", v)?;
        }
        if let Some(v) = &self.limit_cpu {
            r.limit_nano_cpus = cpus("--limit-cpu", v)?;
        }
        if let Some(v) = &self.reserve_memory {
            r.reserve_memory = bytes("--reserve-memory", v)?;
        }
        if let Some(v) = &self.limit_memory {
            r.limit_memory = bytes("--limit-memory", v)?;
        }
        if let Some(n) = self.limit_pids {
            r.limit_pids = n;
        }
        Ok(())
    }
}

/// Restart-policy flags, the same for create and update.
#[derive(Args)]
pub struct RestartFlags {
    /// none, on-failure or any.
    #[arg(long = "restart-condition")]
    restart_condition: Option<String>,
    #[arg(long = "restart-delay")]
    restart_delay: Option<String>,
    #[arg(long = "restart-max-attempts")]
    restart_max_attempts: Option<u64>,
    #[arg(long = "restart-window")]
    restart_window: Option<String>,
}

impl RestartFlags {
    /// Set the parts of the policy these flags name.
    fn apply(&self, p: &mut api::TaskRestartPolicy) -> Result<()> {
        if let Some(c) = &self.restart_condition {
            p.condition = c.clone();
        }
        if self.restart_delay.is_some() {
            p.delay_ms = ms("--restart-delay", &self.restart_delay)?;
        }
        if let Some(n) = self.restart_max_attempts {
            p.max_attempts = n;
        }
        if self.restart_window.is_some() {
            p.window_ms = ms("--restart-window", &self.restart_window)?;
        }
        Ok(())
    }
}

/// The service an update or rollback is for, and how to follow it.
#[derive(Args)]
pub struct RollbackArgs {
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    service: String,
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: Option<String>,
    /// replicated, global, replicated-job or global-job.
    #[arg(long, default_value = "replicated")]
    mode: String,
    #[arg(long)]
    replicas: Option<u64>,
    /// replicated-job: tasks at once.
    #[arg(long = "max-concurrent")]
    max_concurrent: Option<u64>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Service labels (key=value).
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    #[arg(long = "container-label")]
    container_label: Vec<String>,
    #[arg(long)]
    mount: Vec<String>,
    #[command(flatten)]
    process: ProcessFlags,
    #[arg(long)]
    constraint: Vec<String>,
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    #[arg(long = "max-replicas-per-node")]
    max_replicas_per_node: Option<u64>,
    #[command(flatten)]
    resources: ResourceFlags,
    /// Publish a port on each task's node: mode=host,target=PORT,published=PORT[,protocol=udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    #[command(flatten)]
    restart: RestartFlags,
    #[arg(long = "stop-grace-period")]
    stop_grace_period: Option<String>,
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    update: UpdateFlags,
    #[command(flatten)]
    rollback: RollbackFlags,
    /// Send the credentials `shoal login` stored for the image's registry to the swarm, so
    /// its nodes can pull a private image.
    #[arg(long = "with-registry-auth")]
    with_registry_auth: bool,
    /// Return at once instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Print only the id.
    #[arg(short = 'q', long)]
    quiet: bool,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

macro_rules! update_flags {
    ($name:ident, $p:literal) => {
        #[derive(Args)]
        pub struct $name {
            #[arg(long = concat!($p, "-parallelism"), id = concat!($p, "-parallelism"))]
            parallelism: Option<u64>,
            #[arg(long = concat!($p, "-delay"), id = concat!($p, "-delay"))]
            delay: Option<String>,
            /// pause, continue or rollback.
            #[arg(long = concat!($p, "-failure-action"), id = concat!($p, "-failure-action"))]
            failure_action: Option<String>,
            #[arg(long = concat!($p, "-monitor"), id = concat!($p, "-monitor"))]
            monitor: Option<String>,
            #[arg(long = concat!($p, "-max-failure-ratio"), id = concat!($p, "-max-failure-ratio"))]
            max_failure_ratio: Option<f64>,
            /// stop-first or start-first.
            #[arg(long = concat!($p, "-order"), id = concat!($p, "-order"))]
            order: Option<String>,
        }

        impl $name {
            /// `base` with the flags that were given.
            fn merge(&self, mut base: api::UpdateConfig) -> Result<api::UpdateConfig> {
                if let Some(p) = self.parallelism {
                    base.parallelism = p;
                }
                if self.delay.is_some() {
                    base.delay_ms = ms(concat!("--", $p, "-delay"), &self.delay)?;
                }
                if let Some(a) = &self.failure_action {
                    base.failure_action = a.clone();
                }
                if self.monitor.is_some() {
                    base.monitor_ms = ms(concat!("--", $p, "-monitor"), &self.monitor)?;
                }
                if let Some(r) = self.max_failure_ratio {
                    base.max_failure_ratio = r;
                }
                if let Some(o) = &self.order {
                    base.order = o.clone();
                }
                Ok(base)
            }

            fn config(&self) -> Result<api::UpdateConfig> {
                Ok(api::UpdateConfig {
                    parallelism: self.parallelism.unwrap_or(1),
                    delay_ms: ms(concat!("--", $p, "-delay"), &self.delay)?,
                    failure_action: self
                        .failure_action
                        .clone()
                        .unwrap_or_else(|| "pause".into()),
                    monitor_ms: ms(concat!("--", $p, "-monitor"), &self.monitor)?
                        .max(if self.monitor.is_some() { 0 } else { 5000 }),
                    max_failure_ratio: self.max_failure_ratio.unwrap_or(0.0),
                    order: self.order.clone().unwrap_or_else(|| "stop-first".into()),
                })
            }
        }
    };
}
update_flags!(UpdateFlags, "update");
update_flags!(RollbackFlags, "rollback");

/// A duration flag in milliseconds (0 when absent).
fn ms(flag: &str, v: &Option<String>) -> Result<u64> {
    match v {
        None => Ok(0),
        Some(s) => {
            let ns = parse_duration(s).map_err(|e| anyhow!("invalid {flag} {s:?}: {e}"))?;
            if ns < 0 {
                bail!("invalid {flag} {s:?}: it cannot be negative");
            }
            Ok((ns / 1_000_000) as u64)
        }
    }
}

fn key_values(flag: &str, items: &[String]) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    for l in items {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("invalid {flag} {l:?}: use key=value");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

impl CreateArgs {
    fn spec(&self) -> Result<api::ServiceSpec> {
        let mut env = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow!("--env-file {f}: {e}"))?;
            env.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        env.extend(self.env.iter().cloned());
        let replicated = self.mode == "replicated" || self.mode == "replicated-job";
        if !replicated && self.replicas.is_some() {
            bail!("--replicas can only be used with replicated or replicated-job mode");
        }
        let mut spec = api::ServiceSpec {
            // Empty: the manager picks a name, as docker does.
            name: self.name.clone().unwrap_or_default(),
            labels: key_values("--label", &self.label)?,
            mode: self.mode.clone(),
            replicas: if replicated {
                self.replicas.unwrap_or(1)
            } else {
                0
            },
            max_concurrent: self.max_concurrent.unwrap_or(0),
            task: Some(api::TaskSpec {
                image: self.image.clone(),
                image_id: String::new(),
                args: self.command.clone(),
                env,
                container_labels: key_values("--container-label", &self.container_label)?,
                mounts: self
                    .mount
                    .iter()
                    .map(|m| crate::mountspec::parse_mount(m))
                    .collect::<Result<_>>()?,
                placement: Some(api::Placement {
                    constraints: self.constraint.clone(),
                    preferences: self.placement_pref.clone(),
                    max_replicas_per_node: self.max_replicas_per_node.unwrap_or(0),
                }),
                resources: Some({
                    let mut r = api::Resources::default();
                    self.resources.apply(&mut r)?;
                    r
                }),
                restart: Some({
                    // docker's defaults: restart on any exit, after 5 s.
                    let mut p = api::TaskRestartPolicy {
                        condition: "any".into(),
                        delay_ms: 5000,
                        ..Default::default()
                    };
                    self.restart.apply(&mut p)?;
                    p
                }),
                stop_grace_period_ms: ms("--stop-grace-period", &self.stop_grace_period)?,
                stop_signal: self.stop_signal.clone().unwrap_or_default(),
                healthcheck: self.health.healthcheck()?,
                ports: self
                    .publish
                    .iter()
                    .map(|p| parse_publish(p))
                    .collect::<Result<_>>()?,
                ..Default::default()
            }),
            update: Some(self.update.config()?),
            rollback: Some(self.rollback.config()?),
        };
        if let Some(task) = spec.task.as_mut() {
            self.process.apply(task);
        }
        Ok(spec)
    }
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(short = 'q', long)]
    quiet: bool,
    /// table or json.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    /// desired-state=running|shutdown|accepted, node=NODE
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long)]
    pretty: bool,
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Args)]
pub struct ScaleArgs {
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(required = true)]
    scales: Vec<String>,
}

pub async fn dispatch(host: &str, c: ServiceCommand) -> Result<i32> {
    let mut client = connect_services(host).await?;
    match c {
        ServiceCommand::Create(a) => {
            let mut spec = a.spec()?;
            if a.with_registry_auth {
                registry_auth(&mut spec)?;
            }
            let s = client
                .create_service(api::CreateServiceRequest { spec: Some(spec) })
                .await
                .map_err(err)?
                .into_inner();
            println!("{}", s.id);
            if !a.detach {
                return progress(&mut client, &s.id, a.quiet).await;
            }
        }
        ServiceCommand::Update(a) => {
            let current = client
                .inspect_service(api::ServiceRef {
                    id: a.target.service.clone(),
                })
                .await
                .map_err(err)?
                .into_inner();
            let mut spec = current.spec.clone().unwrap_or_default();
            if !a.rollback {
                a.apply(&mut spec)?;
                if a.with_registry_auth {
                    registry_auth(&mut spec)?;
                }
            }
            let req = api::UpdateServiceRequest {
                id: current.id.clone(),
                spec: Some(spec),
                force: a.force,
                rollback: a.rollback,
            };
            return send_update(
                &mut client,
                req,
                &a.target.service,
                a.target.detach,
                a.target.quiet,
            )
            .await;
        }
        ServiceCommand::Rollback(a) => {
            let req = api::UpdateServiceRequest {
                id: a.service.clone(),
                spec: None,
                force: false,
                rollback: true,
            };
            return send_update(&mut client, req, &a.service, a.detach, a.quiet).await;
        }
        ServiceCommand::Ls(a) => {
            let json = match a.format.as_deref() {
                None | Some("table") => false,
                Some("json") | Some("{{json .}}") => true,
                Some(other) => bail!("unsupported --format {other:?}: use table or json"),
            };
            let list = client
                .list_services(api::ListServicesRequest {})
                .await
                .map_err(err)?
                .into_inner()
                .services;
            if a.quiet {
                for s in &list {
                    println!("{}", short(&s.id));
                }
            } else if json {
                for s in &list {
                    println!("{}", serde_json::to_string(s)?);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        let spec = s.spec.clone().unwrap_or_default();
                        let task = spec.task.clone().unwrap_or_default();
                        let mode = if spec.mode.is_empty() {
                            "replicated".into()
                        } else {
                            spec.mode.clone()
                        };
                        vec![
                            short(&s.id).into(),
                            spec.name.clone(),
                            mode,
                            format!("{}/{}", s.running, s.desired),
                            task.image.clone(),
                            String::new(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows)
                );
            }
        }
        ServiceCommand::Ps(a) => {
            let mut desired = String::new();
            let mut node = String::new();
            for f in &a.filter {
                match f.split_once('=') {
                    Some(("desired-state", v)) => desired = v.to_string(),
                    Some(("node", v)) => node = v.to_string(),
                    _ => bail!("invalid filter {f:?}: use desired-state=STATE or node=NODE"),
                }
            }
            let r = client
                .list_tasks(api::ListTasksRequest {
                    services: a.services.clone(),
                    node,
                    desired_state: desired,
                })
                .await
                .map_err(err)?
                .into_inner();
            if a.quiet {
                for t in &r.tasks {
                    println!(
                        "{}",
                        if a.no_trunc {
                            t.id.as_str()
                        } else {
                            short(&t.id)
                        }
                    );
                }
                return Ok(0);
            }
            print!("{}", task_table(&r, a.no_trunc));
        }
        ServiceCommand::Inspect(a) => {
            let mut out = Vec::new();
            for s in &a.services {
                out.push(
                    client
                        .inspect_service(api::ServiceRef { id: s.clone() })
                        .await
                        .map_err(err)?
                        .into_inner(),
                );
            }
            if a.pretty {
                for s in &out {
                    print!("{}", pretty(s));
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        ServiceCommand::Rm(a) => {
            let mut failed = false;
            for s in &a.services {
                match client
                    .remove_service(api::ServiceRef { id: s.clone() })
                    .await
                {
                    Ok(_) => println!("{s}"),
                    Err(e) => {
                        eprintln!("shoal: {}", err(e));
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        ServiceCommand::Logs(a) => return logs(&mut client, a).await,
        ServiceCommand::Scale(a) => {
            let mut parsed = Vec::new();
            for s in &a.scales {
                let (name, n) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("invalid scale {s:?}: use SERVICE=REPLICAS"))?;
                let n: u64 = n
                    .parse()
                    .map_err(|_| anyhow!("invalid replicas in {s:?}: use a whole number"))?;
                parsed.push((name.to_string(), n));
            }
            let mut failed = false;
            for (name, n) in parsed {
                match client
                    .scale_service(api::ScaleServiceRequest {
                        id: name.clone(),
                        replicas: n,
                    })
                    .await
                {
                    Ok(s) => {
                        println!("{name} scaled to {n}");
                        if !a.detach && progress(&mut client, &s.into_inner().id, false).await? != 0
                        {
                            failed = true;
                        }
                    }
                    Err(e) => {
                        eprintln!("shoal: {}", err(e));
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
    }
    Ok(0)
}

impl UpdateArgs {
    fn apply(&self, spec: &mut api::ServiceSpec) -> Result<()> {
        if let Some(r) = self.replicas {
            if spec.mode != "replicated" && !spec.mode.is_empty() {
                bail!("--replicas applies to replicated services only");
            }
            spec.replicas = r;
        }
        for k in &self.label_rm {
            spec.labels.remove(k);
        }
        spec.labels
            .extend(key_values("--label-add", &self.label_add)?);
        spec.update = Some(self.update.merge(spec.update.clone().unwrap_or_default())?);
        spec.rollback = Some(
            self.rollback_cfg
                .merge(spec.rollback.clone().unwrap_or_default())?,
        );
        let task = spec.task.get_or_insert_with(Default::default);
        if let Some(i) = &self.image {
            task.image = i.clone();
            task.image_id.clear();
            task.image_pinned.clear();
        }
        if let Some(a) = &self.args {
            task.args = a.split_whitespace().map(str::to_string).collect();
        }
        let key = |e: &str| e.split('=').next().unwrap_or(e).to_string();
        for k in &self.env_rm {
            task.env.retain(|e| key(e) != *k);
        }
        for e in &self.env_add {
            task.env.retain(|x| key(x) != key(e));
            task.env.push(e.clone());
        }
        self.process.apply(task);
        let placement = task.placement.get_or_insert_with(Default::default);
        placement
            .constraints
            .retain(|c| !self.constraint_rm.contains(c));
        placement
            .constraints
            .extend(self.constraint_add.iter().cloned());
        if self.stop_grace_period.is_some() {
            task.stop_grace_period_ms = ms("--stop-grace-period", &self.stop_grace_period)?;
        }
        if let Some(sig) = &self.stop_signal {
            task.stop_signal = sig.clone();
        }
        self.restart
            .apply(task.restart.get_or_insert_with(Default::default))?;
        for k in &self.container_label_rm {
            task.container_labels.remove(k);
        }
        task.container_labels.extend(key_values(
            "--container-label-add",
            &self.container_label_add,
        )?);
        task.mounts.retain(|m| !self.mount_rm.contains(&m.target));
        for m in &self.mount_add {
            let m = crate::mountspec::parse_mount(m)?;
            task.mounts.retain(|x| x.target != m.target);
            task.mounts.push(m);
        }
        placement
            .preferences
            .retain(|p| !self.placement_pref_rm.contains(p));
        placement
            .preferences
            .extend(self.placement_pref_add.iter().cloned());
        if let Some(n) = self.max_replicas_per_node {
            placement.max_replicas_per_node = n;
        }
        self.resources
            .apply(task.resources.get_or_insert_with(Default::default))?;
        task.ports
            .retain(|p| !self.publish_rm.contains(&p.target_port));
        for p in &self.publish_add {
            let p = parse_publish(p)?;
            task.ports.retain(|x| {
                (x.protocol.as_str(), x.published_port) != (p.protocol.as_str(), p.published_port)
            });
            task.ports.push(p);
        }
        // As docker's: --no-healthcheck replaces the check; --health-* change only the
        // fields given.
        if let Some(new) = self.health.healthcheck()? {
            if self.health.no_healthcheck {
                task.healthcheck = Some(new);
            } else {
                let cur = task.healthcheck.get_or_insert_with(Default::default);
                if !new.test.is_empty() {
                    cur.test = new.test;
                }
                for (v, field) in [
                    (new.interval_ns, &mut cur.interval_ns),
                    (new.timeout_ns, &mut cur.timeout_ns),
                    (new.start_period_ns, &mut cur.start_period_ns),
                ] {
                    if v != 0 {
                        *field = v;
                    }
                }
                if self.health.health_retries.is_some() {
                    cur.retries = new.retries;
                }
            }
        }
        Ok(())
    }
}

/// Send an update (or rollback) and, unless detached, follow it.
async fn send_update(
    client: &mut api::services_client::ServicesClient<tonic::transport::Channel>,
    req: api::UpdateServiceRequest,
    name: &str,
    detach: bool,
    quiet: bool,
) -> Result<i32> {
    let rollback = req.rollback;
    let s = client.update_service(req).await.map_err(err)?.into_inner();
    println!("{}", if quiet { s.id.as_str() } else { name });
    if detach {
        return Ok(0);
    }
    follow_update(client, &s.id, quiet, rollback).await
}

/// Follow an update or rollback to its end (docker's display, in words): 0 when it
/// completed and the service converged, 1 with the reason when it paused or rolled back.
async fn follow_update(
    client: &mut api::services_client::ServicesClient<tonic::transport::Channel>,
    id: &str,
    quiet: bool,
    rollback: bool,
) -> Result<i32> {
    let mut shown = String::new();
    loop {
        let s = client
            .inspect_service(api::ServiceRef { id: id.into() })
            .await
            .map_err(err)?
            .into_inner();
        let u = s.update_status.clone().unwrap_or_default();
        let line = format!("{}: {}", u.state, u.message);
        if !quiet && line != shown && !u.state.is_empty() {
            eprintln!("update status: {line}");
            shown = line;
        }
        match u.state.as_str() {
            "completed" | "" => return progress(client, id, quiet).await,
            "rollback_completed" if rollback => return progress(client, id, quiet).await,
            "rollback_completed" => {
                eprintln!("shoal: service {id} rolled back: {}", u.message);
                return Ok(1);
            }
            "paused" | "rollback_paused" => {
                eprintln!("shoal: service {id}: {}", u.message);
                return Ok(1);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// docker's `service logs`: each line prefixed `task@node    | `, the prefixes padded to
/// one width; what could not be read is said on stderr, and then the exit code is 1.
async fn logs(
    client: &mut api::services_client::ServicesClient<tonic::transport::Channel>,
    a: LogsArgs,
) -> Result<i32> {
    use std::io::Write;
    let tail = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| anyhow!("invalid --tail {n:?}: use a number or \"all\""))?,
        ),
    };
    let mut stream = client
        .service_logs(api::ServiceLogsRequest {
            target: a.target.clone(),
            follow: a.follow,
            tail,
        })
        .await
        .map_err(err)?
        .into_inner();
    let mut task_names: BTreeMap<String, String> = BTreeMap::new();
    let mut task_nodes: BTreeMap<String, String> = BTreeMap::new();
    let mut node_names: BTreeMap<String, String> = BTreeMap::new();
    let mut width = 0;
    let mut incomplete = false;
    let prefix = |task: &str,
                  task_names: &BTreeMap<String, String>,
                  task_nodes: &BTreeMap<String, String>,
                  node_names: &BTreeMap<String, String>| {
        let node_id = task_nodes.get(task).map_or("", String::as_str);
        let id = if a.no_trunc { task } else { short(task) };
        let name = match task_names.get(task) {
            Some(n) if !a.no_resolve => n.clone(),
            _ => id.to_string(),
        };
        let task_part = if a.no_task_ids || a.no_resolve || !task_names.contains_key(task) {
            name
        } else {
            format!("{name}.{id}")
        };
        let node = if a.no_resolve {
            node_id
        } else {
            node_names.get(node_id).map_or(node_id, String::as_str)
        };
        format!("{task_part}@{node}")
    };
    let mut out = std::io::stdout().lock();
    let mut err_out = std::io::stderr().lock();
    while let Some(m) = stream.message().await.map_err(err)? {
        if !m.task_names.is_empty() {
            task_names.extend(m.task_names);
            task_nodes.extend(m.task_nodes);
            node_names.extend(m.node_names);
            width = task_names
                .keys()
                .map(|t| prefix(t, &task_names, &task_nodes, &node_names).len())
                .max()
                .unwrap_or(0);
        }
        if !m.notice.is_empty() {
            out.flush()?;
            writeln!(err_out, "shoal: {}", m.notice)?;
            incomplete = true;
        }
        for r in m.records {
            // As docker: what a task wrote to stderr goes to stderr.
            let w: &mut dyn Write = if r.stream == "stderr" {
                &mut err_out
            } else {
                &mut out
            };
            if !a.raw {
                let p = prefix(&r.task_id, &task_names, &task_nodes, &node_names);
                write!(w, "{p:<width$}    | ")?;
            }
            if a.timestamps {
                write!(w, "{} ", r.time)?;
            }
            w.write_all(&r.line)?;
        }
        out.flush()?;
        err_out.flush()?;
    }
    Ok(i32::from(incomplete))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub fn task_table(r: &api::ListTasksResponse, no_trunc: bool) -> String {
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .map(|t| {
            let st = t.status.clone().unwrap_or_default();
            let service = r
                .service_names
                .get(&t.service_id)
                .cloned()
                .unwrap_or_else(|| t.service_id.clone());
            let name = if t.slot > 0 {
                format!("{service}.{}", t.slot)
            } else {
                format!("{service}.{}", short(&t.node_id))
            };
            let since = chrono::DateTime::parse_from_rfc3339(&st.timestamp)
                .map(|ts| human_ago(now.signed_duration_since(ts.with_timezone(&chrono::Utc))))
                .unwrap_or_default();
            let mut error = if st.err.is_empty() && st.state == "pending" {
                st.message.clone()
            } else {
                st.err.clone()
            };
            if !no_trunc && error.chars().count() > 60 {
                error = error.chars().take(57).collect::<String>() + "...";
            }
            vec![
                if no_trunc {
                    t.id.clone()
                } else {
                    short(&t.id).to_string()
                },
                name,
                t.spec.as_ref().map(|s| s.image.clone()).unwrap_or_default(),
                r.node_names.get(&t.node_id).cloned().unwrap_or_default(),
                title(&t.desired_state),
                format!("{} {since}", title(&st.state)),
                error,
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    )
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn human_ago(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=1 => "less than a second ago".into(),
        2..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        _ => format!("{} hours ago", s / 3600),
    }
}

fn pretty(s: &api::ServiceInfo) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut out = format!("\nID:\t\t{}\nName:\t\t{}\n", s.id, spec.name);
    let mode = if spec.mode.is_empty() {
        "replicated"
    } else {
        spec.mode.as_str()
    };
    out += &format!("Service Mode:\t{}\n", title(mode));
    if mode == "replicated" {
        out += &format!(" Replicas:\t{}\n", spec.replicas);
    }
    if let Some(u) = &s.update_status {
        out += &format!(
            "UpdateStatus:\n State:\t\t{}\n Message:\t{}\n",
            u.state, u.message
        );
    }
    if let Some(p) = &task.placement {
        if !p.constraints.is_empty() {
            out += &format!("Placement:\n Constraints:\t{:?}\n", p.constraints);
        }
    }
    out += &format!("ContainerSpec:\n Image:\t\t{}\n", task.image);
    if !task.image_id.is_empty() {
        out += &format!(" Image ID:\t{}\n", task.image_id);
    }
    if !task.image_pinned.is_empty() {
        out += &format!(" Pinned:\t{}\n", task.image_pinned);
    }
    if !task.args.is_empty() {
        out += &format!(" Args:\t\t{}\n", task.args.join(" "));
    }
    out
}

/// Follow the service until every wanted task runs (docker's progress display): exit 0
/// when converged, 1 with the reason when it cannot converge.
async fn progress(
    client: &mut api::services_client::ServicesClient<tonic::transport::Channel>,
    id: &str,
    quiet: bool,
) -> Result<i32> {
    let started = chrono::Utc::now();
    let mut stuck_since: Option<Instant> = None;
    let mut last = String::new();
    loop {
        let s = client
            .inspect_service(api::ServiceRef { id: id.into() })
            .await
            .map_err(err)?
            .into_inner();
        let r = client
            .list_tasks(api::ListTasksRequest {
                services: vec![id.into()],
                node: String::new(),
                desired_state: "running".into(),
            })
            .await
            .map_err(err)?
            .into_inner();
        let mut slots: BTreeMap<String, (String, String)> = BTreeMap::new();
        for t in &r.tasks {
            let key = if t.slot > 0 {
                format!("{:>3}", t.slot)
            } else {
                short(&t.node_id).to_string()
            };
            let st = t.status.clone().unwrap_or_default();
            slots.entry(key).or_insert((
                st.state.clone(),
                if st.err.is_empty() {
                    st.message
                } else {
                    st.err
                },
            ));
        }
        let text = {
            let mut t = format!(
                "overall progress: {} out of {} tasks\n",
                s.running, s.desired
            );
            for (k, (state, msg)) in &slots {
                let bar = bar(state);
                let extra = if state == "pending" || state == "rejected" || state == "failed" {
                    format!(" {msg}")
                } else {
                    String::new()
                };
                t += &format!("{k}/{}: {state:<10} {bar}{extra}\n", s.desired);
            }
            t
        };
        if !quiet && text != last {
            print!("{text}");
            last = text;
        }
        let job = s.spec.as_ref().is_some_and(|sp| sp.mode.ends_with("-job"));
        if job {
            let complete = r
                .tasks
                .iter()
                .filter(|t| t.status.as_ref().is_some_and(|st| st.state == "complete"))
                .count() as u64;
            let wanted = if s
                .spec
                .as_ref()
                .is_some_and(|sp| sp.mode == "replicated-job")
            {
                s.desired
            } else {
                r.tasks.len() as u64
            };
            if wanted > 0 && complete >= wanted {
                if !quiet {
                    println!("job complete: {complete} out of {wanted} tasks");
                }
                return Ok(0);
            }
        } else if s.running == s.desired && slots.values().all(|(st, _)| st == "running") {
            if !quiet {
                println!("verify: Service {id} converged");
            }
            return Ok(0);
        }
        // Tasks no node can take do not get better by waiting: say why and stop.
        let unplaceable = slots
            .values()
            .find(|(st, msg)| st == "pending" && msg.starts_with("no suitable node"));
        match (unplaceable, stuck_since) {
            (Some((_, msg)), Some(t)) if t.elapsed() > Duration::from_secs(3) => {
                eprintln!("shoal: service {id} cannot converge: {msg}");
                return Ok(1);
            }
            (Some(_), None) => stuck_since = Some(Instant::now()),
            (None, _) => stuck_since = None,
            _ => {}
        }
        // Tasks that keep failing: the swarm keeps trying, the command stops waiting.
        let all = client
            .list_tasks(api::ListTasksRequest {
                services: vec![id.into()],
                node: String::new(),
                desired_state: String::new(),
            })
            .await
            .map_err(err)?
            .into_inner();
        let failures: Vec<&api::TaskStatus> = all
            .tasks
            .iter()
            .filter_map(|t| t.status.as_ref())
            .filter(|st| st.state == "failed" || st.state == "rejected")
            .filter(|st| {
                chrono::DateTime::parse_from_rfc3339(&st.timestamp)
                    .is_ok_and(|ts| ts.with_timezone(&chrono::Utc) >= started)
            })
            .collect();
        if failures.len() as u64 >= s.desired.max(1) + 2 {
            let last = failures
                .iter()
                .max_by_key(|st| st.timestamp.clone())
                .map(|st| {
                    if st.err.is_empty() {
                        st.message.clone()
                    } else {
                        st.err.clone()
                    }
                })
                .unwrap_or_default();
            eprintln!(
                "shoal: service {id} cannot converge: {} tasks failed ({last}); the swarm keeps retrying per the restart policy",
                failures.len()
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn bar(state: &str) -> &'static str {
    match crate::commands::service::stage(state) {
        0 => "[>                                                 ]",
        1 => "[=========>                                        ]",
        2 => "[===================>                              ]",
        3 => "[=============================>                    ]",
        4 => "[=======================================>          ]",
        _ => "[==================================================>]",
    }
}

fn stage(state: &str) -> u8 {
    match state {
        "new" | "pending" => 0,
        "assigned" => 1,
        "accepted" | "preparing" => 2,
        "ready" => 3,
        "starting" => 4,
        _ => 5,
    }
}

/// `--with-registry-auth`: the stored credentials for the image's registry go in the spec.
fn registry_auth(spec: &mut api::ServiceSpec) -> Result<()> {
    use base64::Engine as _;
    let task = spec.task.get_or_insert_with(Default::default);
    let domain = shoal_image::reference::parse(&task.image)
        .map_err(|e| anyhow!("{e}"))?
        .domain;
    let Some((user, password)) = crate::auth::credentials_for(&domain)? else {
        bail!(
            "--with-registry-auth: no credentials for {domain}: run `shoal login {domain}` first"
        );
    };
    task.registry_auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Update {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn update(spec: &mut api::ServiceSpec, args: &[&str]) -> Result<()> {
        let mut all = vec!["update"];
        all.extend_from_slice(args);
        all.push("web");
        Update::try_parse_from(all)?.args.apply(spec)
    }

    #[test]
    fn update_flags_change_only_what_they_name() {
        let mut spec = api::ServiceSpec {
            task: Some(api::TaskSpec {
                image: "busybox".into(),
                user: "nobody".into(),
                healthcheck: Some(api::HealthCheck {
                    test: vec!["CMD-SHELL".into(), "true".into()],
                    retries: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        update(
            &mut spec,
            &[
                "--workdir",
                "/srv",
                "--container-label-add",
                "a=1",
                "--mount-add",
                "type=tmpfs,target=/cache",
                "--placement-pref-add",
                "spread=node.labels.zone",
                "--limit-memory",
                "64m",
                "--restart-max-attempts",
                "4",
                "--stop-signal",
                "SIGINT",
                "--health-interval",
                "2s",
            ],
        )
        .unwrap();
        let t = spec.task.clone().unwrap();
        assert_eq!((t.workdir.as_str(), t.user.as_str()), ("/srv", "nobody"));
        assert_eq!(t.container_labels["a"], "1");
        assert_eq!(t.mounts[0].target, "/cache");
        assert_eq!(
            t.placement.unwrap().preferences,
            ["spread=node.labels.zone"]
        );
        assert_eq!(t.resources.unwrap().limit_memory, 64 << 20);
        assert_eq!(t.restart.unwrap().max_attempts, 4);
        assert_eq!(t.stop_signal, "SIGINT");
        let h = t.healthcheck.unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "true"], "the command stays");
        assert_eq!((h.interval_ns, h.retries), (2_000_000_000, 3));

        // The -rm variants take them away again; --no-healthcheck replaces the check.
        update(
            &mut spec,
            &[
                "--container-label-rm",
                "a",
                "--mount-rm",
                "/cache",
                "--placement-pref-rm",
                "spread=node.labels.zone",
                "--no-healthcheck",
            ],
        )
        .unwrap();
        let t = spec.task.unwrap();
        assert!(t.container_labels.is_empty() && t.mounts.is_empty());
        assert!(t.placement.unwrap().preferences.is_empty());
        assert_eq!(t.healthcheck.unwrap().test, ["NONE"]);
    }
}
