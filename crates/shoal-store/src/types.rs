//! What goes through Raft: a request is an atomic batch of operations on objects; the
//! response says whether it was applied and at which version.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The store's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Response>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

/// One secondary-index entry of an object: `name` = `value`. With `unique`, no other object of
/// the table may hold the same value (service names, for instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKey {
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
}

/// An operation on one object. Versions are the Raft log index of the write that made them,
/// so they only grow, and a writer that read version `v` updates "if still `v`" (optimistic
/// concurrency, as SwarmKit's `Meta.Version`).
///
/// An object's data is its JSON text, kept as it is from the writer to the table (never
/// parsed into a tree on the way: entries carry hundreds of objects). Externally tagged: an
/// internally tagged enum would buffer the data to find the tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Fails if the object exists.
    Create {
        table: String,
        id: String,
        data: Box<RawValue>,
        indexes: Vec<IndexKey>,
    },
    /// Fails unless the object exists at exactly `version`.
    Update {
        table: String,
        id: String,
        version: u64,
        data: Box<RawValue>,
        indexes: Vec<IndexKey>,
    },
    /// Fails unless the object exists (and is at `version`, when given).
    Delete {
        table: String,
        id: String,
        version: Option<u64>,
    },
}

impl Op {
    pub fn table(&self) -> &str {
        match self {
            Op::Create { table, .. } | Op::Update { table, .. } | Op::Delete { table, .. } => table,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Op::Create { id, .. } | Op::Update { id, .. } | Op::Delete { id, .. } => id,
        }
    }
}

impl PartialEq for Op {
    fn eq(&self, other: &Op) -> bool {
        match (self, other) {
            (
                Op::Create {
                    table: t1,
                    id: i1,
                    data: d1,
                    indexes: x1,
                },
                Op::Create {
                    table: t2,
                    id: i2,
                    data: d2,
                    indexes: x2,
                },
            ) => t1 == t2 && i1 == i2 && d1.get() == d2.get() && x1 == x2,
            (
                Op::Update {
                    table: t1,
                    id: i1,
                    version: v1,
                    data: d1,
                    indexes: x1,
                },
                Op::Update {
                    table: t2,
                    id: i2,
                    version: v2,
                    data: d2,
                    indexes: x2,
                },
            ) => t1 == t2 && i1 == i2 && v1 == v2 && d1.get() == d2.get() && x1 == x2,
            (
                Op::Delete {
                    table: t1,
                    id: i1,
                    version: v1,
                },
                Op::Delete {
                    table: t2,
                    id: i2,
                    version: v2,
                },
            ) => t1 == t2 && i1 == i2 && v1 == v2,
            _ => false,
        }
    }
}

/// A batch applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub ops: Vec<Op>,
}

/// What one log entry carries: the requests the leader gathered while its previous entries
/// were being written (group commit: one fsync and one replication round for all of them).
/// Each request is applied on its own, all or nothing, in order, seeing the ones before it;
/// the entry's response has one [`Response`] per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<Request>,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied; the objects written now have this version.
    Applied { version: u64 },
    /// Nothing was applied; why (a version conflict, a duplicate, a missing object).
    Rejected(Rejection),
    /// A membership change or the leader's blank entry.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("{table} {id} already exists")]
    Exists { table: String, id: String },
    #[error("{table} {id} not found")]
    NotFound { table: String, id: String },
    #[error("{table} {id} changed meanwhile (version {current}, you had {expected}): read it again and retry")]
    Conflict {
        table: String,
        id: String,
        expected: u64,
        current: u64,
    },
    #[error("{table} {index} {value:?} is already used by {holder}")]
    Duplicate {
        table: String,
        index: String,
        value: String,
        holder: String,
    },
}

/// A committed change, as watchers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The log index that made it (the new version of every object in `events`).
    pub index: u64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub table: String,
    pub id: String,
    pub kind: EventKind,
    /// The object after the change (before it, for a delete), as JSON text.
    pub data: Box<RawValue>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.table == other.table
            && self.id == other.id
            && self.kind == other.kind
            && self.data.get() == other.data.get()
    }
}

impl Event {
    /// The object, decoded.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.data.get())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}
