//! A bare content store: blobs by digest and nothing else. A swarm manager keeps the swarm
//! images' manifests, configs and layers in one (`<data-root>/content`), and serves them to
//! the nodes by digest; which images exist is the replicated store's business, not its.
//!
//! A blob is written to `tmp/` while its digest is computed, and moved into `blobs/` only
//! when its size and digest are the ones announced: a store never holds a blob whose
//! content is not its name.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::blob::Blobs;
use crate::config::Image;
use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::fsutil::{ensure_dir, remove_path};
use crate::manifest::ManifestKind;
use crate::store::ImageStore;

/// Blobs by digest under one directory. `Send + Sync`.
#[derive(Debug)]
pub struct ContentStore {
    blobs: Blobs,
    tmp: PathBuf,
}

/// A blob in a [`ContentStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: String,
    pub size: u64,
    /// When it was written: garbage collection spares young blobs (an upload whose image
    /// is not registered yet).
    pub modified: SystemTime,
}

impl ContentStore {
    /// Opens (creating if needed) the store at `root`; what an interrupted write left in
    /// `tmp/` is removed.
    ///
    /// # Errors
    ///
    /// The directories cannot be created or cleaned.
    pub fn open(root: &Path) -> Result<ContentStore> {
        ensure_dir(root, 0o700)?;
        let dir = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for d in [&root.join("blobs"), &dir] {
            ensure_dir(d, 0o700)?;
        }
        if tmp.exists() {
            remove_path(&tmp).map_err(Error::with_io(format!("cleaning {}", tmp.display())))?;
        }
        ensure_dir(&tmp, 0o700)?;
        Ok(ContentStore {
            blobs: Blobs::new(dir),
            tmp,
        })
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.blobs.contains(digest)
    }

    /// Whether the store has the blob; if so it counts as new from now (garbage collection
    /// spares young blobs: one about to be named by an image being recorded).
    pub fn touch(&self, digest: &str) -> bool {
        let Ok(path) = self.blobs.path(digest) else {
            return false;
        };
        match File::options().write(true).open(&path) {
            Ok(f) => {
                let _ = f.set_modified(SystemTime::now());
                true
            }
            Err(_) => false,
        }
    }

    /// The blob's size, if the store has it.
    pub fn size(&self, digest: &str) -> Option<u64> {
        let path = self.blobs.path(digest).ok()?;
        fs::metadata(path).ok().map(|m| m.len())
    }

    /// The blob, positioned at `offset`, and its whole size.
    ///
    /// # Errors
    ///
    /// [`Error::Content`] when the store lacks it; an offset past its end.
    pub fn open_at(&self, digest: &str, offset: u64) -> Result<(File, u64)> {
        if !self.contains(digest) {
            return Err(Error::Content(format!("no blob {digest} here")));
        }
        let mut file = self.blobs.open(digest)?;
        let size = file
            .metadata()
            .map_err(Error::with_io(format!("blob {digest}")))?
            .len();
        if offset > size {
            return Err(Error::InvalidReference(format!(
                "blob {digest} has {size} bytes, not {offset}"
            )));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::with_io(format!("blob {digest}")))?;
        Ok((file, size))
    }

    /// Reads a small blob (a manifest, a config), checked against its digest.
    ///
    /// # Errors
    ///
    /// Missing, too large, or not matching its digest.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        if !self.contains(digest) {
            return Err(Error::Content(format!("no blob {digest} here")));
        }
        self.blobs.read(digest)
    }

    /// A writer for the blob `digest` of `size` bytes; nothing is stored until
    /// [`BlobWriter::commit`] has checked both.
    ///
    /// # Errors
    ///
    /// An invalid digest; the scratch file cannot be created.
    pub fn writer(&self, digest: &str, size: u64) -> Result<BlobWriter<'_>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.blobs.path(digest)?;
        let tmp = self.tmp.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(Error::with_io(format!("creating {}", tmp.display())))?;
        Ok(BlobWriter {
            store: self,
            digest: digest.to_owned(),
            size,
            out: Some(HashingWriter::new(file)),
            tmp,
        })
    }

    /// Every blob in the store.
    ///
    /// # Errors
    ///
    /// The directory cannot be read.
    pub fn list(&self) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for digest in self.blobs.list()? {
            let Ok(meta) = self.blobs.path(&digest).and_then(|p| {
                fs::metadata(&p).map_err(Error::with_io(format!("blob {}", p.display())))
            }) else {
                continue; // removed meanwhile
            };
            out.push(StoredBlob {
                digest,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    /// Removes a blob; a missing one is fine.
    ///
    /// # Errors
    ///
    /// The file cannot be removed.
    pub fn remove(&self, digest: &str) -> Result<()> {
        self.blobs.remove(digest)
    }
}

/// A blob being written into a [`ContentStore`]; dropped uncommitted, it leaves nothing.
pub struct BlobWriter<'a> {
    store: &'a ContentStore,
    digest: String,
    size: u64,
    out: Option<HashingWriter<File>>,
    tmp: PathBuf,
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.as_ref().map_or(0, HashingWriter::written)
    }

    /// Checks size and digest and moves the blob into the store.
    ///
    /// # Errors
    ///
    /// [`Error::Content`]: the size or digest is wrong; the content is dropped.
    pub fn commit(mut self) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Err(Error::Corrupt(format!(
                "blob {} written twice",
                self.digest
            )));
        };
        let (digest, size, file) = out.finish();
        if size != self.size {
            return Err(Error::Content(format!(
                "blob {} came with {size} bytes, {} announced; not stored",
                self.digest, self.size
            )));
        }
        if digest != self.digest {
            return Err(Error::Content(format!(
                "blob {} arrived with content that hashes to {digest}; not stored",
                self.digest
            )));
        }
        file.sync_all()
            .map_err(Error::with_io(format!("syncing {}", self.tmp.display())))?;
        drop(file);
        self.store.blobs.adopt(&self.digest, &self.tmp)?;
        self.store.blobs.sync()
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        if out.written() + buf.len() as u64 > self.size {
            return Err(io::Error::other(format!(
                "blob {} is longer than the {} bytes announced",
                self.digest, self.size
            )));
        }
        out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What an image is made of, as the blobs a registry or a swarm's content store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageContent {
    /// The config's digest.
    pub id: String,
    pub manifest_digest: String,
    /// Canonical names.
    pub names: Vec<String>,
    /// Manifest, config, then the layers: digest and size.
    pub blobs: Vec<(String, u64)>,
    /// The layers' bytes, unpacked.
    pub size: u64,
    pub created: Option<String>,
}

/// The blobs an image manifest names: its config's digest (the image id), then config and
/// layers with their sizes.
///
/// # Errors
///
/// Not a manifest (an index, or not JSON of either).
pub fn manifest_blobs(manifest: &[u8]) -> Result<(String, Vec<(String, u64)>)> {
    let ManifestKind::Manifest(m) = ManifestKind::parse(manifest, None)
        .map_err(|e| Error::Content(format!("not an image manifest: {e}")))?
    else {
        return Err(Error::Content(
            "an index, not an image manifest: name the image for one platform".into(),
        ));
    };
    let blobs = std::iter::once(&m.config)
        .chain(&m.layers)
        .map(|d| (d.digest.clone(), d.size))
        .collect();
    Ok((m.config.digest.clone(), blobs))
}

impl ImageStore {
    /// The blobs of the image `reference` names, manifest first.
    ///
    /// # Errors
    ///
    /// No such image; its manifest is missing or damaged.
    pub fn content(&self, reference: &str) -> Result<ImageContent> {
        let image: Image = self.get(reference)?;
        let manifest = self.blobs.read(&image.manifest_digest)?;
        let (_, named) = manifest_blobs(&manifest)
            .map_err(|e| Error::Corrupt(format!("manifest of {reference}: {e}")))?;
        let mut blobs = vec![(image.manifest_digest.clone(), manifest.len() as u64)];
        blobs.extend(named);
        Ok(ImageContent {
            id: image.id,
            manifest_digest: image.manifest_digest,
            names: image.names,
            blobs,
            size: image.size,
            created: image.created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;

    #[test]
    fn a_blob_is_kept_only_when_it_is_what_it_claims() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = b"hello layer".to_vec();
        let digest = sha256_digest(&good);

        // Wrong content: refused, nothing kept.
        let mut w = store.writer(&digest, good.len() as u64).unwrap();
        w.write_all(b"hello LAYER").unwrap();
        assert!(matches!(w.commit(), Err(Error::Content(_))));
        assert!(!store.contains(&digest));
        // Too long: refused while writing.
        let mut w = store.writer(&digest, 3).unwrap();
        assert!(w.write_all(&good).is_err());
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let mut w = store.writer(&digest, good.len() as u64).unwrap();
        w.write_all(&good).unwrap();
        w.commit().unwrap();
        assert_eq!(store.size(&digest), Some(good.len() as u64));
        assert_eq!(store.read(&digest).unwrap(), good);
        let (mut f, size) = store.open_at(&digest, 6).unwrap();
        let mut rest = String::new();
        io::Read::read_to_string(&mut f, &mut rest).unwrap();
        assert_eq!((rest.as_str(), size), ("layer", 11));
        assert_eq!(store.list().unwrap().len(), 1);
        let before = store.list().unwrap()[0].modified;
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(store.touch(&digest));
        assert!(store.list().unwrap()[0].modified > before);
        assert!(!store.touch(&sha256_digest(b"absent")));
        store.remove(&digest).unwrap();
        assert!(matches!(store.open_at(&digest, 0), Err(Error::Content(_))));
    }
}
