//! Errors: storage failures in openraft's terms, and the store's own.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::types::{NodeId, Rejection, StorageError};

pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

pub(crate) fn vote_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

pub(crate) fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

pub(crate) fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

pub(crate) fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::new(
        ErrorSubject::Snapshot(None),
        ErrorVerb::Write,
        AnyError::new(&e),
    )
    .into()
}

/// What the store's callers see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write reached consensus but was not applied.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// An object in the store does not decode as its type (a bug or a foreign writer).
    #[error("{table} {id} is unreadable: {message}")]
    Corrupt {
        table: String,
        id: String,
        message: String,
    },
    /// No leader could be reached in time (no quorum, or an election under way).
    #[error("{0}")]
    NoLeader(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
