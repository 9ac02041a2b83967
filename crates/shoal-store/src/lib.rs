//! The swarm's replicated store.
//!
//! Managers replicate the desired state with Raft (openraft) and keep it in sled: the log,
//! the vote and the state machine live in one sled database per manager. Above the state
//! machine sit typed tables ([`table::Object`]): every object has a version (the log index of
//! its last write) for optimistic concurrency, secondary indexes for the control loops'
//! lookups, and every committed batch is broadcast to watchers, who can start from a snapshot
//! that lines up exactly with their watch ([`sm::StateMachine::list_and_watch`]).
//!
//! Node, Cluster now; services, tasks, networks, secrets and configs are more object types
//! over the same tables.

// openraft's storage traits return its `StorageError` (over 200 bytes) by value; the helpers
// that feed them return the same type rather than boxing and unboxing it at every call.
#![allow(clippy::result_large_err)]

pub mod error;
pub mod log;
pub mod network;
pub mod replica;
pub mod sm;
pub mod table;
pub mod types;

pub use error::{Error, Result};
pub use log::{force_new_cluster, LogStore};
pub use network::{Security, MANAGER_NAME};
pub use replica::{Replica, ReplicaConfig};
pub use sm::{Listing, StateMachine, Stored, Watch};
pub use table::{Object, Versioned};
pub use types::{
    Change, Event, EventKind, IndexKey, NodeId, Op, Rejection, Request, Response, TypeConfig,
};

/// Open (or create) the sled database of a manager at `path`: the log store and the state
/// machine over it.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachine)> {
    let db = sled::Config::new()
        .path(path)
        // The log flushes explicitly; the background flush only adds writes.
        .flush_every_ms(None)
        .open()
        .map_err(|e| Error::Other(format!("open the store at {}: {e}", path.display())))?;
    Ok((LogStore::new(&db)?, StateMachine::new(&db)?))
}

#[cfg(test)]
mod tests;
