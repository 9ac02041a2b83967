//! The dispatcher's side of the agents' `Assignments` sessions: one router per manager reads
//! each committed change once and hands the task changes to the sessions of the nodes they
//! belong to, so a session sends only what changed for its node (SwarmKit's incremental
//! assignments). A session starts, and starts over after a missed change, with its node's
//! whole task set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal_api::v1 as api;
use shoal_store::{EventKind, Object, Replica};
use tokio::sync::{broadcast, mpsc};

use crate::service::{is_terminal, Task};

/// What a session is told.
#[derive(Debug)]
pub enum Routed {
    /// The task's new state, for its node.
    Changed(Box<api::Task>),
    /// The node no longer has to know the task.
    Removed(String),
    /// Changes were missed: send the whole set again.
    Resync,
}

type Senders = HashMap<u64, mpsc::UnboundedSender<Routed>>;

#[derive(Default)]
pub struct Sessions {
    by_node: Mutex<HashMap<String, Senders>>,
    next: AtomicU64,
}

/// A session's registration; dropping it ends the routing to it.
pub struct Session {
    pub rx: mpsc::UnboundedReceiver<Routed>,
    node_id: String,
    id: u64,
    sessions: Arc<Sessions>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut map = self.sessions.lock();
        if let Some(s) = map.get_mut(&self.node_id) {
            s.remove(&self.id);
            if s.is_empty() {
                map.remove(&self.node_id);
            }
        }
    }
}

/// Whether a node's agent should know of a task: not over yet, or to be removed.
pub fn wanted(t: &api::Task) -> bool {
    let st = t.status.as_ref().map_or("new", |s| s.state.as_str());
    !is_terminal(st) || t.desired_state == "remove"
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Senders>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start routing `replica`'s committed changes; stops with the replica.
    pub fn start(replica: &Replica) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions::default());
        let (s, r) = (sessions.clone(), replica.clone());
        tokio::spawn(async move {
            let mut watch = r.state().watch();
            loop {
                tokio::select! {
                    c = watch.rx.recv() => match c {
                        Ok(change) => s.route(&change),
                        Err(broadcast::error::RecvError::Lagged(_)) => s.resync_all(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    r = watch.resets.changed() => {
                        if r.is_err() {
                            return;
                        }
                        s.resync_all();
                    }
                    _ = r.stopped() => return,
                }
            }
        });
        sessions
    }

    /// A session for `node_id`: register first, then read the whole set (a change in between
    /// may come twice, never not at all).
    pub fn open(self: &Arc<Self>, node_id: &str) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(node_id.to_string())
            .or_default()
            .insert(id, tx);
        Session {
            rx,
            node_id: node_id.to_string(),
            id,
            sessions: self.clone(),
        }
    }

    fn resync_all(&self) {
        for senders in self.lock().values() {
            for tx in senders.values() {
                let _ = tx.send(Routed::Resync);
            }
        }
    }

    fn route(&self, change: &shoal_store::Change) {
        let map = self.lock();
        if map.is_empty() {
            return;
        }
        for e in change.events.iter().filter(|e| e.table == Task::TABLE) {
            #[derive(serde::Deserialize)]
            struct Placed<'a> {
                #[serde(borrow, default)]
                node_id: std::borrow::Cow<'a, str>,
            }
            let Ok(Placed { node_id: node }) = serde_json::from_str::<Placed<'_>>(e.data.get())
            else {
                continue;
            };
            let Some(senders) = map.get(node.as_ref()) else {
                continue;
            };
            let routed = || match e.kind {
                EventKind::Deleted => Some(Routed::Removed(e.id.clone())),
                _ => {
                    let t: api::Task = e.decode().ok()?;
                    Some(if wanted(&t) {
                        Routed::Changed(Box::new(t))
                    } else {
                        Routed::Removed(t.id)
                    })
                }
            };
            for tx in senders.values() {
                if let Some(r) = routed() {
                    let _ = tx.send(r);
                }
            }
        }
    }
}
