//! Node liveness: every node's agent sends a heartbeat each period; the leader remembers when
//! it last heard from each node and marks a node down after three silent periods (docker's
//! rule), ready again when it is heard from. Only changes are written to the store, never
//! the heartbeats themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::table::update;
use shoal_store::Replica;

use crate::objects::{Cluster, Node, NodeState};

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
