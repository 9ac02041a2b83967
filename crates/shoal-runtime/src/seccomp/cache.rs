//! A cache of compiled filters. libseccomp takes tens of milliseconds to compile docker's
//! profile, and an engine starts many containers with the same one: the BPF is kept in a
//! root-only directory, keyed by the profile, the libseccomp version and the machine, so only
//! the first container pays.
//!
//! The directory is trusted only if it is a real directory owned by root and writable by no
//! one else: a planted entry would be a filter someone else chose.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::program::Program;

const DIR: &str = "/run/shoal-runc/seccomp-cache";
const FORMAT: &[u8] = b"shoal-seccomp-cache v1\n";

fn trusted_dir() -> Option<PathBuf> {
    let dir = Path::new(DIR);
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let _ = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let meta = fs::symlink_metadata(dir).ok()?;
    let safe = meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0;
    safe.then(|| dir.to_path_buf())
}

/// The cache key of a profile (its canonical JSON) on this machine and libseccomp.
pub(super) fn key(profile_json: &[u8]) -> String {
    let v = libseccomp::ScmpVersion::current()
        .map(|v| (v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(format!("{}.{}.{} {}\n", v.0, v.1, v.2, std::env::consts::ARCH).as_bytes());
    h.update(profile_json);
    hex::encode(h.finalize())
}

pub(super) fn load(key: &str) -> Option<Program> {
    let path = trusted_dir()?.join(key);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return None;
    }
    Program::decode(&fs::read(path).ok()?)
}

pub(super) fn store(key: &str, program: &Program) {
    let Some(dir) = trusted_dir() else { return };
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(&program.encode()));
    if written.is_ok() {
        let _ = fs::rename(&tmp, dir.join(key));
    } else {
        let _ = fs::remove_file(&tmp);
    }
}
