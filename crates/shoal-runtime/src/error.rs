//! Errors of the runtime library. Messages are lower-case, say what failed, and where the
//! user can do something about it, say what.

use std::io;
use std::path::PathBuf;

use crate::state::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0:?} does not exist")]
    NotFound(String),

    #[error("container {0:?} already exists: pick another id or delete it first")]
    Exists(String),

    #[error("invalid container id {0:?}: use 1-128 characters from [A-Za-z0-9_+.-], starting with a letter or digit")]
    InvalidId(String),

    #[error("container {id} is {status}: cannot {action}")]
    BadState {
        id: String,
        status: Status,
        action: &'static str,
    },

    #[error("invalid bundle config {path}: {msg}")]
    InvalidSpec { path: PathBuf, msg: String },

    #[error("unsupported config: {0}")]
    Unsupported(String),

    #[error("{0}")]
    InvalidArgument(String),

    #[error("cgroup {path}: {msg}")]
    Cgroup { path: PathBuf, msg: String },

    #[error("container init: {0}")]
    Init(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn invalid_spec(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::InvalidSpec {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn cgroup(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Cgroup {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// The raw OS error behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds a context string to I/O and nix results, turning them into [`Error::Io`].
pub trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context(),
            source: io::Error::from(errno),
        })
    }
}
