//! Container management beyond the lifecycle: exec, top, stats, pause, unpause, rename,
//! update, container prune.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};
use clap::Args;
use shoal_api::v1::{
    exec_input, exec_output, ContainerRef, ExecInput, ExecStart, PruneRequest,
    RenameContainerRequest, StatsRequest, TopRequest, TtySize, UpdateContainerRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::attach::{terminal_size, RawMode};
use crate::client::{connect, err};
use crate::format::{human_size, short_id, table};
use crate::opts::{parse_cpus, parse_restart, parse_size};

#[derive(Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short = 'd', long = "detach")]
    detach: bool,
    /// Keep STDIN open.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// User (name or uid[:gid]).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Environment variables.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Extended privileges for the command.
    #[arg(long)]
    privileged: bool,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `-e KEY=VAL` as is; `-e KEY` takes this shell's value or is dropped when unset (docker).
fn exec_env(entries: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in entries {
        let key = e.split('=').next().unwrap_or_default();
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!("invalid environment variable {e:?}");
        }
        if e.contains('=') {
            out.push(e.clone());
        } else if let Ok(v) = std::env::var(key) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

pub async fn exec(host: &str, args: ExecArgs) -> Result<i32> {
    let env = exec_env(&args.env)?;
    let mut client = connect(host).await?;
    let (tx, rx) = mpsc::channel::<ExecInput>(64);
    let size = if args.tty { terminal_size() } else { None };
    tx.send(ExecInput {
        input: Some(exec_input::Input::Start(ExecStart {
            id: args.container.clone(),
            cmd: args.command.clone(),
            env,
            user: args.user.clone().unwrap_or_default(),
            working_dir: args.workdir.clone().unwrap_or_default(),
            tty: args.tty,
            stdin: args.interactive,
            detach: args.detach,
            privileged: args.privileged,
            size: size.map(|(rows, cols)| TtySize {
                rows: rows.into(),
                cols: cols.into(),
            }),
        })),
    })
    .await?;
    let mut inbound = client
        .exec(ReceiverStream::new(rx))
        .await
        .map_err(err)?
        .into_inner();
    let _raw = if args.tty && args.interactive && std::io::stdin().is_terminal() {
        RawMode::enable()
    } else {
        None
    };
    if args.interactive && !args.detach {
        let tx = tx.clone();
        let tty = args.tty;
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let m = ExecInput {
                    input: Some(exec_input::Input::Stdin(buf[..n].to_vec())),
                };
                if tx.blocking_send(m).is_err() {
                    return;
                }
            }
            if !tty {
                let _ = tx.blocking_send(ExecInput {
                    input: Some(exec_input::Input::CloseStdin(true)),
                });
            }
        });
    }
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(msg) = inbound.message().await.map_err(err)? {
        match msg.output {
            Some(exec_output::Output::Stdout(d)) => {
                stdout.write_all(&d)?;
                stdout.flush()?;
            }
            Some(exec_output::Output::Stderr(d)) => {
                stderr.write_all(&d)?;
                stderr.flush()?;
            }
            Some(exec_output::Output::Exit(w)) => return Ok(w.exit_code),
            None => {}
        }
    }
    drop(tx);
    Ok(0)
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// ps options (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub async fn top(host: &str, args: TopArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    let r = client
        .top(TopRequest {
            id: args.container,
            ps_args: args.ps_args,
        })
        .await
        .map_err(err)?
        .into_inner();
    let titles: Vec<&str> = r.titles.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = r.processes.into_iter().map(|p| p.fields).collect();
    print!("{}", table(&titles, &rows));
    Ok(0)
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// "table" (default) or "json" (one object per line).
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

pub async fn stats(host: &str, args: StatsArgs) -> Result<i32> {
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use table or json"),
    };
    let mut client = connect(host).await?;
    let mut stream = client
        .stats(StatsRequest {
            ids: args.containers,
            stream: !args.no_stream,
        })
        .await
        .map_err(err)?
        .into_inner();
    let live = !args.no_stream && !json && std::io::stdout().is_terminal();
    while let Some(batch) = stream.message().await.map_err(err)? {
        let mut rows = Vec::new();
        for s in batch.stats {
            let limit = if s.memory_limit > 0 {
                s.memory_limit
            } else {
                s.host_memory
            };
            let mem_pct = if limit > 0 {
                s.memory_usage as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ID": short_id(&s.id), "Name": s.name, "CPUPerc": format!("{:.2}%", s.cpu_percent),
                        "MemUsage": format!("{} / {}", binary_size(s.memory_usage), binary_size(limit)),
                        "MemPerc": format!("{mem_pct:.2}%"), "PIDs": s.pids.to_string(),
                        "NetIO": format!("{} / {}", human_size(s.net_rx), human_size(s.net_tx)),
                        "BlockIO": format!("{} / {}", human_size(s.block_read), human_size(s.block_write)),
                    })
                );
                continue;
            }
            rows.push(vec![
                short_id(&s.id),
                s.name,
                format!("{:.2}%", s.cpu_percent),
                format!("{} / {}", binary_size(s.memory_usage), binary_size(limit)),
                format!("{mem_pct:.2}%"),
                format!("{} / {}", human_size(s.net_rx), human_size(s.net_tx)),
                format!(
                    "{} / {}",
                    human_size(s.block_read),
                    human_size(s.block_write)
                ),
                s.pids.to_string(),
            ]);
        }
        if !json {
            if live {
                print!("\x1b[2J\x1b[H");
            }
            print!(
                "{}",
                table(
                    &[
                        "CONTAINER ID",
                        "NAME",
                        "CPU %",
                        "MEM USAGE / LIMIT",
                        "MEM %",
                        "NET I/O",
                        "BLOCK I/O",
                        "PIDS"
                    ],
                    &rows
                )
            );
            std::io::stdout().flush()?;
        }
    }
    Ok(0)
}

/// docker's units.BytesSize, which `docker stats` uses for memory: binary units, four
/// significant digits ("64MiB", "412.1KiB").
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let int_digits = match v {
        v if v >= 1000.0 => 4,
        v if v >= 100.0 => 3,
        v if v >= 10.0 => 2,
        _ => 1,
    };
    let mut n = format!("{:.*}", 4 - int_digits, v);
    if n.contains('.') {
        n = n.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{n}{}", UNITS[i])
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn pause(host: &str, args: NamesArgs, unpause: bool) -> Result<i32> {
    let client = connect(host).await?;
    super::container::each(&args.containers, |id| {
        let mut c = client.clone();
        async move {
            let r = if unpause {
                c.unpause_container(ContainerRef { id }).await
            } else {
                c.pause_container(ContainerRef { id }).await
            };
            r.map(|_| ()).map_err(err)
        }
    })
    .await
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub async fn rename(host: &str, args: RenameArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    client
        .rename_container(RenameContainerRequest {
            id: args.container,
            new_name: args.new_name,
        })
        .await
        .map_err(err)?;
    Ok(0)
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 128m).
    #[arg(short = 'm', long = "memory")]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Restart policy.
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn update(host: &str, args: UpdateArgs) -> Result<i32> {
    if args.memory.is_none()
        && args.cpus.is_none()
        && args.pids_limit.is_none()
        && args.restart.is_none()
    {
        bail!("nothing to update: give --memory, --cpus, --pids-limit or --restart");
    }
    let memory = args.memory.as_deref().map(parse_size).transpose()?;
    let nano_cpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    let restart_policy = args.restart.as_deref().map(parse_restart).transpose()?;
    let client = connect(host).await?;
    super::container::each(&args.containers, |id| {
        let mut c = client.clone();
        let req = UpdateContainerRequest {
            id,
            memory,
            nano_cpus,
            pids_limit: args.pids_limit,
            restart_policy: restart_policy.clone(),
        };
        async move {
            let r = c.update_container(req).await.map_err(err)?.into_inner();
            for w in r.warnings {
                eprintln!("WARNING: {w}");
            }
            Ok(())
        }
    })
    .await
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Filter: label=k[=v], label!=k, until=TIME.
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub fn prune_filters(
    filters: &[String],
) -> Result<std::collections::HashMap<String, shoal_api::v1::StringList>> {
    let mut out: std::collections::HashMap<String, shoal_api::v1::StringList> = Default::default();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid filter {f:?}: use key=value"))?;
        if !matches!(k, "label" | "label!" | "until") {
            bail!("invalid filter {k:?}: use label, label! or until");
        }
        // docker's until= takes a timestamp or a duration ago; the daemon compares RFC 3339.
        let v = if k == "until" {
            super::system::time_arg(v)
                .map_err(|e| anyhow::anyhow!("invalid filter until={v:?}: {e}"))?
        } else {
            v.to_string()
        };
        out.entry(k.to_string()).or_default().values.push(v);
    }
    Ok(out)
}

/// docker's "Are you sure you want to continue? [y/N]".
pub fn confirm(warning: &str, force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    eprint!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn container_prune(host: &str, args: PruneArgs) -> Result<i32> {
    let filters = prune_filters(&args.filter)?;
    if !confirm("This will remove all stopped containers.", args.force)? {
        return Ok(0);
    }
    let mut client = connect(host).await?;
    let r = client
        .prune_containers(PruneRequest { filters })
        .await
        .map_err(err)?
        .into_inner();
    if !r.deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &r.deleted {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(r.space_reclaimed));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::binary_size;

    #[test]
    fn memory_sizes_like_docker_stats() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1000), "1000B");
        assert_eq!(binary_size(64 << 20), "64MiB");
        assert_eq!(binary_size(422_000), "412.1KiB");
        assert_eq!(binary_size(1536 << 20), "1.5GiB");
        assert_eq!(binary_size(25_300_000_000), "23.56GiB");
    }
}
