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
    ListNodesRequest, ListNodesResponse, ListSwarmImagesRequest, ListSwarmImagesResponse, NodeRef,
    PublishImageProgress, PublishImageRequest, RemoveNodeRequest, RemoveNodeResponse, SwarmInfo,
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
pub(crate) struct Membership {
    pub(crate) node_id: String,
    /// A manager (runs a replica of the store) or a worker.
    #[serde(default = "yes")]
    manager: bool,
    /// Managers to send heartbeats to (refreshed from their answers).
    #[serde(default)]
    managers: Vec<String>,
    raft_id: u64,
    cluster_id: String,
    pub(crate) advertise_addr: String,
    listen_addr: String,
    /// Hex SHA-256 of the root that signed this node's certificate.
    #[serde(default)]
    cert_root: String,
}

fn yes() -> bool {
    true
}

pub(crate) struct Active {
    pub(crate) m: Membership,
    /// Managers only: this node's replica of the store.
    replica: Option<Replica>,
    /// Managers only: log subscriptions for the agents connected here.
    pub(crate) broker: Option<Arc<shoal_manager::logs::LogBroker>>,
    /// Managers only: how many tasks of each service run.
    pub(crate) counts: Option<Arc<shoal_manager::counts::TaskCounts>>,
    /// This node's credentials (PEM: roots, certificate, key), to call other managers.
    pub(crate) creds: Creds,
    /// The agent's heartbeats, and on managers the leader's liveness monitor.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Active {
    fn stop_tasks(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    pub(crate) fn r(&self) -> Result<&Replica, Status> {
        self.replica.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this node is a worker: worker nodes cannot be used to view or change the swarm; run this on a manager",
            )
        })
    }
}

#[derive(Clone, Default)]
pub(crate) struct Creds {
    pub(crate) ca: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

pub struct SwarmApi {
    dir: PathBuf,
    /// Runs this node's tasks.
    engine: shoal_engine::Engine,
    active: Mutex<Option<Arc<Active>>>,
    /// The agent's new credentials (renewed, new role, new roots): applied by restarting
    /// this node's part in the swarm with them.
    renewals: tokio::sync::mpsc::UnboundedSender<Renewal>,
}

/// New credentials the agent obtained from the managers.
struct Renewal {
    node_id: String,
    role: NodeRole,
    raft_id: u64,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    cert_root: String,
}

impl SwarmApi {
    /// Rejoin the swarm this node was part of before the daemon restarted, if any.
    pub async fn open(
        data_root: &Path,
        engine: shoal_engine::Engine,
    ) -> anyhow::Result<Arc<SwarmApi>> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let api = Arc::new(SwarmApi {
            engine,
            dir: data_root.join("swarm"),
            active: Mutex::new(None),
            renewals: tx,
        });
        let state = api.dir.join("state.json");
        if state.exists() {
            let m: Membership = serde_json::from_slice(&std::fs::read(&state)?)?;
            let active = api.start(m).await?;
            *api.active.lock().await = Some(Arc::new(active));
        }
        let weak = Arc::downgrade(&api);
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                let Some(api) = weak.upgrade() else { return };
                if let Err(e) = api.apply(r).await {
                    tracing::error!(error = %format!("{e:#}"), "applying new credentials failed");
                }
            }
        });
        Ok(api)
    }

    /// Restart this node's part in the swarm with the credentials the agent obtained: a
    /// promoted worker becomes a manager and joins the voters; a demoted manager stops its
    /// replica and deletes it (it held the CA key); a renewed node just uses the new files.
    async fn apply(&self, r: Renewal) -> anyhow::Result<()> {
        let mut active = self.active.lock().await;
        let Some(old) = active.clone() else {
            return Ok(());
        };
        if old.m.node_id != r.node_id {
            return Ok(());
        }
        let was_manager = old.m.manager;
        let mut m = old.m.clone();
        m.manager = r.role == NodeRole::Manager;
        if r.raft_id != 0 {
            m.raft_id = r.raft_id;
        }
        m.cert_root = r.cert_root.clone();
        old.stop_tasks();
        if let Some(rep) = &old.replica {
            rep.shutdown().await;
        }
        *active = None;
        drop(old);
        let certs = self.dir.join("certs");
        write_private(&certs, "ca.pem", &r.ca_pem)?;
        write_private(&certs, "node.pem", &r.cert_pem)?;
        write_private(&certs, "node.key", &r.key_pem)?;
        write_private(&self.dir, "state.json", &serde_json::to_string_pretty(&m)?)?;
        if was_manager && !m.manager {
            let _ = std::fs::remove_dir_all(self.dir.join("raft"));
            tracing::info!(node_id = %m.node_id, "demoted: this node is a worker now");
        }
        let a = self.start(m.clone()).await?;
        if m.manager && !was_manager {
            tracing::info!(node_id = %m.node_id, "promoted: joining the managers");
            let creds = (r.ca_pem.as_str(), r.cert_pem.as_str(), r.key_pem.as_str());
            let mut joined = false;
            'tries: for _ in 0..20 {
                for addr in m.managers.iter().filter(|a| **a != m.advertise_addr) {
                    match shoal_manager::join::join_raft_as(
                        addr,
                        creds,
                        m.raft_id,
                        &m.advertise_addr,
                    )
                    .await
                    {
                        Ok(()) => {
                            joined = true;
                            break 'tries;
                        }
                        Err(e) => {
                            tracing::debug!(manager = %addr, error = %e, "joining the voters")
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !joined {
                tracing::warn!("could not join the voters yet: the leader will be asked again at the next restart");
            }
        }
        *active = Some(Arc::new(a));
        Ok(())
    }

    pub fn service(self: Arc<Self>) -> SwarmServer<Handle> {
        SwarmServer::new(Handle(self))
    }

    /// Open the store and serve the managers' transport, from the files under `dir`.
    async fn start(&self, m: Membership) -> anyhow::Result<Active> {
        let certs = self.dir.join("certs");
        let read = |f: &str| std::fs::read_to_string(certs.join(f));
        let (ca, cert, key) = (read("ca.pem")?, read("node.pem")?, read("node.key")?);
        let known: crate::content::Managers = Arc::new(std::sync::RwLock::new(m.managers.clone()));
        let agent = tokio::spawn(agent(Agent {
            node_id: m.node_id.clone(),
            managers: m.managers.clone(),
            known: known.clone(),
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            cert_root: m.cert_root.clone(),
            renewals: self.renewals.clone(),
        }));
        let executor = tokio::spawn(crate::executor::run(crate::executor::Executor {
            node_id: m.node_id.clone(),
            known,
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            engine: self.engine.clone(),
        }));
        if !m.manager {
            tracing::info!(node_id = %m.node_id, "swarm worker up");
            return Ok(Active {
                m,
                replica: None,
                broker: None,
                counts: None,
                creds: Creds { ca, cert, key },
                tasks: vec![agent, executor],
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
        let listener = listen(&m.listen_addr).await?;
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
        // After a restart in place (renewal, role change) the previous replica's handles on
        // the database may take a moment to go.
        let mut tries = 0;
        let replica = loop {
            match Replica::open(m.raft_id, &raft_dir, &cfg).await {
                Ok(r) => break r,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "store busy; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let _ = removed.set(replica.state().clone());
        let counts = Arc::new(shoal_manager::counts::TaskCounts::default());
        replica.state().add_view(counts.clone())?;
        let liveness = Arc::new(shoal_manager::dispatcher::Liveness::default());
        let broker = Arc::new(shoal_manager::logs::LogBroker::default());
        let node_ca = shoal_manager::node_ca::service_with(
            replica.clone(),
            liveness.clone(),
            cfg.security.clone(),
            broker.clone(),
        );
        let content = Arc::new(crate::content::ContentService {
            replica: replica.clone(),
            store: Arc::new(
                shoal_image::ContentStore::open(&self.dir.join("content"))
                    .map_err(|e| anyhow::anyhow!("open the swarm's content store: {e}"))?,
            ),
            creds: Creds {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
            me: m.advertise_addr.clone(),
        });
        let content_server = crate::content::service(content.clone());
        replica.serve_with(listener, move |router| {
            router.add_service(node_ca).add_service(content_server)
        })?;
        let maintain = tokio::spawn(crate::content::maintain(
            content,
            crate::content::gc_grace(),
        ));
        let monitor = tokio::spawn(shoal_manager::dispatcher::monitor(
            replica.clone(),
            liveness,
        ));
        let orchestrator = tokio::spawn(shoal_manager::orchestrator::run(replica.clone()));
        tracing::info!(node_id = %m.node_id, addr = %m.advertise_addr, "swarm manager up");
        Ok(Active {
            m,
            replica: Some(replica),
            broker: Some(broker),
            counts: Some(counts),
            creds: Creds { ca, cert, key },
            tasks: vec![agent, executor, monitor, orchestrator, maintain],
        })
    }

    async fn init(&self, req: SwarmInitRequest) -> Result<SwarmInitResponse, Status> {
        let mut active = self.active.lock().await;
        if active.is_some() && !req.force_new_cluster {
            return Err(Status::already_exists(
                "this node is already part of a swarm: use \"shoal swarm leave\" to leave it and join another one",
            ));
        }
        if req.force_new_cluster {
            if active.is_some() {
                return self.force_new_cluster(&mut active, &req).await;
            }
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

        let cluster_id = random_id();
        let ca = RootCa::generate(&cluster_id).map_err(internal)?;
        let m = Membership {
            managers: vec![advertise.to_string()],
            manager: true,
            node_id: random_id(),
            raft_id: random_raft_id(),
            cluster_id,
            advertise_addr: advertise.to_string(),
            listen_addr: listen.to_string(),
            cert_root: shoal_manager::hex(&ca.fingerprint()),
        };
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
                previous_ca_pems: Vec::new(),
                cross_signed_pem: String::new(),
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

    /// `swarm init --force-new-cluster`: this manager's store becomes a one-manager swarm
    /// with everything it holds (nodes, settings, CA, tokens); the other managers are
    /// demoted in it, so when they come back they turn into workers by themselves.
    async fn force_new_cluster(
        &self,
        active: &mut Option<Arc<Active>>,
        req: &SwarmInitRequest,
    ) -> Result<SwarmInitResponse, Status> {
        let Some(a) = active.clone() else {
            return Err(Status::failed_precondition("this node is in no swarm"));
        };
        let Some(old) = a.replica.clone() else {
            return Err(Status::failed_precondition(
                "this node is a worker: only a manager holds the swarm's state; run --force-new-cluster on a manager",
            ));
        };
        let mut m = a.m.clone();
        if !req.listen_addr.is_empty() {
            m.listen_addr = parse_listen(&req.listen_addr)?.to_string();
        }
        if !req.advertise_addr.is_empty() {
            m.advertise_addr =
                advertise_addr(&req.advertise_addr, parse_listen(&m.listen_addr)?)?.to_string();
        }
        m.managers = vec![m.advertise_addr.clone()];
        a.stop_tasks();
        old.shutdown().await;
        drop(old);
        *active = None;
        drop(a);
        let raft_dir = self.dir.join("raft");
        let mut tries = 0;
        loop {
            match shoal_store::force_new_cluster(&raft_dir, m.raft_id, &m.advertise_addr).await {
                Ok(()) => break,
                Err(e) if tries < 200 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    // Put the node back as it was.
                    if let Ok(a) = self.start(m.clone()).await {
                        *active = Some(Arc::new(a));
                    }
                    return Err(Status::failed_precondition(format!(
                        "--force-new-cluster: {e}"
                    )));
                }
            }
        }
        write_private(
            &self.dir,
            "state.json",
            &serde_json::to_string_pretty(&m).map_err(internal)?,
        )
        .map_err(internal)?;
        let a = self.start(m.clone()).await.map_err(internal)?;
        let r = a.r()?.clone();
        *active = Some(Arc::new(a));
        r.read_barrier().await.map_err(unavailable)?;
        // The other managers are gone from the voters: make them workers in the store too.
        for n in r.state().list_obj::<Node>().map_err(internal)? {
            if n.object.role == NodeRole::Manager && n.object.id != m.node_id {
                let mut o = n.object.clone();
                o.role = NodeRole::Worker;
                o.updated_at = now();
                if let Err(e) = r
                    .write(vec![update(&o, n.version).map_err(internal)?])
                    .await
                {
                    tracing::warn!(node_id = %o.id, error = %e, "demoting a lost manager");
                }
            }
            if n.object.id == m.node_id && n.object.addr != m.advertise_addr {
                let mut o = n.object.clone();
                o.addr = m.advertise_addr.clone();
                let _ = r
                    .write(vec![update(&o, n.version).map_err(internal)?])
                    .await;
            }
        }
        let cluster = r
            .state()
            .get_obj::<Cluster>(Cluster::KEY)
            .map_err(internal)?
            .ok_or_else(|| Status::internal("the swarm has no cluster object"))?;
        tracing::warn!(node_id = %m.node_id, "forced a new cluster: this node is the only manager");
        Ok(SwarmInitResponse {
            node_id: m.node_id.clone(),
            worker_token: token_for(&cluster.object, false).map_err(internal)?,
            advertise_addr: m.advertise_addr,
        })
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
                cert_root: String::new(),
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
            cert_root: RootCa::from_pem(&joined.ca_pem, None)
                .map(|r| shoal_manager::hex(&r.fingerprint()))
                .unwrap_or_default(),
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

    pub(crate) async fn active(&self) -> Result<Arc<Active>, Status> {
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
    pub(crate) fn find_node(a: &Active, reference: &str) -> Result<Versioned<Node>, Status> {
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
        let role = match req.role.as_str() {
            "" => None,
            "manager" => Some(NodeRole::Manager),
            "worker" => Some(NodeRole::Worker),
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid role {other:?}: use manager or worker"
                )))
            }
        };
        let a = self.active().await?;
        if role == Some(NodeRole::Worker) {
            a.r()?.read_barrier().await.map_err(unavailable)?;
            let n = Self::find_node(&a, &req.id)?;
            if n.object.role == NodeRole::Manager {
                Self::leave_voters(&a, &n.object, req.force).await?;
            }
        }
        // Optimistic concurrency: re-read and retry if someone else changed the node meanwhile.
        for _ in 0..5 {
            a.r()?.read_barrier().await.map_err(unavailable)?;
            let mut n = Self::find_node(&a, &req.id)?;
            if let Some(role) = role {
                if role != n.object.role {
                    tracing::info!(node_id = %n.object.id, role = role.as_str(), "node role changed");
                }
                n.object.role = role;
            }
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

    /// Demoting `n`: take it out of the voters first, refusing (unless `force`) when that
    /// leaves no manager, or leaves fewer reachable managers than the new quorum.
    async fn leave_voters(a: &Active, n: &Node, force: bool) -> Result<(), Status> {
        let r = a.r()?;
        let voters = r.voters();
        if !voters.iter().any(|(id, _)| *id == n.raft_id) {
            return Ok(());
        }
        if voters.len() <= 1 {
            return Err(Status::failed_precondition(format!(
                "node {} is the swarm's last manager: a swarm needs one; promote another node first",
                n.id
            )));
        }
        let nodes = r.state().list_obj::<Node>().map_err(internal)?;
        let leader = r.leader().map(|(id, _)| id);
        let remaining = voters.len() - 1;
        let quorum = remaining / 2 + 1;
        let reachable = voters
            .iter()
            .filter(|(id, _)| *id != n.raft_id)
            .filter(|(id, _)| {
                Some(*id) == leader
                    || nodes
                        .iter()
                        .any(|m| m.object.raft_id == *id && m.object.state == NodeState::Ready)
            })
            .count();
        if reachable < quorum && !force {
            return Err(Status::failed_precondition(format!(
                "demoting node {} leaves {remaining} managers of which only {reachable} are reachable, fewer than the {quorum} a quorum needs: bring the others back first, or use --force",
                n.id
            )));
        }
        r.remove_voter(n.raft_id).await.map_err(store_status)?;
        Ok(())
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

    /// `swarm ca`: the root, and how far a rotation got. `--rotate` makes a new root (same
    /// cluster), cross-signed by the current one so nodes that have not renewed yet still
    /// accept certificates from it; every node renews at its next heartbeat, and the leader
    /// drops the old root once all have.
    async fn ca(&self, req: CaRequest) -> Result<CaResponse, Status> {
        let a = self.active().await?;
        let mut c = Self::cluster(&a).await?;
        if req.rotate {
            if !c.object.previous_ca_pems.is_empty() {
                let (done, total) = Self::rotation_progress(&a, &c.object)?;
                return Err(Status::failed_precondition(format!(
                    "a root rotation is already in progress ({done} of {total} nodes renewed): wait for it to finish; a node that stays down holds it up until it is removed with \"shoal node rm\""
                )));
            }
            let old = RootCa::from_pem(&c.object.ca_cert_pem, Some(&c.object.ca_key_pem))
                .map_err(internal)?;
            let next = RootCa::generate(&c.object.id).map_err(internal)?;
            let cross = old.cross_sign(&next, &c.object.id).map_err(internal)?;
            let mut cluster = c.object.clone();
            cluster.previous_ca_pems = vec![cluster.ca_cert_pem.clone()];
            cluster.ca_cert_pem = next.cert_pem().into();
            cluster.ca_key_pem = next.key_pem().unwrap_or_default();
            cluster.cross_signed_pem = cross;
            cluster.updated_at = now();
            let version = a
                .r()?
                .write(vec![update(&cluster, c.version).map_err(internal)?])
                .await
                .map_err(store_status)?;
            tracing::info!(
                fingerprint = %shoal_manager::hex(&next.fingerprint()),
                "root CA rotation started"
            );
            c.object = cluster;
            c.version = version;
        }
        let (done, total) = Self::rotation_progress(&a, &c.object)?;
        Ok(CaResponse {
            cert_pem: c.object.ca_cert_pem.clone(),
            nodes_rotated: done,
            nodes_total: total,
            rotating: !c.object.previous_ca_pems.is_empty(),
        })
    }

    /// Nodes whose certificate is from the current root, and all nodes.
    fn rotation_progress(a: &Active, c: &Cluster) -> Result<(u32, u32), Status> {
        let fp = shoal_manager::hex(
            &RootCa::from_pem(&c.ca_cert_pem, None)
                .map_err(internal)?
                .fingerprint(),
        );
        let nodes = a.r()?.state().list_obj::<Node>().map_err(internal)?;
        let done = nodes.iter().filter(|n| n.object.cert_root == fp).count();
        Ok((done as u32, nodes.len() as u32))
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
        let node_id = a.m.node_id.clone();
        drop(a); // its agent and executor stop: nothing starts the tasks again
                 // As docker's: the node's service tasks go with it.
        for c in self.engine.list(true) {
            if c.labels.contains_key(crate::executor::TASK_LABEL) {
                if let Err(e) = self.engine.remove(&c.id, true, false).await {
                    tracing::warn!(container = %c.id, error = %e, "removing a task's container");
                }
            }
        }
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| internal(format!("remove {}: {e}", self.dir.display())))?;
        tracing::info!(node_id = %node_id, "left the swarm");
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

/// What the agent needs: who it is, whom to talk to, its credentials, and where to hand
/// new credentials.
struct Agent {
    node_id: String,
    managers: Vec<String>,
    /// The same list, shared with the executor's image fetches.
    known: crate::content::Managers,
    ca: String,
    cert: String,
    key: String,
    cert_root: String,
    renewals: tokio::sync::mpsc::UnboundedSender<Renewal>,
}

type NodeCaClient = shoal_api::v1::node_ca_client::NodeCaClient<tonic::transport::Channel>;

/// Why the agent asks for a new certificate (or only new roots).
#[derive(Debug, PartialEq)]
enum Renew {
    /// The managers changed the node's role (promote, demote).
    Role,
    /// The cluster's root rotated.
    Root,
    /// The certificate reached its renewal point.
    Expiry,
    /// Only the set of trusted roots changed (a rotation completed).
    Trust,
}

/// The node's agent: a heartbeat to a manager each period, moving on to the next manager
/// when one does not answer; the managers' answers refresh the period and the list, and say
/// when the node's certificate must change (role, root, expiry).
async fn agent(mut ag: Agent) {
    let mut period = Duration::from_secs(5);
    let mut next = 0usize;
    let id = shoal_manager::ca::pem_der(&ag.cert, "CERTIFICATE")
        .and_then(|der| shoal_manager::identity(&der));
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "this node's certificate is unreadable");
            return;
        }
    };
    let renew_at = shoal_manager::renew_at(&id);
    // The connection to the manager last heard from, kept across heartbeats.
    let mut conn: Option<(String, NodeCaClient)> = None;
    loop {
        if ag.managers.is_empty() {
            tracing::warn!(node_id = %ag.node_id, "no manager to send heartbeats to");
            return;
        }
        let addr = ag.managers[next % ag.managers.len()].clone();
        let sent = async {
            let mut c = match conn.take() {
                Some((a, c)) if a == addr => c,
                _ => shoal_manager::join::client(&addr, &ag.ca, &ag.cert, &ag.key).await?,
            };
            // A manager that hangs (not dead, not answering) counts as failed after a period.
            let r = tokio::time::timeout(
                period.max(Duration::from_secs(1)),
                c.heartbeat(shoal_api::v1::HeartbeatRequest::default()),
            )
            .await
            .map_err(|_| shoal_manager::Error::Other("no answer".into()))?
            .map_err(|s| shoal_manager::Error::Other(s.message().to_string()))?;
            conn = Some((addr.clone(), c));
            Ok::<_, shoal_manager::Error>(r.into_inner())
        }
        .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(manager = %addr, error = %e, "heartbeat failed; trying the next manager");
                next += 1;
                tokio::time::sleep((period / 5).max(Duration::from_millis(200))).await;
                continue;
            }
        };
        period = Duration::from_millis(r.period_ms.max(100));
        if !r.manager_addrs.is_empty() {
            // Keep the manager that answered first.
            let mut list = vec![addr.clone()];
            list.extend(r.manager_addrs.iter().filter(|a| **a != addr).cloned());
            if list != ag.managers {
                tracing::debug!(managers = ?list, "the managers, as the last answer lists them");
            }
            ag.managers = list;
            ag.known
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clone_from(&ag.managers);
            next = 0;
        }
        let role = match id.role {
            shoal_manager::Role::Manager => "manager",
            shoal_manager::Role::Worker => "worker",
        };
        let why = if !r.role.is_empty() && r.role != role {
            Some(Renew::Role)
        } else if !r.root_fingerprint.is_empty()
            && !ag.cert_root.is_empty()
            && r.root_fingerprint != ag.cert_root
        {
            Some(Renew::Root)
        } else if std::time::SystemTime::now() >= renew_at {
            Some(Renew::Expiry)
        } else if !r.ca_pem.is_empty() && r.ca_pem.trim() != ag.ca.trim() {
            Some(Renew::Trust)
        } else {
            None
        };
        if let Some(why) = why {
            if why == Renew::Root || why == Renew::Trust {
                // Every node hears of a rotation at once: spread the restarts over a period
                // so the managers do not all restart together.
                tokio::time::sleep(period.mul_f64(jitter())).await;
            }
            let Some((_, c)) = conn.as_mut() else {
                continue;
            };
            match renew(&ag, c, &r, &why).await {
                Ok(renewal) => {
                    tracing::info!(node_id = %ag.node_id, reason = ?why, "new credentials from the managers");
                    let _ = ag.renewals.send(renewal);
                    // The node restarts its part in the swarm, with a new agent.
                    return;
                }
                Err(e) => {
                    tracing::warn!(node_id = %ag.node_id, reason = ?why, error = %e, "renewing the certificate failed (retrying)")
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// New credentials for `why`: a new key and certificate, or (for [`Renew::Trust`]) only the
/// new set of roots.
async fn renew(
    ag: &Agent,
    c: &mut NodeCaClient,
    r: &shoal_api::v1::HeartbeatResponse,
    why: &Renew,
) -> anyhow::Result<Renewal> {
    let role_of = |s: &str| {
        if s == "manager" {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        }
    };
    if *why == Renew::Trust {
        return Ok(Renewal {
            node_id: ag.node_id.clone(),
            role: role_of(&r.role),
            raft_id: 0,
            ca_pem: r.ca_pem.clone(),
            cert_pem: ag.cert.clone(),
            key_pem: ag.key.clone(),
            cert_root: ag.cert_root.clone(),
        });
    }
    let key = NodeKey::generate()?;
    let got = c
        .renew_certificate(shoal_api::v1::RenewCertificateRequest {
            csr_pem: key.csr_pem,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let cert_root =
        RootCa::from_pem(&got.ca_pem, None).map(|root| shoal_manager::hex(&root.fingerprint()))?;
    Ok(Renewal {
        node_id: ag.node_id.clone(),
        role: role_of(&got.role),
        raft_id: got.raft_id,
        ca_pem: got.ca_pem,
        cert_pem: got.cert_pem,
        key_pem: key.key_pem,
        cert_root,
    })
}

/// A random fraction in [0, 1).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Listen on the swarm port; a restart may find the previous listener not closed yet.
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("listen on {addr} for the swarm: {e}")),
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
        cert_root: m.cert_root.clone(),
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

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

pub(crate) fn store_status(e: shoal_store::Error) -> Status {
    match e {
        shoal_store::Error::Rejected(r) => Status::aborted(r.to_string()),
        shoal_store::Error::NoLeader(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

impl SwarmApi {
    /// This node's part in the swarm, or why there is none (for verbs any node may use).
    async fn member(&self) -> Result<Arc<Active>, Status> {
        self.active.lock().await.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this node is not part of a swarm: use \"shoal swarm init\" or \"shoal swarm join\" first",
            )
        })
    }

    /// The managers to ask for content: this one first when it is a manager.
    fn content_managers(a: &Active) -> Vec<String> {
        let mut managers = Vec::new();
        if a.replica.is_some() {
            managers.push(a.m.advertise_addr.clone());
        }
        for m in &a.m.managers {
            if !managers.contains(m) {
                managers.push(m.clone());
            }
        }
        managers
    }
}

/// The gRPC face of [`SwarmApi`].
pub struct Handle(Arc<SwarmApi>);

#[tonic::async_trait]
impl Swarm for Handle {
    type PublishImageStream =
        tokio_stream::wrappers::ReceiverStream<Result<PublishImageProgress, Status>>;

    async fn publish_image(
        &self,
        request: Request<PublishImageRequest>,
    ) -> Result<Response<Self::PublishImageStream>, Status> {
        let reference = request.into_inner().reference;
        let a = self.0.member().await?;
        // A missing image is a clean error, not a broken stream.
        self.0
            .engine
            .image(&reference)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        let managers = SwarmApi::content_managers(&a);
        let engine = self.0.engine.clone();
        Ok(Response::new(crate::api::progress_stream(
            |tx| async move {
                let image =
                    crate::content::publish(&engine, &managers, &a.creds, &reference, tx).await?;
                Ok(PublishImageProgress {
                    image: Some(image),
                    ..Default::default()
                })
            },
        )))
    }

    async fn list_swarm_images(
        &self,
        _request: Request<ListSwarmImagesRequest>,
    ) -> Result<Response<ListSwarmImagesResponse>, Status> {
        let a = self.0.member().await?;
        let images = crate::content::list(&SwarmApi::content_managers(&a), &a.creds).await?;
        Ok(Response::new(ListSwarmImagesResponse { images }))
    }
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
