//! Persistent network namespaces: a namespace bind-mounted on a file (as `ip netns add`
//! does), so it exists before the container's first process and can be configured, joined
//! by path (`container:<name>`), and torn down when the container stops.
//!
//! setns(2) and unshare(2) change only the calling thread, so every operation here runs on a
//! short-lived thread of its own: the daemon's threads never leave the host's namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Error, IoContext, Result};

/// Create a new network namespace, pinned at `path` (the file is created).
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    File::create(path).ctx(|| format!("create {}", path.display()))?;
    let target = path.to_path_buf();
    let made = on_thread(move || -> Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err(e, "create a network namespace"))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            io_err(
                e,
                &format!("pin the network namespace at {}", target.display()),
            )
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unpin and delete a namespace file; its interfaces go when its last user does. Missing is
/// fine.
pub fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(io_err(e, &format!("unmount {}", path.display()))),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("remove {}", path.display())),
    }
}

/// Is `path` a pinned namespace (and not just a leftover empty file)?
pub fn is_pinned(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.display().to_string().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// Namespace files under `dir` (for cleaning up after a crash).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Run `f` on a fresh thread that has entered the namespace at `path`.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(path).ctx(|| format!("open network namespace {}", path.display()))?;
    on_thread(move || {
        nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err(e, "enter the container's network namespace"))?;
        f()
    })
}

fn on_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(f)
        .ctx(|| "spawn a namespace thread".into())?
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Internal(
                "a network namespace thread panicked".into(),
            ))
        })
}

fn io_err(e: nix::errno::Errno, context: &str) -> Error {
    Error::Io {
        context: context.to_string(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_removes_a_namespace() {
        let dir = std::env::temp_dir().join(format!("shoal-netns-test-{}", std::process::id()));
        let path = dir.join("ns1");
        create(&path).unwrap();
        assert!(is_pinned(&path));
        let host = std::fs::read_link("/proc/self/ns/net").unwrap();
        let inside = run_in(&path, || {
            Ok(std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        })
        .unwrap();
        assert_ne!(host, inside, "the thread ran in the new namespace");
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            host,
            "the caller's thread stayed home"
        );
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
        let _ = std::fs::remove_dir(&dir);
    }
}
