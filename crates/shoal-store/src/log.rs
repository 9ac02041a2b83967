//! The Raft log, vote and commit index in sled.
//!
//! Durability: openraft is told an entry or a vote is persisted only after sled has flushed it
//! and the file is `fdatasync`ed ([`crate::Disk::flush`]), never on the strength of sled's
//! background flush, which runs every 500 ms and would let a crash lose acknowledged writes.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{read_err, vote_err, write_err};
use crate::types::{LogId, NodeId, StorageError, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// Log entries keyed by their big-endian index (sled's order is then the log's order), and
/// the vote, commit index and purge point beside them.
#[derive(Clone)]
pub struct LogStore {
    disk: crate::Disk,
    logs: sled::Tree,
    meta: sled::Tree,
    /// The last entries appended, as they were: replication reads them for every follower
    /// right after they are written, and decoding them again from sled cost the leader
    /// more than anything else it does (bench/scale.sh).
    recent: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Entry<TypeConfig>>>>,
}

/// Entries kept in [`LogStore::recent`].
const RECENT: usize = 64;

impl LogStore {
    pub fn new(disk: &crate::Disk) -> Result<LogStore, StorageError> {
        let store = LogStore {
            disk: disk.clone(),
            logs: disk.db.open_tree("raft_log").map_err(read_err)?,
            meta: disk.db.open_tree("raft_meta").map_err(read_err)?,
            recent: Default::default(),
        };
        // Entries a purge had not removed yet when the process stopped.
        if let Some(purged) = store.get_meta::<LogId>(LAST_PURGED)? {
            store.remove_range(..=purged.index.to_be_bytes())?;
        }
        Ok(store)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(write_err)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.disk.flush().await.map_err(write_err)
    }

    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.logs.range(range).keys() {
            batch.remove(key.map_err(write_err)?);
        }
        self.logs.apply_batch(batch).map_err(write_err)
    }
}

impl LogStore {
    fn recent(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Entry<TypeConfig>>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of `range` if every one of them is among the recent ones.
    fn cached<RB: RangeBounds<u64>>(&self, range: &RB) -> Option<Vec<Entry<TypeConfig>>> {
        let first = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => return None,
        };
        let last = match range.end_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.checked_sub(1)?,
            Bound::Unbounded => return None,
        };
        if last < first {
            return Some(Vec::new());
        }
        let recent = self.recent();
        let hit: Vec<Entry<TypeConfig>> =
            recent.range(first..=last).map(|(_, e)| e.clone()).collect();
        (hit.len() as u64 == last - first + 1).then_some(hit)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        if let Some(hit) = self.cached(&range) {
            return Ok(hit);
        }
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.logs
            .range((start, end))
            .values()
            .map(|v| serde_json::from_slice(&v.map_err(read_err)?).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_log_id = match self.logs.last().map_err(read_err)? {
            Some((_, v)) => Some(
                serde_json::from_slice::<Entry<TypeConfig>>(&v)
                    .map_err(read_err)?
                    .log_id,
            ),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote).map_err(vote_err)?;
        self.meta.insert(VOTE, bytes).map_err(vote_err)?;
        self.disk.flush().await.map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: losing it only means re-applying entries that are in the
        // (flushed) log anyway.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut appended = Vec::new();
        for e in entries {
            batch.insert(
                &e.log_id.index.to_be_bytes(),
                serde_json::to_vec(&e).map_err(write_err)?,
            );
            appended.push(e);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        {
            let mut recent = self.recent();
            for e in appended {
                recent.insert(e.log_id.index, e);
            }
            while recent.len() > RECENT {
                recent.pop_first();
            }
        }
        // Readable now; persisted (and reported so) only once on disk.
        let flushed = self.disk.flush().await;
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().retain(|i, _| *i < log_id.index);
        self.remove_range(log_id.index.to_be_bytes()..)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point first: a crash between the two leaves extra entries, never a hole.
        self.recent().retain(|i, _| *i > log_id.index);
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flush().await?;
        // Thousands of removals: on a blocking thread, so the Raft core (which waits for
        // this) is back to its heartbeats at once. Nothing reads below the purge point, and
        // whatever a crash leaves there is removed when the store opens.
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = me.remove_range(..=log_id.index.to_be_bytes()) {
                tracing::warn!(error = %e, "removing purged log entries");
            }
        });
        Ok(())
    }
}

/// `swarm init --force-new-cluster` on a manager whose swarm lost its quorum: make the store
/// under `path` (closed) a one-voter cluster of `id` at `addr`, keeping every entry it has.
///
/// A membership entry naming only this node is appended after the last entry, under a term
/// above any it has seen, and the vote moves to that term. When the replica starts, its log's
/// last membership is the one that counts: it elects itself, and its first commit commits
/// everything before it (as etcd's `--force-new-cluster`). The other managers' entries past
/// this log are lost, which is the price of losing quorum.
pub async fn force_new_cluster(
    path: &std::path::Path,
    id: NodeId,
    addr: &str,
) -> crate::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let (mut log, _sm) = crate::open(path)?;
    let state = log.get_log_state().await?;
    let Some(last) = state.last_log_id else {
        return Err(crate::Error::Other(
            "this manager's store is empty: there is nothing to recover".into(),
        ));
    };
    let vote_term = log.read_vote().await?.map_or(0, |v| v.leader_id.term);
    let term = vote_term.max(last.leader_id.term) + 1;
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, openraft::BasicNode::new(addr))]),
    );
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(term, id), last.index + 1),
        payload: openraft::EntryPayload::Membership(membership),
    };
    log.logs
        .insert(
            entry.log_id.index.to_be_bytes(),
            serde_json::to_vec(&entry).map_err(write_err)?,
        )
        .map_err(write_err)?;
    log.save_vote(&Vote::new(term, id)).await?;
    log.flush().await?;
    Ok(())
}
