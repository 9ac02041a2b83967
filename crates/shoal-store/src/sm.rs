//! The state machine: object tables in memory, applied entry by entry (each entry all at
//! once, with the applied log id); snapshots; and the broadcast of committed changes.
//!
//! The tables live in memory, as SwarmKit's and etcd's do in effect: what makes them durable
//! is the log (every entry is flushed before it counts) and the last snapshot (written and
//! flushed before the log behind it may be purged). On start the state is the snapshot's,
//! and openraft applies the committed entries after it again. Writing every object to disk
//! a second time cost more than everything else a manager does.
//!
//! Secondary index entries are keys `x/<table>/<index>/<value>/<id>` in an ordered set (a
//! lookup is a prefix scan); `/` cannot appear in table or index names, and values are
//! length-prefixed so any byte is fine in them and in ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The tables, their indexes, and how far they are applied.
#[derive(Default)]
struct Mem {
    /// Table → id → object.
    tables: HashMap<String, BTreeMap<String, Stored>>,
    /// Index entries (see the module's notes).
    index: BTreeSet<Vec<u8>>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl Mem {
    fn get(&self, table: &str, id: &str) -> Option<&Stored> {
        self.tables.get(table).and_then(|t| t.get(id))
    }

    /// Ids under an index prefix.
    fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = String> + 'a {
        self.index
            .range(prefix.to_vec()..)
            .take_while(move |k| k.starts_with(prefix))
            .map(move |k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
    }

    /// A state from a snapshot's content.
    fn from_snapshot(
        data: SnapshotData,
        applied: Option<LogId>,
        membership: StoredMembership,
    ) -> Mem {
        let mut mem = Mem {
            applied,
            membership,
            ..Mem::default()
        };
        for (table, id, stored) in data.objects {
            for ix in &stored.indexes {
                mem.index.insert(index_key(&table, ix, &id));
            }
            mem.tables.entry(table).or_default().insert(id, stored);
        }
        mem
    }
}

struct Shared {
    disk: crate::Disk,
    snaps: sled::Tree,
    /// Held for writing while an entry is applied and its change broadcast, for reading by
    /// whoever needs a snapshot that lines up exactly with a watch.
    gate: RwLock<()>,
    mem: RwLock<Mem>,
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
    /// The state of the last snapshot on `disk` (openraft applies the entries after it).
    pub fn new(disk: &crate::Disk) -> Result<StateMachine, StorageError> {
        let db = &disk.db;
        // Where tables were kept on disk before they moved to memory.
        db.drop_tree("sm").map_err(sm_write_err)?;
        let snaps = db.open_tree("snapshot").map_err(sm_read_err)?;
        let mem = match read_snapshot(&snaps)? {
            Some((meta, bytes)) => {
                let data: SnapshotData = serde_json::from_slice(&bytes).map_err(snapshot_err)?;
                Mem::from_snapshot(data, meta.last_log_id, meta.last_membership)
            }
            None => Mem::default(),
        };
        Ok(StateMachine {
            shared: Arc::new(Shared {
                disk: disk.clone(),
                snaps,
                gate: RwLock::new(()),
                mem: RwLock::new(mem),
                changes: broadcast::channel(WATCH_BUFFER).0,
                resets: tokio::sync::watch::channel(0).0,
                views: RwLock::new(Vec::new()),
            }),
        })
    }

    fn mem(&self) -> std::sync::RwLockReadGuard<'_, Mem> {
        self.shared.mem.read().unwrap_or_else(|e| e.into_inner())
    }

    /// One object.
    pub fn get(&self, table: &str, id: &str) -> Result<Option<Stored>, StorageError> {
        Ok(self.mem().get(table, id).cloned())
    }

    /// Every object of a table, by id.
    pub fn list(&self, table: &str) -> Result<Vec<(String, Stored)>, StorageError> {
        Ok(self.mem().tables.get(table).map_or_else(Vec::new, |t| {
            t.iter().map(|(id, s)| (id.clone(), s.clone())).collect()
        }))
    }

    /// Ids of the objects of `table` whose index `name` has `value`.
    pub fn find(&self, table: &str, name: &str, value: &str) -> Result<Vec<String>, StorageError> {
        let prefix = index_prefix(table, name, value);
        Ok(self.mem().scan(&prefix).collect())
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
        Ok(self.mem().applied)
    }

    fn membership(&self) -> Result<StoredMembership, StorageError> {
        Ok(self.mem().membership.clone())
    }

    /// Apply one entry: checks first (against the state as it is), then all of it at once.
    fn apply_entry(
        &self,
        entry: Entry<TypeConfig>,
    ) -> Result<(Vec<Response>, Option<Change>), StorageError> {
        let index = entry.log_id.index;
        let (responses, change, applied) = match entry.payload {
            EntryPayload::Blank => (vec![Response::Internal], None, Overlay::default()),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m);
                self.shared
                    .mem
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .membership = stored;
                (vec![Response::Internal], None, Overlay::default())
            }
            EntryPayload::Normal(proposal) => {
                // Each request on its own: a rejected one leaves no trace; an applied one is
                // seen by those after it.
                let mut applied = Overlay::default();
                let mut responses = Vec::with_capacity(proposal.requests.len());
                let mut events = Vec::new();
                let mem = self.mem();
                for req in &proposal.requests {
                    match self.plan(&mem, req, index, &applied)? {
                        Ok((mine, evs)) => {
                            applied.absorb(mine);
                            events.extend(evs);
                            responses.push(Response::Applied { version: index });
                        }
                        Err(why) => responses.push(Response::Rejected(why)),
                    }
                }
                drop(mem);
                let change = (!events.is_empty()).then_some(Change { index, events });
                (responses, change, applied)
            }
        };
        let mut mem = self.shared.mem.write().unwrap_or_else(|e| e.into_inner());
        for (k, add) in applied.index_writes {
            if add {
                mem.index.insert(k);
            } else {
                mem.index.remove(&k);
            }
        }
        for ((table, id), object) in applied.objects {
            match object {
                Some(s) => {
                    mem.tables.entry(table).or_default().insert(id, s);
                }
                None => {
                    if let Some(t) = mem.tables.get_mut(&table) {
                        t.remove(&id);
                    }
                }
            }
        }
        mem.applied = Some(entry.log_id);
        Ok((responses, change))
    }

    /// Check a request against the stored state as `before` (the entry's earlier requests)
    /// changed it, and its own earlier operations; what it would write, or why not.
    fn plan(
        &self,
        mem: &Mem,
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
                None => mem.get(&table, &id).cloned(),
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
                        mine.index_writes.push((index_key(&table, ix, &id), false));
                    }
                }
            }
            if let Some(s) = &new {
                for ix in &s.indexes {
                    if ix.unique {
                        let prefix = index_prefix(&table, &ix.name, &ix.value);
                        let holder = unique_holder(mem, &prefix, &table, &mine, before);
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
                        mine.index_writes.push((index_key(&table, ix, &id), true));
                    }
                }
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

    fn snapshot_bytes(&self) -> Result<(Option<LogId>, StoredMembership, Vec<u8>), StorageError> {
        // A copy under the lock (applies wait that long), encoded after.
        let (objects, applied, membership) = {
            let _read = self.shared.gate.read().expect("gate");
            let mem = self.mem();
            let mut objects = Vec::new();
            let mut tables: Vec<_> = mem.tables.iter().collect();
            tables.sort_by(|a, b| a.0.cmp(b.0));
            for (table, t) in tables {
                for (id, s) in t {
                    objects.push((table.clone(), id.clone(), s.clone()));
                }
            }
            (objects, mem.applied, mem.membership.clone())
        };
        let bytes = serde_json::to_vec(&SnapshotData { objects }).map_err(snapshot_err)?;
        Ok((applied, membership, bytes))
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
    /// Index entries added (true) or removed, in order.
    index_writes: Vec<(Vec<u8>, bool)>,
}

impl Overlay {
    /// Take in what a later request planned (it saw this overlay when it planned).
    fn absorb(&mut self, later: Overlay) {
        self.objects.extend(later.objects);
        self.claims.extend(later.claims);
        self.index_writes.extend(later.index_writes);
    }
}

/// Who holds a unique index value: the latest claim of this request (`mine`) or of the
/// entry's earlier requests (`before`); else the stored holder, unless one of them changed
/// that object (it would have claimed or released the value itself).
fn unique_holder(
    mem: &Mem,
    prefix: &[u8],
    table: &str,
    mine: &Overlay,
    before: &Overlay,
) -> Option<String> {
    if let Some(Some(h)) = mine
        .claims
        .get(prefix)
        .or_else(|| before.claims.get(prefix))
    {
        return Some(h.clone());
    }
    mem.scan(prefix).find(|id| {
        let key = (table.to_string(), id.clone());
        !mine.objects.contains_key(&key) && !before.objects.contains_key(&key)
    })
}

/// The snapshot kept on disk: its meta and its bytes.
type SavedSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

fn read_snapshot(snaps: &sled::Tree) -> Result<Option<SavedSnapshot>, StorageError> {
    let Some(meta) = snaps.get(SNAP_META).map_err(sm_read_err)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta<NodeId, BasicNode> =
        serde_json::from_slice(&meta).map_err(sm_read_err)?;
    let data = snaps
        .get(SNAP_DATA)
        .map_err(sm_read_err)?
        .map(|d| d.to_vec())
        .unwrap_or_default();
    Ok(Some((meta, data)))
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
        let mem = Mem::from_snapshot(data, meta.last_log_id, meta.last_membership.clone());
        {
            let _write = self.shared.gate.write().expect("gate");
            *self.shared.mem.write().unwrap_or_else(|e| e.into_inner()) = mem;
            for v in self.shared.views.read().expect("views").iter() {
                v.load(self)?;
            }
            self.shared.resets.send_modify(|n| *n += 1);
        }
        self.save_snapshot(meta, &bytes).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(
            read_snapshot(&self.shared.snaps)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
        )
    }
}
