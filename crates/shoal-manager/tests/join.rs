//! Joining a swarm over the node CA: workers and managers get certificates naming the role
//! their token authorises; a new manager becomes a voter; wrong, rotated, foreign and
//! malformed tokens are refused, and a worker cannot make itself a manager.

use std::time::Duration;

use shoal_manager::join::{join_raft, request_certificate, Joined, Request};
use shoal_manager::objects::{Cluster, Node, NodeRole};
use shoal_manager::{identity, node_ca, security::managers_only, JoinToken, NodeKey, Role, RootCa};
use shoal_store::table::create;
use shoal_store::{Replica, ReplicaConfig};
use tempfile::TempDir;

const CLUSTER: &str = "c1";

fn config(ca_pem: &str, cert: &str, key: &str) -> ReplicaConfig {
    ReplicaConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        security: Some(managers_only(ca_pem, cert, key, CLUSTER)),
        ..Default::default()
    }
}

/// Start a manager's store and node CA on a fresh port.
async fn serve(id: u64, cfg: &ReplicaConfig, dir: &TempDir) -> (Replica, String) {
    let replica = Replica::open(id, dir.path(), cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let r = replica.clone();
    replica
        .serve_with(listener, move |router| {
            router.add_service(node_ca::service(r))
        })
        .unwrap();
    (replica, addr)
}

fn request(token: &str, manager: &str, me: &str) -> Request {
    Request {
        token: token.into(),
        manager_addr: manager.into(),
        advertise_addr: me.into(),
        hostname: "h".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_and_managers_join_with_their_tokens_and_nothing_else_gets_in() {
    // The first manager, as `swarm init` leaves it.
    let ca = RootCa::generate(CLUSTER).unwrap();
    let key = NodeKey::generate().unwrap();
    let cert = ca
        .issue(
            &key.csr_pem,
            CLUSTER,
            "m1",
            Role::Manager,
            Duration::from_secs(3600),
        )
        .unwrap();
    let d1 = TempDir::new().unwrap();
    let (m1, a1) = serve(1, &config(ca.cert_pem(), &cert, &key.key_pem), &d1).await;
    m1.bootstrap(&a1).await.unwrap();
    m1.raft()
        .wait(Some(Duration::from_secs(5)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    let worker_token = JoinToken::generate(ca.fingerprint()).unwrap();
    let manager_token = JoinToken::generate(ca.fingerprint()).unwrap();
    let cluster = Cluster {
        id: CLUSTER.into(),
        name: "default".into(),
        created_at: String::new(),
        updated_at: String::new(),
        ca_cert_pem: ca.cert_pem().into(),
        ca_key_pem: ca.key_pem().unwrap(),
        previous_ca_pems: vec![],
        cross_signed_pem: String::new(),
        worker_secret: worker_token.secret.clone(),
        manager_secret: manager_token.secret.clone(),
        heartbeat_period_secs: 5,
        cert_expiry_secs: 3600,
        task_history_limit: 5,
        default_addr_pool: vec![],
        subnet_size: 24,
        data_path_port: 4789,
    };
    m1.write(vec![create(&cluster).unwrap()]).await.unwrap();

    // A worker.
    let w = request_certificate(&request(&worker_token.to_string(), &a1, "127.0.0.1:7001"))
        .await
        .unwrap();
    assert_eq!(w.role, NodeRole::Worker);
    let der = shoal_manager::ca::pem_der(&w.cert_pem, "CERTIFICATE").unwrap();
    let id = identity(&der).unwrap();
    assert_eq!(
        (id.role, id.node_id.as_str()),
        (Role::Worker, w.node_id.as_str())
    );
    assert_eq!(w.manager_addrs, vec![a1.clone()]);
    let node = m1
        .state()
        .get_obj::<Node>(&w.node_id)
        .unwrap()
        .unwrap()
        .object;
    assert_eq!(
        (node.role, node.addr.as_str()),
        (NodeRole::Worker, "127.0.0.1:7001")
    );

    // A worker cannot make itself a voter.
    let e = join_raft(&a1, &w, "127.0.0.1:7001")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("may not join the managers"), "{e}");

    // A manager: certificate, its own store, then a voter; it takes writes.
    let m: Joined = request_certificate(&request(&manager_token.to_string(), &a1, "127.0.0.1:0"))
        .await
        .unwrap();
    assert_eq!(m.role, NodeRole::Manager);
    let d2 = TempDir::new().unwrap();
    let (m2, a2) = serve(m.raft_id, &config(&m.ca_pem, &m.cert_pem, &m.key_pem), &d2).await;
    join_raft(&a1, &m, &a2).await.unwrap();
    assert_eq!(m1.voters().len(), 2);
    m2.read_barrier().await.unwrap();
    assert!(m2.state().get_obj::<Node>(&w.node_id).unwrap().is_some());
    // The second manager's node CA works too (the token names the same root).
    let w2 = request_certificate(&request(&worker_token.to_string(), &a2, "127.0.0.1:7002"))
        .await
        .unwrap();
    assert_eq!(w2.role, NodeRole::Worker);

    // Refusals, each saying why.
    let wrong = JoinToken::generate(ca.fingerprint()).unwrap().to_string();
    let e = request_certificate(&request(&wrong, &a1, "127.0.0.1:7003"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid join token"), "{e}");
    let foreign_ca = RootCa::generate("other").unwrap();
    let foreign = JoinToken {
        fingerprint: foreign_ca.fingerprint(),
        secret: worker_token.secret.clone(),
    }
    .to_string();
    let e = request_certificate(&request(&foreign, &a1, "127.0.0.1:7004"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot reach the manager"), "{e}");
    assert!(e.to_string().contains("fingerprint"), "{e}");
    let e = request_certificate(&request("SWMTKN-1-nope", &a1, "127.0.0.1:7005"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid join token"), "{e}");
    let e = request_certificate(&request(
        &worker_token.to_string(),
        "127.0.0.1:1",
        "127.0.0.1:7006",
    ))
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot reach the manager at 127.0.0.1:1"),
        "{e}"
    );
    // None of the refused joins left a node behind: m1, w, m, w2 only... (m1 itself is not in
    // this test's table).
    m1.read_barrier().await.unwrap();
    assert_eq!(m1.state().list_obj::<Node>().unwrap().len(), 3);

    m2.shutdown().await;
    m1.shutdown().await;
}
