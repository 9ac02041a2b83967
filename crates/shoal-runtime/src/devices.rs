//! /dev inside the container: the standard device nodes, the spec's extra devices, and the
//! usual symlinks. In a user namespace mknod is not allowed, so nodes are bind-mounted from
//! the host instead.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::error::{Context, Error, Result};
use crate::paths::secure_join;

/// (path, type, major, minor) of the devices every container gets.
const DEFAULT_DEVICES: &[(&str, char, u64, u64)] = &[
    ("/dev/null", 'c', 1, 3),
    ("/dev/zero", 'c', 1, 5),
    ("/dev/full", 'c', 1, 7),
    ("/dev/random", 'c', 1, 8),
    ("/dev/urandom", 'c', 1, 9),
    ("/dev/tty", 'c', 5, 0),
];

pub fn create_devices(rootfs: &Path, extra: &[LinuxDevice], bind_from_host: bool) -> Result<()> {
    let old = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for (path, typ, major, minor) in DEFAULT_DEVICES {
            let already = extra.iter().any(|d| d.path() == Path::new(path));
            if !already {
                make_node(
                    rootfs,
                    Path::new(path),
                    *typ,
                    *major,
                    *minor,
                    0o666,
                    0,
                    0,
                    bind_from_host,
                )?;
            }
        }
        for d in extra {
            let typ = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => 'p',
                LinuxDeviceType::A => {
                    return Err(Error::InvalidArgument(format!(
                        "device {}: type \"a\" is only valid in cgroup rules",
                        d.path().display()
                    )))
                }
            };
            make_node(
                rootfs,
                d.path(),
                typ,
                d.major() as u64,
                d.minor() as u64,
                d.file_mode().unwrap_or(0o666),
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
                bind_from_host,
            )?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    rootfs: &Path,
    path: &Path,
    typ: char,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    bind_from_host: bool,
) -> Result<()> {
    if !path.starts_with("/dev") {
        return Err(Error::InvalidArgument(format!(
            "device path {} is not under /dev",
            path.display()
        )));
    }
    let dest = secure_join(rootfs, path)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
    }
    if bind_from_host {
        if !dest.exists() {
            fs::File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
        }
        return mount(
            Some(path),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("bind device {} from the host", path.display()));
    }
    let kind = match typ {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let _ = fs::remove_file(&dest);
    mknod(
        &dest,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        makedev(major, minor),
    )
    .ctx(|| format!("mknod {}", path.display()))?;
    nix::unistd::chown(&dest, Some(uid.into()), Some(gid.into()))
        .ctx(|| format!("chown {}", path.display()))?;
    Ok(())
}

pub fn create_symlinks(rootfs: &Path) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        let path = secure_join(rootfs, Path::new(link))?;
        match symlink(target, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("symlink {}", path.display())),
        }
    }
    Ok(())
}

/// /dev/ptmx must be the devpts instance's ptmx so ptys come from the container's devpts.
pub fn setup_ptmx(rootfs: &Path) -> Result<()> {
    let ptmx = secure_join(rootfs, Path::new("/dev/ptmx"))?;
    match fs::remove_file(&ptmx) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(|| format!("remove {}", ptmx.display())),
    }
    symlink("pts/ptmx", &ptmx).ctx(|| format!("symlink {}", ptmx.display()))
}
