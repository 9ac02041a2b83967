//! The content-addressed blob store: `blobs/sha256/<hex>`, one file per digest, immutable.
//!
//! Blobs are configs, manifests and layer blobs exactly as the archive carried them (compressed
//! or not), so manifest digests stay valid and blobs can later be served by digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{sha256_digest, sha256_hex};
use crate::error::{Error, Result};
use crate::fsutil;

/// Configs, manifests and indexes are small; refuse to hold anything bigger in memory.
pub(crate) const MAX_JSON_BLOB: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The store under `dir` (`<root>/blobs/sha256`), which must exist.
    pub(crate) fn new(dir: PathBuf) -> Blobs {
        Blobs { dir }
    }

    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest).ok_or_else(|| {
            Error::InvalidReference(format!(
                "invalid blob digest {digest:?}: expected sha256:<64 hex>"
            ))
        })?;
        Ok(self.dir.join(hex))
    }

    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.exists())
    }

    pub(crate) fn open(&self, digest: &str) -> Result<File> {
        let path = self.path(digest)?;
        File::open(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => Error::Corrupt(format!(
                "blob {digest} is missing from {}; remove the image and load it again",
                self.dir.display()
            )),
            _ => Error::io(format!("opening blob {}", path.display()), err),
        })
    }

    /// Reads a small blob (config, manifest) and checks its digest.
    pub(crate) fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(digest)?
            .take(MAX_JSON_BLOB + 1)
            .read_to_end(&mut bytes)
            .map_err(Error::with_io(format!("reading blob {digest}")))?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::Corrupt(format!(
                "blob {digest} is larger than {MAX_JSON_BLOB} bytes"
            )));
        }
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {digest}"),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` (whose digest the caller computed) unless already present.
    pub(crate) fn write(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(digest)?;
        if !path.exists() {
            fsutil::write_atomic(&path, bytes)?;
        }
        Ok(())
    }

    /// Moves a verified file (same file system) into the store unless the blob is present.
    pub(crate) fn adopt(&self, digest: &str, file: &Path) -> Result<()> {
        let path = self.path(digest)?;
        if path.exists() {
            return Ok(());
        }
        fs::rename(file, &path).map_err(Error::with_io(format!(
            "moving {} into the blob store",
            file.display()
        )))
    }

    /// Makes renames into the store durable.
    pub(crate) fn sync(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(Error::with_io(format!("syncing {}", self.dir.display())))
    }

    /// Every digest in the store.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(Error::with_io(format!("listing {}", self.dir.display())))?;
        let mut digests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::with_io(format!("listing {}", self.dir.display())))?;
            digests.push(format!("sha256:{}", entry.file_name().to_string_lossy()));
        }
        Ok(digests)
    }

    /// Removes a blob; a missing one is fine.
    pub(crate) fn remove(&self, digest: &str) -> Result<()> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let path = self.dir.join(hex);
        fsutil::remove_path(&path)
            .map_err(Error::with_io(format!("removing blob {}", path.display())))
    }
}
