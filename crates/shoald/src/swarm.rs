//! This node's part in a swarm: `swarm init` makes it the first manager (cluster CA, its own
//! certificate, join secrets, a one-member Raft store served over mutual TLS); its state lives
//! under `<data-root>/swarm/` and comes back when the daemon restarts.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::v1::swarm_server::{Swarm, SwarmServer};
use shoal_api::v1::{
    CaRequest, CaResponse, JoinTokenRequest, JoinTokenResponse, LeaveRequest, LeaveResponse,
    ListNodesRequest, ListNodesResponse, NodeRef, RemoveNodeRequest, RemoveNodeResponse, SwarmInfo,
    SwarmInitRequest, SwarmInitResponse, SwarmInspectRequest, SwarmJoinRequest, SwarmJoinResponse,
    SwarmNode, SwarmUpdateRequest, UpdateNodeRequest,
};
use shoal_manager::ids::{random_id, random_raft_id};
use shoal_manager::objects::{Availability, Cluster, Node, NodeRole, NodeState};
use shoal_manager::{JoinToken, NodeKey, Role, RootCa};
use shoal_store::table::{create, update};
use shoal_store::{Replica, ReplicaConfig, Versioned};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

const DEFAULT_PORT: u16 = 2377;
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
const DEFAULT_TASK_HISTORY: u64 = 5;
const DEFAULT_POOL: &str = "10.0.0.0/8";
const DEFAULT_SUBNET_SIZE: u32 = 24;
const DEFAULT_DATA_PATH_PORT: u16 = 4789;

/// What this node keeps on disk about its membership.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Membership {
    node_id: String,
    /// A manager (runs a replica of the store) or a worker.
    #[serde(default = "yes")]
    manager: bool,
    /// Managers to send heartbeats to (refreshed from their answers).
    #[serde(default)]
    managers: Vec<String>,
    raft_id: u64,
    cluster_id: String,
    advertise_addr: String,
    listen_addr: String,
}

fn yes() -> bool {
    true
}

struct Active {
    m: Membership,
    /// Managers only: this node's replica of the store.
    replica: Option<Replica>,
    /// The agent's heartbeats, and on managers the leader's liveness monitor.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Active {
    fn r(&self) -> Result<&Replica, Status> {
        self.replica.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this node is a worker: worker nodes cannot be used to view or change the swarm; run this on a manager",
            )
        })
    }
}

pub struct SwarmApi {
    dir: PathBuf,
    active: Mutex<Option<Arc<Active>>>,
}

impl SwarmApi {
    /// Rejoin the swarm this node was part of before the daemon restarted, if any.
    pub async fn open(data_root: &Path) -> anyhow::Result<SwarmApi> {
        let api = SwarmApi {
            dir: data_root.join("swarm"),
            active: Mutex::new(None),
        };
        let state = api.dir.join("state.json");
        if state.exists() {
            let m: Membership = serde_json::from_slice(&std::fs::read(&state)?)?;
            let active = api.start(m).await?;
            *api.active.lock().await = Some(Arc::new(active));
        }
        Ok(api)
    }

    pub fn service(self: Arc<Self>) -> SwarmServer<Handle> {
        SwarmServer::new(Handle(self))
    }

    /// Open the store and serve the managers' transport, from the files under `dir`.
    async fn start(&self, m: Membership) -> anyhow::Result<Active> {
        let certs = self.dir.join("certs");
        let read = |f: &str| std::fs::read_to_string(certs.join(f));
        let (ca, cert, key) = (read("ca.pem")?, read("node.pem")?, read("node.key")?);
        let agent = tokio::spawn(agent(
            m.node_id.clone(),
            m.managers.clone(),
            ca.clone(),
            cert.clone(),
            key.clone(),
        ));
        if !m.manager {
            tracing::info!(node_id = %m.node_id, "swarm worker up");
            return Ok(Active {
                m,
                replica: None,
                tasks: vec![agent],
            });
        }
        let removed = Arc::new(std::sync::OnceLock::new());
        let security = shoal_manager::security::managers_only_unless_removed(
            &ca,
            &cert,
            &key,
            &m.cluster_id,
            removed.clone(),
        );
        let cfg = ReplicaConfig {
            security: Some(security),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind(&m.listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {} for the swarm: {e}", m.listen_addr))?;
        // The store holds the CA key: root only.
        let raft_dir = self.dir.join("raft");
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&raft_dir)?;
            std::fs::set_permissions(&raft_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let replica = Replica::open(m.raft_id, &raft_dir, &cfg).await?;
        let _ = removed.set(replica.state().clone());
        let liveness = Arc::new(shoal_manager::dispatcher::Liveness::default());
        let node_ca = shoal_manager::node_ca::service_with(
            replica.clone(),
            liveness.clone(),
            cfg.security.clone(),
        );
        replica.serve_with(listener, move |router| router.add_service(node_ca))?;
        let monitor = tokio::spawn(shoal_manager::dispatcher::monitor(
            replica.clone(),
            liveness,
        ));
        tracing::info!(node_id = %m.node_id, addr = %m.advertise_addr, "swarm manager up");
        Ok(Active {
            m,
            replica: Some(replica),
            tasks: vec![agent, monitor],
        })
    }

    async fn init(&self, req: SwarmInitRequest) -> Result<SwarmInitResponse, Status> {
        let mut active = self.active.lock().await;
        if active.is_some() {
            return Err(Status::already_exists(
                "this node is already part of a swarm: use \"shoal swarm leave\" to leave it and join another one",
            ));
        }
        if req.force_new_cluster {
            return Err(Status::failed_precondition(
                "--force-new-cluster recovers a swarm this node managed; this node is in no swarm: use \"shoal swarm init\" without it",
            ));
        }
        let listen = parse_listen(&req.listen_addr)?;
        let advertise = advertise_addr(&req.advertise_addr, listen)?;
        let heartbeat = secs_or(req.dispatcher_heartbeat_secs, DEFAULT_HEARTBEAT);
        let expiry = secs_or(req.cert_expiry_secs, DEFAULT_CERT_EXPIRY);
        if expiry < Duration::from_secs(3600) {
            return Err(Status::invalid_argument(
                "--cert-expiry must be at least 1h",
            ));
        }
        let pools = if req.default_addr_pool.is_empty() {
            vec![DEFAULT_POOL.to_string()]
        } else {
            req.default_addr_pool.clone()
        };
        for p in &pools {
            p.parse::<ipnet::Ipv4Net>().map_err(|_| {
                Status::invalid_argument(format!("--default-addr-pool {p:?} is not an IPv4 CIDR"))
            })?;
        }
        let subnet_size = match req.default_addr_pool_mask_length {
            0 => DEFAULT_SUBNET_SIZE,
            n @ 8..=29 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "--default-addr-pool-mask-length {n}: use 8 to 29"
                )))
            }
        };
        let data_path_port = match req.data_path_port {
            0 => DEFAULT_DATA_PATH_PORT,
            p @ 1024..=49151 => p as u16,
            p => {
                return Err(Status::invalid_argument(format!(
                    "--data-path-port {p}: use 1024 to 49151"
                )))
            }
        };
        let task_history = match req.task_history_limit {
            n if n < 0 => DEFAULT_TASK_HISTORY,
            n => n as u64,
        };

        let m = Membership {
            managers: vec![advertise.to_string()],
            manager: true,
            node_id: random_id(),
            raft_id: random_raft_id(),
            cluster_id: random_id(),
            advertise_addr: advertise.to_string(),
            listen_addr: listen.to_string(),
        };
        let ca = RootCa::generate(&m.cluster_id).map_err(internal)?;
        let key = NodeKey::generate().map_err(internal)?;
        let cert = ca
            .issue(
                &key.csr_pem,
                &m.cluster_id,
                &m.node_id,
                Role::Manager,
                expiry,
            )
            .map_err(internal)?;
        let made = async {
            write_private(&self.dir.join("certs"), "ca.pem", ca.cert_pem())?;
            write_private(&self.dir.join("certs"), "node.pem", &cert)?;
            write_private(&self.dir.join("certs"), "node.key", &key.key_pem)?;
            let a = self.start(m.clone()).await?;
            a.r()?.bootstrap(&m.advertise_addr).await?;
            let now = now();
            let cluster = Cluster {
                id: m.cluster_id.clone(),
                name: "default".into(),
                created_at: now.clone(),
                updated_at: now.clone(),
                ca_cert_pem: ca.cert_pem().into(),
                ca_key_pem: ca.key_pem().unwrap_or_default(),
                worker_secret: JoinToken::generate(ca.fingerprint())?.secret,
                manager_secret: JoinToken::generate(ca.fingerprint())?.secret,
                heartbeat_period_secs: heartbeat.as_secs(),
                cert_expiry_secs: expiry.as_secs(),
                task_history_limit: task_history,
                default_addr_pool: pools,
                subnet_size,
                data_path_port,
            };
            let node = this_node(&m, NodeRole::Manager, &now);
            a.r()?
                .write(vec![create(&cluster)?, create(&node)?])
                .await?;
            // Written last: a node with this file is in a swarm.
            write_private(&self.dir, "state.json", &serde_json::to_string_pretty(&m)?)?;
            anyhow::Ok((a, cluster))
        }
        .await;
        match made {
            Ok((a, cluster)) => {
                let token = token_for(&cluster, false).map_err(internal)?;
                *active = Some(Arc::new(a));
                Ok(SwarmInitResponse {
                    node_id: m.node_id,
                    worker_token: token,
                    advertise_addr: m.advertise_addr,
                })
            }
            Err(e) => {
                // Nothing half-made stays: the node is as it was.
                let _ = std::fs::remove_dir_all(&self.dir);
                Err(Status::internal(format!("swarm init failed: {e:#}")))
            }
        }
    }

    async fn join(&self, req: SwarmJoinRequest) -> Result<SwarmJoinResponse, Status> {
        let mut active = self.active.lock().await;
        if active.is_some() {
            return Err(Status::already_exists(
                "this node is already part of a swarm: use \"shoal swarm leave\" to leave it and join another one",
            ));
        }
        if req.token.is_empty() {
            return Err(Status::invalid_argument("--token is required"));
        }
        let remote = parse_listen(&req.remote_addr).map_err(|_| {
            Status::invalid_argument(format!(
                "manager address {:?}: use IP[:PORT]",
                req.remote_addr
            ))
        })?;
        if remote.ip().is_unspecified() {
            return Err(Status::invalid_argument(
                "give the address of a manager to join",
            ));
        }
        let listen = parse_listen(&req.listen_addr)?;
        let advertise = if req.advertise_addr.is_empty() {
            // The address this host uses to reach the manager (no packet is sent).
            let probe = std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|u| u.connect(remote).map(|_| u))
                .and_then(|u| u.local_addr())
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "cannot tell which address reaches {remote} ({e}): give --advertise-addr"
                    ))
                })?;
            SocketAddr::new(probe.ip(), listen.port())
        } else {
            advertise_addr(&req.advertise_addr, listen)?
        };
        let me = this_node(
            &Membership {
                node_id: String::new(),
                manager: false,
                managers: Vec::new(),
                raft_id: 0,
                cluster_id: String::new(),
                advertise_addr: advertise.to_string(),
                listen_addr: listen.to_string(),
            },
            NodeRole::Worker,
            "",
        );
        let joined = shoal_manager::join::request_certificate(&shoal_manager::join::Request {
            token: req.token.clone(),
            manager_addr: remote.to_string(),
            advertise_addr: advertise.to_string(),
            hostname: me.hostname,
            os: me.os,
            arch: me.arch,
            nano_cpus: me.nano_cpus,
            memory_bytes: me.memory_bytes,
            engine_version: me.engine_version,
            availability: req.availability.clone(),
        })
        .await
        .map_err(|e| match e {
            shoal_manager::Error::InvalidToken(m) => Status::permission_denied(m),
            other => Status::unavailable(other.to_string()),
        })?;
        let m = Membership {
            node_id: joined.node_id.clone(),
            manager: joined.role == NodeRole::Manager,
            managers: if joined.role == NodeRole::Manager {
                vec![advertise.to_string(), remote.to_string()]
            } else if joined.manager_addrs.is_empty() {
                vec![remote.to_string()]
            } else {
                joined.manager_addrs.clone()
            },
            raft_id: joined.raft_id,
            cluster_id: joined.cluster_id.clone(),
            advertise_addr: advertise.to_string(),
            listen_addr: listen.to_string(),
        };
        let made = async {
            let certs = self.dir.join("certs");
            write_private(&certs, "ca.pem", &joined.ca_pem)?;
            write_private(&certs, "node.pem", &joined.cert_pem)?;
            write_private(&certs, "node.key", &joined.key_pem)?;
            let a = self.start(m.clone()).await?;
            if let Some(r) = &a.replica {
                let joined_raft =
                    shoal_manager::join::join_raft(&remote.to_string(), &joined, &m.advertise_addr)
                        .await;
                if let Err(e) = joined_raft {
                    r.shutdown().await;
                    return Err(anyhow::anyhow!(e));
                }
            }
            write_private(&self.dir, "state.json", &serde_json::to_string_pretty(&m)?)?;
            anyhow::Ok(a)
        }
        .await;
        match made {
            Ok(a) => {
                *active = Some(Arc::new(a));
                Ok(SwarmJoinResponse {
                    node_id: m.node_id,
                    role: if m.manager { "manager" } else { "worker" }.into(),
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&self.dir);
                Err(Status::unavailable(format!("swarm join failed: {e:#}")))
            }
        }
    }

    async fn active(&self) -> Result<Arc<Active>, Status> {
        self.active.lock().await.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this node is not a swarm manager: use \"shoal swarm init\" or \"shoal swarm join\" to connect it to a swarm",
            )
        })
    }

    async fn cluster(a: &Active) -> Result<Versioned<Cluster>, Status> {
        a.r()?.read_barrier().await.map_err(unavailable)?;
        a.r()?
            .state()
            .get_obj::<Cluster>(Cluster::KEY)
            .map_err(internal)?
            .ok_or_else(|| Status::internal("the swarm has no cluster object"))
    }

    async fn inspect(&self) -> Result<SwarmInfo, Status> {
        let Some(a) = self.active.lock().await.clone() else {
            return Ok(SwarmInfo {
                local_node_state: "inactive".into(),
                ..Default::default()
            });
        };
        if a.replica.is_none() {
            return Ok(SwarmInfo {
                local_node_state: "active".into(),
                node_id: a.m.node_id.clone(),
                node_addr: a.m.advertise_addr.clone(),
                control_available: false,
                cluster_id: a.m.cluster_id.clone(),
                ..Default::default()
            });
        }
        let c = Self::cluster(&a).await?.object;
        let nodes = a.r()?.state().list_obj::<Node>().map_err(internal)?;
        let metrics = a.r()?.raft().metrics().borrow().clone();
        let leader_raft = metrics.current_leader;
        let leader_node = nodes
            .iter()
            .find(|n| Some(n.object.raft_id) == leader_raft)
            .map(|n| n.object.id.clone())
            .unwrap_or_default();
        let fingerprint = RootCa::from_pem(&c.ca_cert_pem, None)
            .map(|ca| hex(&ca.fingerprint()))
            .unwrap_or_default();
        Ok(SwarmInfo {
            local_node_state: "active".into(),
            node_id: a.m.node_id.clone(),
            node_addr: a.m.advertise_addr.clone(),
            control_available: true,
            cluster_id: c.id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            heartbeat_period_secs: c.heartbeat_period_secs,
            cert_expiry_secs: c.cert_expiry_secs,
            task_history_limit: c.task_history_limit,
            default_addr_pool: c.default_addr_pool,
            subnet_size: c.subnet_size,
            data_path_port: c.data_path_port.into(),
            managers: nodes
                .iter()
                .filter(|n| n.object.role == NodeRole::Manager)
                .count() as u32,
            nodes: nodes.len() as u32,
            raft_state: format!("{:?}", metrics.state).to_lowercase(),
            leader_node_id: leader_node,
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            ca_cert_fingerprint: fingerprint,
            manager_addrs: a.r()?.voters().into_iter().map(|(_, addr)| addr).collect(),
        })
    }

    async fn join_token(&self, req: JoinTokenRequest) -> Result<JoinTokenResponse, Status> {
        let manager = match req.role.as_str() {
            "worker" => false,
            "manager" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown role {other:?}: use worker or manager"
                )))
            }
        };
        let a = self.active().await?;
        let mut c = Self::cluster(&a).await?;
        if req.rotate {
            let fp = RootCa::from_pem(&c.object.ca_cert_pem, None)
                .map_err(internal)?
                .fingerprint();
            let secret = JoinToken::generate(fp).map_err(internal)?.secret;
            if manager {
                c.object.manager_secret = secret;
            } else {
                c.object.worker_secret = secret;
            }
            c.object.updated_at = now();
            c.version = a
                .r()?
                .write(vec![update(&c.object, c.version).map_err(internal)?])
                .await
                .map_err(store_status)?;
        }
        Ok(JoinTokenResponse {
            token: token_for(&c.object, manager).map_err(internal)?,
            manager_addr: a.m.advertise_addr.clone(),
        })
    }

    async fn list_nodes(&self) -> Result<ListNodesResponse, Status> {
        let a = self.active().await?;
        a.r()?.read_barrier().await.map_err(unavailable)?;
        let mut nodes: Vec<SwarmNode> = a
            .r()?
            .state()
            .list_obj::<Node>()
            .map_err(internal)?
            .into_iter()
            .map(|n| node_message(&a, n))
            .collect();
        nodes.sort_by(|x, y| x.hostname.cmp(&y.hostname).then(x.id.cmp(&y.id)));
        Ok(ListNodesResponse {
            nodes,
            self_id: a.m.node_id.clone(),
        })
    }

    async fn inspect_node(&self, r: NodeRef) -> Result<SwarmNode, Status> {
        let a = self.active().await?;
        a.r()?.read_barrier().await.map_err(unavailable)?;
        let n = Self::find_node(&a, &r.id)?;
        Ok(node_message(&a, n))
    }

    /// A node by id, unique id prefix (3+ characters), hostname, or "self".
    fn find_node(a: &Active, reference: &str) -> Result<Versioned<Node>, Status> {
        let target = if reference == "self" {
            a.m.node_id.clone()
        } else {
            reference.to_string()
        };
        let nodes = a.r()?.state().list_obj::<Node>().map_err(internal)?;
        if let Some(exact) = nodes.iter().find(|n| n.object.id == target) {
            return Ok(exact.clone());
        }
        let found: Vec<_> = nodes
            .into_iter()
            .filter(|n| {
                n.object.hostname == target
                    || (target.len() >= 3 && n.object.id.starts_with(&target))
            })
            .collect();
        match found.len() {
            0 => Err(Status::not_found(format!("no such node: {reference}"))),
            1 => Ok(found.into_iter().next().expect("one")),
            _ => Err(Status::failed_precondition(format!(
                "node {reference} is ambiguous ({} matches): use a longer id",
                found.len()
            ))),
        }
    }

    async fn update_node(&self, req: UpdateNodeRequest) -> Result<SwarmNode, Status> {
        let availability = match req.availability.as_str() {
            "" => None,
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid availability {other:?}: use active, pause or drain"
                )))
            }
        };
        let a = self.active().await?;
        // Optimistic concurrency: re-read and retry if someone else changed the node meanwhile.
        for _ in 0..5 {
            a.r()?.read_barrier().await.map_err(unavailable)?;
            let mut n = Self::find_node(&a, &req.id)?;
            for k in &req.label_rm {
                if n.object.labels.remove(k).is_none() {
                    return Err(Status::not_found(format!(
                        "label {k:?} is not set on node {}",
                        n.object.id
                    )));
                }
            }
            for (k, v) in &req.label_add {
                n.object.labels.insert(k.clone(), v.clone());
            }
            if let Some(av) = availability {
                n.object.availability = av;
            }
            n.object.updated_at = now();
            match a
                .r()?
                .write(vec![update(&n.object, n.version).map_err(internal)?])
                .await
            {
                Ok(version) => {
                    n.version = version;
                    return Ok(node_message(&a, n));
                }
                Err(shoal_store::Error::Rejected(shoal_store::Rejection::Conflict { .. })) => {
                    continue
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        Err(Status::aborted(
            "the node kept changing under this update: try again",
        ))
    }

    async fn update(&self, req: SwarmUpdateRequest) -> Result<SwarmInfo, Status> {
        if req.cert_expiry_secs != 0 && req.cert_expiry_secs < 3600 {
            return Err(Status::invalid_argument(
                "--cert-expiry must be at least 1h",
            ));
        }
        if req.dispatcher_heartbeat_secs > 3600 {
            return Err(Status::invalid_argument(
                "--dispatcher-heartbeat must be at most 1h",
            ));
        }
        let a = self.active().await?;
        for _ in 0..5 {
            let mut c = Self::cluster(&a).await?;
            if req.dispatcher_heartbeat_secs != 0 {
                c.object.heartbeat_period_secs = req.dispatcher_heartbeat_secs;
            }
            if req.cert_expiry_secs != 0 {
                c.object.cert_expiry_secs = req.cert_expiry_secs;
            }
            if req.task_history_limit >= 0 {
                c.object.task_history_limit = req.task_history_limit as u64;
            }
            c.object.updated_at = now();
            match a
                .r()?
                .write(vec![update(&c.object, c.version).map_err(internal)?])
                .await
            {
                Ok(_) => return self.inspect().await,
                Err(shoal_store::Error::Rejected(shoal_store::Rejection::Conflict { .. })) => {
                    continue
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        Err(Status::aborted(
            "the swarm kept changing under this update: try again",
        ))
    }

    async fn ca(&self, req: CaRequest) -> Result<CaResponse, Status> {
        let a = self.active().await?;
        if req.rotate {
            return Err(Status::unimplemented(
                "rotating the root CA is not implemented yet: the current root stays in use",
            ));
        }
        let c = Self::cluster(&a).await?;
        Ok(CaResponse {
            cert_pem: c.object.ca_cert_pem,
        })
    }

    /// `node rm`: docker's rules (not a manager, not ready unless --force); the node's
    /// certificate is refused from then on.
    async fn remove_node(&self, req: RemoveNodeRequest) -> Result<RemoveNodeResponse, Status> {
        let a = self.active().await?;
        a.r()?.read_barrier().await.map_err(unavailable)?;
        let n = Self::find_node(&a, &req.id)?;
        if n.object.id == a.m.node_id {
            return Err(Status::failed_precondition(
                "a node cannot remove itself: use \"shoal swarm leave\" on it, or \"shoal node rm\" on another manager",
            ));
        }
        if n.object.role == NodeRole::Manager {
            return Err(Status::failed_precondition(format!(
                "node {} is a manager and a member of the Raft cluster: demote it to a worker before removing it",
                n.object.id
            )));
        }
        if n.object.state == NodeState::Ready && !req.force {
            return Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed: stop it first, or use --force",
                n.object.id
            )));
        }
        let tomb = shoal_manager::objects::RemovedNode {
            id: n.object.id.clone(),
            removed_at: now(),
        };
        a.r()?
            .write(vec![
                shoal_store::table::delete::<Node>(&n.object.id, Some(n.version)),
                create(&tomb).map_err(internal)?,
            ])
            .await
            .map_err(store_status)?;
        tracing::info!(node_id = %n.object.id, "node removed");
        Ok(RemoveNodeResponse { id: n.object.id })
    }

    async fn leave(&self, req: LeaveRequest) -> Result<LeaveResponse, Status> {
        let mut active = self.active.lock().await;
        let Some(a) = active.clone() else {
            return Err(Status::failed_precondition(
                "this node is not part of a swarm",
            ));
        };
        let managers = a.replica.as_ref().map_or(0, |r| r.voters().len());
        if a.replica.is_some() && !req.force {
            let why = if managers <= 1 {
                "this node is the swarm's only manager: leaving erases the swarm's state; use --force to leave anyway".to_string()
            } else {
                format!(
                    "this node is one of {managers} managers: leaving leaves {} of {managers}, and without a majority of them the swarm cannot be managed; demote it first, or use --force",
                    managers - 1
                )
            };
            return Err(Status::failed_precondition(why));
        }
        if let Some(r) = &a.replica {
            if managers > 1 {
                // Best effort: take this node out of the voters so the rest keep their quorum.
                if let Err(e) = r.remove_voter(a.m.raft_id).await {
                    tracing::warn!(error = %e, "removing this manager from the voters failed");
                }
            }
            r.shutdown().await;
        }
        *active = None;
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| internal(format!("remove {}: {e}", self.dir.display())))?;
        tracing::info!(node_id = %a.m.node_id, "left the swarm");
        Ok(LeaveResponse {})
    }
}

fn node_message(a: &Active, n: Versioned<Node>) -> SwarmNode {
    let o = n.object;
    let metrics = match &a.replica {
        Some(r) => r.raft().metrics().borrow().clone(),
        None => return SwarmNode::default(),
    };
    let voter = metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == o.raft_id);
    let manager_status = if o.role != NodeRole::Manager {
        String::new()
    } else if metrics.current_leader == Some(o.raft_id) {
        "Leader".into()
    } else if voter && o.state != NodeState::Down {
        "Reachable".into()
    } else {
        "Unreachable".into()
    };
    let state = o.state;
    SwarmNode {
        id: o.id,
        hostname: o.hostname,
        role: o.role.as_str().into(),
        availability: format!("{:?}", o.availability).to_lowercase(),
        state: format!("{state:?}").to_lowercase(),
        message: o.message,
        addr: o.addr,
        manager_status,
        labels: o.labels.into_iter().collect(),
        created_at: o.created_at,
        updated_at: o.updated_at,
        engine_version: o.engine_version,
        os: o.os,
        arch: o.arch,
        nano_cpus: o.nano_cpus,
        memory_bytes: o.memory_bytes,
        version: n.version,
    }
}

/// The node's agent: a heartbeat to a manager each period, moving on to the next manager
/// when one does not answer; the managers' answers refresh the period and the list.
async fn agent(node_id: String, mut managers: Vec<String>, ca: String, cert: String, key: String) {
    let mut period = Duration::from_secs(5);
    let mut next = 0usize;
    // The connection to the manager last heard from, kept across heartbeats.
    let mut conn: Option<(
        String,
        shoal_api::v1::node_ca_client::NodeCaClient<tonic::transport::Channel>,
    )> = None;
    loop {
        if managers.is_empty() {
            tracing::warn!(node_id = %node_id, "no manager to send heartbeats to");
            return;
        }
        let addr = managers[next % managers.len()].clone();
        let sent = async {
            let mut c = match conn.take() {
                Some((a, c)) if a == addr => c,
                _ => shoal_manager::join::client(&addr, &ca, &cert, &key).await?,
            };
            let r = c
                .heartbeat(shoal_api::v1::HeartbeatRequest::default())
                .await
                .map_err(|s| shoal_manager::Error::Other(s.message().to_string()))?;
            conn = Some((addr.clone(), c));
            Ok::<_, shoal_manager::Error>(r)
        }
        .await;
        match sent {
            Ok(r) => {
                let r = r.into_inner();
                period = Duration::from_millis(r.period_ms.max(100));
                if !r.manager_addrs.is_empty() {
                    // Keep the manager that answered first.
                    let mut list = vec![addr.clone()];
                    list.extend(r.manager_addrs.into_iter().filter(|a| *a != addr));
                    managers = list;
                    next = 0;
                }
                tokio::time::sleep(period).await;
            }
            Err(e) => {
                tracing::debug!(manager = %addr, error = %e, "heartbeat failed; trying the next manager");
                next += 1;
                tokio::time::sleep((period / 5).max(Duration::from_millis(200))).await;
            }
        }
    }
}

fn this_node(m: &Membership, role: NodeRole, now: &str) -> Node {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Node {
        id: m.node_id.clone(),
        raft_id: m.raft_id,
        hostname,
        role,
        availability: Availability::Active,
        labels: Default::default(),
        addr: m.advertise_addr.clone(),
        state: NodeState::Ready,
        message: String::new(),
        created_at: now.into(),
        updated_at: now.into(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        nano_cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as i64)
            * 1_000_000_000,
        memory_bytes: (pages.max(0) as i64) * (page.max(0) as i64),
    }
}

fn token_for(c: &Cluster, manager: bool) -> anyhow::Result<String> {
    let fp = RootCa::from_pem(&c.ca_cert_pem, None)?.fingerprint();
    let secret = if manager {
        &c.manager_secret
    } else {
        &c.worker_secret
    };
    Ok(JoinToken {
        fingerprint: fp,
        secret: secret.clone(),
    }
    .to_string())
}

fn parse_listen(s: &str) -> Result<SocketAddr, Status> {
    if s.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    Err(Status::invalid_argument(format!(
        "--listen-addr {s:?}: use IP[:PORT], e.g. 0.0.0.0:2377"
    )))
}

/// docker's rule: the given IP[:PORT], or this host's address on its default route.
fn advertise_addr(s: &str, listen: SocketAddr) -> Result<SocketAddr, Status> {
    if !s.is_empty() {
        let a = if let Ok(a) = s.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            SocketAddr::new(ip, listen.port())
        } else {
            return Err(Status::invalid_argument(format!(
                "--advertise-addr {s:?}: use an IP address with an optional port (interface names are not supported)"
            )));
        };
        if a.ip().is_unspecified() {
            return Err(Status::invalid_argument(
                "--advertise-addr must be an address other nodes can reach, not 0.0.0.0",
            ));
        }
        return Ok(a);
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    // The source address the kernel would use for the default route (no packet is sent).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").map(|_| u))
        .and_then(|u| u.local_addr());
    match probe {
        Ok(a) if !a.ip().is_unspecified() => Ok(SocketAddr::new(a.ip(), listen.port())),
        _ => Err(Status::invalid_argument(
            "could not choose an address to advertise (this host has no default route): give one with --advertise-addr",
        )),
    }
}

fn write_private(dir: &Path, name: &str, data: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

fn secs_or(secs: u64, default: Duration) -> Duration {
    if secs == 0 {
        default
    } else {
        Duration::from_secs(secs)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

fn store_status(e: shoal_store::Error) -> Status {
    match e {
        shoal_store::Error::Rejected(r) => Status::aborted(r.to_string()),
        shoal_store::Error::NoLeader(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

/// The gRPC face of [`SwarmApi`].
pub struct Handle(Arc<SwarmApi>);

#[tonic::async_trait]
impl Swarm for Handle {
    async fn init(
        &self,
        request: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        self.0.init(request.into_inner()).await.map(Response::new)
    }

    async fn inspect(
        &self,
        _request: Request<SwarmInspectRequest>,
    ) -> Result<Response<SwarmInfo>, Status> {
        self.0.inspect().await.map(Response::new)
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        self.0
            .join_token(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.0.list_nodes().await.map(Response::new)
    }

    async fn inspect_node(&self, request: Request<NodeRef>) -> Result<Response<SwarmNode>, Status> {
        self.0
            .inspect_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<SwarmNode>, Status> {
        self.0
            .update_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn join(
        &self,
        request: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmJoinResponse>, Status> {
        self.0.join(request.into_inner()).await.map(Response::new)
    }

    async fn update(
        &self,
        request: Request<SwarmUpdateRequest>,
    ) -> Result<Response<SwarmInfo>, Status> {
        self.0.update(request.into_inner()).await.map(Response::new)
    }

    async fn ca(&self, request: Request<CaRequest>) -> Result<Response<CaResponse>, Status> {
        self.0.ca(request.into_inner()).await.map(Response::new)
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.0
            .remove_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        self.0.leave(request.into_inner()).await.map(Response::new)
    }
}
