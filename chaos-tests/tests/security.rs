//! Who may do what: bad and foreign tokens, a worker certificate on manager-only calls, a
//! removed node's certificate, a demoted manager's old certificate, and a root rotation that
//! every node follows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_chaos_tests::{wait_until, Cluster};
use shoal_testkit::in_netns;

const SETTLE: Duration = Duration::from_secs(20);

/// A node's credentials as it keeps them.
#[derive(Clone)]
struct Creds {
    ca: String,
    cert: String,
    key: String,
}

fn creds(data_root: &Path) -> Creds {
    let dir = data_root.join("swarm/certs");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    Creds {
        ca: read("ca.pem"),
        cert: read("node.pem"),
        key: read("node.key"),
    }
}

/// Run `f` on a runtime inside host namespace `ns` (where the LAN is).
fn on_host<T: Send + 'static>(
    ns: PathBuf,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    in_netns(&ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Node CA calls a test makes with a node's credentials.
#[derive(Clone, Copy)]
enum Call {
    /// Managers only.
    JoinRaft,
    /// Any node of the swarm.
    Heartbeat,
}

/// Make `call` at `addr` with `creds`; the error message, if refused.
fn node_ca(ns: PathBuf, addr: String, c: Creds, call: Call) -> Result<(), String> {
    on_host(ns, move || {
        Box::pin(async move {
            let mut client = shoal_manager::join::client(&addr, &c.ca, &c.cert, &c.key)
                .await
                .map_err(|e| e.to_string())?;
            match call {
                Call::JoinRaft => client
                    .join_raft(shoal_api::v1::JoinRaftRequest {
                        raft_id: 42,
                        addr: "198.51.100.99:2377".into(),
                    })
                    .await
                    .map(drop),
                Call::Heartbeat => client
                    .heartbeat(shoal_api::v1::HeartbeatRequest::default())
                    .await
                    .map(drop),
            }
            .map_err(|s| s.message().to_string())
        })
    })
}

fn join_raft(ns: PathBuf, addr: String, c: Creds) -> Result<(), String> {
    node_ca(ns, addr, c, Call::JoinRaft)
}

fn heartbeat(ns: PathBuf, addr: String, c: Creds) -> Result<(), String> {
    node_ca(ns, addr, c, Call::Heartbeat)
}

/// A Raft call (AppendEntries) with `creds`; the error message, if refused.
fn raft_call(ns: PathBuf, addr: String, c: Creds) -> Result<(), String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    on_host(ns, move || {
        Box::pin(async move {
            let ch = Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&c.ca))
                        .identity(Identity::from_pem(&c.cert, &c.key))
                        .domain_name("swarm-manager"),
                )
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            shoal_api::v1::raft_transport_client::RaftTransportClient::new(ch)
                .append_entries(shoal_api::v1::RaftPayload {
                    data: b"{}".to_vec(),
                })
                .await
                .map(drop)
                .map_err(|s| s.message().to_string())
        })
    })
}

#[test]
fn tokens_and_certificates_are_checked() {
    let mut c = Cluster::swarm(2, 1, "1s");
    let other = Cluster::swarm(1, 0, "1s");
    let manager_addr = c.addr(0);
    let ns = c.hosts[0].netns();

    // Malformed token; a token whose CA fingerprint is another swarm's (host 2 leaves to
    // try them, then joins back).
    let worker_token = c.token("worker");
    let foreign = other.token("worker");
    c.hosts[2].ok(&["swarm", "leave"]);
    let (_, e) = c.hosts[2].fails(&[
        "swarm",
        "join",
        "--token",
        "SWMTKN-1-nonsense",
        &manager_addr,
    ]);
    assert!(e.contains("invalid join token"), "{e}");
    let mixed = format!(
        "{}{}",
        &foreign[..foreign.len() - 25],
        &worker_token[worker_token.len() - 25..]
    );
    let (_, e) = c.hosts[2].fails(&["swarm", "join", "--token", &mixed, &manager_addr]);
    assert!(
        e.contains("swarm") && e.contains("fingerprint") || e.contains("certificate"),
        "{e}"
    );
    assert!(
        !c.hosts[2].data_root().join("swarm").exists(),
        "nothing half-joined"
    );
    c.hosts[2].ok(&["swarm", "join", "--token", &worker_token, &manager_addr]);
    let worker_id = c.node_id(2);

    // A worker's certificate opens neither manager-only calls nor the Raft transport.
    let worker = creds(&c.hosts[2].data_root());
    let e = join_raft(ns.clone(), manager_addr.clone(), worker.clone()).unwrap_err();
    assert!(
        e.contains("may not join") || e.contains("manager certificate"),
        "{e}"
    );
    let e = raft_call(ns.clone(), manager_addr.clone(), worker.clone()).unwrap_err();
    assert!(e.contains("worker"), "{e}");
    heartbeat(ns.clone(), manager_addr.clone(), worker.clone()).expect("a worker may heartbeat");

    // Another swarm's manager certificate is refused by TLS itself.
    let stranger = creds(&other.hosts[0].data_root());
    assert!(raft_call(ns.clone(), manager_addr.clone(), stranger).is_err());

    // A removed node's certificate is refused at once, though it has not expired.
    c.kill9(2);
    wait_until("the worker is down", SETTLE, || {
        c.node(0, &worker_id)["Status"]["State"] == "down"
    });
    c.hosts[0].ok(&["node", "rm", &worker_id]);
    let e = heartbeat(ns.clone(), manager_addr.clone(), worker).unwrap_err();
    assert!(e.contains("removed"), "{e}");

    // A demoted manager's old certificate no longer opens the managers' transport.
    let m1 = c.node_id(1);
    let old_manager = creds(&c.hosts[1].data_root());
    raft_call(ns.clone(), manager_addr.clone(), old_manager.clone())
        .map_err(|e| assert!(!e.contains("worker") && !e.contains("demoted"), "{e}"))
        .ok();
    c.hosts[0].ok(&["node", "demote", &m1]);
    let e = raft_call(ns.clone(), manager_addr.clone(), old_manager.clone()).unwrap_err();
    assert!(e.contains("demoted"), "{e}");
    let e = join_raft(ns, manager_addr, old_manager).unwrap_err();
    assert!(e.contains("may not join"), "{e}");
}

#[test]
fn a_root_rotation_reaches_every_node() {
    let mut c = Cluster::swarm(2, 1, "1s");
    let newcomer = c.add_host();
    wait_until("all ready", SETTLE, || {
        c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == 3
    });
    let old_ca = c.hosts[0].ok(&["swarm", "ca"]);
    let old_token = c.token("worker");

    let out = c.hosts[1].shoal(&["swarm", "ca", "--rotate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rotated CA certificates:   done"),
        "{stderr}"
    );
    let new_ca = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(old_ca, new_ca);
    // Every node holds a certificate from the new root and trusts only it, and all still
    // talk: ready, and both managers answer.
    for i in 0..3 {
        wait_until("the node trusts only the new root", SETTLE, || {
            let ca = std::fs::read_to_string(c.hosts[i].data_root().join("swarm/certs/ca.pem"))
                .unwrap_or_default();
            ca.trim() == new_ca.trim()
        });
    }
    wait_until("all ready after the rotation", SETTLE, || {
        c.hosts[0].shoal(&["node", "ls"]).status.success()
            && c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == 3
    });
    assert!(c.hosts[1].shoal(&["node", "ls"]).status.success());
    // Tokens pin the new root: the old one is refused, the new one works.
    let new_token = c.token("worker");
    assert_ne!(old_token, new_token);
    let (_, e) = c.hosts[newcomer].fails(&["swarm", "join", "--token", &old_token, &c.addr(0)]);
    assert!(
        e.contains("fingerprint") || e.contains("another swarm") || e.contains("certificate"),
        "{e}"
    );
    c.hosts[newcomer].ok(&["swarm", "join", "--token", &new_token, &c.addr(0)]);
}
