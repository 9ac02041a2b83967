//! `shoal network …` and `shoal port`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shoal_api::v1::{
    ConnectNetworkRequest, ContainerRef, CreateNetworkRequest, DisconnectNetworkRequest, Empty,
    NetworkDetail, NetworkRef, PortBinding, PruneRequest,
};

use super::manage::{confirm, prune_filters, PruneArgs};
use super::system::kv_list;
use super::ListArgs as LsArgs;
use crate::client::{connect, err};
use crate::format::{short_id, table};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks, with their containers, as JSON.
    Inspect(Names),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(Names),
    /// Remove networks no running container uses.
    Prune(PruneArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Driver (bridge).
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form (default: a free one from the address pools).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address (default: the subnet's first address).
    #[arg(long)]
    gateway: Option<String>,
    /// Where container addresses are allocated from (a part of the subnet).
    #[arg(long = "ip-range")]
    ip_range: Option<String>,
    /// No traffic in or out of the network, only between its containers.
    #[arg(long)]
    internal: bool,
    #[arg(long = "label")]
    label: Vec<String>,
    /// Driver options (com.docker.network.bridge.name=NAME).
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: String,
}

#[derive(Args)]
pub struct Names {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// IPv4 address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// Another name for the container on this network.
    #[arg(long = "alias")]
    alias: Vec<String>,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// Succeed even if the container is not connected.
    #[arg(short = 'f', long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// PORT[/PROTO]: only that port's bindings.
    port: Option<String>,
}

pub async fn dispatch(host: &str, cmd: NetworkCommand) -> Result<i32> {
    let mut client = connect(host).await?;
    match cmd {
        NetworkCommand::Create(a) => {
            let n = client
                .create_network(CreateNetworkRequest {
                    name: a.name,
                    driver: a.driver,
                    subnet: a.subnet.unwrap_or_default(),
                    gateway: a.gateway.unwrap_or_default(),
                    ip_range: a.ip_range.unwrap_or_default(),
                    internal: a.internal,
                    labels: kv_list("--label", &a.label)?,
                    options: kv_list("--opt", &a.opt)?,
                })
                .await
                .map_err(err)?
                .into_inner();
            println!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let nets = client
                .list_networks(Empty {})
                .await
                .map_err(err)?
                .into_inner()
                .networks;
            let id = |i: &str| {
                if a.no_trunc {
                    i.to_string()
                } else {
                    short_id(i)
                }
            };
            match a.format.as_deref() {
                _ if a.quiet => {
                    for n in &nets {
                        println!("{}", id(&n.id));
                    }
                }
                None | Some("table") => {
                    let rows: Vec<Vec<String>> = nets
                        .iter()
                        .map(|n| vec![id(&n.id), n.name.clone(), n.driver.clone(), "local".into()])
                        .collect();
                    print!(
                        "{}",
                        table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
                    );
                }
                Some("json") | Some("{{json .}}") => {
                    for n in &nets {
                        println!(
                            "{}",
                            json!({"ID": n.id, "Name": n.name, "Driver": n.driver, "Scope": "local",
                                   "Internal": n.internal, "Labels": n.labels, "CreatedAt": n.created})
                        );
                    }
                }
                Some(other) => bail!("unsupported --format {other:?}: use table or json"),
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut docs = Vec::new();
            let mut failed = false;
            for n in a.names {
                match client.inspect_network(NetworkRef { name: n }).await {
                    Ok(d) => docs.push(network_json(&d.into_inner())),
                    Err(s) => {
                        eprintln!("shoal: {}", s.message());
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&docs)?);
            return Ok(i32::from(failed));
        }
        NetworkCommand::Rm(a) => {
            let mut failed = false;
            for n in a.names {
                match client.remove_network(NetworkRef { name: n.clone() }).await {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        eprintln!("shoal: {}", s.message());
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        NetworkCommand::Prune(a) => {
            let filters = prune_filters(&a.filter)?;
            if !confirm(
                "This will remove all custom networks not used by at least one running container.",
                a.force,
            )? {
                return Ok(0);
            }
            let r = client
                .prune_networks(PruneRequest { filters })
                .await
                .map_err(err)?
                .into_inner();
            if !r.deleted.is_empty() {
                println!("Deleted Networks:");
                for n in &r.deleted {
                    println!("{n}");
                }
            }
        }
        NetworkCommand::Connect(a) => {
            client
                .connect_network(ConnectNetworkRequest {
                    network: a.network,
                    container: a.container,
                    ip: a.ip.unwrap_or_default(),
                    aliases: a.alias,
                })
                .await
                .map_err(err)?;
        }
        NetworkCommand::Disconnect(a) => {
            client
                .disconnect_network(DisconnectNetworkRequest {
                    network: a.network,
                    container: a.container,
                    force: a.force,
                })
                .await
                .map_err(err)?;
        }
    }
    Ok(0)
}

fn network_json(d: &NetworkDetail) -> Value {
    let n = d.network.clone().unwrap_or_default();
    let containers: serde_json::Map<String, Value> = d
        .containers
        .iter()
        .map(|c| {
            (
                c.container_id.clone(),
                json!({
                    "Name": c.name,
                    "MacAddress": c.mac_address,
                    "IPv4Address": if c.ip_address.is_empty() { String::new() } else { format!("{}/{}", c.ip_address, c.prefix_len) },
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let mut ipam = serde_json::Map::new();
    if !n.subnet.is_empty() {
        ipam.insert("Subnet".into(), json!(n.subnet));
        ipam.insert("Gateway".into(), json!(n.gateway));
        if !n.ip_range.is_empty() {
            ipam.insert("IPRange".into(), json!(n.ip_range));
        }
    }
    let mut options = n.options.clone();
    if n.driver == "bridge" {
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": if ipam.is_empty() { json!([]) } else { json!([ipam]) },
        },
        "Internal": n.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

/// docker's rendering of a binding: `0.0.0.0:8080`.
fn host_side(b: &PortBinding) -> String {
    let ip = if b.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        b.host_ip.as_str()
    };
    format!("{ip}:{}", b.host_port)
}

/// The PORTS column of `ps`: `0.0.0.0:8080->80/tcp, 53/udp`.
pub fn ports_column(ports: &[PortBinding]) -> String {
    ports
        .iter()
        .map(|b| format!("{}->{}/{}", host_side(b), b.container_port, b.protocol))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn port(host: &str, a: PortArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    let c = client
        .inspect_container(ContainerRef {
            id: a.container.clone(),
        })
        .await
        .map_err(err)?
        .into_inner();
    match a.port {
        None => {
            for b in &c.ports {
                println!("{}/{} -> {}", b.container_port, b.protocol, host_side(b));
            }
        }
        Some(p) => {
            let (num, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            let Ok(num) = num.parse::<u32>() else {
                bail!("invalid port {p:?}: use PORT[/tcp|udp]");
            };
            let found: Vec<&PortBinding> = c
                .ports
                .iter()
                .filter(|b| b.container_port == num && b.protocol == proto)
                .collect();
            if found.is_empty() {
                bail!(
                    "no public port '{num}/{proto}' published for {}",
                    a.container
                );
            }
            for b in found {
                println!("{}", host_side(b));
            }
        }
    }
    Ok(0)
}
