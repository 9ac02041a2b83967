//! Typed tables over the state machine: an object type names its table, its id and its index
//! keys; reads come back with the version a later update must name.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sm::{StateMachine, Stored};
use crate::types::{IndexKey, Op};

/// A kind of object kept in the store.
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The table's name: lowercase letters, no `/`.
    const TABLE: &'static str;

    fn id(&self) -> &str;

    /// Secondary index keys, for the lookups control loops need.
    fn indexes(&self) -> Vec<IndexKey> {
        Vec::new()
    }
}

/// An object with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The log index of its last write; name it to update or delete it.
    pub version: u64,
    /// The log index of its creation.
    pub created: u64,
    pub object: T,
}

pub fn index(name: &str, value: impl Into<String>) -> IndexKey {
    IndexKey {
        name: name.into(),
        value: value.into(),
        unique: false,
    }
}

pub fn unique_index(name: &str, value: impl Into<String>) -> IndexKey {
    IndexKey {
        name: name.into(),
        value: value.into(),
        unique: true,
    }
}

/// Build operations on typed objects.
pub fn create<T: Object>(o: &T) -> Result<Op> {
    Ok(Op::Create {
        table: T::TABLE.into(),
        id: o.id().into(),
        data: to_value(o)?,
        indexes: o.indexes(),
    })
}

pub fn update<T: Object>(o: &T, version: u64) -> Result<Op> {
    Ok(Op::Update {
        table: T::TABLE.into(),
        id: o.id().into(),
        version,
        data: to_value(o)?,
        indexes: o.indexes(),
    })
}

pub fn delete<T: Object>(id: &str, version: Option<u64>) -> Op {
    Op::Delete {
        table: T::TABLE.into(),
        id: id.into(),
        version,
    }
}

fn to_value<T: Object>(o: &T) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(o)
        .map_err(|e| Error::Other(format!("encode {} {}: {e}", T::TABLE, o.id())))
}

pub(crate) fn decode<T: Object>(id: &str, s: Stored) -> Result<Versioned<T>> {
    let object = serde_json::from_str(s.data.get()).map_err(|e| Error::Corrupt {
        table: T::TABLE.into(),
        id: id.into(),
        message: e.to_string(),
    })?;
    Ok(Versioned {
        version: s.version,
        created: s.created,
        object,
    })
}

/// Typed reads of the local state machine (as of the last applied entry; see
/// `Store::read` for linearizable reads).
impl StateMachine {
    pub fn get_obj<T: Object>(&self, id: &str) -> Result<Option<Versioned<T>>> {
        self.get(T::TABLE, id)?.map(|s| decode(id, s)).transpose()
    }

    pub fn list_obj<T: Object>(&self) -> Result<Vec<Versioned<T>>> {
        self.list(T::TABLE)?
            .into_iter()
            .map(|(id, s)| decode(&id, s))
            .collect()
    }

    pub fn find_obj<T: Object>(&self, index: &str, value: &str) -> Result<Vec<Versioned<T>>> {
        let mut out = Vec::new();
        for id in self.find(T::TABLE, index, value)? {
            if let Some(v) = self.get_obj::<T>(&id)? {
                out.push(v);
            }
        }
        Ok(out)
    }
}
