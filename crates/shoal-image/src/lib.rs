//! shoal's image store: content-addressed blobs, `docker save` / OCI layout import and export,
//! and safe, one-time layer unpacking for overlayfs.
//!
//! The key design choice is that every layer is unpacked exactly once, into its own directory,
//! by an unpacker that cannot write outside that directory (every path is walked with
//! `openat(O_NOFOLLOW)` from the layer's root fd; `..`, symlinked parents and escaping hard links
//! are errors), and only after its content hashed to the image config's diff id. Containers then
//! stack these directories as overlayfs lower layers; nothing is copied per container.
//!
//! # On-disk layout (under the directory given to [`ImageStore::open`], e.g. `<data-root>/image`)
//!
//! ```text
//! lock                  flock held by the process that has the store open
//! index.json            images (by id), names (canonical name → id), layers (diff id → size,
//!                       uncompressed tar size, blob); rewritten atomically after each change
//! blobs/sha256/<hex>    configs, manifests and layer blobs exactly as loaded (compressed or
//!                       not), so manifest digests stay valid and blobs can be served by digest
//! layers/<hex>/         one unpacked layer per diff id (sha256 of the uncompressed tar), shared
//!                       by all images; overlayfs whiteouts already converted
//! tmp/                  scratch space of loads in progress; emptied at open
//! ```
//!
//! All directories are mode 0700: layers hold setuid binaries and must not be reachable by
//! unprivileged host users. A load writes layers and blobs first, syncs the file system, and
//! registers images last; a crash before that leaves unreferenced files that the next open
//! removes. Absolute entry names in layers are unpacked relative to the layer root (docker does
//! the same); `..` is always rejected.

mod archive;
mod blob;
mod compression;
mod config;
mod content;
mod digest;
mod error;
mod fsutil;
mod gc;
mod index;
mod load;
mod manifest;
pub mod reference;
mod registry;
mod remove;
mod resolve;
mod save;
mod store;
mod unpack;

pub use config::{HealthConfig, Image, ImageConfig};
pub use content::{manifest_blobs, BlobWriter, ContentStore, ImageContent, StoredBlob};
pub use digest::sha256_digest;
pub use error::{Error, Result};
pub use load::LoadedImage;
pub use reference::Reference;
pub use registry::{
    resolve, OnProgress, PullProgress, PushProgress, Pushed, Registry, RegistryOptions, Source,
};
pub use remove::Removed;
pub use store::ImageStore;
