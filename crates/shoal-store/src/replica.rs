//! One manager's copy of the store: its Raft node, its state machine, the gRPC service other
//! managers talk to, writes that reach the leader from any manager, and linearizable reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use shoal_api::v1::raft_transport_client::RaftTransportClient;
use shoal_api::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use shoal_api::v1::RaftPayload;

use crate::error::{Error, Result};
use crate::network::{client_for, decode, encode, Network, Security};
use crate::sm::StateMachine;
use crate::types::{NodeId, Op, Proposal, Request, Response, TypeConfig};

/// Timing of a manager's Raft node.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub heartbeat: Duration,
    /// A follower that hears nothing from the leader for a random time in this range starts
    /// an election: the failover time is about its upper end.
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    pub keep_behind_snapshot: u64,
    /// How long a write or a read barrier waits for a leader before it fails.
    pub leader_wait: Duration,
    /// Mutual TLS between managers; `None` only in tests of the store itself.
    pub security: Option<Arc<Security>>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        // openraft lets a follower vote only after the leader's lease (the election
        // timeout's upper end) ran out, and then waits a random timeout in the range: a
        // failover takes about max + (min + max) / 2, here ~0.7 s. docker's takes 10–19 s.
        ReplicaConfig {
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
            snapshot_every: 10_000,
            keep_behind_snapshot: 1_000,
            leader_wait: Duration::from_secs(5),
            security: None,
        }
    }
}

/// A membership change a follower forwards to the leader.
#[derive(Serialize, Deserialize)]
enum VoterChange {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

/// What `Propose` (a follower's forwarded write, or any manager-certified client's) gets
/// back from the manager it thinks leads (JSON in the payload).
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeReply {
    Done(Response),
    NotLeader,
}

struct Inner {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    leader_wait: Duration,
    security: Option<Arc<Security>>,
    /// The connection to the leader for forwarded writes and reads.
    leader_client:
        std::sync::Mutex<Option<(String, RaftTransportClient<tonic::transport::Channel>)>>,
    /// Set on shutdown: the server stops and closes its connections.
    stop: tokio::sync::watch::Sender<bool>,
    /// Writes to this node's Raft, gathered into entries by [`batch_writes`].
    proposals: tokio::sync::mpsc::UnboundedSender<(Request, Waiter)>,
}

/// What a write handed to this node's Raft came to.
#[derive(Clone)]
enum Proposed {
    Done(Response),
    /// This node does not lead; the leader, if it knows one.
    NotLeader(Option<BasicNode>),
    Failed(String),
}

type Waiter = tokio::sync::oneshot::Sender<Proposed>;

/// The most requests one entry carries.
const MAX_BATCH: usize = 1024;
/// The most operations one entry gathers from several requests (a single larger request
/// still goes in an entry of its own): entries stay under half a megabyte, so a batch of
/// them fits a replication message. (1024 was slower: 100,000 tasks placed at 2,400/s
/// against 3,500/s.)
const MAX_BATCH_OPS: usize = 256;
/// Entries in one replication message at most.
const MAX_PAYLOAD_ENTRIES: u64 = 8;
/// Entries handed to Raft and not yet applied, at most. openraft's leader writes and
/// flushes each entry it is given before it takes the next, so writes that arrive meanwhile
/// wait here and go together in the next entry: one fsync and one replication round for
/// all of them (group commit), instead of one per write. A few at once keep the followers
/// busy while the leader writes the next (1 placed 100,000 tasks at 2,000/s, 3 at 3,500/s;
/// 6 was no better).
const IN_FLIGHT: usize = 3;

/// Gather concurrent writes into entries (see [`Proposal`]); runs until the replica goes.
async fn batch_writes(
    raft: Raft<TypeConfig>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Request, Waiter)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // A write that did not fit the last entry: it starts the next.
    let mut held: Option<(Request, Waiter)> = None;
    loop {
        let first = match held.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut ops = first.0.ops.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && ops < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(w) if ops + w.0.ops.len() > MAX_BATCH_OPS => {
                    held = Some(w);
                    break;
                }
                Ok(w) => {
                    ops += w.0.ops.len();
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (requests, waiters): (Vec<Request>, Vec<Waiter>) = batch.into_iter().unzip();
            match raft.client_write(Proposal { requests }).await {
                Ok(r) => {
                    for (w, response) in waiters.into_iter().zip(r.data) {
                        let _ = w.send(Proposed::Done(response));
                    }
                }
                Err(e) => {
                    let out = match e.forward_to_leader() {
                        Some(f) => Proposed::NotLeader(f.leader_node.clone()),
                        None => Proposed::Failed(e.to_string()),
                    };
                    for w in waiters {
                        let _ = w.send(out.clone());
                    }
                }
            }
            drop(slot);
        });
    }
}

/// A manager's replica of the store. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl Replica {
    /// Open the store under `dir` and start the Raft node `id` (it does nothing until it is
    /// bootstrapped or added by a leader).
    pub async fn open(id: NodeId, dir: &Path, cfg: &ReplicaConfig) -> Result<Replica> {
        let (log, sm) = crate::open(dir)?;
        let config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            election_timeout_min: cfg.election_timeout.0.as_millis() as u64,
            election_timeout_max: cfg.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_behind_snapshot,
            install_snapshot_timeout: 2_000,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Other(format!("raft configuration: {e}")))?;
        let network = Network {
            security: cfg.security.clone(),
        };
        let raft = Raft::new(id, Arc::new(config), network, log, sm.clone())
            .await
            .map_err(|e| Error::Other(format!("start raft: {e}")))?;
        let (proposals, queued) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_writes(raft.clone(), queued));
        Ok(Replica {
            inner: Arc::new(Inner {
                proposals,
                id,
                raft,
                sm,
                leader_wait: cfg.leader_wait,
                security: cfg.security.clone(),
                leader_client: std::sync::Mutex::new(None),
                stop: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The local state machine (reads here may trail the leader; call
    /// [`Replica::read_barrier`] first for a linearizable read).
    pub fn state(&self) -> &StateMachine {
        &self.inner.sm
    }

    /// The gRPC service other managers call.
    pub fn service(&self) -> RaftTransportServer<Service> {
        RaftTransportServer::new(Service {
            replica: Arc::downgrade(&self.inner),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
    }

    /// Serve the transport on `listener` until [`Replica::shutdown`], which also closes the
    /// connections other managers hold (they must reconnect to whatever replaces this one).
    pub fn serve(&self, listener: tokio::net::TcpListener) -> Result<tokio::task::JoinHandle<()>> {
        self.serve_with(listener, |router| router)
    }

    /// [`Replica::serve`] with more services on the same port (the node CA, the
    /// dispatcher). With TLS, a client certificate is optional at the handshake: a joining
    /// node has none yet; the store's own calls refuse callers without one.
    pub fn serve_with(
        &self,
        listener: tokio::net::TcpListener,
        more: impl FnOnce(tonic::transport::server::Router) -> tonic::transport::server::Router,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let svc = self.service();
        let mut stop = self.inner.stop.subscribe();
        // No Nagle: a small Raft answer held back for the peer's delayed ACK costs 40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(sec) = &self.inner.security {
            // The chain includes the root, so a joining node can check it against the
            // fingerprint its token pins.
            let chain = format!("{}\n{}", sec.cert_pem.trim_end(), sec.ca_pem);
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(chain, &sec.key_pem))
                .client_ca_root(tonic::transport::Certificate::from_pem(&sec.ca_pem))
                .client_auth_optional(true);
            builder = builder
                .tls_config(tls)
                .map_err(|e| Error::Other(format!("TLS for the managers' transport: {e}")))?;
        }
        let router = more(builder.add_service(svc));
        Ok(tokio::spawn(async move {
            let res = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "the managers' transport stopped");
            }
        }))
    }

    /// Make this node a one-member cluster (`swarm init`). Doing it again on a node that
    /// already has state is fine.
    pub async fn bootstrap(&self, addr: &str) -> Result<()> {
        if self.raft().is_initialized().await.map_err(other)? {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id(), BasicNode::new(addr))]);
        self.raft().initialize(members).await.map_err(other)
    }

    /// The leader and its address, as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft().metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node.addr))
    }

    pub fn is_leader(&self) -> bool {
        self.raft().metrics().borrow().state == ServerState::Leader
    }

    /// Voters and their addresses.
    pub fn voters(&self) -> Vec<(NodeId, String)> {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect()
    }

    /// Add a manager: first as a learner that catches up (by snapshot if it is far behind),
    /// then as a voter. Runs on the leader; from a follower it is forwarded there.
    pub async fn add_voter(&self, id: NodeId, addr: &str) -> Result<()> {
        self.change_voters(VoterChange::Add {
            id,
            addr: addr.to_string(),
        })
        .await
    }

    /// Remove a manager from the voters (and the cluster), on the leader or through it.
    pub async fn remove_voter(&self, id: NodeId) -> Result<()> {
        self.change_voters(VoterChange::Remove { id }).await
    }

    async fn change_voters(&self, change: VoterChange) -> Result<()> {
        let deadline = Instant::now() + self.inner.leader_wait;
        loop {
            if self.is_leader() {
                return self.change_voters_here(&change).await;
            }
            if let Some((_, addr)) = self.leader() {
                match self.forward_change(&addr, &change).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(msg)) => return Err(Error::Other(msg)),
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn change_voters_here(&self, change: &VoterChange) -> Result<()> {
        match change {
            VoterChange::Add { id, addr } => {
                self.raft()
                    .add_learner(*id, BasicNode::new(addr), true)
                    .await
                    .map_err(other)?;
                self.raft()
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                    .await
                    .map_err(other)?;
            }
            VoterChange::Remove { id } => {
                self.raft()
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await
                    .map_err(other)?;
            }
        }
        Ok(())
    }

    /// Commit a batch of operations, from any manager: a follower forwards it to the leader.
    /// Returns the version the written objects now have. Without a leader for
    /// `leader_wait` it fails rather than hang.
    pub async fn write(&self, ops: Vec<Op>) -> Result<u64> {
        let req = Request { ops };
        let deadline = Instant::now() + self.inner.leader_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let hint = match tokio::time::timeout(left, self.propose_here(req.clone())).await {
                // This node leads but no majority confirms: the entry is in its log and may
                // still commit if the others come back.
                Err(_) => return Err(self.unconfirmed()),
                Ok(Proposed::Done(r)) => return applied(r),
                Ok(Proposed::NotLeader(hint)) => hint,
                Ok(Proposed::Failed(e)) => return Err(Error::Other(e)),
            };
            if let Some(node) = hint {
                if let Ok(ProposeReply::Done(r)) = self.forward(&node.addr, &req, deadline).await {
                    return applied(r);
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hand `req` to this node's Raft (in the next entry) and wait for the outcome.
    async fn propose_here(&self, req: Request) -> Proposed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.proposals.send((req, tx)).is_err() {
            return Proposed::Failed("this manager's store is shut down".into());
        }
        rx.await
            .unwrap_or_else(|_| Proposed::Failed("this manager's store is shut down".into()))
    }

    /// Wait until this node's state machine has everything committed before the call: a
    /// read after it is linearizable. On a follower it asks the leader for its commit point.
    pub async fn read_barrier(&self) -> Result<()> {
        let deadline = Instant::now() + self.inner.leader_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let hint = match tokio::time::timeout(left, self.raft().ensure_linearizable()).await {
                Err(_) if self.is_leader() => return Err(self.no_quorum_for_reads()),
                Err(_) => return Err(self.no_leader()),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => match e.forward_to_leader() {
                    Some(f) => f.leader_node.clone(),
                    None => None,
                },
            };
            if let Some(node) = hint {
                if let Ok(index) = self.read_index(&node.addr, deadline).await {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.raft()
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "read barrier")
                        .await
                        .map_err(|_| self.no_leader())?;
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn no_leader(&self) -> Error {
        let voters = self.voters().len();
        Error::NoLeader(format!(
            "the managers have no leader (this one sees none after {} s; {voters} managers in the swarm, a majority of {} must be up and reach each other)",
            self.inner.leader_wait.as_secs(),
            voters / 2 + 1
        ))
    }

    fn no_quorum_for_reads(&self) -> Error {
        let voters = self.voters().len();
        Error::NoLeader(format!(
            "no quorum: this manager leads but a majority of {} of the {voters} managers did not answer within {} s; its data may be stale, so it refuses to read",
            voters / 2 + 1,
            self.inner.leader_wait.as_secs()
        ))
    }

    fn unconfirmed(&self) -> Error {
        let voters = self.voters().len();
        Error::NoLeader(format!(
            "no quorum: a majority of {} of the {voters} managers did not confirm the write within {} s; it is not applied now and may still be once enough managers are back",
            voters / 2 + 1,
            self.inner.leader_wait.as_secs()
        ))
    }

    /// Resolves once [`Replica::shutdown`] was called: long-lived tasks that hold the replica
    /// (streams to agents) end then, so its files close.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub async fn shutdown(&self) {
        let _ = self.raft().shutdown().await;
        self.inner.stop.send_replace(true);
    }
}

fn applied(r: Response) -> Result<u64> {
    match r {
        Response::Applied { version } => Ok(version),
        Response::Rejected(why) => Err(Error::Rejected(why)),
        Response::Internal => Err(Error::Other("unexpected internal response".into())),
    }
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

impl Replica {
    async fn forward(&self, addr: &str, req: &Request, until: Instant) -> Result<ProposeReply> {
        self.ask_leader(addr, LeaderCall::Propose, req, until).await
    }

    /// Ok(Err(message)): the leader refused the change; Err: it could not be asked.
    async fn forward_change(
        &self,
        addr: &str,
        change: &VoterChange,
    ) -> Result<std::result::Result<(), String>> {
        let until = Instant::now() + self.inner.leader_wait;
        self.ask_leader(addr, LeaderCall::ChangeVoters, change, until)
            .await
    }

    async fn read_index(&self, addr: &str, until: Instant) -> Result<u64> {
        let r: Option<u64> = self
            .ask_leader(addr, LeaderCall::ReadIndex, &(), until)
            .await?;
        r.ok_or_else(|| Error::Other("not the leader".into()))
    }

    /// One call to the manager at `addr` (the leader, as far as this node knows), over a
    /// connection kept for the next call to the same leader, given up at `until` (a hung
    /// leader must not hang its followers' callers: they retry whoever leads next).
    async fn ask_leader<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        call: LeaderCall,
        req: &Req,
        until: Instant,
    ) -> Result<Resp> {
        let mut c = {
            let mut cached = self.inner.leader_client.lock().expect("leader client lock");
            match cached.as_ref() {
                Some((a, c)) if a == addr => c.clone(),
                _ => {
                    let c = client_for(addr, self.inner.security.as_deref()).map_err(other)?;
                    *cached = Some((addr.to_string(), c.clone()));
                    c
                }
            }
        };
        let payload = encode(req).map_err(other)?;
        let call = async {
            match call {
                LeaderCall::Propose => c.propose(payload).await,
                LeaderCall::ChangeVoters => c.change_voters(payload).await,
                LeaderCall::ReadIndex => c.read_index(payload).await,
            }
        };
        let left = until.saturating_duration_since(Instant::now());
        let reply = match tokio::time::timeout(left, call).await {
            Ok(r) => r.map_err(other)?,
            Err(_) => {
                // Start afresh with whoever leads next.
                *self.inner.leader_client.lock().expect("leader client lock") = None;
                return Err(Error::Other(format!("the leader at {addr} did not answer")));
            }
        };
        decode(&reply.into_inner()).map_err(other)
    }
}

#[derive(Clone, Copy)]
enum LeaderCall {
    Propose,
    ChangeVoters,
    ReadIndex,
}

/// The managers' transport service. It holds the replica weakly: connections that outlive
/// a replica's shutdown must not keep its files open.
pub struct Service {
    replica: std::sync::Weak<Inner>,
}

impl Service {
    /// The replica, for a caller the security rule lets in.
    fn replica<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> std::result::Result<Replica, tonic::Status> {
        let replica = self
            .replica
            .upgrade()
            .map(|inner| Replica { inner })
            .ok_or_else(|| tonic::Status::unavailable("this manager's store is shut down"))?;
        if let Some(sec) = &replica.inner.security {
            let certs = request.peer_certs().ok_or_else(|| {
                tonic::Status::unauthenticated("managers' transport: no client certificate")
            })?;
            let leaf = certs.first().ok_or_else(|| {
                tonic::Status::unauthenticated("managers' transport: no client certificate")
            })?;
            (sec.authorize)(leaf).map_err(tonic::Status::permission_denied)?;
        }
        Ok(replica)
    }
}

type RpcResult = std::result::Result<tonic::Response<RaftPayload>, tonic::Status>;

#[tonic::async_trait]
impl RaftTransport for Service {
    async fn append_entries(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let rpc = decode(request.get_ref())?;
        let res = replica.raft().append_entries(rpc).await;
        Ok(tonic::Response::new(encode(&res)?))
    }

    async fn vote(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let rpc = decode(request.get_ref())?;
        let res = replica.raft().vote(rpc).await;
        Ok(tonic::Response::new(encode(&res)?))
    }

    async fn install_snapshot(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let rpc = decode(request.get_ref())?;
        let res = replica.raft().install_snapshot(rpc).await;
        Ok(tonic::Response::new(encode(&res)?))
    }

    async fn propose(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let req: Request = decode(request.get_ref())?;
        // Only the leader's own Raft: a forwarded write is never forwarded again.
        let reply = match replica.propose_here(req).await {
            Proposed::Done(r) => ProposeReply::Done(r),
            Proposed::NotLeader(_) => ProposeReply::NotLeader,
            Proposed::Failed(e) => return Err(tonic::Status::internal(e)),
        };
        Ok(tonic::Response::new(encode(&reply)?))
    }

    async fn change_voters(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let change: VoterChange = decode(request.get_ref())?;
        if !replica.is_leader() {
            return Err(tonic::Status::unavailable("not the leader"));
        }
        let r: std::result::Result<(), String> = replica
            .change_voters_here(&change)
            .await
            .map_err(|e| e.to_string());
        Ok(tonic::Response::new(encode(&r)?))
    }

    async fn read_index(&self, request: tonic::Request<RaftPayload>) -> RpcResult {
        let replica = self.replica(&request)?;
        let index = match replica.raft().ensure_linearizable().await {
            Ok(log_id) => Some(log_id.map_or(0, |l| l.index)),
            Err(_) => None,
        };
        Ok(tonic::Response::new(encode(&index)?))
    }
}
