//! The swarm's objects in the replicated store. Services, tasks, networks, secrets and
//! configs join them as more tables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_store::table::{index, unique_index};
use shoal_store::{IndexKey, Object};

/// docker's node availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

/// What the managers last heard of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    Worker,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// docker-style 25-character id.
    pub id: String,
    /// The node's id in Raft (managers).
    pub raft_id: u64,
    pub hostname: String,
    /// The role the managers want it in (its certificate follows).
    pub role: NodeRole,
    pub availability: Availability,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The address other nodes reach it at (ip:port).
    pub addr: String,
    pub state: NodeState,
    #[serde(default)]
    pub message: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub engine_version: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub memory_bytes: i64,
    /// Hex SHA-256 of the root that signed the node's current certificate.
    #[serde(default)]
    pub cert_root: String,
}

impl Object for Node {
    const TABLE: &'static str = "nodes";
    fn id(&self) -> &str {
        &self.id
    }
    fn indexes(&self) -> Vec<IndexKey> {
        vec![
            index("role", self.role.as_str()),
            index("hostname", &self.hostname),
            unique_index("raft_id", self.raft_id.to_string()),
        ]
    }
}

/// The one cluster object: settings, the CA and the join secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    /// The root CA (PEM) and its key, so any manager can sign node certificates.
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Earlier roots still trusted while a rotation (`swarm ca --rotate`) is in progress:
    /// dropped once every node holds a certificate from the current root.
    #[serde(default)]
    pub previous_ca_pems: Vec<String>,
    /// During a rotation: the current root signed by the previous one, sent with every
    /// certificate the current root signs.
    #[serde(default)]
    pub cross_signed_pem: String,
    pub worker_secret: String,
    pub manager_secret: String,
    pub heartbeat_period_secs: u64,
    pub cert_expiry_secs: u64,
    pub task_history_limit: u64,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub data_path_port: u16,
}

impl Cluster {
    /// The cluster object's id in its table.
    pub const KEY: &'static str = "default";

    /// Every root a node must trust now: the current one first.
    pub fn trust_bundle(&self) -> String {
        let mut pems = vec![self.ca_cert_pem.trim_end().to_string()];
        pems.extend(
            self.previous_ca_pems
                .iter()
                .map(|p| p.trim_end().to_string()),
        );
        pems.join("\n") + "\n"
    }
}

impl Object for Cluster {
    const TABLE: &'static str = "clusters";
    fn id(&self) -> &str {
        Self::KEY
    }
}

/// A node removed from the swarm (`node rm`): its certificate is refused from then on, even
/// though it has not expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedNode {
    pub id: String,
    pub removed_at: String,
}

impl Object for RemovedNode {
    const TABLE: &'static str = "removed_nodes";
    fn id(&self) -> &str {
        &self.id
    }
}

/// A swarm image: its names and blobs (the bytes live in the managers' content stores, never
/// in the log), keyed by its manifest's digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SwarmImage(pub shoal_api::v1::SwarmImage);

impl Object for SwarmImage {
    const TABLE: &'static str = "images";
    // The store's key is the manifest digest; `id` is the image id (the config's digest).
    #[allow(clippy::misnamed_getters)]
    fn id(&self) -> &str {
        &self.0.manifest_digest
    }
    fn indexes(&self) -> Vec<shoal_store::IndexKey> {
        let mut ix: Vec<_> = self
            .0
            .names
            .iter()
            .map(|n| unique_index("name", n))
            .collect();
        ix.push(index("id", &self.0.id));
        ix
    }
}
