//! The node CA service every manager serves: certificates for joining nodes (the join
//! token's secret decides the role) and voter membership for new managers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::node_ca_server::{NodeCa, NodeCaServer};
use shoal_api::v1::{
    AssignmentsMessage, AssignmentsRequest, HeartbeatRequest, HeartbeatResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, JoinRaftRequest, JoinRaftResponse,
    LogEvent, LogSubscription, LogSubscriptionsRequest, PublishLogsMessage, PublishLogsResponse,
    RenewCertificateRequest, RenewCertificateResponse, UpdateTaskStatusRequest,
    UpdateTaskStatusResponse,
};
use shoal_store::table::{create, update};
use shoal_store::Replica;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::ca::{hex, identity, Role};
use crate::dispatcher::Liveness;
use crate::ids::{random_id, random_raft_id};
use crate::logs::LogBroker;
use crate::objects::{Availability, Cluster, Node, NodeRole, NodeState, RemovedNode};
use crate::service::{rank, Task};
use crate::sessions::{Routed, Sessions};
use crate::{JoinToken, RootCa};

pub struct NodeCaService {
    replica: Replica,
    liveness: Arc<Liveness>,
    /// This manager's own credentials, to forward heartbeats to the leader.
    security: Option<Arc<shoal_store::Security>>,
    /// Log subscriptions for the agents connected here.
    broker: Arc<LogBroker>,
    /// Task changes routed to the agents' sessions here.
    sessions: Arc<Sessions>,
    /// A follower's connection to the leader, kept for the heartbeats it passes on (a
    /// thousand nodes heartbeat a few hundred times a second: one TLS handshake each would
    /// cost the leader more than everything else it does).
    to_leader: std::sync::Mutex<Option<(String, NodeCaClient<Channel>)>>,
}

/// A task as its agent acts on it: everything but its status, which the agent itself
/// reports (SwarmKit's `TasksEqualStable`).
fn stable(t: &shoal_api::v1::Task) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut t = t.clone();
    t.status = None;
    t.updated_at.clear();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prost::Message::encode_to_vec(&t).hash(&mut h);
    h.finish()
}

impl NodeCaService {
    /// Pass a node's heartbeat on to the leader at `leader`, over the kept connection (made
    /// again when the leader changes or a call fails).
    async fn forward_heartbeat(
        &self,
        leader: &str,
        sec: &shoal_store::Security,
        node_id: &str,
    ) -> crate::Result<HeartbeatResponse> {
        let kept = {
            let to_leader = self.to_leader.lock().unwrap_or_else(|e| e.into_inner());
            to_leader
                .as_ref()
                .filter(|(addr, _)| addr == leader)
                .map(|(_, c)| c.clone())
        };
        let call = async {
            let mut c = match kept {
                Some(c) => c,
                None => {
                    let c = crate::join::client(leader, &sec.ca_pem, &sec.cert_pem, &sec.key_pem)
                        .await?;
                    *self.to_leader.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((leader.to_string(), c.clone()));
                    c
                }
            };
            let r = c
                .heartbeat(HeartbeatRequest {
                    forwarded_for: node_id.to_string(),
                })
                .await
                .map_err(|s| crate::Error::Other(s.message().to_string()))?;
            Ok(r.into_inner())
        };
        // A hung leader must not hold the agent's heartbeat: it tries another manager.
        let answer = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| crate::Error::Other(format!("the leader at {leader} did not answer")))
            .and_then(|r| r);
        if answer.is_err() {
            // Connect afresh next time.
            self.to_leader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        answer
    }
}

pub fn service(replica: Replica) -> NodeCaServer<NodeCaService> {
    service_with(replica, Arc::default(), None, Arc::default())
}

/// The node CA with the dispatcher's heartbeats: `liveness` is what `dispatcher::monitor`
/// reads; `security` (this manager's credentials) lets a follower forward heartbeats;
/// `broker` serves log subscriptions through the agents connected here.
pub fn service_with(
    replica: Replica,
    liveness: Arc<Liveness>,
    security: Option<Arc<shoal_store::Security>>,
    broker: Arc<LogBroker>,
) -> NodeCaServer<NodeCaService> {
    NodeCaServer::new(NodeCaService {
        sessions: Sessions::start(&replica),
        replica,
        liveness,
        security,
        broker,
        to_leader: std::sync::Mutex::new(None),
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The node's tasks an agent should know of: not yet over, or over but still wanted
/// running (so it sees it need do nothing), or to be removed.
fn assigned(replica: &Replica, node_id: &str) -> Result<Vec<shoal_api::v1::Task>, Status> {
    let mut tasks: Vec<shoal_api::v1::Task> = replica
        .state()
        .find_obj::<Task>("node", node_id)
        .map_err(|e| Status::internal(e.to_string()))?
        .into_iter()
        .map(|t| t.object.0)
        .filter(crate::sessions::wanted)
        .collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tasks)
}

impl NodeCaService {
    fn not_removed(&self, node_id: &str) -> Result<(), Status> {
        let removed = self
            .replica
            .state()
            .get_obj::<RemovedNode>(node_id)
            .map_err(|e| Status::internal(e.to_string()))?;
        match removed {
            Some(_) => Err(Status::permission_denied(format!(
                "node {node_id} was removed from the swarm"
            ))),
            None => Ok(()),
        }
    }
}

/// Pass `items` to a response stream until either side ends (or this manager's replica
/// stops); dropping `items` then releases whatever it holds.
fn forward<T, S>(
    replica: &Replica,
    items: S,
) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    S: futures::Stream<Item = T> + Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let replica = replica.clone();
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        loop {
            tokio::select! {
                item = items.next() => match item {
                    Some(item) => {
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tx.closed() => return,
                _ = replica.stopped() => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl NodeCa for NodeCaService {
    type AssignmentsStream =
        tokio_stream::wrappers::ReceiverStream<Result<AssignmentsMessage, Status>>;
    type LogSubscriptionsStream =
        tokio_stream::wrappers::ReceiverStream<Result<LogSubscription, Status>>;
    type SubscribeLogsStream = tokio_stream::wrappers::ReceiverStream<Result<LogEvent, Status>>;

    async fn log_subscriptions(
        &self,
        request: Request<LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        let caller = caller(&request, "log subscriptions need a node certificate")?;
        self.not_removed(&caller.node_id)?;
        let listener = self.broker.listen(&caller.node_id);
        let items = futures::stream::unfold(listener, |mut l| async move {
            let s = l.subscriptions.recv().await?;
            Some((s, l))
        });
        Ok(Response::new(forward(&self.replica, items)))
    }

    async fn publish_logs(
        &self,
        request: Request<tonic::Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let caller = caller(&request, "publishing logs needs a node certificate")?;
        self.not_removed(&caller.node_id)?;
        let mut stream = request.into_inner();
        // Tasks checked to be the caller's: a node publishes only its own tasks' lines.
        let mut mine: std::collections::HashSet<String> = Default::default();
        while let Some(msg) = stream.message().await? {
            for r in &msg.records {
                if mine.contains(&r.task_id) {
                    continue;
                }
                let task = self
                    .replica
                    .state()
                    .get_obj::<Task>(&r.task_id)
                    .map_err(|e| Status::internal(e.to_string()))?;
                if task.is_none_or(|t| t.object.0.node_id != caller.node_id) {
                    return Err(Status::permission_denied(format!(
                        "task {} is not node {}'s",
                        r.task_id, caller.node_id
                    )));
                }
                mine.insert(r.task_id.clone());
            }
            if self.broker.publish(&caller.node_id, msg).await.is_err() {
                break; // the subscriber is gone
            }
        }
        Ok(Response::new(PublishLogsResponse {}))
    }

    async fn subscribe_logs(
        &self,
        request: Request<LogSubscription>,
    ) -> Result<Response<Self::SubscribeLogsStream>, Status> {
        let caller = caller(&request, "log subscriptions need a manager certificate")?;
        if caller.role != Role::Manager {
            return Err(Status::permission_denied(
                "only managers may subscribe to the logs of another manager's nodes",
            ));
        }
        let sub = self.broker.subscribe(request.into_inner());
        let items = futures::stream::unfold(sub, |mut s| async move {
            let e = s.events.recv().await?;
            Some((e, s))
        });
        Ok(Response::new(forward(&self.replica, items)))
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let caller = caller(&request, "assignments need a node certificate")?;
        self.not_removed(&caller.node_id)?;
        let mut session = self.sessions.open(&caller.node_id);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let replica = self.replica.clone();
        tokio::spawn(async move {
            let mut full = true;
            // What the agent was last sent of each task (see `stable`).
            let mut sent: HashMap<String, u64> = HashMap::new();
            loop {
                let msg = if full {
                    full = false;
                    match assigned(&replica, &caller.node_id) {
                        Ok(tasks) => {
                            sent = tasks.iter().map(|t| (t.id.clone(), stable(t))).collect();
                            AssignmentsMessage {
                                tasks,
                                ..Default::default()
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                } else {
                    let first = tokio::select! {
                        r = session.rx.recv() => match r {
                            Some(r) => r,
                            None => return,
                        },
                        _ = tx.closed() => return,
                        _ = replica.stopped() => return,
                    };
                    // Everything queued goes in one message.
                    let mut changed = std::collections::BTreeMap::new();
                    let mut removed = std::collections::BTreeSet::new();
                    let mut next = Some(first);
                    while let Some(r) = next {
                        match r {
                            Routed::Changed(t) => {
                                // A change of its status only is what the agent itself
                                // reported: not sent back.
                                let h = stable(&t);
                                if sent.insert(t.id.clone(), h) != Some(h) {
                                    removed.remove(&t.id);
                                    changed.insert(t.id.clone(), *t);
                                }
                            }
                            Routed::Removed(id) => {
                                sent.remove(&id);
                                changed.remove(&id);
                                removed.insert(id);
                            }
                            Routed::Resync => full = true,
                        }
                        next = session.rx.try_recv().ok();
                    }
                    if full {
                        continue;
                    }
                    if changed.is_empty() && removed.is_empty() {
                        continue;
                    }
                    AssignmentsMessage {
                        tasks: changed.into_values().collect(),
                        incremental: true,
                        removed: removed.into_iter().collect(),
                    }
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return; // the agent went away
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let caller = caller(&request, "task status needs a node certificate")?;
        let req = request.into_inner();
        // The whole batch in one write; should a task change meanwhile, each on its own.
        let mut refused = Vec::new();
        let mut ops = Vec::new();
        for u in &req.updates {
            match status_op(&self.replica, &caller.node_id, u) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => {}
                Err(why) => refused.push(why),
            }
        }
        if ops.is_empty() {
            return Ok(Response::new(UpdateTaskStatusResponse { refused }));
        }
        if self.replica.write(ops).await.is_ok() {
            return Ok(Response::new(UpdateTaskStatusResponse { refused }));
        }
        let writes = req.updates.into_iter().map(|u| {
            let replica = self.replica.clone();
            let node = caller.node_id.clone();
            async move { record_status(&replica, &node, u).await }
        });
        let refused = futures::future::join_all(writes)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        Ok(Response::new(UpdateTaskStatusResponse { refused }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let req = request.into_inner();
        let token: JoinToken = req
            .token
            .parse()
            .map_err(|e: crate::Error| Status::invalid_argument(e.to_string()))?;
        self.replica
            .read_barrier()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let cluster = self
            .replica
            .state()
            .get_obj::<Cluster>(Cluster::KEY)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::unavailable("this manager's swarm is not initialised yet"))?
            .object;
        let root = RootCa::from_pem(&cluster.ca_cert_pem, Some(&cluster.ca_key_pem))
            .map_err(|e| Status::internal(e.to_string()))?;
        let as_secret = |secret: &str| JoinToken {
            fingerprint: root.fingerprint(),
            secret: secret.to_string(),
        };
        if token.fingerprint != root.fingerprint() {
            return Err(Status::permission_denied(
                "the join token is for another swarm (its CA fingerprint does not match)",
            ));
        }
        let role = if as_secret(&cluster.manager_secret).authorises(&token) {
            NodeRole::Manager
        } else if as_secret(&cluster.worker_secret).authorises(&token) {
            NodeRole::Worker
        } else {
            return Err(Status::permission_denied(
                "invalid join token: it may have been rotated; get the current one with `shoal swarm join-token` on a manager",
            ));
        };
        if req.advertise_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "advertise address {:?}: use ip:port",
                req.advertise_addr
            )));
        }
        let availability = match req.availability.as_str() {
            "" | "active" => Availability::Active,
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            other => {
                return Err(Status::invalid_argument(format!(
                    "availability {other:?}: use active, pause or drain"
                )))
            }
        };
        let now = now();
        let node = Node {
            id: random_id(),
            raft_id: random_raft_id(),
            hostname: req.hostname,
            role,
            availability,
            labels: Default::default(),
            addr: req.advertise_addr,
            state: NodeState::Unknown,
            message: String::new(),
            created_at: now.clone(),
            updated_at: now,
            engine_version: req.engine_version,
            os: req.os,
            arch: req.arch,
            nano_cpus: req.nano_cpus,
            memory_bytes: req.memory_bytes,
            cert_root: hex(&root.fingerprint()),
        };
        let cert_role = match role {
            NodeRole::Manager => Role::Manager,
            NodeRole::Worker => Role::Worker,
        };
        // Sign first: a bad request leaves no node behind.
        let cert_pem = sign(&cluster, &root, &req.csr_pem, &node.id, cert_role)?;
        self.replica
            .write(vec![
                create(&node).map_err(|e| Status::internal(e.to_string()))?
            ])
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(node_id = %node.id, role = role.as_str(), addr = %node.addr, "node joined");
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id: node.id,
            raft_id: node.raft_id,
            role: role.as_str().into(),
            cert_pem,
            ca_pem: cluster.trust_bundle(),
            cluster_id: cluster.id,
            manager_addrs: self.replica.voters().into_iter().map(|(_, a)| a).collect(),
        }))
    }

    async fn join_raft(
        &self,
        request: Request<JoinRaftRequest>,
    ) -> Result<Response<JoinRaftResponse>, Status> {
        // Only a node holding a manager certificate of this swarm, for a node the store
        // knows as a manager with this raft id.
        let id = caller(&request, "joining the managers needs a manager certificate")?;
        let req = request.into_inner();
        self.replica
            .read_barrier()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let node = self
            .replica
            .state()
            .get_obj::<Node>(&id.node_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::permission_denied(format!("node {} is not in this swarm", id.node_id))
            })?
            .object;
        if id.role != Role::Manager || node.role != NodeRole::Manager || node.raft_id != req.raft_id
        {
            return Err(Status::permission_denied(format!(
                "node {} may not join the managers",
                id.node_id
            )));
        }
        self.replica
            .add_voter(req.raft_id, &req.addr)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(JoinRaftResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = caller(&request, "heartbeats need a node certificate")?;
        let req = request.into_inner();
        // Only a manager may speak for another node.
        let node_id = if !req.forwarded_for.is_empty() && caller.role == Role::Manager {
            req.forwarded_for.clone()
        } else {
            caller.node_id.clone()
        };
        let state = self.replica.state();
        if state
            .get_obj::<RemovedNode>(&node_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .is_some()
        {
            return Err(Status::permission_denied(format!(
                "node {node_id} was removed from the swarm"
            )));
        }
        if self.replica.is_leader() {
            self.liveness.record(&node_id);
        } else if let (Some((_, leader)), Some(sec)) = (self.replica.leader(), &self.security) {
            // The leader's answer, not this follower's view: a follower cut off from the
            // swarm (or left behind by --force-new-cluster) must not tell a node stale roles.
            let answer = self
                .forward_heartbeat(&leader, sec, &node_id)
                .await
                .map_err(|e| Status::unavailable(format!("forwarding to the leader: {e}")))?;
            return Ok(Response::new(answer));
        } else {
            return Err(Status::unavailable("no leader to report to"));
        }
        let node = state
            .get_obj::<Node>(&node_id)
            .map_err(|e| Status::internal(e.to_string()))?;
        // A node heard from for the first time (it just joined) or again (it was down) is
        // ready now, not at the liveness monitor's next round: a service created right after
        // a join spreads over the new node.
        if let Some(n) = node.as_ref().filter(|n| n.object.state != NodeState::Ready) {
            let mut ready = n.object.clone();
            ready.state = NodeState::Ready;
            ready.message.clear();
            if let Ok(op) = update(&ready, n.version) {
                match self.replica.write(vec![op]).await {
                    Ok(_) => tracing::info!(node_id = %node_id, "node ready"),
                    Err(e) => {
                        tracing::debug!(node_id = %node_id, error = %e, "marking a node ready (the monitor will)")
                    }
                }
            }
        }
        let role = node
            .map(|n| n.object.role.as_str().to_string())
            .unwrap_or_default();
        let cluster = state
            .get_obj::<Cluster>(Cluster::KEY)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::unavailable("this manager's swarm is not initialised yet"))?
            .object;
        let root = RootCa::from_pem(&cluster.ca_cert_pem, None)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(HeartbeatResponse {
            period_ms: crate::dispatcher::period(&self.replica).as_millis() as u64,
            manager_addrs: self.replica.voters().into_iter().map(|(_, a)| a).collect(),
            role,
            root_fingerprint: hex(&root.fingerprint()),
            ca_pem: cluster.trust_bundle(),
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let caller = caller(&request, "renewing needs the node's current certificate")?;
        let req = request.into_inner();
        self.replica
            .read_barrier()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let state = self.replica.state();
        let internal = |e: shoal_store::Error| Status::internal(e.to_string());
        if state
            .get_obj::<RemovedNode>(&caller.node_id)
            .map_err(internal)?
            .is_some()
        {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the swarm",
                caller.node_id
            )));
        }
        let cluster = state
            .get_obj::<Cluster>(Cluster::KEY)
            .map_err(internal)?
            .ok_or_else(|| Status::unavailable("this manager's swarm is not initialised yet"))?
            .object;
        if caller.cluster_id != cluster.id {
            return Err(Status::permission_denied(
                "the certificate is for another swarm",
            ));
        }
        let root = RootCa::from_pem(&cluster.ca_cert_pem, Some(&cluster.ca_key_pem))
            .map_err(|e| Status::internal(e.to_string()))?;
        let root_fp = hex(&root.fingerprint());
        // The role is the managers' word now, not what the old certificate said.
        let mut node = None;
        for _ in 0..5 {
            let n = state
                .get_obj::<Node>(&caller.node_id)
                .map_err(internal)?
                .ok_or_else(|| {
                    Status::permission_denied(format!(
                        "node {} is not in this swarm",
                        caller.node_id
                    ))
                })?;
            if n.object.cert_root == root_fp {
                node = Some(n.object);
                break;
            }
            // Record which root signs it: a rotation completes when every node has the new one.
            let mut o = n.object.clone();
            o.cert_root = root_fp.clone();
            match self
                .replica
                .write(vec![update(&o, n.version).map_err(internal)?])
                .await
            {
                Ok(_) => {
                    node = Some(o);
                    break;
                }
                Err(shoal_store::Error::Rejected(shoal_store::Rejection::Conflict { .. })) => {
                    continue
                }
                Err(e) => return Err(Status::unavailable(e.to_string())),
            }
        }
        let node = node.ok_or_else(|| Status::aborted("the node kept changing: try again"))?;
        let cert_role = match node.role {
            NodeRole::Manager => Role::Manager,
            NodeRole::Worker => Role::Worker,
        };
        let cert_pem = sign(&cluster, &root, &req.csr_pem, &node.id, cert_role)?;
        tracing::info!(node_id = %node.id, role = node.role.as_str(), "node certificate renewed");
        Ok(Response::new(RenewCertificateResponse {
            cert_pem,
            ca_pem: cluster.trust_bundle(),
            role: node.role.as_str().into(),
            raft_id: node.raft_id,
        }))
    }
}

/// A node certificate from the cluster's current root; while a rotation is in progress it
/// carries the new root cross-signed by the old one, for nodes that trust only the old.
fn sign(
    cluster: &Cluster,
    root: &RootCa,
    csr_pem: &str,
    node_id: &str,
    role: Role,
) -> Result<String, Status> {
    let cert = root
        .issue(
            csr_pem,
            &cluster.id,
            node_id,
            role,
            Duration::from_secs(cluster.cert_expiry_secs),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if cluster.cross_signed_pem.is_empty() {
        return Ok(cert);
    }
    Ok(format!("{}\n{}", cert.trim_end(), cluster.cross_signed_pem))
}

/// Who the (TLS-verified) caller is, from its certificate.
fn caller<T>(request: &Request<T>, missing: &str) -> Result<crate::Identity, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated(missing.to_string()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated(missing.to_string()))?;
    identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// One status report: only for a task of `node`, and only forward.
/// The write that records `u` (None when there is nothing to record: the task is already
/// there or further on), or why it is refused.
fn status_op(
    replica: &Replica,
    node: &str,
    u: &shoal_api::v1::TaskStatusUpdate,
) -> Result<Option<shoal_store::Op>, String> {
    let Some(status) = &u.status else {
        return Err(format!("task {}: no status", u.task_id));
    };
    let Some(t) = replica
        .state()
        .get_obj::<Task>(&u.task_id)
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("task {} does not exist (any more)", u.task_id));
    };
    if t.object.0.node_id != node {
        return Err(format!("task {} is not assigned to node {node}", u.task_id));
    }
    let old = t.object.0.status.clone().unwrap_or_default();
    if rank(&status.state) < rank(&old.state) || old == *status {
        return Ok(None);
    }
    let mut task = t.object;
    task.0.status = Some(status.clone());
    task.0.updated_at = status.timestamp.clone();
    update(&task, t.version)
        .map(Some)
        .map_err(|e| e.to_string())
}

async fn record_status(
    replica: &Replica,
    node: &str,
    u: shoal_api::v1::TaskStatusUpdate,
) -> Result<(), String> {
    for _ in 0..5 {
        let Some(op) = status_op(replica, node, &u)? else {
            return Ok(());
        };
        match replica.write(vec![op]).await {
            Ok(_) => return Ok(()),
            Err(shoal_store::Error::Rejected(shoal_store::Rejection::Conflict { .. })) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("task {} kept changing", u.task_id))
}
