//! Managers replicating over real gRPC on loopback sockets, each with its own sled files:
//! forming, forwarding writes, failover, catching up by snapshot, restarting everyone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use shoal_store::table::{create, update};
use shoal_store::{Error, IndexKey, Object, Rejection, Replica, ReplicaConfig};
use tempfile::TempDir;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: String,
    n: u64,
}

impl Object for Item {
    const TABLE: &'static str = "items";
    fn id(&self) -> &str {
        &self.id
    }
    fn indexes(&self) -> Vec<IndexKey> {
        Vec::new()
    }
}

fn item(id: &str, n: u64) -> Item {
    Item { id: id.into(), n }
}

fn config() -> ReplicaConfig {
    ReplicaConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        snapshot_every: 50,
        keep_behind_snapshot: 5,
        leader_wait: Duration::from_secs(3),
        security: None,
    }
}

/// A manager: its replica, files and server.
struct Manager {
    id: u64,
    addr: SocketAddr,
    dir: TempDir,
    replica: Option<Replica>,
    server: Option<JoinHandle<()>>,
}

impl Manager {
    async fn start(id: u64) -> Manager {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut m = Manager {
            id,
            addr,
            dir: TempDir::new().unwrap(),
            replica: None,
            server: None,
        };
        m.run(listener).await;
        m
    }

    async fn run(&mut self, listener: tokio::net::TcpListener) {
        let replica = Replica::open(self.id, self.dir.path(), &config())
            .await
            .unwrap();
        self.server = Some(replica.serve(listener).unwrap());
        self.replica = Some(replica);
    }

    fn r(&self) -> &Replica {
        self.replica.as_ref().expect("running")
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stop it: no goodbye to the others, its connections closed as a dying process's are.
    async fn kill(&mut self) {
        if let Some(r) = self.replica.take() {
            r.shutdown().await;
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }

    /// Start it again on the same files and address.
    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.run(listener).await;
    }
}

async fn cluster(n: u64) -> Vec<Manager> {
    // openraft's warnings show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("openraft=warn,shoal_store=debug")
        .with_test_writer()
        .try_init();
    let mut ms = Vec::new();
    for id in 1..=n {
        ms.push(Manager::start(id).await);
    }
    ms[0].r().bootstrap(&ms[0].addr()).await.unwrap();
    wait_leader(&ms[..1]).await;
    for m in &ms[1..] {
        ms[0].r().add_voter(m.id, &m.addr()).await.unwrap();
    }
    ms
}

/// The index of the leader among the running managers, once all running ones agree.
async fn wait_leader(ms: &[Manager]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<(usize, &Replica)> = ms
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.replica.as_ref().map(|r| (i, r)))
            .collect();
        let leaders: Vec<usize> = running
            .iter()
            .filter(|(_, r)| r.is_leader())
            .map(|(i, _)| *i)
            .collect();
        if let [l] = leaders[..] {
            let lid = ms[l].id;
            if running
                .iter()
                .all(|(_, r)| r.leader().map(|(id, _)| id) == Some(lid))
            {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_managers_form_forward_writes_and_fail_over() {
    let mut ms = cluster(3).await;
    let leader = wait_leader(&ms).await;
    assert_eq!(ms[leader].r().voters().len(), 3);
    let follower = (leader + 1) % 3;

    // A write on a follower is forwarded; a linearizable read on another follower sees it.
    let v = ms[follower]
        .r()
        .write(vec![create(&item("a", 1)).unwrap()])
        .await
        .unwrap();
    let other = (leader + 2) % 3;
    ms[other].r().read_barrier().await.unwrap();
    let got = ms[other].r().state().get_obj::<Item>("a").unwrap().unwrap();
    assert_eq!((got.version, got.object.n), (v, 1));

    // Optimistic concurrency across managers: a stale version is refused.
    ms[leader]
        .r()
        .write(vec![update(&item("a", 2), v).unwrap()])
        .await
        .unwrap();
    match ms[follower]
        .r()
        .write(vec![update(&item("a", 3), v).unwrap()])
        .await
    {
        Err(Error::Rejected(Rejection::Conflict { .. })) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Kill the leader: the other two elect one and take writes; time it.
    let killed_at = Instant::now();
    ms[leader].kill().await;
    let survivor = (leader + 1) % 3;
    ms[survivor]
        .r()
        .write(vec![create(&item("b", 1)).unwrap()])
        .await
        .unwrap();
    let failover = killed_at.elapsed();
    eprintln!("failover to the next acknowledged write: {failover:?}");
    let new_leader = wait_leader(&ms).await;
    assert_ne!(new_leader, leader);

    // The old leader comes back as a follower and catches up.
    ms[leader].restart().await;
    assert_eq!(wait_leader(&ms).await, new_leader);
    ms[leader].r().read_barrier().await.unwrap();
    assert!(ms[leader]
        .r()
        .state()
        .get_obj::<Item>("b")
        .unwrap()
        .is_some());
    assert_eq!(
        ms[leader].r().raft().metrics().borrow().state,
        ServerState::Follower
    );
    for m in &mut ms {
        m.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_far_behind_catches_up_by_snapshot_and_all_restart_intact() {
    let mut ms = cluster(3).await;
    let leader = wait_leader(&ms).await;
    let lagger = (leader + 1) % 3;
    ms[lagger].kill().await;
    // Far more than a snapshot's worth while it is down; the leader purges its log.
    for i in 0..300u64 {
        ms[leader]
            .r()
            .write(vec![create(&item(&format!("i{i}"), i)).unwrap()])
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ms[leader].r().raft().metrics().borrow().purged.is_none() {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ms[lagger].restart().await;
    ms[lagger].r().read_barrier().await.unwrap();
    assert_eq!(
        ms[lagger].r().state().list_obj::<Item>().unwrap().len(),
        300
    );
    assert!(
        ms[lagger].r().raft().metrics().borrow().snapshot.is_some(),
        "it caught up through a snapshot"
    );

    // Restart every manager: the state is intact and they elect again.
    for m in &mut ms {
        m.kill().await;
    }
    for m in &mut ms {
        m.restart().await;
    }
    let l = wait_leader(&ms).await;
    ms[l].r().read_barrier().await.unwrap();
    for m in &ms {
        m.r().read_barrier().await.unwrap();
        assert_eq!(m.r().state().list_obj::<Item>().unwrap().len(), 300);
    }
    for m in &mut ms {
        m.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_majority_writes_fail_fast_and_say_why() {
    let mut ms = cluster(3).await;
    let leader = wait_leader(&ms).await;
    ms[(leader + 1) % 3].kill().await;
    ms[(leader + 2) % 3].kill().await;
    let started = Instant::now();
    let err = ms[leader]
        .r()
        .write(vec![create(&item("lost", 1)).unwrap()])
        .await;
    let took = started.elapsed();
    match err {
        Err(Error::NoLeader(msg)) => assert!(msg.contains("majority of 2"), "{msg}"),
        other => panic!("expected no leader, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let err = ms[leader].r().read_barrier().await;
    assert!(matches!(err, Err(Error::NoLeader(_))), "{err:?}");
    for m in &mut ms {
        m.kill().await;
    }
}
