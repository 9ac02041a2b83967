//! One module per group of commands.

pub mod container;
pub mod image;

use anyhow::Result;
use shoal_api::v1::VersionRequest;

use crate::client::{connect, err};

pub async fn version(host: &str) -> Result<i32> {
    println!(
        "Client:\n Version:     {}\n OS/Arch:     {}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let mut c = connect(host).await?;
    let v = c
        .version(VersionRequest {})
        .await
        .map_err(err)?
        .into_inner();
    println!(
        "\nServer:\n Version:     {}\n API version: {}\n OS/Arch:     {}/{}\n Cgroup:      v{}\n Data root:   {}",
        v.version, v.api_version, v.os, v.arch, v.cgroup_version, v.data_root
    );
    Ok(0)
}
