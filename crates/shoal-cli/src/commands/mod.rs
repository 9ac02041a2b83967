//! One module per group of commands.

pub mod container;
pub mod image;
pub mod manage;
pub mod network;
pub mod service;
pub mod swarm;

pub mod system;

use anyhow::Result;
use shoal_api::v1::VersionRequest;

use crate::client::{connect, err};

/// The flags of `image ls` and `network ls`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Only ids.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Do not truncate ids.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// "table" (default) or "json" (one object per line).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Args)]
pub struct VersionArgs {
    /// "json" for one JSON document.
    #[arg(short = 'f', long)]
    format: Option<String>,
}

pub async fn version(host: &str, args: VersionArgs) -> Result<i32> {
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => anyhow::bail!("unsupported --format {other:?}: use table or json"),
    };
    let (version, os, arch) = (
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    if !json {
        // Like docker, the client part prints even when the daemon cannot be reached.
        println!("Client:\n Version:     {version}\n OS/Arch:     {os}/{arch}");
    }
    let v = connect(host)
        .await?
        .version(VersionRequest {})
        .await
        .map_err(err)?
        .into_inner();
    if json {
        let doc = serde_json::json!({
            "Client": { "Version": version, "Os": os, "Arch": arch },
            "Server": {
                "Version": v.version, "ApiVersion": v.api_version, "Os": v.os, "Arch": v.arch,
                "CgroupVersion": v.cgroup_version, "DataRoot": v.data_root,
            }
        });
        println!("{doc}");
    } else {
        println!(
            "\nServer:\n Version:     {}\n API version: {}\n OS/Arch:     {}/{}\n Cgroup:      v{}\n Data root:   {}",
            v.version, v.api_version, v.os, v.arch, v.cgroup_version, v.data_root
        );
    }
    Ok(0)
}

/// `shoal info`: the daemon, its containers and images, and the node's part in a swarm.
pub async fn info(host: &str) -> Result<i32> {
    use shoal_api::v1::{ListContainersRequest, ListImagesRequest, SwarmInspectRequest};
    let mut engine = connect(host).await?;
    let v = engine
        .version(VersionRequest {})
        .await
        .map_err(err)?
        .into_inner();
    let containers = engine
        .list_containers(ListContainersRequest {
            all: true,
            ..Default::default()
        })
        .await
        .map_err(err)?
        .into_inner()
        .containers;
    let count = |s: shoal_api::ContainerStatus| {
        containers
            .iter()
            .filter(|c| c.state.as_ref().map(|st| st.status()) == Some(s))
            .count()
    };
    let running = count(shoal_api::ContainerStatus::Running);
    let paused = count(shoal_api::ContainerStatus::Paused);
    let images = engine
        .list_images(ListImagesRequest {})
        .await
        .map_err(err)?
        .into_inner()
        .images
        .len();
    println!("Server:");
    println!(" Containers: {}", containers.len());
    println!("  Running: {running}");
    println!("  Paused: {paused}");
    println!("  Stopped: {}", containers.len() - running - paused);
    println!(" Images: {images}");
    println!(" Server Version: {}", v.version);
    println!(" Storage Driver: overlay");
    println!(" Cgroup Version: {}", v.cgroup_version);
    println!(" Docker Root Dir: {}", v.data_root);
    let s = match crate::client::connect_swarm(host)
        .await?
        .inspect(SwarmInspectRequest {})
        .await
    {
        Ok(s) => s.into_inner(),
        // Like docker: the rest of the report stands; the swarm part says what is wrong
        // (a manager without quorum, for instance).
        Err(e) => {
            println!(" Swarm: error\n  Error: {}", err(e));
            return Ok(0);
        }
    };
    println!(" Swarm: {}", s.local_node_state);
    if s.local_node_state == "active" {
        println!("  NodeID: {}", s.node_id);
        println!("  Is Manager: {}", s.control_available);
        println!("  ClusterID: {}", s.cluster_id);
        println!("  Managers: {}", s.managers);
        println!("  Nodes: {}", s.nodes);
        println!("  Raft:");
        println!("   State: {}", s.raft_state);
        println!("   Leader: {}", s.leader_node_id);
        println!("   Term: {}", s.raft_term);
        println!("   Applied Index: {}", s.raft_applied_index);
        println!("  Node Address: {}", s.node_addr);
        println!("  Manager Addresses:");
        for a in &s.manager_addrs {
            println!("   {a}");
        }
    }
    Ok(0)
}
