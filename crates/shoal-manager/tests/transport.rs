//! The managers' Raft transport over mutual TLS with the cluster's certificates: managers
//! replicate; a worker's certificate, a foreign swarm's and no certificate are refused.

use std::time::Duration;

use shoal_api::v1::raft_transport_client::RaftTransportClient;
use shoal_api::v1::RaftPayload;
use shoal_manager::objects::RemovedNode;
use shoal_manager::security::managers_only_unless_removed;
use shoal_manager::{NodeKey, Role, RootCa};
use shoal_store::table::create;
use shoal_store::{Object, Replica, ReplicaConfig, MANAGER_NAME};
use tempfile::TempDir;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const CLUSTER: &str = "c1";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Note {
    id: String,
}

impl Object for Note {
    const TABLE: &'static str = "notes";
    fn id(&self) -> &str {
        &self.id
    }
}

/// A certificate and key for `node` in `role`, from `ca`.
fn credentials(ca: &RootCa, cluster: &str, node: &str, role: Role) -> (String, String) {
    let key = NodeKey::generate().unwrap();
    let cert = ca
        .issue(&key.csr_pem, cluster, node, role, Duration::from_secs(3600))
        .unwrap();
    (cert, key.key_pem)
}

async fn manager(ca: &RootCa, id: u64) -> (Replica, String, TempDir) {
    let (cert, key) = credentials(ca, CLUSTER, &format!("m{id}"), Role::Manager);
    let dir = TempDir::new().unwrap();
    let removed = std::sync::Arc::new(std::sync::OnceLock::new());
    let cfg = ReplicaConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        security: Some(managers_only_unless_removed(
            ca.cert_pem(),
            &cert,
            &key,
            CLUSTER,
            removed.clone(),
        )),
        ..Default::default()
    };
    let replica = Replica::open(id, dir.path(), &cfg).await.unwrap();
    removed.set(replica.state().clone()).ok();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    replica.serve(listener).unwrap();
    (replica, addr, dir)
}

/// Call `Vote` on `addr` as the holder of `cert`/`key` (or of nothing).
async fn call_as(ca_pem: &str, addr: &str, creds: Option<(String, String)>) -> tonic::Status {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(MANAGER_NAME);
    if let Some((cert, key)) = creds {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut client = RaftTransportClient::new(channel);
    client
        .vote(RaftPayload {
            data: b"{}".to_vec(),
        })
        .await
        .expect_err("must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managers_replicate_over_mutual_tls_and_nobody_else_gets_in() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let (m1, a1, _d1) = manager(&ca, 1).await;
    let (m2, a2, _d2) = manager(&ca, 2).await;
    let (m3, a3, _d3) = manager(&ca, 3).await;
    m1.bootstrap(&a1).await.unwrap();
    m1.raft()
        .wait(Some(Duration::from_secs(5)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    m1.add_voter(2, &a2).await.unwrap();
    m1.add_voter(3, &a3).await.unwrap();
    // A write through a follower, forwarded over TLS, read back linearizably on another.
    m2.write(vec![create(&Note { id: "n1".into() }).unwrap()])
        .await
        .unwrap();
    m3.read_barrier().await.unwrap();
    assert!(m3.state().get_obj::<Note>("n1").unwrap().is_some());

    // A worker of this swarm: TLS succeeds, the call does not.
    let worker = credentials(&ca, CLUSTER, "w1", Role::Worker);
    let st = call_as(ca.cert_pem(), &a1, Some(worker)).await;
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("is a worker"), "{st:?}");

    // A manager certificate naming another swarm, from the same root (a reused CA).
    let stranger = credentials(&ca, "other-swarm", "m9", Role::Manager);
    let st = call_as(ca.cert_pem(), &a1, Some(stranger)).await;
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");

    // A certificate of a foreign CA, and no certificate at all: the handshake fails.
    let foreign_ca = RootCa::generate(CLUSTER).unwrap();
    let foreign = credentials(&foreign_ca, CLUSTER, "m1", Role::Manager);
    let st = call_as(ca.cert_pem(), &a1, Some(foreign)).await;
    assert_ne!(st.code(), tonic::Code::Ok);
    assert_ne!(
        st.code(),
        tonic::Code::PermissionDenied,
        "refused before any handler: {st:?}"
    );
    let st = call_as(ca.cert_pem(), &a1, None).await;
    assert_ne!(
        st.code(),
        tonic::Code::PermissionDenied,
        "refused before any handler: {st:?}"
    );

    // A manager removed from the swarm (`node rm`): its certificate is refused at once.
    let gone = credentials(&ca, CLUSTER, "m-gone", Role::Manager);
    m1.write(vec![create(&RemovedNode {
        id: "m-gone".into(),
        removed_at: String::new(),
    })
    .unwrap()])
        .await
        .unwrap();
    let st = call_as(ca.cert_pem(), &a1, Some(gone)).await;
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("was removed"), "{st:?}");

    // And the cluster is still healthy after all that.
    m3.write(vec![create(&Note { id: "n2".into() }).unwrap()])
        .await
        .unwrap();
    for m in [m1, m2, m3] {
        m.shutdown().await;
    }
}
