//! System-wide commands: prune, df, events; and volumes.

use std::io::Write;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::v1::{
    CreateVolumeRequest, Empty, EventsRequest, PruneImagesRequest, PruneRequest,
    RemoveVolumeRequest, VolumeRef,
};

use super::manage::{confirm, prune_filters, PruneArgs};
use crate::client::{connect, err};
use crate::format::{human_size, table};

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Remove stopped containers, unused images (dangling, or all with -a) and, with
    /// --volumes, unused volumes.
    Prune(SystemPruneArgs),
    /// Show disk usage.
    Df,
    /// Stream events (same as `shoal events`).
    Events(EventsArgs),
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Also prune volumes.
    #[arg(long)]
    volumes: bool,
    #[arg(short = 'f', long = "force")]
    force: bool,
}

pub async fn dispatch(host: &str, cmd: SystemCommand) -> Result<i32> {
    match cmd {
        SystemCommand::Prune(a) => prune(host, a).await,
        SystemCommand::Df => df(host).await,
        SystemCommand::Events(a) => events(host, a).await,
    }
}

async fn prune(host: &str, args: SystemPruneArgs) -> Result<i32> {
    let mut what = vec!["all stopped containers"];
    if args.volumes {
        what.push("all volumes not used by at least one container");
    }
    what.push(if args.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    });
    let warning = format!("This will remove:\n  - {}", what.join("\n  - "));
    if !confirm(&warning, args.force)? {
        return Ok(0);
    }
    let mut client = connect(host).await?;
    let mut total = 0;
    let c = client
        .prune_containers(PruneRequest::default())
        .await
        .map_err(err)?
        .into_inner();
    total += c.space_reclaimed;
    print_deleted("Deleted Containers", &c.deleted);
    if args.volumes {
        let v = client
            .prune_volumes(PruneRequest::default())
            .await
            .map_err(err)?
            .into_inner();
        total += v.space_reclaimed;
        print_deleted("Deleted Volumes", &v.deleted);
    }
    let i = client
        .prune_images(PruneImagesRequest { all: args.all })
        .await
        .map_err(err)?
        .into_inner();
    total += i.space_reclaimed;
    print_deleted("Deleted Images", &i.deleted);
    println!("Total reclaimed space: {}", human_size(total));
    Ok(0)
}

fn print_deleted(title: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    println!("{title}:");
    for id in ids {
        println!("{id}");
    }
    println!();
}

async fn df(host: &str) -> Result<i32> {
    let mut client = connect(host).await?;
    let r = client.system_df(Empty {}).await.map_err(err)?.into_inner();
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let pct = (row.reclaimable * 100).checked_div(row.size).unwrap_or(0);
            vec![
                row.kind.clone(),
                row.total.to_string(),
                row.active.to_string(),
                human_size(row.size),
                format!("{} ({pct}%)", human_size(row.reclaimable)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows)
    );
    Ok(0)
}

#[derive(Args)]
pub struct EventsArgs {
    /// Show events since this time (RFC 3339, Unix seconds, or a duration like 10m).
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Filter: type=, event=, container=, label= (repeatable).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// "json" for one object per line.
    #[arg(long)]
    format: Option<String>,
}

/// `--since`/`--until` (and prune's `until=`) as RFC 3339 in UTC with nanoseconds, the
/// daemon's own format, so times compare as the daemon's do: given as RFC 3339 (any offset,
/// any precision), Unix seconds, or a duration ago.
pub(crate) fn time_arg(s: &str) -> Result<String> {
    use chrono::{DateTime, Utc};
    if let Ok(t) = s.parse::<DateTime<Utc>>() {
        return Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    if let Ok(secs) = s.parse::<f64>() {
        let t = DateTime::<Utc>::from_timestamp(secs as i64, ((secs.fract()) * 1e9) as u32)
            .ok_or_else(|| anyhow::anyhow!("time {s:?} is out of range"))?;
        return Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    let d = crate::opts::parse_duration(s).map_err(|_| {
        anyhow::anyhow!("invalid time {s:?}: use RFC 3339, Unix seconds or a duration like 10m")
    })?;
    Ok((Utc::now() - chrono::Duration::nanoseconds(d))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

pub async fn events(host: &str, args: EventsArgs) -> Result<i32> {
    let json = match args.format.as_deref() {
        None => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use json"),
    };
    let mut filters: std::collections::HashMap<String, shoal_api::v1::StringList> =
        Default::default();
    for f in &args.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid filter {f:?}: use key=value"))?;
        if !matches!(
            k,
            "type" | "event" | "container" | "label" | "image" | "volume"
        ) {
            bail!("invalid filter {k:?}: use type, event, container, image, volume or label");
        }
        filters
            .entry(k.to_string())
            .or_default()
            .values
            .push(v.to_string());
    }
    let req = EventsRequest {
        since: args
            .since
            .as_deref()
            .map(time_arg)
            .transpose()?
            .unwrap_or_default(),
        until: args
            .until
            .as_deref()
            .map(time_arg)
            .transpose()?
            .unwrap_or_default(),
        filters,
    };
    let mut client = connect(host).await?;
    let mut stream = client.events(req).await.map_err(err)?.into_inner();
    let mut out = std::io::stdout();
    while let Some(ev) = stream.message().await.map_err(err)? {
        if json {
            // docker's event message: `time` in Unix seconds and `timeNano` in nanoseconds,
            // plus the old top-level status/id/from of container events.
            let nanos = chrono::DateTime::parse_from_rfc3339(&ev.time)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            let mut doc = json!({
                "Type": ev.r#type, "Action": ev.action,
                "Actor": {"ID": ev.id, "Attributes": ev.attributes},
                "scope": "local", "time": nanos / 1_000_000_000, "timeNano": nanos,
            });
            if ev.r#type == "container" {
                doc["status"] = json!(ev.action);
                doc["id"] = json!(ev.id);
                doc["from"] = json!(ev.attributes.get("image").cloned().unwrap_or_default());
            }
            writeln!(out, "{doc}")?;
        } else {
            let mut attrs: Vec<String> = ev
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attrs.sort();
            writeln!(
                out,
                "{} {} {} {} ({})",
                ev.time,
                ev.r#type,
                ev.action,
                ev.id,
                attrs.join(", ")
            )?;
        }
        out.flush()?;
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes as JSON.
    Inspect(VolumeNames),
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove volumes no container uses.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct VolumeCreateArgs {
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    #[arg(long = "label")]
    label: Vec<String>,
    /// Driver options: type=, device=, o=.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: Option<String>,
}

#[derive(Args)]
pub struct VolumeLsArgs {
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct VolumeNames {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct VolumeRmArgs {
    /// Do not fail for volumes that do not exist.
    #[arg(short = 'f', long = "force")]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

pub(crate) fn kv_list(
    flag: &str,
    items: &[String],
) -> Result<std::collections::HashMap<String, String>> {
    items
        .iter()
        .map(|i| {
            let (k, v) = i.split_once('=').unwrap_or((i.as_str(), ""));
            if k.is_empty() {
                bail!("invalid {flag} {i:?}: the key is empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn volume_json(v: &shoal_api::v1::Volume) -> serde_json::Value {
    json!({
        "CreatedAt": v.created, "Driver": v.driver, "Labels": v.labels, "Mountpoint": v.mountpoint,
        "Name": v.name, "Options": v.options, "Scope": "local",
        "UsageData": {"RefCount": v.used_by.len(), "Size": v.size},
    })
}

pub async fn volume(host: &str, cmd: VolumeCommand) -> Result<i32> {
    let mut client = connect(host).await?;
    match cmd {
        VolumeCommand::Create(a) => {
            let v = client
                .create_volume(CreateVolumeRequest {
                    name: a.name.unwrap_or_default(),
                    driver: a.driver,
                    labels: kv_list("--label", &a.label)?,
                    options: kv_list("--opt", &a.opt)?,
                })
                .await
                .map_err(err)?
                .into_inner();
            println!("{}", v.name);
        }
        VolumeCommand::Ls(a) => {
            let vols = client
                .list_volumes(Empty {})
                .await
                .map_err(err)?
                .into_inner()
                .volumes;
            let json_out = match a.format.as_deref() {
                None | Some("table") => false,
                Some("json") | Some("{{json .}}") => true,
                Some(other) => bail!("unsupported --format {other:?}: use table or json"),
            };
            if a.quiet {
                for v in &vols {
                    println!("{}", v.name);
                }
            } else if json_out {
                for v in &vols {
                    println!(
                        "{}",
                        json!({"Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint, "Labels": v.labels, "CreatedAt": v.created})
                    );
                }
            } else {
                let rows: Vec<Vec<String>> = vols
                    .iter()
                    .map(|v| vec![v.driver.clone(), v.name.clone()])
                    .collect();
                print!("{}", table(&["DRIVER", "VOLUME NAME"], &rows));
            }
        }
        VolumeCommand::Inspect(a) => {
            let mut docs = Vec::new();
            let mut failed = false;
            for n in a.names {
                match client.inspect_volume(VolumeRef { name: n }).await {
                    Ok(v) => docs.push(volume_json(&v.into_inner())),
                    Err(s) => {
                        eprintln!("shoal: {}", s.message());
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&docs)?);
            return Ok(i32::from(failed));
        }
        VolumeCommand::Rm(a) => {
            let mut failed = false;
            for n in a.names {
                match client
                    .remove_volume(RemoveVolumeRequest {
                        name: n.clone(),
                        force: a.force,
                    })
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        eprintln!("shoal: {}", s.message());
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        VolumeCommand::Prune(a) => {
            let filters = prune_filters(&a.filter)?;
            if !confirm(
                "This will remove all local volumes not used by at least one container.",
                a.force,
            )? {
                return Ok(0);
            }
            let r = client
                .prune_volumes(PruneRequest { filters })
                .await
                .map_err(err)?
                .into_inner();
            print_deleted("Deleted Volumes", &r.deleted);
            println!("Total reclaimed space: {}", human_size(r.space_reclaimed));
        }
    }
    Ok(0)
}
