//! Container commands: run, create, start, stop, restart, kill, rm, ps, inspect, logs, wait.

use std::io::Write;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;
use shoal_api::v1::{
    ContainerRef, ImageRef, KillContainerRequest, ListContainersRequest, LogsRequest,
    RemoveContainerRequest, StopContainerRequest,
};

use crate::attach::{attach, AttachSpec, Outcome};
use crate::client::{connect, err, Client};
use crate::format::{ago, short_id, status_text, table, truncate};
use crate::inspect;
use crate::opts::CreateFlags;

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    #[command(flatten)]
    pub flags: CreateFlags,
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the container.
    #[arg(short = 'a', long = "attach")]
    attach: bool,
    /// Attach stdin.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<i32>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Also remove the containers' anonymous volumes.
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only ids.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter: id=, name=, label=k[=v], status=, ancestor=, exited=.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// "table" (default) or "json" (one object per line).
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// container or image
    #[arg(long = "type")]
    kind: Option<String>,
    /// Output format: json (the only one; the default).
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Number of lines from the end ("all" for everything).
    #[arg(short = 'n', long = "tail", default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short = 't', long = "timestamps")]
    timestamps: bool,
    container: String,
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

/// docker run: 125 when the daemon refuses, 126/127 when the program cannot start, else
/// the container's exit code.
pub async fn run(host: &str, args: RunArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    let id = match create_container(&mut client, &args.flags).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            return Ok(125);
        }
    };
    if args.detach {
        if let Err(s) = client
            .start_container(ContainerRef { id: id.clone() })
            .await
        {
            eprintln!("shoal: {}", s.message());
            return Ok(crate::client::start_exit_code(&s).unwrap_or(125));
        }
        println!("{id}");
        return Ok(0);
    }
    let spec = AttachSpec {
        id,
        stdin: args.flags.interactive,
        tty: args.flags.tty,
        start: true,
    };
    match attach(&mut client, spec).await? {
        Outcome::Exited(code) => Ok(code),
        Outcome::StartFailed { code, message } => {
            eprintln!("shoal: {message}");
            Ok(code)
        }
    }
}

async fn create_container(client: &mut Client, flags: &CreateFlags) -> Result<String> {
    let req = flags.to_request()?;
    let resp = client
        .create_container(req)
        .await
        .map_err(err)?
        .into_inner();
    for w in resp.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(resp.id)
}

pub async fn create(host: &str, flags: CreateFlags) -> Result<i32> {
    let mut client = connect(host).await?;
    match create_container(&mut client, &flags).await {
        Ok(id) => {
            println!("{id}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("shoal: {e:#}");
            Ok(125)
        }
    }
}

/// Run `f` for each named container, printing the name on success and the error otherwise
/// (docker's behaviour for multi-container commands); exit 1 if any failed.
pub(crate) async fn each<F, Fut>(names: &[String], mut f: F) -> Result<i32>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("shoal: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

pub async fn start(host: &str, args: StartArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let id = args.containers[0].clone();
        let c = client
            .inspect_container(ContainerRef { id: id.clone() })
            .await
            .map_err(err)?
            .into_inner();
        let tty = c.config.as_ref().is_some_and(|c| c.tty);
        let spec = AttachSpec {
            id,
            stdin: args.interactive,
            tty,
            start: true,
        };
        return match attach(&mut client, spec).await? {
            Outcome::Exited(code) => Ok(code),
            Outcome::StartFailed { code, message } => {
                eprintln!("shoal: {message}");
                Ok(code)
            }
        };
    }
    each(&args.containers, |id| {
        let mut c = client.clone();
        async move {
            c.start_container(ContainerRef { id })
                .await
                .map(|_| ())
                .map_err(err)
        }
    })
    .await
}

pub async fn stop(host: &str, args: StopArgs, restart: bool) -> Result<i32> {
    let client = connect(host).await?;
    each(&args.containers, |id| {
        let mut c = client.clone();
        let req = StopContainerRequest {
            id,
            timeout: args.time,
        };
        async move {
            if restart {
                c.restart_container(req).await.map(|_| ()).map_err(err)
            } else {
                c.stop_container(req).await.map(|_| ()).map_err(err)
            }
        }
    })
    .await
}

pub async fn kill(host: &str, args: KillArgs) -> Result<i32> {
    let client = connect(host).await?;
    each(&args.containers, |id| {
        let mut c = client.clone();
        let signal = args.signal.clone();
        async move {
            c.kill_container(KillContainerRequest { id, signal })
                .await
                .map(|_| ())
                .map_err(err)
        }
    })
    .await
}

pub async fn rm(host: &str, args: RmArgs) -> Result<i32> {
    let client = connect(host).await?;
    each(&args.containers, |id| {
        let mut c = client.clone();
        async move {
            c.remove_container(RemoveContainerRequest {
                id,
                force: args.force,
                volumes: args.volumes,
            })
            .await
            .map(|_| ())
            .map_err(err)
        }
    })
    .await
}

fn matches_filters(
    c: &shoal_api::v1::ContainerSummary,
    filters: &[(String, String)],
) -> Result<bool> {
    for (k, v) in filters {
        let st = c.state.clone().unwrap_or_default();
        let ok = match k.as_str() {
            "id" => c.id.starts_with(v.as_str()),
            "name" => c.name.contains(v.as_str()),
            "status" => st.status().docker_name() == v,
            "ancestor" => c.image == *v || c.image.split(':').next() == Some(v.as_str()),
            "exited" => {
                st.status() == shoal_api::ContainerStatus::Exited && st.exit_code.to_string() == *v
            }
            "label" => match v.split_once('=') {
                Some((lk, lv)) => c.labels.get(lk).is_some_and(|x| x == lv),
                None => c.labels.contains_key(v.as_str()),
            },
            other => {
                bail!("invalid filter {other:?}: use id, name, label, status, ancestor or exited")
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn ps(host: &str, args: PsArgs) -> Result<i32> {
    let filters: Vec<(String, String)> = args
        .filter
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("invalid filter {f:?}: use key=value"))
        })
        .collect::<Result<_>>()?;
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use table or json"),
    };
    // A status filter other than running implies --all, as in docker.
    let all = args.all || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut client = connect(host).await?;
    let list = client
        .list_containers(ListContainersRequest {
            all,
            ..Default::default()
        })
        .await
        .map_err(err)?
        .into_inner();
    let mut rows = Vec::new();
    let mut out = std::io::stdout().lock();
    for c in &list.containers {
        if !matches_filters(c, &filters)? {
            continue;
        }
        let st = c.state.clone().unwrap_or_default();
        let id = if args.no_trunc {
            c.id.clone()
        } else {
            short_id(&c.id)
        };
        if args.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let command = if args.no_trunc {
            format!("\"{}\"", c.command)
        } else {
            format!("\"{}\"", truncate(&c.command, 20))
        };
        if json {
            let doc = json!({
                "ID": id, "Image": c.image, "Command": command, "CreatedAt": c.created,
                "RunningFor": ago(&c.created), "Status": status_text(&st), "State": st.status().docker_name(),
                "Names": c.name, "Ports": super::network::ports_column(&c.ports), "Labels": c.labels,
            });
            writeln!(out, "{doc}")?;
            continue;
        }
        rows.push(vec![
            id,
            c.image.clone(),
            command,
            ago(&c.created),
            status_text(&st),
            super::network::ports_column(&c.ports),
            c.name.clone(),
        ]);
    }
    if !args.quiet && !json {
        write!(
            out,
            "{}",
            table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES"
                ],
                &rows
            )
        )?;
    }
    Ok(0)
}

pub async fn inspect(host: &str, args: InspectArgs) -> Result<i32> {
    crate::format::json_only(args.format.as_deref())?;
    let mut client = connect(host).await?;
    let mut docs = Vec::new();
    let mut failed = false;
    for n in &args.names {
        let kind = args.kind.as_deref();
        if kind.is_none() || kind == Some("container") {
            match client
                .inspect_container(ContainerRef { id: n.clone() })
                .await
            {
                Ok(c) => {
                    docs.push(inspect::container(&c.into_inner()));
                    continue;
                }
                Err(s) if s.code() != tonic::Code::NotFound || kind.is_some() => {
                    eprintln!("shoal: {}", s.message());
                    failed = true;
                    continue;
                }
                Err(_) => {}
            }
        }
        match client
            .inspect_image(ImageRef {
                reference: n.clone(),
            })
            .await
        {
            Ok(i) => docs.push(inspect::image(&i.into_inner())),
            Err(s) => {
                if kind.is_none() {
                    eprintln!("shoal: no such object: {n}");
                } else {
                    eprintln!("shoal: {}", s.message());
                }
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&docs)?);
    Ok(i32::from(failed))
}

pub async fn logs(host: &str, args: LogsArgs) -> Result<i32> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| anyhow!("invalid --tail {n:?}: use a number or \"all\""))?,
        ),
    };
    let mut client = connect(host).await?;
    let mut stream = client
        .container_logs(LogsRequest {
            id: args.container,
            follow: args.follow,
            tail,
            timestamps: args.timestamps,
        })
        .await
        .map_err(err)?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(entry) = stream.message().await.map_err(err)? {
        let w: &mut dyn Write = if entry.stream == "stderr" {
            &mut stderr
        } else {
            &mut stdout
        };
        if args.timestamps {
            write!(w, "{} ", entry.time)?;
        }
        w.write_all(&entry.line)?;
        w.flush()?;
    }
    Ok(0)
}

pub async fn wait(host: &str, args: WaitArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    let mut failed = false;
    for id in args.containers {
        match client.wait_container(ContainerRef { id }).await {
            Ok(r) => println!("{}", r.into_inner().exit_code),
            Err(s) => {
                eprintln!("shoal: {}", s.message());
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}
