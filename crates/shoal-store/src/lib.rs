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
pub use replica::{ProposeReply, Replica, ReplicaConfig};
pub use sm::{Listing, StateMachine, Stored, View, Watch};
pub use table::{Object, Versioned};
pub use types::{
    Change, Event, EventKind, IndexKey, NodeId, Op, Proposal, Rejection, Request, Response,
    StorageError, TypeConfig,
};

/// Open (or create) a manager's store under `path`: the log (with the vote) in one sled
/// database, `log/`, and the state machine (with its snapshot) in another, `state/`.
///
/// Two databases so that the flush every Raft append waits for writes only the log's
/// entries, not the state machine's applies as well: the state machine needs no flush of its
/// own, because whatever it loses in a crash is applied again from the log (its applied
/// index is written in the same batch as its objects), and the log is purged only behind a
/// snapshot, which flushes the state machine first.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachine)> {
    let open_db = |dir: &std::path::Path, flush_every_ms: Option<u64>| {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(flush_every_ms)
            .open()
            .map_err(|e| Error::Other(format!("open the store at {}: {e}", dir.display())))?;
        Disk::new(db, dir)
    };
    // The log flushes explicitly; a background flush would only add writes. The state
    // machine's is a bound on how much a crash makes it apply again.
    let log = open_db(&path.join("log"), None)?;
    let state = open_db(&path.join("state"), Some(1000))?;
    Ok((LogStore::new(&log)?, StateMachine::new(&state)?))
}

/// The database and a handle on its file, to make what sled wrote durable.
///
/// sled's flush writes its buffers and waits for them with `sync_file_range`, which neither
/// flushes the drive's write cache nor the file's size: a power cut could still lose them.
/// [`Disk::flush`] follows it with `fdatasync` on the file, as etcd syncs its WAL.
#[derive(Clone)]
pub struct Disk {
    pub(crate) db: sled::Db,
    file: std::sync::Arc<std::fs::File>,
}

impl Disk {
    fn new(db: sled::Db, path: &std::path::Path) -> Result<Disk> {
        let file = std::fs::File::open(path.join("db"))
            .map_err(|e| Error::Other(format!("open {}: {e}", path.join("db").display())))?;
        Ok(Disk {
            db,
            file: std::sync::Arc::new(file),
        })
    }

    /// Everything written so far is on stable storage when this returns. The syncs run on
    /// a blocking thread: after a snapshot they can take long, and the async workers must
    /// keep the Raft heartbeats going.
    pub(crate) async fn flush(&self) -> std::io::Result<()> {
        let (db, file) = (self.db.clone(), self.file.clone());
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(std::io::Error::other)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests;
