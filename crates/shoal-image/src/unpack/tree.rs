//! Path-safe file system access beneath one layer directory.
//!
//! Every path is walked one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`
//! starting from the layer's root directory fd, so no symlink (planted by an earlier entry or
//! otherwise) is ever followed and no path can leave the layer: `..` never reaches this module
//! (the unpacker rejects it), and a component that is a symlink or not a directory is an error.
//! Files are then created relative to the parent's fd with `O_EXCL | O_NOFOLLOW` (or the `*at`
//! call that creates the node), so nothing is ever written through a symlink either.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Why a directory path could not be opened.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component is a symlink; the string is the path up to and including it.
    Symlink(String),
    /// A component exists but is not a directory.
    NotDirectory(String),
    /// A component does not exist (and was not to be created).
    NotFound(String),
    /// Any other failure of the system call.
    Io(String, io::Error),
}

/// The root directory of a layer being unpacked, with a one-entry cache of the last parent
/// directory opened (entries of a tar usually come directory by directory).
pub(crate) struct Tree {
    root: OwnedFd,
    cached: Option<(Vec<u8>, OwnedFd)>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Tree {
    /// Opens `root`, which must be a directory and not a symlink.
    pub(crate) fn open(root: &Path) -> io::Result<Tree> {
        let root = nix::fcntl::open(root, DIR_FLAGS, Mode::empty())?;
        Ok(Tree { root, cached: None })
    }

    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The directory at `components` below the root, creating missing directories (root-owned,
    /// mode 0755) when `create` is set. Cached: the fd stays valid until the next call or
    /// [`Tree::invalidate`].
    pub(crate) fn dir(
        &mut self,
        components: &[&[u8]],
        create: bool,
    ) -> Result<BorrowedFd<'_>, WalkError> {
        if components.is_empty() {
            return Ok(self.root.as_fd());
        }
        let key = components.join(&b'/');
        let hit = matches!(&self.cached, Some((cached, _)) if *cached == key);
        if !hit {
            // Continue from the cached directory when it is an ancestor of the one we want.
            let start = match &self.cached {
                Some((cached, fd))
                    if key.starts_with(cached) && key.get(cached.len()) == Some(&b'/') =>
                {
                    let depth = cached.split(|b| *b == b'/').count();
                    Some((depth, fd.as_fd()))
                }
                _ => None,
            };
            let fd = match start {
                Some((depth, fd)) => walk(fd, components, depth, create)?,
                None => walk(self.root.as_fd(), components, 0, create)?,
            };
            self.cached = Some((key, fd));
        }
        match &self.cached {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(WalkError::Io(
                String::new(),
                io::Error::other("directory cache is empty"),
            )),
        }
    }

    /// Opens the existing directory at `components` without touching the cache.
    pub(crate) fn open_dir(&self, components: &[&[u8]]) -> Result<OwnedFd, WalkError> {
        if components.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|err| WalkError::Io(String::from("."), err));
        }
        walk(self.root.as_fd(), components, 0, false)
    }

    /// Forgets the cached directory (after a directory was removed or replaced).
    pub(crate) fn invalidate(&mut self) {
        self.cached = None;
    }
}

/// Walks `components[skip..]` starting at `start`, which is the directory `components[..skip]`.
fn walk(
    start: BorrowedFd<'_>,
    components: &[&[u8]],
    skip: usize,
    create: bool,
) -> Result<OwnedFd, WalkError> {
    let mut current: Option<OwnedFd> = None;
    for (i, component) in components.iter().enumerate().skip(skip) {
        let dir = current.as_ref().map_or(start, |fd| fd.as_fd());
        let shown = || String::from_utf8_lossy(&components[..=i].join(&b'/')).into_owned();
        current = Some(open_component(dir, component, create, shown)?);
    }
    match current {
        Some(fd) => Ok(fd),
        None => start
            .try_clone_to_owned()
            .map_err(|err| WalkError::Io(String::new(), err)),
    }
}

fn open_component(
    dir: BorrowedFd<'_>,
    name: &[u8],
    create: bool,
    shown: impl Fn() -> String,
) -> Result<OwnedFd, WalkError> {
    for _attempt in 0..3 {
        match openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {
                match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        let fd = openat(dir, name, DIR_FLAGS, Mode::empty())
                            .map_err(|err| WalkError::Io(shown(), err.into()))?;
                        // mkdir applies the umask; implicit directories are always 0755.
                        fchmod(&fd, Mode::from_bits_truncate(0o755))
                            .map_err(|err| WalkError::Io(shown(), err.into()))?;
                        return Ok(fd);
                    }
                    Err(Errno::EEXIST) => continue,
                    Err(err) => return Err(WalkError::Io(shown(), err.into())),
                }
            }
            Err(Errno::ENOENT) => return Err(WalkError::NotFound(shown())),
            Err(Errno::ELOOP) => return Err(WalkError::Symlink(shown())),
            Err(Errno::ENOTDIR) => {
                return Err(match file_type_at(dir, name) {
                    Some(SFlag::S_IFLNK) => WalkError::Symlink(shown()),
                    _ => WalkError::NotDirectory(shown()),
                })
            }
            Err(err) => return Err(WalkError::Io(shown(), err.into())),
        }
    }
    Err(WalkError::Io(
        shown(),
        io::Error::other("directory keeps disappearing"),
    ))
}

/// The file type of `dir/name` without following a symlink, if it exists.
pub(crate) fn file_type_at(dir: BorrowedFd<'_>, name: &[u8]) -> Option<SFlag> {
    let stat = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(SFlag::from_bits_truncate(
        stat.st_mode & SFlag::S_IFMT.bits(),
    ))
}

/// Removes `dir/name` whatever it is (a directory with all its content), never following
/// symlinks. Returns whether a directory was removed. A missing name is not an error.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(false),
        Err(Errno::EISDIR) => {
            let fd = openat(dir, name, DIR_FLAGS, Mode::empty())?;
            empty_dir(fd)?;
            unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
            Ok(true)
        }
        Err(err) => Err(err.into()),
    }
}

/// Removes everything inside the directory `fd`.
fn empty_dir(fd: OwnedFd) -> io::Result<()> {
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
        .collect();
    for name in names {
        remove_at(dir.as_fd(), name.as_bytes())?;
    }
    Ok(())
}
