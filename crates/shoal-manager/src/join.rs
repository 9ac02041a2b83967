//! The joining side: get a certificate from a manager the join token vouches for, and (for a
//! new manager) ask to become a voter.
//!
//! The node has no certificate and does not know the swarm's root yet. It accepts the
//! manager's TLS certificate only if the chain the manager presents contains a root whose
//! SHA-256 is the one in the token, and the manager's certificate verifies under that root
//! for the name `swarm-manager`. Nothing is trusted before that check.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{IssueNodeCertificateRequest, JoinRaftRequest};
use shoal_store::MANAGER_NAME;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::ca::{fingerprint, pem_der};
use crate::error::{Error, Result};
use crate::objects::NodeRole;
use crate::{JoinToken, NodeKey};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What a joining node tells the manager about itself.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub token: String,
    /// The manager to ask (ip:port).
    pub manager_addr: String,
    pub advertise_addr: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub engine_version: String,
    pub availability: String,
}

/// The new node's identity.
#[derive(Debug, Clone)]
pub struct Joined {
    pub node_id: String,
    pub raft_id: u64,
    pub role: NodeRole,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub cluster_id: String,
    pub manager_addrs: Vec<String>,
}

/// Ask the manager at `req.manager_addr` for a certificate.
pub async fn request_certificate(req: &Request) -> Result<Joined> {
    let token: JoinToken = req.token.parse()?;
    let key = NodeKey::generate()?;
    let verifier = Arc::new(PinnedRoot::new(token.fingerprint));
    let endpoint = endpoint(&req.manager_addr)?
        .tls_config_with_verifier(ClientTlsConfig::new().domain_name(MANAGER_NAME), verifier)
        .map_err(|e| Error::Other(format!("TLS: {e}")))?;
    let channel = connect(endpoint, &req.manager_addr).await?;
    let r = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: req.token.clone(),
            csr_pem: key.csr_pem.clone(),
            advertise_addr: req.advertise_addr.clone(),
            hostname: req.hostname.clone(),
            os: req.os.clone(),
            arch: req.arch.clone(),
            nano_cpus: req.nano_cpus,
            memory_bytes: req.memory_bytes,
            engine_version: req.engine_version.clone(),
            availability: req.availability.clone(),
        })
        .await
        .map_err(|s| status(s, &req.manager_addr))?
        .into_inner();
    // The root it sends must be the one the token pins (the handshake already proved the
    // manager holds a certificate under it).
    if fingerprint(&pem_der(&r.ca_pem, "CERTIFICATE")?) != token.fingerprint {
        return Err(Error::Other(
            "the manager sent a root certificate other than the one the join token names".into(),
        ));
    }
    let role = match r.role.as_str() {
        "manager" => NodeRole::Manager,
        "worker" => NodeRole::Worker,
        other => {
            return Err(Error::Other(format!(
                "the manager gave an unknown role {other:?}"
            )))
        }
    };
    Ok(Joined {
        node_id: r.node_id,
        raft_id: r.raft_id,
        role,
        cert_pem: r.cert_pem,
        key_pem: key.key_pem,
        ca_pem: r.ca_pem,
        cluster_id: r.cluster_id,
        manager_addrs: r.manager_addrs,
    })
}

/// A node CA client for the manager at `addr`, as the holder of `cert_pem`.
pub async fn client(
    addr: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<NodeCaClient<Channel>> {
    Ok(NodeCaClient::new(
        node_ca_channel(addr, ca_pem, cert_pem, key_pem).await?,
    ))
}

/// A mutual-TLS connection to the manager at `addr`, as the holder of `cert_pem`, for any of
/// the swarm port's services. Calls on it have no deadline of their own (a blob transfer
/// takes as long as it takes): the caller sets one where it needs one.
pub async fn channel(addr: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Channel> {
    // A manager that vanishes without closing the connection (power, link) is noticed by
    // the keepalives, not after the kernel's TCP timeout.
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .tcp_keepalive(Some(Duration::from_secs(30)))
        })
        .map_err(|e| Error::Other(format!("manager address {addr:?}: {e}")))?;
    mutual_tls(endpoint, addr, ca_pem, cert_pem, key_pem).await
}

/// [`client`]'s connection, with the node CA calls' deadline.
async fn node_ca_channel(
    addr: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Channel> {
    mutual_tls(endpoint(addr)?, addr, ca_pem, cert_pem, key_pem).await
}

async fn mutual_tls(
    endpoint: Endpoint,
    addr: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Channel> {
    let endpoint = endpoint
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .identity(Identity::from_pem(cert_pem, key_pem))
                .domain_name(MANAGER_NAME),
        )
        .map_err(|e| Error::Other(format!("TLS: {e}")))?;
    connect(endpoint, addr).await
}

/// A new manager (already serving its store at `my_addr`) asks the manager at `addr` to
/// make it a voter.
pub async fn join_raft(addr: &str, me: &Joined, my_addr: &str) -> Result<()> {
    join_raft_as(
        addr,
        (&me.ca_pem, &me.cert_pem, &me.key_pem),
        me.raft_id,
        my_addr,
    )
    .await
}

/// [`join_raft`] with the node's credentials (roots, certificate, key): a promoted worker.
pub async fn join_raft_as(
    addr: &str,
    (ca_pem, cert_pem, key_pem): (&str, &str, &str),
    raft_id: u64,
    my_addr: &str,
) -> Result<()> {
    client(addr, ca_pem, cert_pem, key_pem)
        .await?
        .join_raft(JoinRaftRequest {
            raft_id,
            addr: my_addr.to_string(),
        })
        .await
        .map_err(|s| status(s, addr))?;
    Ok(())
}

fn endpoint(addr: &str) -> Result<Endpoint> {
    Endpoint::from_shared(format!("https://{addr}"))
        .map(|e| e.connect_timeout(CONNECT_TIMEOUT).timeout(CALL_TIMEOUT))
        .map_err(|e| Error::Other(format!("manager address {addr:?}: {e}")))
}

async fn connect(endpoint: Endpoint, addr: &str) -> Result<Channel> {
    endpoint.connect().await.map_err(|e| {
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        Error::Other(format!("cannot reach the manager at {addr}: {cause}"))
    })
}

fn status(s: tonic::Status, addr: &str) -> Error {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
            Error::InvalidToken(s.message().to_string())
        }
        _ => Error::Other(format!("the manager at {addr}: {}", s.message())),
    }
}

/// Accepts a server whose chain contains the pinned root and whose certificate verifies
/// under it.
#[derive(Debug)]
struct PinnedRoot {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedRoot {
    fn new(fingerprint: [u8; 32]) -> PinnedRoot {
        PinnedRoot {
            fingerprint,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the manager is not part of the swarm the join token names (CA fingerprint mismatch)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(root.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the swarm's root: {e}")))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
