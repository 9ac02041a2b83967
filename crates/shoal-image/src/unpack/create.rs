//! Creating one file system node for a tar entry, relative to its parent directory's fd, never
//! following a symlink: an existing name is removed (without following it) and created again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode, SFlag};

use super::meta::Meta;
use super::tree::{file_type_at, remove_at};

/// Runs `create`; if the name exists, removes it (whatever it is, without following it) and tries
/// once more. Returns whether a directory was removed.
pub(super) fn create_retrying(
    parent: BorrowedFd<'_>,
    name: &[u8],
    mut create: impl FnMut(BorrowedFd<'_>) -> nix::Result<()>,
) -> io::Result<bool> {
    match create(parent) {
        Ok(()) => Ok(false),
        Err(Errno::EEXIST) => {
            let removed = remove_at(parent, name)?;
            create(parent)?;
            Ok(removed)
        }
        Err(err) => Err(err.into()),
    }
}

/// Reading the layer stream failed (corrupt input) or writing the file did (the host).
pub(super) enum FileError {
    Read(io::Error),
    Write(io::Error),
}

impl From<io::Error> for FileError {
    fn from(err: io::Error) -> Self {
        FileError::Write(err)
    }
}

impl From<Errno> for FileError {
    fn from(err: Errno) -> Self {
        FileError::Write(err.into())
    }
}

/// Creates a regular file with the entry's content and metadata. Returns (directory removed,
/// bytes written).
pub(super) fn write_file<R: Read>(
    parent: BorrowedFd<'_>,
    name: &[u8],
    entry: &mut tar::Entry<'_, R>,
    meta: &Meta,
    buf: &mut [u8],
) -> Result<(bool, u64), FileError> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let (fd, removed) = match openat(parent, name, flags, mode) {
        Ok(fd) => (fd, false),
        Err(Errno::EEXIST) => {
            let removed = remove_at(parent, name)?;
            (openat(parent, name, flags, mode)?, removed)
        }
        Err(err) => return Err(err.into()),
    };
    let mut file = File::from(fd);
    let mut written = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(FileError::Read(err)),
        };
        file.write_all(&buf[..n])?;
        written += n as u64;
    }
    meta.apply_to_fd(file.as_fd())?;
    meta.set_times_fd(file.as_fd())?;
    Ok((removed, written))
}

/// Creates a directory, or keeps an existing one (a directory entry repeated, or an implicit
/// parent created earlier), and applies the entry's owner, mode and xattrs. Returns whether a
/// directory was removed (never: an existing directory is kept).
pub(super) fn make_dir(parent: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> io::Result<bool> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) if file_type_at(parent, name) == Some(SFlag::S_IFDIR) => {}
        Err(Errno::EEXIST) => {
            remove_at(parent, name)?;
            mkdirat(parent, name, Mode::from_bits_truncate(0o700))?;
        }
        Err(err) => return Err(err.into()),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty())?;
    meta.apply_to_fd(fd.as_fd())?;
    Ok(false)
}
