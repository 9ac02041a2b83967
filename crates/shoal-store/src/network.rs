//! Raft between managers over gRPC (`shoal.v1.RaftTransport`): openraft's messages travel as
//! JSON in a bytes field, and the handler's whole `Result` comes back the same way, so a
//! remote Raft error arrives as the error openraft expects.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_api::v1::raft_transport_client::RaftTransportClient;
use shoal_api::v1::RaftPayload;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::types::{NodeId, TypeConfig};

/// How long a connection attempt to another manager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The name every manager's certificate carries (besides its node id): a client checks the
/// server it reached is a manager of its cluster by verifying this name against the
/// cluster's CA.
pub const MANAGER_NAME: &str = "swarm-manager";

/// Mutual TLS between managers: the cluster's root, this node's certificate and key, and the
/// rule deciding which verified peers may call (managers of this cluster, not removed).
pub struct Security {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Called with the DER of a caller's (already verified) certificate.
    #[allow(clippy::type_complexity)]
    pub authorize: Box<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Security").finish_non_exhaustive()
    }
}

/// Makes a client per peer; connections are opened lazily and re-opened by tonic.
#[derive(Clone, Default)]
pub struct Network {
    pub(crate) security: Option<Arc<Security>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            security: self.security.clone(),
            client: None,
        }
    }
}

/// A client of one peer's transport.
pub struct Peer {
    target: NodeId,
    addr: String,
    security: Option<Arc<Security>>,
    client: Option<RaftTransportClient<Channel>>,
}

/// A client for `addr`, connecting on first use; with mutual TLS when `security` is set.
pub(crate) fn client_for(
    addr: &str,
    security: Option<&Security>,
) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
    let scheme = if security.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(sec) = security {
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&sec.ca_pem))
                .identity(Identity::from_pem(&sec.cert_pem, &sec.key_pem))
                .domain_name(MANAGER_NAME),
        )?;
    }
    Ok(RaftTransportClient::new(endpoint.connect_lazy()))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<RaftPayload, tonic::Status> {
    serde_json::to_vec(v)
        .map(|data| RaftPayload { data })
        .map_err(|e| tonic::Status::internal(format!("encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(p: &RaftPayload) -> Result<T, tonic::Status> {
    serde_json::from_slice(&p.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("decode: {e}")))
}

#[derive(Clone, Copy)]
enum Call {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        call: Call,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.client.is_none() {
            let c = client_for(&self.addr, self.security.as_deref())
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.client = Some(c);
        }
        let client = self.client.as_mut().expect("client just set");
        let payload = encode(req).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(payload);
        request.set_timeout(ttl);
        let fut = async {
            match call {
                Call::AppendEntries => client.append_entries(request).await,
                Call::Vote => client.vote(request).await,
                Call::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: match call {
                        Call::AppendEntries => RPCTypes::AppendEntries,
                        Call::Vote => RPCTypes::Vote,
                        Call::InstallSnapshot => RPCTypes::InstallSnapshot,
                    },
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                        RPCError::Unreachable(Unreachable::new(&status))
                    }
                    _ => RPCError::Network(NetworkError::new(&status)),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, E> =
            decode(&reply).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Call::AppendEntries, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Call::Vote, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Call::InstallSnapshot, &rpc, &option).await
    }
}
