//! The image store's error type.

use std::io;

/// Everything that can go wrong in the image store. Messages are lower-case, say what failed and,
/// where the user can do something about it, what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference names no image in the store.
    #[error("no such image: {0}")]
    NotFound(String),

    /// The reference is not a valid image name, tag, digest or id.
    #[error("{0}")]
    InvalidReference(String),

    /// An id prefix matches more than one image.
    #[error("image id prefix {0} is ambiguous: several images match, give more characters")]
    Ambiguous(String),

    /// The operation conflicts with the store's state (names on other repositories, an image a
    /// container uses). The message follows docker's wording: `conflict: unable to …`.
    #[error("{0}")]
    Conflict(String),

    /// The outer archive is not a valid `docker save` archive or OCI image layout.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),

    /// A layer cannot be unpacked: a corrupt tar or compressed stream, or an unsupported entry.
    #[error("layer {layer}: {reason}")]
    InvalidLayer { layer: String, reason: String },

    /// A layer entry tries to write outside the layer: `..`, a path through a symlink, a hard link
    /// to something outside the layer.
    #[error("layer {layer}: refusing unsafe entry {path:?}: {reason}; the image is not loaded")]
    UnsafePath {
        layer: String,
        path: String,
        reason: String,
    },

    /// Content does not have the digest the manifest or config promises.
    #[error("{what}: digest mismatch, expected {expected} but the content hashes to {actual}; the archive is corrupt or was modified, export it again")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A feature of the archive this store does not implement (a compression, a schema).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The store's own files are damaged or missing.
    #[error("image store is damaged: {0}")]
    Corrupt(String),

    /// Another process has the store open.
    #[error("image store {0} is in use by another process; run one daemon per data root")]
    Locked(String),

    /// A registry could not be reached, refused, or answered nonsense.
    #[error("registry {0}")]
    Registry(String),

    /// A content store lacks a blob, or a blob sent to or from one is not what its digest
    /// names (the message says which and where).
    #[error("{0}")]
    Content(String),

    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] with `context` describing what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A closure for `map_err` that wraps an I/O error with `context`.
    pub(crate) fn with_io<E: Into<io::Error>>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |source| Error::io(context, source.into())
    }
}
