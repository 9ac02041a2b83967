//! `shoal swarm …` and `shoal node …`.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::v1::{
    CaRequest, JoinTokenRequest, LeaveRequest, ListNodesRequest, NodeRef, RemoveNodeRequest,
    SwarmInitRequest, SwarmInspectRequest, SwarmJoinRequest, SwarmNode, SwarmUpdateRequest,
    UpdateNodeRequest,
};

use crate::client::{connect_swarm, err};
use crate::format::table;

#[derive(Subcommand)]
pub enum SwarmCommand {
    /// Make this node the first manager of a new swarm.
    Init(InitArgs),
    /// Join a swarm as a worker or a manager (the token decides).
    Join(JoinArgs),
    /// Show or rotate the join tokens.
    JoinToken(JoinTokenArgs),
    /// Show the swarm (JSON).
    Inspect(InspectArgs),
    /// Leave the swarm.
    Leave(LeaveArgs),
    /// Change the swarm's settings.
    Update(UpdateArgs),
    /// Show the swarm's root CA certificate.
    Ca(CaArgs),
}

/// The settings `swarm init` takes and `swarm update` changes.
#[derive(Args)]
pub struct SettingsArgs {
    /// Agents' heartbeat period (default 5s).
    #[arg(long = "dispatcher-heartbeat")]
    dispatcher_heartbeat: Option<String>,
    /// Validity of node certificates issued from then on (default 2160h0m0s, 90 days).
    #[arg(long = "cert-expiry")]
    cert_expiry: Option<String>,
    /// Task history kept per slot (default 5).
    #[arg(long = "task-history-limit")]
    task_history_limit: Option<i64>,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Args)]
pub struct CaArgs {
    /// Replace the root CA: every node gets a certificate from the new root, then the old
    /// one is no longer trusted.
    #[arg(long)]
    rotate: bool,
    /// With --rotate: return at once instead of waiting for every node to renew.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Print only the certificate, no progress.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
pub struct LeaveArgs {
    /// Leave even if this is a manager whose loss costs the swarm its state or its quorum.
    #[arg(short = 'f', long)]
    force: bool,
}

#[derive(Args)]
pub struct InitArgs {
    /// Address other nodes reach this one at: IP[:PORT] (default: this host's address on
    /// its default route).
    #[arg(long = "advertise-addr")]
    advertise_addr: Option<String>,
    /// Where to listen for the swarm: IP[:PORT] (default 0.0.0.0:2377).
    #[arg(long = "listen-addr")]
    listen_addr: Option<String>,
    /// UDP port of the overlay data path (VXLAN, default 4789).
    #[arg(long = "data-path-port")]
    data_path_port: Option<u32>,
    /// Address pools for overlay networks (CIDR, repeatable; default 10.0.0.0/8).
    #[arg(long = "default-addr-pool")]
    default_addr_pool: Vec<String>,
    /// Subnet size of networks from the pools (default 24).
    #[arg(long = "default-addr-pool-mask-length")]
    default_addr_pool_mask_length: Option<u32>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Recover a swarm that lost its quorum from this manager's state.
    #[arg(long = "force-new-cluster")]
    force_new_cluster: bool,
}

#[derive(Args)]
pub struct JoinArgs {
    /// The join token (`shoal swarm join-token worker|manager` on a manager).
    #[arg(long, required = true)]
    token: String,
    /// Address other nodes reach this one at: IP[:PORT] (default: the address this host
    /// uses to reach the manager).
    #[arg(long = "advertise-addr")]
    advertise_addr: Option<String>,
    /// Where to listen for the swarm: IP[:PORT] (default 0.0.0.0:2377).
    #[arg(long = "listen-addr")]
    listen_addr: Option<String>,
    /// active, pause or drain.
    #[arg(long)]
    availability: Option<String>,
    /// A manager: IP[:PORT] (port 2377 if omitted).
    remote: String,
}

#[derive(Args)]
pub struct JoinTokenArgs {
    /// worker or manager.
    role: String,
    /// Only the token.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Replace the token: the old one stops working.
    #[arg(long)]
    rotate: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// json (the only format; the default).
    #[arg(short = 'f', long)]
    format: Option<String>,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the swarm's nodes.
    Ls(NodeLsArgs),
    /// Show nodes (JSON, or --pretty).
    Inspect(NodeInspectArgs),
    /// Change a node's availability or labels.
    Update(NodeUpdateArgs),
    /// Remove nodes from the swarm (their certificates stop working).
    Rm(NodeRmArgs),
    /// List the tasks on nodes (this one by default).
    Ps(NodePsArgs),
    /// Make workers managers.
    Promote(NodeRoleArgs),
    /// Make managers workers (refused when it would break the managers' quorum).
    Demote(NodeRoleArgs),
}

#[derive(Args)]
pub struct NodePsArgs {
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Nodes (id, prefix, hostname or "self").
    nodes: Vec<String>,
}

#[derive(Args)]
pub struct NodeRoleArgs {
    /// Demote even when the remaining managers may not make a quorum.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(Args)]
pub struct NodeRmArgs {
    /// Remove even a node that is not down.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(Args)]
pub struct NodeUpdateArgs {
    /// active, pause or drain.
    #[arg(long)]
    availability: Option<String>,
    /// Add or change a label (key=value, repeatable).
    #[arg(long = "label-add")]
    label_add: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    /// manager or worker.
    #[arg(long)]
    role: Option<String>,
    node: String,
}

#[derive(Args)]
pub struct NodeLsArgs {
    #[arg(short = 'q', long)]
    quiet: bool,
    /// table or json.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct NodeInspectArgs {
    #[arg(long)]
    pretty: bool,
    /// Node ids, id prefixes or hostnames; "self" for this node.
    #[arg(required = true)]
    nodes: Vec<String>,
}

pub async fn swarm(host: &str, c: SwarmCommand) -> Result<i32> {
    let mut client = connect_swarm(host).await?;
    match c {
        SwarmCommand::Init(a) => {
            let req = SwarmInitRequest {
                advertise_addr: a.advertise_addr.unwrap_or_default(),
                listen_addr: a.listen_addr.unwrap_or_default(),
                data_path_port: a.data_path_port.unwrap_or(0),
                default_addr_pool: a.default_addr_pool,
                default_addr_pool_mask_length: a.default_addr_pool_mask_length.unwrap_or(0),
                dispatcher_heartbeat_secs: duration_flag(
                    "--dispatcher-heartbeat",
                    a.settings.dispatcher_heartbeat,
                )?,
                cert_expiry_secs: duration_flag("--cert-expiry", a.settings.cert_expiry)?,
                task_history_limit: a.settings.task_history_limit.unwrap_or(-1),
                force_new_cluster: a.force_new_cluster,
            };
            let r = client.init(req).await.map_err(err)?.into_inner();
            println!(
                "Swarm initialized: current node ({}) is now a manager.\n\nTo add a worker to this swarm, run the following command:\n\n    shoal swarm join --token {} {}\n\nTo add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n",
                r.node_id, r.worker_token, r.advertise_addr
            );
        }
        SwarmCommand::JoinToken(a) => {
            let r = client
                .join_token(JoinTokenRequest {
                    role: a.role.clone(),
                    rotate: a.rotate,
                })
                .await
                .map_err(err)?
                .into_inner();
            if a.quiet {
                println!("{}", r.token);
            } else {
                if a.rotate {
                    println!("Successfully rotated {} join token.\n", a.role);
                }
                println!(
                    "To add a {} to this swarm, run the following command:\n\n    shoal swarm join --token {} {}\n",
                    a.role, r.token, r.manager_addr
                );
            }
        }
        SwarmCommand::Join(a) => {
            let r = client
                .join(SwarmJoinRequest {
                    token: a.token,
                    remote_addr: a.remote,
                    advertise_addr: a.advertise_addr.unwrap_or_default(),
                    listen_addr: a.listen_addr.unwrap_or_default(),
                    availability: a.availability.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner();
            println!("This node joined a swarm as a {}.", r.role);
        }
        SwarmCommand::Update(UpdateArgs { settings: a }) => {
            if a.dispatcher_heartbeat.is_none()
                && a.cert_expiry.is_none()
                && a.task_history_limit.is_none()
            {
                bail!("nothing to update: give --dispatcher-heartbeat, --cert-expiry or --task-history-limit");
            }
            if a.task_history_limit.is_some_and(|n| n < 0) {
                bail!("--task-history-limit must be 0 or more");
            }
            client
                .update(SwarmUpdateRequest {
                    dispatcher_heartbeat_secs: duration_flag(
                        "--dispatcher-heartbeat",
                        a.dispatcher_heartbeat,
                    )?,
                    cert_expiry_secs: duration_flag("--cert-expiry", a.cert_expiry)?,
                    task_history_limit: a.task_history_limit.unwrap_or(-1),
                })
                .await
                .map_err(err)?;
            println!("Swarm updated.");
        }
        SwarmCommand::Ca(a) => {
            let mut r = client
                .ca(CaRequest { rotate: a.rotate })
                .await
                .map_err(err)?
                .into_inner();
            if a.rotate && !a.detach {
                // Wait for every node to renew, as docker does.
                let mut shown = None;
                while r.rotating {
                    if !a.quiet && shown != Some(r.nodes_rotated) {
                        eprintln!(
                            "rotated TLS certificates:  {}/{} nodes",
                            r.nodes_rotated, r.nodes_total
                        );
                        shown = Some(r.nodes_rotated);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    r = client
                        .ca(CaRequest { rotate: false })
                        .await
                        .map_err(err)?
                        .into_inner();
                }
                if !a.quiet {
                    eprintln!(
                        "rotated TLS certificates:  {}/{} nodes\nrotated CA certificates:   done",
                        r.nodes_total, r.nodes_total
                    );
                }
            }
            print!("{}", r.cert_pem);
        }
        SwarmCommand::Leave(a) => {
            client
                .leave(LeaveRequest { force: a.force })
                .await
                .map_err(err)?;
            println!("Node left the swarm.");
        }
        SwarmCommand::Inspect(a) => {
            crate::format::json_only(a.format.as_deref())?;
            let s = client
                .inspect(SwarmInspectRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if s.local_node_state != "active" {
                bail!("this node is not a swarm manager: use \"shoal swarm init\" or \"shoal swarm join\" to connect it to a swarm");
            }
            let v = json!([{
                "ID": s.cluster_id,
                "CreatedAt": s.created_at,
                "UpdatedAt": s.updated_at,
                "Spec": {
                    "Name": "default",
                    "Orchestration": { "TaskHistoryRetentionLimit": s.task_history_limit },
                    "Dispatcher": { "HeartbeatPeriod": s.heartbeat_period_secs * 1_000_000_000 },
                    "CAConfig": { "NodeCertExpiry": s.cert_expiry_secs * 1_000_000_000 },
                },
                "TLSInfo": { "TrustRoot": "", "CertFingerprint": s.ca_cert_fingerprint },
                "DefaultAddrPool": s.default_addr_pool,
                "SubnetSize": s.subnet_size,
                "DataPathPort": s.data_path_port,
                "Raft": {
                    "State": s.raft_state,
                    "Term": s.raft_term,
                    "AppliedIndex": s.raft_applied_index,
                    "Leader": s.leader_node_id,
                    "Managers": s.manager_addrs,
                },
            }]);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(0)
}

pub async fn node(host: &str, c: NodeCommand) -> Result<i32> {
    let mut client = connect_swarm(host).await?;
    let cmd_role = match &c {
        NodeCommand::Promote(_) => Some("manager"),
        NodeCommand::Demote(_) => Some("worker"),
        _ => None,
    };
    match c {
        NodeCommand::Ls(a) => {
            let json = match a.format.as_deref() {
                None | Some("table") => false,
                Some("json") | Some("{{json .}}") => true,
                Some(other) => bail!("unsupported --format {other:?}: use table or json"),
            };
            let r = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if a.quiet {
                for n in &r.nodes {
                    println!("{}", n.id);
                }
            } else if json {
                for n in &r.nodes {
                    println!("{}", node_json(n));
                }
            } else {
                let rows: Vec<Vec<String>> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        let me = if n.id == r.self_id { " *" } else { "" };
                        vec![
                            format!("{}{me}", n.id),
                            n.hostname.clone(),
                            title(&n.state),
                            title(&n.availability),
                            n.manager_status.clone(),
                            n.engine_version.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "HOSTNAME",
                            "STATUS",
                            "AVAILABILITY",
                            "MANAGER STATUS",
                            "ENGINE VERSION"
                        ],
                        &rows
                    )
                );
            }
        }
        NodeCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.nodes {
                match client
                    .remove_node(RemoveNodeRequest {
                        id: n.clone(),
                        force: a.force,
                    })
                    .await
                {
                    Ok(r) => println!("{}", r.into_inner().id),
                    Err(s) => {
                        eprintln!("shoal: {}", err(s));
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(1);
            }
        }
        NodeCommand::Update(a) => {
            let mut label_add = std::collections::HashMap::new();
            for l in &a.label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    bail!("invalid --label-add {l:?}: use key=value");
                }
                label_add.insert(k.to_string(), v.to_string());
            }
            if a.availability.is_none()
                && a.label_add.is_empty()
                && a.label_rm.is_empty()
                && a.role.is_none()
            {
                bail!("nothing to update: give --availability, --label-add, --label-rm or --role");
            }
            let n = client
                .update_node(UpdateNodeRequest {
                    id: a.node.clone(),
                    availability: a.availability.unwrap_or_default(),
                    label_add,
                    label_rm: a.label_rm,
                    role: a.role.unwrap_or_default(),
                    force: false,
                })
                .await
                .map_err(err)?
                .into_inner();
            println!("{}", n.id);
        }
        NodeCommand::Ps(a) => {
            let mut services = crate::client::connect_services(host).await?;
            let nodes = if a.nodes.is_empty() {
                vec!["self".to_string()]
            } else {
                a.nodes.clone()
            };
            let mut all = shoal_api::v1::ListTasksResponse::default();
            for n in nodes {
                let r = services
                    .list_tasks(shoal_api::v1::ListTasksRequest {
                        services: Vec::new(),
                        node: n,
                        desired_state: String::new(),
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                all.tasks.extend(r.tasks);
                all.node_names.extend(r.node_names);
                all.service_names.extend(r.service_names);
            }
            print!("{}", super::service::task_table(&all, a.no_trunc));
        }
        NodeCommand::Promote(a) | NodeCommand::Demote(a) => {
            let (role, done) = if matches!(cmd_role, Some("manager")) {
                ("manager", "promoted to a manager in the swarm")
            } else {
                ("worker", "demoted in the swarm")
            };
            let mut failed = false;
            for n in &a.nodes {
                match client
                    .update_node(UpdateNodeRequest {
                        id: n.clone(),
                        role: role.into(),
                        force: a.force,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) if role == "manager" => println!("Node {n} {done}."),
                    Ok(_) => println!("Manager {n} {done}."),
                    Err(s) => {
                        eprintln!("shoal: {}", err(s));
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(1);
            }
        }
        NodeCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.nodes {
                let node = client
                    .inspect_node(NodeRef { id: n.clone() })
                    .await
                    .map_err(err)?
                    .into_inner();
                out.push(node);
            }
            if a.pretty {
                for n in &out {
                    println!(
                        "ID:\t\t\t{}\nHostname:\t\t{}\nStatus:\n State:\t\t\t{}\n Availability:\t\t{}\n Address:\t\t{}\n",
                        n.id,
                        n.hostname,
                        title(&n.state),
                        title(&n.availability),
                        n.addr
                    );
                    if !n.manager_status.is_empty() {
                        println!(
                            "Manager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n",
                            n.addr, n.manager_status
                        );
                    }
                    println!(
                        "Platform:\n Operating System:\t{}\n Architecture:\t\t{}\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{:.1}GiB\nEngine Version:\t\t{}\n",
                        n.os,
                        n.arch,
                        n.nano_cpus / 1_000_000_000,
                        n.memory_bytes as f64 / (1u64 << 30) as f64,
                        n.engine_version
                    );
                }
            } else {
                let v: Vec<serde_json::Value> = out.iter().map(node_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
    }
    Ok(0)
}

fn node_json(n: &SwarmNode) -> serde_json::Value {
    let mut v = json!({
        "ID": n.id,
        "Version": { "Index": n.version },
        "CreatedAt": n.created_at,
        "UpdatedAt": n.updated_at,
        "Spec": {
            "Labels": n.labels,
            "Role": n.role,
            "Availability": n.availability,
        },
        "Description": {
            "Hostname": n.hostname,
            "Platform": { "Architecture": n.arch, "OS": n.os },
            "Resources": { "NanoCPUs": n.nano_cpus, "MemoryBytes": n.memory_bytes },
            "Engine": { "EngineVersion": n.engine_version },
        },
        "Status": { "State": n.state, "Message": n.message, "Addr": n.addr },
    });
    if !n.manager_status.is_empty() {
        v["ManagerStatus"] = json!({
            "Leader": n.manager_status == "Leader",
            "Reachability": if n.manager_status == "Unreachable" { "unreachable" } else { "reachable" },
            "Addr": n.addr,
        });
    }
    v
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A Go-style duration flag (`5s`, `1m30s`, `2160h0m0s`) in whole seconds; 0 when absent.
fn duration_flag(flag: &str, v: Option<String>) -> Result<u64> {
    let Some(s) = v else { return Ok(0) };
    let d = parse_duration(&s).ok_or_else(|| {
        anyhow::anyhow!("invalid {flag} {s:?}: use a duration such as 5s, 1m30s or 2160h")
    })?;
    if d < Duration::from_secs(1) {
        bail!("{flag} {s:?} is too short: use at least 1s");
    }
    Ok(d.as_secs())
}

fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(n * secs);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("2160h0m0s"),
            Some(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        for bad in ["", "5", "s", "5x", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
