//! The state machine: object tables in one sled tree, applied entry by entry, each entry one
//! atomic sled batch together with the applied log id; snapshots; and the broadcast of
//! committed changes.
//!
//! Keys of the `sm` tree:
//!
//! * `o/<table>/<id>` → [`Stored`] (the object, its version and its index keys)
//! * `x/<table>/<index>/<value>/<id>` → empty (secondary indexes)
//! * `m/applied`, `m/membership` → the last applied log id and membership
//!
//! `/` cannot appear in table or index names; ids and values are length-prefixed so any byte
//! is fine in them.
//!
//! The state machine is not flushed after every apply (it has its own database, flushed in
//! the background and before a snapshot lets the log be purged): it only ever applies
//! entries the log already flushed, so a crash can lose the last applies but never the
//! entries, and openraft re-applies them from the saved commit index on start.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::error::{sm_read_err, sm_write_err, snapshot_err};
use crate::types::{
    Change, Event, EventKind, IndexKey, LogId, NodeId, Op, Rejection, Request, Response,
    StorageError, StoredMembership, TypeConfig,
};

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const SNAP_META: &[u8] = b"meta";
const SNAP_DATA: &[u8] = b"data";

/// How many committed changes a slow watcher may fall behind before it must start over.
const WATCH_BUFFER: usize = 4096;

/// An object as stored: its data, its version (the log index of its last write), the index
/// of its creation, and the index keys it was written with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub version: u64,
    pub created: u64,
    /// JSON text.
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexKey>,
}

/// A snapshot's content.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    objects: Vec<(String, String, Stored)>,
}

struct Shared {
    disk: crate::Disk,
    sm: sled::Tree,
    snaps: sled::Tree,
    /// Held for writing while an entry is applied and its change broadcast, for reading by
    /// whoever needs a snapshot that lines up exactly with a watch.
    gate: RwLock<()>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Bumped when a snapshot replaces the whole state: watchers must start over.
    resets: tokio::sync::watch::Sender<u64>,
    /// Kept in step with the state, under `gate`.
    views: RwLock<Vec<Arc<dyn View>>>,
}

/// A summary of the state kept current with every applied entry (under the same lock, so it
/// never lags what a read sees): answers a question about all objects of a table (how many
/// tasks of each service run) without reading them all each time.
pub trait View: Send + Sync {
    /// Start from the whole state (on registration, and when a snapshot replaced it).
    fn load(&self, sm: &StateMachine) -> Result<(), StorageError>;
    /// One committed change.
    fn apply(&self, change: &Change);
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

fn object_key(table: &str, id: &str) -> Vec<u8> {
    let mut k = format!("o/{table}/").into_bytes();
    k.extend_from_slice(id.as_bytes());
    k
}

fn table_prefix(table: &str) -> Vec<u8> {
    format!("o/{table}/").into_bytes()
}

fn index_prefix(table: &str, index: &str, value: &str) -> Vec<u8> {
    let mut k = format!("x/{table}/{index}/").into_bytes();
    k.extend_from_slice(&(value.len() as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

fn index_key(table: &str, ix: &IndexKey, id: &str) -> Vec<u8> {
    let mut k = index_prefix(table, &ix.name, &ix.value);
    k.extend_from_slice(id.as_bytes());
    k
}

impl StateMachine {
    pub fn new(disk: &crate::Disk) -> Result<StateMachine, StorageError> {
        let db = &disk.db;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                disk: disk.clone(),
                sm: db.open_tree("sm").map_err(sm_read_err)?,
                snaps: db.open_tree("snapshot").map_err(sm_read_err)?,
                gate: RwLock::new(()),
                changes: broadcast::channel(WATCH_BUFFER).0,
                resets: tokio::sync::watch::channel(0).0,
                views: RwLock::new(Vec::new()),
            }),
        })
    }

    /// One object.
    pub fn get(&self, table: &str, id: &str) -> Result<Option<Stored>, StorageError> {
        get_stored(&self.shared.sm, table, id)
    }

    /// Every object of a table, by id.
    pub fn list(&self, table: &str) -> Result<Vec<(String, Stored)>, StorageError> {
        let prefix = table_prefix(table);
        self.shared
            .sm
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(sm_read_err)?;
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((id, serde_json::from_slice(&v).map_err(sm_read_err)?))
            })
            .collect()
    }

    /// Ids of the objects of `table` whose index `name` has `value`.
    pub fn find(&self, table: &str, name: &str, value: &str) -> Result<Vec<String>, StorageError> {
        let prefix = index_prefix(table, name, value);
        self.shared
            .sm
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k.map_err(sm_read_err)?;
                Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// The last applied log index (0 before any).
    pub fn applied_index(&self) -> Result<u64, StorageError> {
        Ok(self.applied()?.map_or(0, |l| l.index))
    }

    /// A table's objects together with a subscription to every change committed after them:
    /// a control loop's consistent starting point. When the receiver reports `Lagged` or the
    /// reset counter moves (a snapshot replaced the state), start over.
    pub fn list_and_watch(&self, table: &str) -> Result<Listing, StorageError> {
        let _read = self.shared.gate.read().expect("gate");
        let rx = self.shared.changes.subscribe();
        let resets = self.shared.resets.subscribe();
        Ok(Listing {
            objects: self.list(table)?,
            index: self.applied_index()?,
            watch: Watch { rx, resets },
        })
    }

    /// Keep `view` in step with the state from now on.
    pub fn add_view(&self, view: Arc<dyn View>) -> Result<(), StorageError> {
        let _write = self.shared.gate.write().expect("gate");
        view.load(self)?;
        self.shared.views.write().expect("views").push(view);
        Ok(())
    }

    /// Committed changes from now on.
    pub fn watch(&self) -> Watch {
        let _read = self.shared.gate.read().expect("gate");
        Watch {
            rx: self.shared.changes.subscribe(),
            resets: self.shared.resets.subscribe(),
        }
    }

    fn applied(&self) -> Result<Option<LogId>, StorageError> {
        match self.shared.sm.get(APPLIED).map_err(sm_read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map_err(sm_read_err),
        }
    }

    fn membership(&self) -> Result<StoredMembership, StorageError> {
        match self.shared.sm.get(MEMBERSHIP).map_err(sm_read_err)? {
            None => Ok(StoredMembership::default()),
            Some(v) => serde_json::from_slice(&v).map_err(sm_read_err),
        }
    }

    /// Apply one entry: checks first, then everything in one sled batch.
    fn apply_entry(
        &self,
        entry: Entry<TypeConfig>,
    ) -> Result<(Vec<Response>, Option<Change>), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            APPLIED,
            serde_json::to_vec(&Some(entry.log_id)).map_err(sm_write_err)?,
        );
        let index = entry.log_id.index;
        let (responses, change) = match entry.payload {
            EntryPayload::Blank => (vec![Response::Internal], None),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m);
                batch.insert(
                    MEMBERSHIP,
                    serde_json::to_vec(&stored).map_err(sm_write_err)?,
                );
                (vec![Response::Internal], None)
            }
            EntryPayload::Normal(proposal) => {
                // Each request on its own: a rejected one leaves no trace; an applied one is
                // seen by those after it.
                let mut applied = Overlay::default();
                let mut responses = Vec::with_capacity(proposal.requests.len());
                let mut events = Vec::new();
                for req in &proposal.requests {
                    match self.plan(req, index, &applied)? {
                        Ok((mine, evs)) => {
                            applied.absorb(mine);
                            events.extend(evs);
                            responses.push(Response::Applied { version: index });
                        }
                        Err(why) => responses.push(Response::Rejected(why)),
                    }
                }
                for (k, v) in applied.writes {
                    match v {
                        Some(v) => batch.insert(k, v),
                        None => batch.remove(k),
                    }
                }
                let change = (!events.is_empty()).then_some(Change { index, events });
                (responses, change)
            }
        };
        self.shared.sm.apply_batch(batch).map_err(sm_write_err)?;
        Ok((responses, change))
    }

    /// Check a request against the stored state as `before` (the entry's earlier requests)
    /// changed it, and its own earlier operations; what it would write, or why not.
    fn plan(
        &self,
        req: &Request,
        index: u64,
        before: &Overlay,
    ) -> Result<Result<(Overlay, Vec<Event>), Rejection>, StorageError> {
        let mut mine = Overlay::default();
        let mut events = Vec::new();
        for op in &req.ops {
            let (table, id) = (op.table().to_string(), op.id().to_string());
            let key = (table.clone(), id.clone());
            let current = match mine.objects.get(&key).or_else(|| before.objects.get(&key)) {
                Some(s) => s.clone(),
                None => get_stored(&self.shared.sm, &table, &id)?,
            };
            let missing = || Rejection::NotFound {
                table: table.clone(),
                id: id.clone(),
            };
            let (new, kind) = match op {
                Op::Create { data, indexes, .. } => {
                    if current.is_some() {
                        return Ok(Err(Rejection::Exists { table, id }));
                    }
                    let s = Stored {
                        version: index,
                        created: index,
                        data: data.clone(),
                        indexes: indexes.clone(),
                    };
                    (Some(s), EventKind::Created)
                }
                Op::Update {
                    version,
                    data,
                    indexes,
                    ..
                } => {
                    let Some(cur) = current.as_ref() else {
                        return Ok(Err(missing()));
                    };
                    if cur.version != *version {
                        return Ok(Err(Rejection::Conflict {
                            table,
                            id,
                            expected: *version,
                            current: cur.version,
                        }));
                    }
                    let s = Stored {
                        version: index,
                        created: cur.created,
                        data: data.clone(),
                        indexes: indexes.clone(),
                    };
                    (Some(s), EventKind::Updated)
                }
                Op::Delete { version, .. } => {
                    let Some(cur) = current.as_ref() else {
                        return Ok(Err(missing()));
                    };
                    if let Some(v) = version {
                        if cur.version != *v {
                            return Ok(Err(Rejection::Conflict {
                                table,
                                id,
                                expected: *v,
                                current: cur.version,
                            }));
                        }
                    }
                    (None, EventKind::Deleted)
                }
            };
            // Index entries that stay are not written again (most updates, e.g. a task's
            // status, change no index).
            let kept = |ix: &IndexKey, other: Option<&Stored>| {
                other.is_some_and(|o| o.indexes.contains(ix))
            };
            if let Some(old) = &current {
                for ix in &old.indexes {
                    mine.claims
                        .insert(index_prefix(&table, &ix.name, &ix.value), None);
                    if !kept(ix, new.as_ref()) {
                        mine.writes.push((index_key(&table, ix, &id), None));
                    }
                }
            }
            if let Some(s) = &new {
                for ix in &s.indexes {
                    if ix.unique {
                        let prefix = index_prefix(&table, &ix.name, &ix.value);
                        let holder = self.unique_holder(&prefix, &table, &mine, before)?;
                        if let Some(holder) = holder.filter(|h| *h != id) {
                            return Ok(Err(Rejection::Duplicate {
                                table,
                                index: ix.name.clone(),
                                value: ix.value.clone(),
                                holder,
                            }));
                        }
                        mine.claims.insert(prefix, Some(id.clone()));
                    }
                    if !kept(ix, current.as_ref()) {
                        mine.writes
                            .push((index_key(&table, ix, &id), Some(Vec::new())));
                    }
                }
                mine.writes.push((
                    object_key(&table, &id),
                    Some(serde_json::to_vec(s).map_err(sm_write_err)?),
                ));
            } else {
                mine.writes.push((object_key(&table, &id), None));
            }
            let data = match (&new, &current) {
                (Some(s), _) => s.data.clone(),
                (None, Some(old)) => old.data.clone(),
                (None, None) => RawValue::NULL.to_owned(),
            };
            events.push(Event {
                table: table.clone(),
                id: id.clone(),
                kind,
                data,
            });
            mine.objects.insert(key, new);
        }
        Ok(Ok((mine, events)))
    }

    /// Who holds a unique index value: the latest claim of this request (`mine`) or of the
    /// entry's earlier requests (`before`); else the stored holder, unless one of them
    /// changed that object (it would have claimed or released the value itself).
    fn unique_holder(
        &self,
        prefix: &[u8],
        table: &str,
        mine: &Overlay,
        before: &Overlay,
    ) -> Result<Option<String>, StorageError> {
        if let Some(Some(h)) = mine
            .claims
            .get(prefix)
            .or_else(|| before.claims.get(prefix))
        {
            return Ok(Some(h.clone()));
        }
        for k in self.shared.sm.scan_prefix(prefix).keys() {
            let k = k.map_err(sm_read_err)?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let key = (table.to_string(), id.clone());
            if !mine.objects.contains_key(&key) && !before.objects.contains_key(&key) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn snapshot_bytes(&self) -> Result<(Option<LogId>, StoredMembership, Vec<u8>), StorageError> {
        let _read = self.shared.gate.read().expect("gate");
        let mut objects = Vec::new();
        for kv in self.shared.sm.scan_prefix(b"o/") {
            let (k, v) = kv.map_err(sm_read_err)?;
            let rest = &k[2..];
            let slash = rest
                .iter()
                .position(|b| *b == b'/')
                .ok_or_else(|| sm_read_err(std::io::Error::other("malformed object key")))?;
            objects.push((
                String::from_utf8_lossy(&rest[..slash]).into_owned(),
                String::from_utf8_lossy(&rest[slash + 1..]).into_owned(),
                serde_json::from_slice(&v).map_err(sm_read_err)?,
            ));
        }
        let bytes = serde_json::to_vec(&SnapshotData { objects }).map_err(snapshot_err)?;
        Ok((self.applied()?, self.membership()?, bytes))
    }

    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAP_META, serde_json::to_vec(meta).map_err(snapshot_err)?);
        batch.insert(SNAP_DATA, bytes);
        let snaps = self.shared.snaps.clone();
        tokio::task::spawn_blocking(move || snaps.apply_batch(batch))
            .await
            .map_err(snapshot_err)?
            .map_err(snapshot_err)?;
        // Logs up to the snapshot may be purged next: it must be on disk first.
        self.shared.disk.flush().await.map_err(snapshot_err)
    }
}

/// Writes planned on top of the stored state and not yet applied: objects as they will be
/// (None: deleted), unique index values claimed (Some(holder)) or released (None), and the
/// key writes in order.
#[derive(Default)]
struct Overlay {
    objects: BTreeMap<(String, String), Option<Stored>>,
    claims: BTreeMap<Vec<u8>, Option<String>>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Overlay {
    /// Take in what a later request planned (it saw this overlay when it planned).
    fn absorb(&mut self, later: Overlay) {
        self.objects.extend(later.objects);
        self.claims.extend(later.claims);
        self.writes.extend(later.writes);
    }
}

fn get_stored(tree: &sled::Tree, table: &str, id: &str) -> Result<Option<Stored>, StorageError> {
    match tree.get(object_key(table, id)).map_err(sm_read_err)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(sm_read_err),
    }
}

/// A table as of `index`, and the changes committed after it.
pub struct Listing {
    pub index: u64,
    pub objects: Vec<(String, Stored)>,
    pub watch: Watch,
}

/// A subscription to committed changes.
pub struct Watch {
    pub rx: broadcast::Receiver<Arc<Change>>,
    /// Changes when a snapshot replaced the whole state.
    pub resets: tokio::sync::watch::Receiver<u64>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Off the async workers: serialising every object takes a while, and the Raft core
        // must keep sending heartbeats meanwhile.
        let me = self.clone();
        let (last_log_id, last_membership, bytes) =
            tokio::task::spawn_blocking(move || me.snapshot_bytes())
                .await
                .map_err(snapshot_err)??;
        let id = format!(
            "{}-{}-{:x}",
            last_log_id.map_or(0, |l| l.leader_id.term),
            last_log_id.map_or(0, |l| l.index),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id: id,
        };
        self.save_snapshot(&meta, &bytes).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied()?, self.membership()?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let _write = self.shared.gate.write().expect("gate");
            let (response, change) = self.apply_entry(entry)?;
            if let Some(c) = change {
                for v in self.shared.views.read().expect("views").iter() {
                    v.apply(&c);
                }
                // No receivers is fine.
                let _ = self.shared.changes.send(Arc::new(c));
            }
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(snapshot_err)?;
        {
            let _write = self.shared.gate.write().expect("gate");
            let mut batch = sled::Batch::default();
            for k in self.shared.sm.iter().keys() {
                batch.remove(k.map_err(sm_read_err)?);
            }
            for (table, id, stored) in &data.objects {
                for ix in &stored.indexes {
                    batch.insert(index_key(table, ix, id), &[][..]);
                }
                batch.insert(
                    object_key(table, id),
                    serde_json::to_vec(stored).map_err(sm_write_err)?,
                );
            }
            batch.insert(
                APPLIED,
                serde_json::to_vec(&meta.last_log_id).map_err(sm_write_err)?,
            );
            batch.insert(
                MEMBERSHIP,
                serde_json::to_vec(&meta.last_membership).map_err(sm_write_err)?,
            );
            self.shared.sm.apply_batch(batch).map_err(sm_write_err)?;
            for v in self.shared.views.read().expect("views").iter() {
                v.load(self)?;
            }
            self.shared.resets.send_modify(|n| *n += 1);
        }
        self.save_snapshot(meta, &bytes).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(meta) = self.shared.snaps.get(SNAP_META).map_err(sm_read_err)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> =
            serde_json::from_slice(&meta).map_err(sm_read_err)?;
        let data = self
            .shared
            .snaps
            .get(SNAP_DATA)
            .map_err(sm_read_err)?
            .map(|d| d.to_vec())
            .unwrap_or_default();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
