//! One module per group of commands.

pub mod container;
pub mod image;
pub mod manage;
pub mod network;

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
