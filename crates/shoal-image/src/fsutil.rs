//! Small file system helpers: atomic writes, private directories, scratch directories that clean
//! up after themselves, the store's lock file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` so that readers see either the old or the new content, even after a
/// crash: write a temporary file next to it, fsync, rename over, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    result.map_err(|err| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), err)
    })
}

/// fsyncs the directory containing `path`, making a rename or create in it durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Creates `path` (and its parents) if missing and sets its mode.
pub(crate) fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(Error::with_io(format!(
            "creating directory {}",
            path.display()
        )))
}

/// Flushes everything written to the file system holding `path` (one `syncfs`, cheaper than
/// fsyncing every unpacked file).
pub(crate) fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(Error::with_io(format!("opening {}", path.display())))?;
    nix::unistd::syncfs(dir.as_fd()).map_err(Error::with_io(format!(
        "syncing the file system of {}",
        path.display()
    )))
}

/// Removes a directory tree or file if present (symlinks are removed, never followed).
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// A scratch directory under the store's `tmp/`, removed with its content when dropped.
pub(crate) struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    pub(crate) fn new(parent: &Path, prefix: &str) -> Result<TmpDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(Error::with_io(format!(
                "creating scratch directory {}",
                path.display()
            )))?;
        Ok(TmpDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Err(err) = remove_path(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove scratch directory");
        }
    }
}

/// Takes an exclusive `flock` on `<root>/lock`, held as long as the returned value lives.
pub(crate) fn lock_root(root: &Path) -> Result<Flock<File>> {
    let path = root.join("lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(Error::with_io(format!("opening {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => Error::Locked(root.display().to_string()),
        other => Error::io(format!("locking {}", path.display()), other.into()),
    })
}
