//! Connecting to shoald over its unix socket, and turning gRPC errors into CLI errors.

use anyhow::{anyhow, Result};
use hyper_util::rt::TokioIo;
use shoal_api::v1::engine_client::EngineClient;
use shoal_api::v1::services_client::ServicesClient;
use shoal_api::v1::swarm_client::SwarmClient;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

pub type Client = EngineClient<Channel>;

pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoald.sock";

/// Socket path from `-H unix:///path` or a bare path.
pub fn socket_path(host: &str) -> Result<String> {
    if let Some(p) = host.strip_prefix("unix://") {
        return Ok(p.to_string());
    }
    if host.starts_with('/') {
        return Ok(host.to_string());
    }
    Err(anyhow!(
        "unsupported host {host:?}: use unix:///path/to/shoald.sock"
    ))
}

pub async fn connect(host: &str) -> Result<Client> {
    Ok(EngineClient::new(channel(host).await?).max_decoding_message_size(16 << 20))
}

/// The swarm API of the same daemon.
pub async fn connect_swarm(host: &str) -> Result<SwarmClient<Channel>> {
    Ok(SwarmClient::new(channel(host).await?))
}

pub async fn connect_services(host: &str) -> Result<ServicesClient<Channel>> {
    Ok(ServicesClient::new(channel(host).await?).max_decoding_message_size(64 << 20))
}

async fn channel(host: &str) -> Result<Channel> {
    let path = socket_path(host)?;
    let p = path.clone();
    let channel = Endpoint::try_from("http://shoald")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
            anyhow!("cannot connect to shoald at {path}: {cause}. Is shoald running? (start it, or point -H/SHOAL_HOST at its socket)")
        })?;
    Ok(channel)
}

/// A gRPC status as a one-line error.
pub fn err(s: tonic::Status) -> anyhow::Error {
    let msg = s.message();
    if msg.is_empty() {
        anyhow!("{}", s.code())
    } else {
        anyhow!("{msg}")
    }
}

/// The exit code docker uses when a container's program could not start (126/127), if the
/// daemon reported one.
pub fn start_exit_code(s: &tonic::Status) -> Option<i32> {
    if s.code() != tonic::Code::Aborted {
        return None;
    }
    std::str::from_utf8(s.details()).ok()?.parse().ok()
}
