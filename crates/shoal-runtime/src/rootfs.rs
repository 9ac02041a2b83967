//! Building the container's root filesystem view inside its new mount namespace: spec mounts
//! in order, /dev, then pivot_root, then masked and read-only paths.
//!
//! Runs in the container's init process, before the user's program.

use std::fs;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroups::{self, CgroupConfig, Version};
use crate::devices;
use crate::error::{Context, Error, Result};
use crate::mountopt::{self, MountOptions};
use crate::paths::secure_join;

/// What the rootfs setup needs to know beyond the spec.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub in_new_userns: bool,
    pub new_cgroup_ns: bool,
    pub new_net_ns: bool,
    pub cgroup: &'a CgroupConfig,
}

/// Everything up to (not including) pivot_root.
pub fn prepare(ctx: &RootfsContext<'_>) -> Result<()> {
    let linux = ctx.spec.linux().as_ref();
    let propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(mountopt::propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // Nothing we mount may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .ctx(|| "set propagation of /".to_string())?;
    make_parent_private(ctx.rootfs)?;
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind rootfs {} onto itself", ctx.rootfs.display()))?;

    let mounts = ctx.spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(ctx, m)?;
    }

    let dev_is_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_is_bound {
        let extra = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
        devices::create_devices(ctx.rootfs, &extra, ctx.in_new_userns)?;
        devices::create_symlinks(ctx.rootfs)?;
        if secure_join(ctx.rootfs, Path::new("/dev/pts/ptmx"))?.exists() {
            devices::setup_ptmx(ctx.rootfs)?;
        }
    }
    Ok(())
}

/// pivot_root needs the parent mount of the new root not to be shared.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo".to_string())?;
    let mut best: Option<PathBuf> = None;
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(mp.replace("\\040", " "));
        if rootfs.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
        {
            best = Some(mp);
        }
    }
    if let Some(mp) = best {
        mount(
            None::<&str>,
            &mp,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .ctx(|| format!("make {} private", mp.display()))?;
    }
    Ok(())
}

fn mount_one(ctx: &RootfsContext<'_>, m: &Mount) -> Result<()> {
    let opts = mountopt::parse(&m.options().clone().unwrap_or_default())?;
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = secure_join(ctx.rootfs, m.destination())?;
    let bind = opts.is_bind() || typ == "bind";

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, &dest, &opts);
    }

    if bind {
        let source = m.source().as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "bind mount to {} has no source",
                m.destination().display()
            ))
        })?;
        let src_meta =
            fs::metadata(source).ctx(|| format!("bind mount source {}", source.display()))?;
        create_mount_point(&dest, src_meta.is_dir())?;
        let target = Pinned::new(ctx.rootfs, &dest)?;
        let rec = if opts.flags.contains(MsFlags::MS_REC) {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        mount(
            Some(source.as_path()),
            &target.path(),
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .ctx(|| {
            format!(
                "bind mount {} to {}",
                source.display(),
                m.destination().display()
            )
        })?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&dest, extra)?;
        }
    } else {
        create_mount_point(&dest, true)?;
        let target = Pinned::new(ctx.rootfs, &dest)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let result = mount(
            Some(source.as_path()),
            &target.path(),
            Some(typ),
            opts.flags,
            data,
        );
        match result {
            Ok(()) => {}
            // Without its own network namespace a user namespace may not mount sysfs; give it a
            // read-only view of the host's, as runc does.
            Err(nix::errno::Errno::EPERM)
                if typ == "sysfs" && ctx.in_new_userns && !ctx.new_net_ns =>
            {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(|| "bind /sys".to_string())?;
                remount_bind(&dest, opts.flags | MsFlags::MS_RDONLY)?;
            }
            Err(e) => {
                return Err(e).ctx(|| format!("mount {typ} on {}", m.destination().display()));
            }
        }
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
            .ctx(|| format!("set propagation of {}", m.destination().display()))?;
    }
    Ok(())
}

/// A mount target opened without following symlinks and checked to be inside the rootfs, so
/// that swapping a path component for a symlink between resolving and mounting (the
/// CVE-2021-30465 class of race) cannot redirect the mount: the mount goes onto
/// `/proc/self/fd/N`.
struct Pinned {
    fd: std::os::fd::OwnedFd,
}

impl Pinned {
    fn new(rootfs: &Path, dest: &Path) -> Result<Pinned> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let fd: std::os::fd::OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dest)
            .ctx(|| format!("open mount point {}", dest.display()))?
            .into();
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let real =
            fs::read_link(&path).ctx(|| format!("resolve mount point {}", dest.display()))?;
        if !real.starts_with(rootfs) {
            return Err(Error::InvalidArgument(format!(
                "mount point {} moved outside the container's root (to {})",
                dest.display(),
                real.display()
            )));
        }
        Ok(Pinned { fd })
    }

    /// The magic link to the pinned mount point.
    fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

fn create_mount_point(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir_all(dest).ctx(|| format!("create mount point {}", dest.display()))
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        }
        if !dest.exists() {
            fs::File::create(dest).ctx(|| format!("create mount point {}", dest.display()))?;
        }
        Ok(())
    }
}

/// Remount a bind mount with `flags`, keeping flags the kernel locked on the source mount
/// (a user namespace may not clear nosuid/nodev/noexec/ro it inherited).
fn remount_bind(dest: &Path, flags: MsFlags) -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, dest, None::<&str>, base | flags, None::<&str>) {
        Err(nix::errno::Errno::EPERM) => {
            let locked = locked_flags(dest);
            mount(
                None::<&str>,
                dest,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .ctx(|| format!("remount {}", dest.display()))
        }
        other => other.ctx(|| format!("remount {}", dest.display())),
    }
}

fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

/// /sys/fs/cgroup inside the container. With a cgroup namespace the hierarchies are mounted
/// fresh (they then show the container's cgroup as their root); without one, the container's
/// own cgroup directories are bind-mounted from the host.
fn mount_cgroup(ctx: &RootfsContext<'_>, dest: &Path, opts: &MountOptions) -> Result<()> {
    create_mount_point(dest, true)?;
    let flags = opts.flags - MsFlags::MS_RDONLY;
    let rel = ctx
        .cgroup
        .path
        .strip_prefix("/")
        .unwrap_or(&ctx.cgroup.path);
    if ctx.cgroup.version == Version::V2 {
        if ctx.new_cgroup_ns {
            mount(
                Some("cgroup2"),
                dest,
                Some("cgroup2"),
                opts.flags,
                None::<&str>,
            )
            .ctx(|| "mount cgroup2".to_string())?;
        } else {
            let host = cgroups::v2::unified_root()?.join(rel);
            mount(
                Some(host.as_path()),
                dest,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind {}", host.display()))?;
            remount_bind(dest, opts.flags)?;
        }
        return Ok(());
    }
    mount(Some("tmpfs"), dest, Some("tmpfs"), flags, Some("mode=755"))
        .ctx(|| "mount tmpfs on /sys/fs/cgroup".to_string())?;
    for hierarchy in cgroups::cgroup_mounts()?
        .iter()
        .filter(|m| !m.is_v2() && !m.controllers.is_empty())
    {
        let name = hierarchy
            .mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| hierarchy.controllers.join(","));
        let target = dest.join(&name);
        fs::create_dir_all(&target).ctx(|| format!("create {}", target.display()))?;
        if ctx.new_cgroup_ns {
            let data = hierarchy.controllers.join(",");
            mount(
                Some("cgroup"),
                &target,
                Some("cgroup"),
                flags,
                Some(data.as_str()),
            )
            .ctx(|| format!("mount cgroup {data}"))?;
        } else {
            let source = hierarchy.mount_point.join(rel);
            if !source.is_dir() {
                return Err(Error::cgroup(
                    &source,
                    "the container's cgroup is missing in this hierarchy",
                ));
            }
            mount(
                Some(source.as_path()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind {}", source.display()))?;
        }
        if opts.is_readonly() {
            remount_bind(&target, flags | MsFlags::MS_RDONLY)?;
        }
    }
    if opts.is_readonly() {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT | flags | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )
        .ctx(|| "remount /sys/fs/cgroup read-only".to_string())?;
    }
    Ok(())
}

/// Make `rootfs` the root: pivot_root, or for an initramfs root (where pivot_root is not
/// possible) or on request, move it over / and chroot.
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<()> {
    if !no_pivot {
        match pivot(rootfs) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno() == Some(libc::EINVAL) && on_initramfs() => {}
            Err(e) => return Err(e),
        }
    }
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .ctx(|| "move rootfs to /".to_string())?;
    nix::unistd::chroot(".").ctx(|| "chroot".to_string())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".to_string())
}

fn on_initramfs() -> bool {
    nix::sys::statfs::statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == nix::sys::statfs::FsType(0x8584_58f6) || t == nix::sys::statfs::TMPFS_MAGIC
    })
}

/// runc's trick: pivot_root(".", ".") stacks the old root under the new one at "/", then a
/// lazy unmount of "." drops it; no temporary directory needed in the image.
fn pivot(rootfs: &Path) -> Result<()> {
    let old = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /".to_string())?;
    let new = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", rootfs.display()))?;
    nix::unistd::fchdir(&new).ctx(|| "fchdir to rootfs".to_string())?;
    nix::unistd::pivot_root(".", ".").ctx(|| format!("pivot_root to {}", rootfs.display()))?;
    nix::unistd::fchdir(&old).ctx(|| "fchdir to old root".to_string())?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make old root rslave".to_string())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root".to_string())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".to_string())?;
    Ok(())
}

/// After pivot_root: masked and read-only paths, read-only root.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(Path::new(p))?;
    }
    if let Some(prop) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(mountopt::propagation)
    {
        mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
            .ctx(|| "set rootfs propagation".to_string())?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_bind(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

fn readonly_path(p: &Path) -> Result<()> {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        other => other.ctx(|| format!("bind {} read-only", p.display()))?,
    }
    remount_bind(p, MsFlags::MS_RDONLY | MsFlags::MS_REC)
}

fn mask_path(p: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("stat masked path {}", p.display())),
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| format!("mask {}", p.display()))
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("mask {}", p.display()))
    }
}
