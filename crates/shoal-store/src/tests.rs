use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use super::*;
use crate::table::{create, delete, index, unique_index, update};
use crate::types::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

/// openraft's own storage test suite, against sled.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Thing {
    id: String,
    name: String,
    colour: String,
}

impl Object for Thing {
    const TABLE: &'static str = "things";
    fn id(&self) -> &str {
        &self.id
    }
    fn indexes(&self) -> Vec<IndexKey> {
        vec![
            unique_index("name", &self.name),
            index("colour", &self.colour),
        ]
    }
}

fn thing(id: &str, name: &str, colour: &str) -> Thing {
    Thing {
        id: id.into(),
        name: name.into(),
        colour: colour.into(),
    }
}

fn entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Proposal {
            requests: vec![Request { ops }],
        }),
    }
}

async fn apply(sm: &mut StateMachine, index: u64, ops: Vec<Op>) -> Response {
    sm.apply([entry(index, ops)])
        .await
        .expect("apply")
        .remove(0)
        .remove(0)
}

/// Several requests in one entry (the leader's group commit): each all or nothing, in order,
/// each seeing the applied ones before it and none of the rejected ones.
#[tokio::test]
async fn requests_batched_in_one_entry_apply_one_by_one() {
    let dir = TempDir::new().unwrap();
    let (_, mut sm) = open(dir.path()).unwrap();
    let req = |ops: Vec<Op>| Request { ops };
    let a = thing("a", "alpha", "red");
    let mut a2 = a.clone();
    a2.name = "omega".into();
    let proposal = Proposal {
        requests: vec![
            // 1: applied.
            req(vec![create(&a).unwrap()]),
            // 2: sees 1, so a duplicate name: rejected, and b is not created.
            req(vec![
                create(&thing("b", "beta", "red")).unwrap(),
                create(&thing("c", "alpha", "red")).unwrap(),
            ]),
            // 3: b does not exist (2 left no trace): this create is fine.
            req(vec![create(&thing("b", "beta", "blue")).unwrap()]),
            // 4: a is at the entry's version now, not the stale one a writer had.
            req(vec![update(&a2, 1).unwrap()]),
            // 5: renames a (releases "alpha"), then 6 takes "alpha".
            req(vec![update(&a2, 7).unwrap()]),
            req(vec![create(&thing("d", "alpha", "green")).unwrap()]),
            // 7: "omega" is a's now.
            req(vec![create(&thing("e", "omega", "green")).unwrap()]),
        ],
    };
    let out = sm
        .apply([Entry {
            log_id: log_id(1, 1, 7),
            payload: EntryPayload::Normal(proposal),
        }])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(out.len(), 7);
    assert_eq!(out[0], Response::Applied { version: 7 });
    assert!(
        matches!(out[1], Response::Rejected(Rejection::Duplicate { .. })),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2], Response::Applied { version: 7 });
    assert!(
        matches!(
            out[3],
            Response::Rejected(Rejection::Conflict {
                expected: 1,
                current: 7,
                ..
            })
        ),
        "{:?}",
        out[3]
    );
    assert_eq!(out[4], Response::Applied { version: 7 });
    assert_eq!(out[5], Response::Applied { version: 7 });
    assert!(
        matches!(out[6], Response::Rejected(Rejection::Duplicate { .. })),
        "{:?}",
        out[6]
    );
    assert_eq!(
        sm.get_obj::<Thing>("a").unwrap().unwrap().object.name,
        "omega"
    );
    assert_eq!(
        sm.get_obj::<Thing>("b").unwrap().unwrap().object.colour,
        "blue"
    );
    assert!(sm.get_obj::<Thing>("c").unwrap().is_none());
    assert_eq!(
        sm.get_obj::<Thing>("d").unwrap().unwrap().object.name,
        "alpha"
    );
    assert!(sm.get_obj::<Thing>("e").unwrap().is_none());
    // The indexes agree with the objects.
    let by_name = |n: &str| {
        sm.find_obj::<Thing>("name", n)
            .unwrap()
            .into_iter()
            .map(|t| t.object.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_name("alpha"), ["d"]);
    assert_eq!(by_name("omega"), ["a"]);
    assert_eq!(by_name("beta"), ["b"]);
}

#[tokio::test]
async fn versions_indexes_and_conflicts() {
    let dir = TempDir::new().unwrap();
    let (_, mut sm) = open(dir.path()).unwrap();
    let a = thing("a", "alpha", "red");
    assert_eq!(
        apply(&mut sm, 1, vec![create(&a).unwrap()]).await,
        Response::Applied { version: 1 }
    );
    let got = sm.get_obj::<Thing>("a").unwrap().unwrap();
    assert_eq!((got.version, got.created), (1, 1));
    assert_eq!(got.object, a);

    // Creating it again, or another object with the same unique name, is refused.
    assert!(matches!(
        apply(&mut sm, 2, vec![create(&a).unwrap()]).await,
        Response::Rejected(Rejection::Exists { .. })
    ));
    let dup = thing("b", "alpha", "blue");
    match apply(&mut sm, 3, vec![create(&dup).unwrap()]).await {
        Response::Rejected(Rejection::Duplicate { holder, .. }) => assert_eq!(holder, "a"),
        other => panic!("{other:?}"),
    }

    // An update naming a stale version is a conflict; the right one moves the version.
    let mut a2 = a.clone();
    a2.colour = "green".into();
    match apply(&mut sm, 4, vec![update(&a2, 0).unwrap()]).await {
        Response::Rejected(Rejection::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (0, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        apply(&mut sm, 5, vec![update(&a2, 1).unwrap()]).await,
        Response::Applied { version: 5 }
    );
    assert!(sm.find_obj::<Thing>("colour", "red").unwrap().is_empty());
    assert_eq!(sm.find_obj::<Thing>("colour", "green").unwrap().len(), 1);

    // A batch is all or nothing: the second op fails, so the first is not applied either.
    let c = thing("c", "gamma", "green");
    assert!(matches!(
        apply(
            &mut sm,
            6,
            vec![create(&c).unwrap(), delete::<Thing>("nope", None)]
        )
        .await,
        Response::Rejected(Rejection::NotFound { .. })
    ));
    assert!(sm.get_obj::<Thing>("c").unwrap().is_none());
    assert_eq!(sm.applied_index().unwrap(), 6);

    // Renaming within one batch frees the name for the next op of the batch.
    let mut a3 = a2.clone();
    a3.name = "alpha2".into();
    let b = thing("b", "alpha", "blue");
    assert_eq!(
        apply(
            &mut sm,
            7,
            vec![update(&a3, 5).unwrap(), create(&b).unwrap()]
        )
        .await,
        Response::Applied { version: 7 }
    );
    assert_eq!(sm.find("things", "name", "alpha").unwrap(), vec!["b"]);

    // Delete with a version checks it; the index entries go with the object.
    assert_eq!(
        apply(&mut sm, 8, vec![delete::<Thing>("b", Some(7))]).await,
        Response::Applied { version: 8 }
    );
    assert!(sm.find("things", "name", "alpha").unwrap().is_empty());
    assert_eq!(sm.list_obj::<Thing>().unwrap().len(), 1);
}

#[tokio::test]
async fn watchers_start_from_a_matching_snapshot() {
    let dir = TempDir::new().unwrap();
    let (_, mut sm) = open(dir.path()).unwrap();
    apply(&mut sm, 1, vec![create(&thing("a", "a", "red")).unwrap()]).await;
    let listing = sm.list_and_watch("things").unwrap();
    assert_eq!((listing.index, listing.objects.len()), (1, 1));
    let mut watch = listing.watch;
    apply(&mut sm, 2, vec![create(&thing("b", "b", "red")).unwrap()]).await;
    apply(&mut sm, 3, vec![delete::<Thing>("a", None)]).await;
    let c = watch.rx.recv().await.unwrap();
    assert_eq!(c.index, 2);
    assert_eq!(c.events[0].kind, EventKind::Created);
    assert_eq!(c.events[0].id, "b");
    let c = watch.rx.recv().await.unwrap();
    assert_eq!((c.index, c.events[0].kind), (3, EventKind::Deleted));
    assert_eq!(
        c.events[0].decode::<serde_json::Value>().unwrap()["name"],
        "a",
        "a delete carries the last state"
    );
}

#[tokio::test]
async fn snapshots_carry_objects_and_indexes_and_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    let (_, mut sm) = open(dir.path()).unwrap();
    for i in 1..=20u64 {
        let t = thing(
            &format!("t{i}"),
            &format!("n{i}"),
            if i % 2 == 0 { "even" } else { "odd" },
        );
        apply(&mut sm, i, vec![create(&t).unwrap()]).await;
    }
    let snap = sm.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.unwrap().index, 20);

    let other = TempDir::new().unwrap();
    let (_, mut sm2) = open(other.path()).unwrap();
    apply(
        &mut sm2,
        1,
        vec![create(&thing("stale", "stale", "x")).unwrap()],
    )
    .await;
    let watch = sm2.watch();
    sm2.install_snapshot(
        &snap.meta,
        Box::new(Cursor::new(snap.snapshot.into_inner())),
    )
    .await
    .unwrap();
    assert!(
        watch.resets.has_changed().unwrap(),
        "watchers are told to start over"
    );
    assert!(sm2.get_obj::<Thing>("stale").unwrap().is_none());
    assert_eq!(sm2.find_obj::<Thing>("colour", "even").unwrap().len(), 10);
    assert_eq!(sm2.applied_index().unwrap(), 20);
    let current = sm2.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    drop(sm2);

    // Everything is still there after a reopen of the same files.
    let (_, sm3) = open(other.path()).unwrap();
    assert_eq!(sm3.list_obj::<Thing>().unwrap().len(), 20);
    assert_eq!(sm3.find("things", "name", "n7").unwrap(), vec!["t7"]);
}

#[tokio::test]
async fn a_single_manager_commits_and_reads_back() {
    use openraft::{BasicNode, Config, Raft, ServerState};
    let dir = TempDir::new().unwrap();
    let (log, sm) = open(dir.path()).unwrap();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let raft = Raft::<TypeConfig>::new(1, config.into(), NoNetwork, log, sm.clone())
        .await
        .unwrap();
    raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:0"))]))
        .await
        .unwrap();
    raft.wait(Some(std::time::Duration::from_secs(5)))
        .state(ServerState::Leader, "leader")
        .await
        .unwrap();
    let r = raft
        .client_write(Proposal {
            requests: vec![Request {
                ops: vec![create(&thing("x", "x", "blue")).unwrap()],
            }],
        })
        .await
        .unwrap();
    let Response::Applied { version } = r.data[0] else {
        panic!("{:?}", r.data)
    };
    raft.ensure_linearizable().await.unwrap();
    assert_eq!(sm.get_obj::<Thing>("x").unwrap().unwrap().version, version);
    raft.shutdown().await.unwrap();
}

/// A single manager never talks to anyone.
struct NoNetwork;

impl openraft::RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _: NodeId, _: &openraft::BasicNode) -> NoNetwork {
        NoNetwork
    }
}

type RpcErr<E = openraft::error::RaftError<NodeId>> =
    openraft::error::RPCError<NodeId, openraft::BasicNode, E>;

fn unreachable<E: std::error::Error>() -> RpcErr<E> {
    openraft::error::RPCError::Unreachable(openraft::error::Unreachable::new(
        &std::io::Error::other("no network in this test"),
    ))
}

impl openraft::RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _: openraft::raft::AppendEntriesRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, RpcErr> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        RpcErr<openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _: openraft::raft::VoteRequest<NodeId>,
        _: openraft::network::RPCOption,
    ) -> Result<openraft::raft::VoteResponse<NodeId>, RpcErr> {
        Err(unreachable())
    }
}

/// Where the writer child keeps its store (set by the parent).
const CRASH_DIR_ENV: &str = "SHOAL_STORE_CRASH_DIR";
const CRASH_ROUND_ENV: &str = "SHOAL_STORE_CRASH_ROUND";
/// The writer kills itself right after this many acknowledgements.
const CRASH_AFTER: usize = 2000;

/// The child half of `no_acknowledged_write_is_lost_to_a_kill`: a single manager writing as
/// fast as it can, printing every acknowledged id. It does nothing unless the parent ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_writer_child() {
    use openraft::{BasicNode, Config, Raft, ServerState};
    use std::io::Write;
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let (log, sm) = open(std::path::Path::new(&dir)).unwrap();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let raft = Raft::<TypeConfig>::new(1, config.into(), NoNetwork, log, sm)
        .await
        .unwrap();
    let _ = raft
        .initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:0"))]))
        .await;
    raft.wait(Some(std::time::Duration::from_secs(10)))
        .state(ServerState::Leader, "leader")
        .await
        .unwrap();
    let round = std::env::var(CRASH_ROUND_ENV).unwrap_or_default();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let raft = raft.clone();
        let round = round.clone();
        let acks = acks.clone();
        tasks.spawn(async move {
            for i in 0.. {
                let id = format!("r{round}-w{w}-{i}");
                let t = thing(&id, &id, "c");
                let r = raft
                    .client_write(Proposal {
                        requests: vec![Request {
                            ops: vec![create(&t).unwrap()],
                        }],
                    })
                    .await
                    .unwrap();
                assert!(matches!(r.data[..], [Response::Applied { .. }]));
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "acked {id}");
                let _ = out.flush();
                // Die the hard way right after an acknowledgement, while other writes are in
                // flight: the freshest acknowledged entries are the ones at risk.
                if acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == CRASH_AFTER {
                    // SAFETY: kill(2) on our own pid; nothing runs after it.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Durability: a manager killed with SIGKILL in the middle of a write load loses none of the
/// writes it acknowledged (they were flushed before openraft counted them).
#[test]
fn no_acknowledged_write_is_lost_to_a_kill() {
    use std::io::BufRead;
    let dir = TempDir::new().unwrap();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::crash_writer_child", "--nocapture"])
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_ROUND_ENV, round.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let acked: Vec<String> = stdout
            .lines()
            .map_while(|l| l.ok())
            .filter_map(|l| l.strip_prefix("acked ").map(str::to_string))
            .collect();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "round {round}: the writer did not die by SIGKILL: {status}"
        );
        assert!(
            acked.len() >= CRASH_AFTER,
            "round {round}: {} acks",
            acked.len()
        );
        // Reopen the files the dead writer left: replay the committed log into the state
        // machine the way a restarted manager does, then look for every acknowledged id.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (log, sm) = open(dir.path()).unwrap();
            let raft = openraft::Raft::<TypeConfig>::new(
                1,
                openraft::Config::default().validate().unwrap().into(),
                NoNetwork,
                log,
                sm.clone(),
            )
            .await
            .unwrap();
            raft.wait(Some(std::time::Duration::from_secs(10)))
                .state(openraft::ServerState::Leader, "leader again")
                .await
                .unwrap();
            raft.ensure_linearizable().await.unwrap();
            let missing: Vec<&String> = acked
                .iter()
                .filter(|id| sm.get_obj::<Thing>(id).unwrap().is_none())
                .collect();
            assert!(
                missing.is_empty(),
                "round {round}: {} acknowledged writes lost, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            raft.shutdown().await.unwrap();
        });
    }
}
