//! Node liveness: every node's agent sends a heartbeat each period; the leader remembers when
//! it last heard from each node and marks a node down after three silent periods (docker's
//! rule), ready again when it is heard from. Only changes are written to the store, never
//! the heartbeats themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::table::update;
use shoal_store::{Replica, Versioned};

use crate::objects::{Cluster, Node, NodeRole, NodeState};

/// Missed periods after which a node is down.
const GRACE_PERIODS: u32 = 3;

#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    pub fn record(&self, node_id: &str) {
        self.last_seen
            .lock()
            .expect("liveness lock")
            .insert(node_id.to_string(), Instant::now());
    }

    fn seen(&self, node_id: &str) -> Option<Instant> {
        self.last_seen
            .lock()
            .expect("liveness lock")
            .get(node_id)
            .copied()
    }

    fn forget_all(&self) {
        self.last_seen.lock().expect("liveness lock").clear();
    }
}

/// The cluster's heartbeat period.
pub fn period(replica: &Replica) -> Duration {
    replica
        .state()
        .get_obj::<Cluster>(Cluster::KEY)
        .ok()
        .flatten()
        .map_or(Duration::from_secs(5), |c| {
            Duration::from_secs(c.object.heartbeat_period_secs.max(1))
        })
}

/// While this manager leads: mark nodes down and ready from what `liveness` heard. Runs
/// until the task is aborted.
pub async fn monitor(replica: Replica, liveness: Arc<Liveness>) {
    // When this leader first saw each node in the table: a node nobody has heard from yet
    // gets the full grace from then (a new leader, a node that just joined).
    let mut listed: HashMap<String, Instant> = HashMap::new();
    let mut leading = false;
    loop {
        // A quarter period: a node is marked down at most a quarter period late, and the
        // node table is not rescanned more often than that needs.
        let tick = (period(&replica) / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::time::sleep(tick).await;
        if !replica.is_leader() {
            if leading {
                leading = false;
                liveness.forget_all();
                listed.clear();
            }
            continue;
        }
        leading = true;
        let period = period(&replica);
        let grace = period * GRACE_PERIODS;
        let Ok(nodes) = replica.state().list_obj::<Node>() else {
            continue;
        };
        reconcile_roles(&replica, &nodes).await;
        finish_rotation(&replica, &nodes).await;
        for n in nodes {
            let first = *listed
                .entry(n.object.id.clone())
                .or_insert_with(Instant::now);
            let seen = liveness.seen(&n.object.id);
            let quiet_for = seen.unwrap_or(first).elapsed();
            let want = if quiet_for > grace {
                NodeState::Down
            } else if seen.is_some() {
                NodeState::Ready
            } else {
                continue;
            };
            if n.object.state == want {
                continue;
            }
            let mut node = n.object.clone();
            node.state = want;
            node.message = if want == NodeState::Down {
                "heartbeat failure".into()
            } else {
                String::new()
            };
            match update(&node, n.version) {
                Ok(op) => {
                    if let Err(e) = replica.write(vec![op]).await {
                        tracing::debug!(node_id = %node.id, error = %e, "node state not written (retrying)");
                    } else {
                        tracing::info!(node_id = %node.id, state = ?want, "node state changed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "encode node"),
            }
        }
    }
}

/// Raft membership follows roles: a voter whose node the managers demoted leaves the voters
/// (the demote command does this too; this finishes the job if it was interrupted).
async fn reconcile_roles(replica: &Replica, nodes: &[Versioned<Node>]) {
    let voters = replica.voters();
    for n in nodes {
        if n.object.role == NodeRole::Worker && voters.iter().any(|(id, _)| *id == n.object.raft_id)
        {
            if voters.len() <= 1 {
                continue;
            }
            match replica.remove_voter(n.object.raft_id).await {
                Ok(()) => tracing::info!(node_id = %n.object.id, "demoted manager left the voters"),
                Err(e) => {
                    tracing::debug!(node_id = %n.object.id, error = %e, "removing a demoted voter (retrying)")
                }
            }
        }
    }
}

/// A root rotation is complete when every node holds a certificate from the new root: the
/// old roots are then no longer trusted.
async fn finish_rotation(replica: &Replica, nodes: &[Versioned<Node>]) {
    let Ok(Some(c)) = replica.state().get_obj::<Cluster>(Cluster::KEY) else {
        return;
    };
    if c.object.previous_ca_pems.is_empty() {
        return;
    }
    let Ok(root) = crate::RootCa::from_pem(&c.object.ca_cert_pem, None) else {
        return;
    };
    let fp = crate::hex(&root.fingerprint());
    if nodes.iter().any(|n| n.object.cert_root != fp) {
        return;
    }
    let mut cluster = c.object.clone();
    cluster.previous_ca_pems.clear();
    cluster.cross_signed_pem.clear();
    if let Ok(op) = update(&cluster, c.version) {
        match replica.write(vec![op]).await {
            Ok(_) => tracing::info!("root CA rotation complete: the old root is no longer trusted"),
            Err(e) => tracing::debug!(error = %e, "finishing the rotation (retrying)"),
        }
    }
}
