//! [`ImageStore`]: opening the store and the read-mostly verbs (`get`, `list`, `tag`,
//! `layer_dirs`). `load`, `save` and `remove` live in their own files.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::fcntl::Flock;

use crate::blob::Blobs;
use crate::config::Image;
use crate::digest::sha256_hex;
use crate::error::{Error, Result};
use crate::fsutil::{self, ensure_dir};
use crate::index::Index;
use crate::reference;
use crate::resolve::resolve;

/// A content-addressed image store in one directory. `Send + Sync`; share it in an `Arc`.
/// One process at a time may open a given root (an `flock` on `<root>/lock` enforces it).
#[derive(Debug)]
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) layers: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) blobs: Blobs,
    pub(crate) index: Mutex<Index>,
    /// Loads and saves hold it shared for their whole run, garbage collection exclusively, so a
    /// layer or blob a load found present is not deleted under it.
    pub(crate) gc_lock: RwLock<()>,
    /// Blobs pulls are fetching now: a pull that needs one of them waits for the pull that
    /// fetches it, then finds it here (one fetch per blob, whatever images share it).
    pub(crate) fetching: Mutex<HashSet<String>>,
    pub(crate) fetched: std::sync::Condvar,
    _lock: Flock<File>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, removes what a crash left in `tmp/`, and
    /// removes layers and blobs no image references (left by a crash during a load).
    ///
    /// # Errors
    ///
    /// The directories cannot be created, another process has the store open, or `index.json`
    /// is damaged.
    pub fn open(root: &Path) -> Result<ImageStore> {
        ensure_dir(root, 0o700)?;
        let lock = fsutil::lock_root(root)?;
        let blobs_dir = root.join("blobs").join("sha256");
        let layers = root.join("layers");
        let tmp = root.join("tmp");
        for dir in [&root.join("blobs"), &blobs_dir, &layers, &tmp] {
            ensure_dir(dir, 0o700)?;
        }
        clean_dir(&tmp)?;
        remove_index_leftovers(root)?;
        let index_path = root.join("index.json");
        let index = Index::load(&index_path)?;
        let store = ImageStore {
            root: root.to_owned(),
            layers,
            tmp,
            index_path,
            blobs: Blobs::new(blobs_dir),
            index: Mutex::new(index),
            gc_lock: RwLock::new(()),
            fetching: Mutex::new(HashSet::new()),
            fetched: std::sync::Condvar::new(),
            _lock: lock,
        };
        store.collect_garbage()?;
        tracing::debug!(root = %root.display(), images = store.index().images.len(), "image store open");
        Ok(store)
    }

    /// The image `reference` names: `busybox`, `busybox:1.36`, `docker.io/library/busybox:latest`,
    /// `localhost:5000/x/y:t`, `name@sha256:<manifest digest>`, `sha256:<id>`, a 64-hex id or a
    /// unique id prefix.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (`no such image: busybox:latest`), [`Error::Ambiguous`] for a prefix
    /// several ids share, [`Error::InvalidReference`].
    pub fn get(&self, reference: &str) -> Result<Image> {
        let index = self.index();
        let resolved = resolve(&index, reference)?;
        index
            .image(&resolved.id)
            .ok_or_else(|| Error::NotFound(reference.to_owned()))
    }

    /// Every image, newest first.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for an index that is read from disk.
    pub fn list(&self) -> Result<Vec<Image>> {
        let index = self.index();
        let mut images: Vec<Image> = index
            .images
            .keys()
            .filter_map(|id| index.image(id))
            .collect();
        images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Gives the image `source` names the name `target` (moving it if another image had it).
    ///
    /// # Errors
    ///
    /// `source` names no image, `target` is not a valid name or has a digest, or the index
    /// cannot be written.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let target_ref = reference::parse(target)?;
        if target_ref.digest.is_some() {
            return Err(Error::InvalidReference(format!(
                "refusing to create a tag with a digest reference: {target:?}"
            )));
        }
        let name = target_ref.canonical();
        self.update(|index| {
            let resolved = resolve(index, source)?;
            index.tags.insert(name, resolved.id);
            Ok(())
        })
    }

    /// The unpacked layer directories of `image` for overlayfs `lowerdir`, topmost layer first.
    /// A layer that appears twice is listed once, at its topmost position (same merged view).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a layer directory is missing.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let mut seen = HashSet::new();
        let mut dirs = Vec::new();
        for diff_id in image.diff_ids.iter().rev() {
            if !seen.insert(diff_id) {
                continue;
            }
            let dir = self.layer_path(diff_id)?;
            if !dir.is_dir() {
                return Err(Error::Corrupt(format!(
                    "layer {diff_id} of image {} is missing from {}; remove the image and load it again",
                    image.id,
                    self.layers.display()
                )));
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Opens the blob with `digest` (a config, manifest or layer blob as loaded) for reading.
    ///
    /// # Errors
    ///
    /// The digest is malformed or the blob is not in the store.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        if !self.blobs.contains(digest) {
            return Err(Error::NotFound(format!("blob {digest}")));
        }
        self.blobs.open(digest)
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        let hex = sha256_hex(diff_id)
            .ok_or_else(|| Error::Corrupt(format!("invalid layer diff id {diff_id:?}")))?;
        Ok(self.layers.join(hex))
    }

    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to a copy of the index, writes it, and only then makes it current.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let mut current = self.index();
        let mut next = current.clone();
        let out = change(&mut next)?;
        next.save(&self.index_path)?;
        *current = next;
        Ok(out)
    }

    pub(crate) fn gc_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gc_lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn gc_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes everything inside `dir`.
/// Blobs a pull fetches, claimed from other pulls until it has imported them.
pub(crate) struct Claim<'a> {
    store: &'a ImageStore,
    digests: Vec<String>,
}

impl ImageStore {
    /// Claim `digests` for one pull, all at once (so two pulls never wait on each other):
    /// waits while another pull fetches any of them.
    pub(crate) fn claim(&self, digests: Vec<String>) -> Claim<'_> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        while digests.iter().any(|d| fetching.contains(d)) {
            fetching = self
                .fetched
                .wait(fetching)
                .unwrap_or_else(|e| e.into_inner());
        }
        fetching.extend(digests.iter().cloned());
        Claim {
            store: self,
            digests,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut fetching = self
            .store
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for d in &self.digests {
            fetching.remove(d);
        }
        self.store.fetched.notify_all();
    }
}

fn clean_dir(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(Error::with_io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(Error::with_io(format!("listing {}", dir.display())))?
            .path();
        tracing::info!(path = %path.display(), "removing leftover of an interrupted operation");
        fsutil::remove_path(&path)
            .map_err(Error::with_io(format!("removing {}", path.display())))?;
    }
    Ok(())
}

/// Removes temporary index files a crash left between write and rename.
fn remove_index_leftovers(root: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(root).map_err(Error::with_io(format!("listing {}", root.display())))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("index.tmp-")
        {
            let path = entry.path();
            fsutil::remove_path(&path)
                .map_err(Error::with_io(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}
