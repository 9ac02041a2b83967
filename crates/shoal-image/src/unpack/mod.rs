//! Unpacking one layer tar into its own directory, safely and in one streaming pass.
//!
//! The layer blob is decompressed (gzip, zstd or none, by magic bytes), hashed (that is the
//! layer's diff id, checked by the caller against the image config) and unpacked entry by entry
//! over `tar::Archive::entries()`; `Entry::unpack_in` is deliberately not used. All file system
//! access goes through [`tree::Tree`], which never follows a symlink and never leaves the layer.
//!
//! Path rules: empty and `.` components are dropped and a leading `/` is stripped (absolute
//! entry names are unpacked relative to the layer, as docker does); `..` anywhere is rejected;
//! a parent path through a symlink or a non-directory is rejected; a hard link must name an
//! existing non-directory of this layer by a path that obeys the same rules. Symlink entries may
//! point anywhere, since they are only resolved inside the container.
//!
//! Whiteouts become overlayfs whiteouts: `.wh.<name>` is a 0/0 character device `<name>`,
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

mod create;
mod meta;
mod tree;

use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat};
use tar::EntryType;

use crate::compression::{decompress, Compression, DecompressError};
use crate::digest::HashingReader;
use crate::error::Error;
use create::{create_retrying, make_dir, write_file, FileError};
use meta::Meta;
use tree::{file_type_at, Tree, WalkError};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): skipped.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const COPY_BUFFER: usize = 256 * 1024;

/// What unpacking a layer found.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub(crate) diff_id: String,
    /// Length of the uncompressed tar stream.
    pub(crate) tar_size: u64,
    /// Bytes of regular file content written.
    pub(crate) size: u64,
}

/// Unpacks the layer `blob` (compressed or not) into the existing, empty directory `dest`.
/// `layer` names the layer in errors.
pub(crate) fn unpack_layer(blob: impl Read, dest: &Path, layer: &str) -> Result<Unpacked, Error> {
    let invalid = |reason: String| Error::InvalidLayer {
        layer: layer.to_owned(),
        reason,
    };
    let (_, reader) = open_stream(blob, layer)?;
    let mut hashing = HashingReader::new(reader);
    let tree = Tree::open(dest).map_err(Error::with_io(format!("opening {}", dest.display())))?;
    let mut unpacker = Unpacker {
        tree,
        layer,
        dir_times: Vec::new(),
        size: 0,
        buf: vec![0; COPY_BUFFER],
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(COPY_BUFFER, &mut hashing));
    let entries = archive
        .entries()
        .map_err(|err| invalid(format!("reading the tar stream: {err}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|err| invalid(format!("corrupt or truncated tar stream: {err}")))?;
        unpacker.entry(&mut entry)?;
    }
    // The digest covers the whole stream, including the end-of-archive blocks and padding.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|err| {
        invalid(format!(
            "corrupt or truncated stream after the tar entries: {err}"
        ))
    })?;
    unpacker.set_dir_times()?;
    let (diff_id, tar_size) = hashing.finish();
    Ok(Unpacked {
        diff_id,
        tar_size,
        size: unpacker.size,
    })
}

/// Computes `(diff id, uncompressed length)` of a layer blob without unpacking it.
pub(crate) fn diff_id_of(blob: impl Read, layer: &str) -> Result<(String, u64), Error> {
    let (_, reader) = open_stream(blob, layer)?;
    HashingReader::new(reader)
        .drain_and_finish()
        .map_err(|err| Error::InvalidLayer {
            layer: layer.to_owned(),
            reason: format!("corrupt or truncated stream: {err}"),
        })
}

fn open_stream<'a>(
    blob: impl Read + 'a,
    layer: &str,
) -> Result<(Compression, Box<dyn Read + 'a>), Error> {
    decompress(blob).map_err(|err| match err {
        DecompressError::Io(source) => Error::io(format!("reading layer {layer}"), source),
        DecompressError::Unsupported(reason) => Error::InvalidLayer {
            layer: layer.to_owned(),
            reason,
        },
    })
}

struct Unpacker<'a> {
    tree: Tree,
    layer: &'a str,
    /// Directory modification times, set once all entries are written.
    dir_times: Vec<(Vec<u8>, Meta)>,
    size: u64,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let layer = self.layer;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader || kind.as_byte() == b'V' {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let components =
            split_path(&raw_path).map_err(|reason| unsafe_path(layer, &shown, reason))?;
        let meta = Meta::from_entry(entry).map_err(|reason| invalid(layer, &shown, &reason))?;

        let Some((&name, parents)) = components.split_last() else {
            return self.root_entry(kind, meta, &shown);
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parents, name, &meta, &shown);
        }
        let removed_dir = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let parent = dir(&mut self.tree, parents, layer, &shown)?;
                let (removed, written) = write_file(parent, name, entry, &meta, &mut self.buf)
                    .map_err(|e| match e {
                        FileError::Read(err) => invalid(
                            layer,
                            &shown,
                            &format!("corrupt or truncated content: {err}"),
                        ),
                        FileError::Write(err) => io_err(layer, &shown, err),
                    })?;
                if kind != EntryType::GNUSparse && written != entry.size() {
                    return Err(invalid(layer, &shown, "truncated file content"));
                }
                self.size += written;
                removed
            }
            EntryType::Directory => {
                let parent = dir(&mut self.tree, parents, layer, &shown)?;
                let removed =
                    make_dir(parent, name, &meta).map_err(|e| io_err(layer, &shown, e))?;
                self.dir_times.push((components.join(&b'/'), meta));
                removed
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| invalid(layer, &shown, "symlink without a target"))?
                    .into_owned();
                let parent = dir(&mut self.tree, parents, layer, &shown)?;
                create_retrying(parent, name, |p| symlinkat(target.as_slice(), p, name))
                    .and_then(|removed| {
                        meta.apply_at(parent, name, true)?;
                        meta.set_times_at(parent, name)?;
                        Ok(removed)
                    })
                    .map_err(|e| io_err(layer, &shown, e))?
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid(layer, &shown, "hard link without a target"))?
                    .into_owned();
                self.hard_link(parents, name, &target, &shown)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let kind = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let parent = dir(&mut self.tree, parents, layer, &shown)?;
                let dev = libc::makedev(major, minor);
                create_retrying(parent, name, |p| {
                    mknodat(p, name, kind, Mode::from_bits_truncate(0o600), dev)
                })
                .and_then(|removed| {
                    meta.apply_at(parent, name, false)?;
                    meta.set_times_at(parent, name)?;
                    Ok(removed)
                })
                .map_err(|e| io_err(layer, &shown, e))?
            }
            other => {
                return Err(invalid(
                    layer,
                    &shown,
                    &format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        };
        if removed_dir {
            self.tree.invalidate();
        }
        Ok(())
    }

    /// `./` itself: only a directory entry makes sense; it sets the layer root's metadata.
    fn root_entry(&mut self, kind: EntryType, meta: Meta, shown: &str) -> Result<(), Error> {
        let layer = self.layer;
        if kind != EntryType::Directory {
            return Err(unsafe_path(layer, shown, "entry has no file name"));
        }
        meta.apply_to_fd(self.tree.root())
            .map_err(|e| io_err(layer, shown, e))?;
        self.dir_times.push((Vec::new(), meta));
        Ok(())
    }

    fn whiteout(
        &mut self,
        parents: &[&[u8]],
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), Error> {
        let layer = self.layer;
        if name == OPAQUE_WHITEOUT {
            let parent = dir(&mut self.tree, parents, layer, shown)?;
            return meta::set_opaque(parent).map_err(|e| io_err(layer, shown, e));
        }
        if name.starts_with(AUFS_META_PREFIX) {
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(unsafe_path(layer, shown, "whiteout of an invalid name"));
        }
        let parent = dir(&mut self.tree, parents, layer, shown)?;
        let removed = create_retrying(parent, hidden, |p| {
            mknodat(
                p,
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                libc::makedev(0, 0),
            )
        })
        .and_then(|removed| {
            nix::unistd::fchownat(
                parent,
                hidden,
                Some(nix::unistd::Uid::from_raw(meta.uid)),
                Some(nix::unistd::Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            Ok(removed)
        })
        .map_err(|e| io_err(layer, shown, e))?;
        if removed {
            self.tree.invalidate();
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        parents: &[&[u8]],
        name: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<bool, Error> {
        let layer = self.layer;
        let target_shown = String::from_utf8_lossy(target).into_owned();
        let target_components = split_path(target).map_err(|reason| {
            unsafe_path(
                layer,
                shown,
                &format!("hard link target {target_shown:?}: {reason}"),
            )
        })?;
        let Some((&target_name, target_parents)) = target_components.split_last() else {
            return Err(unsafe_path(layer, shown, "hard link to the layer root"));
        };
        let target_dir = self
            .tree
            .open_dir(target_parents)
            .map_err(|err| match err {
                WalkError::NotFound(_) => invalid(
                    layer,
                    shown,
                    &format!("hard link target {target_shown:?} is not in this layer"),
                ),
                other => match walk_error(layer, shown, other) {
                    Error::UnsafePath {
                        layer,
                        path,
                        reason,
                    } => Error::UnsafePath {
                        layer,
                        path,
                        reason: format!("hard link target {target_shown:?}: {reason}"),
                    },
                    err => err,
                },
            })?;
        if file_type_at(target_dir.as_fd(), target_name) == Some(SFlag::S_IFDIR) {
            return Err(unsafe_path(layer, shown, "hard link to a directory"));
        }
        let parent = dir(&mut self.tree, parents, layer, shown)?;
        let result = create_retrying(parent, name, |p| {
            linkat(target_dir.as_fd(), target_name, p, name, AtFlags::empty())
        });
        match result {
            Ok(removed) => Ok(removed),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Err(invalid(
                layer,
                shown,
                &format!("hard link target {target_shown:?} is not in this layer"),
            )),
            Err(err) => Err(io_err(layer, shown, err)),
        }
    }

    /// Directory mtimes last, since creating their children changed them.
    fn set_dir_times(&mut self) -> Result<(), Error> {
        let layer = self.layer;
        for (path, meta) in std::mem::take(&mut self.dir_times) {
            let components = split_path(&path).unwrap_or_default();
            let shown = String::from_utf8_lossy(&path).into_owned();
            match self.tree.open_dir(&components) {
                Ok(fd) => meta
                    .set_times_fd(fd.as_fd())
                    .map_err(|e| io_err(layer, &shown, e))?,
                // Replaced by a later entry of the same layer.
                Err(
                    WalkError::NotFound(_) | WalkError::NotDirectory(_) | WalkError::Symlink(_),
                ) => {}
                Err(err) => return Err(walk_error(layer, &shown, err)),
            }
        }
        Ok(())
    }
}

fn unsafe_path(layer: &str, path: &str, reason: &str) -> Error {
    Error::UnsafePath {
        layer: layer.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn invalid(layer: &str, path: &str, reason: &str) -> Error {
    Error::InvalidLayer {
        layer: layer.to_owned(),
        reason: format!("entry {path:?}: {reason}"),
    }
}

fn io_err(layer: &str, path: &str, err: io::Error) -> Error {
    Error::io(format!("layer {layer}: unpacking entry {path:?}"), err)
}

/// Opens (creating as needed) the parent directory of an entry.
fn dir<'t>(
    tree: &'t mut Tree,
    parents: &[&[u8]],
    layer: &str,
    shown: &str,
) -> Result<BorrowedFd<'t>, Error> {
    tree.dir(parents, true)
        .map_err(|err| walk_error(layer, shown, err))
}

fn walk_error(layer: &str, shown: &str, err: WalkError) -> Error {
    let unsafe_path = |reason: String| Error::UnsafePath {
        layer: layer.to_owned(),
        path: shown.to_owned(),
        reason,
    };
    match err {
        WalkError::Symlink(at) => unsafe_path(format!("its path goes through the symlink {at:?}")),
        WalkError::NotDirectory(at) => unsafe_path(format!(
            "its path goes through {at:?}, which is not a directory"
        )),
        WalkError::NotFound(at) => unsafe_path(format!("{at:?} does not exist")),
        WalkError::Io(at, source) => Error::io(
            format!("layer {layer}: opening directory {at:?} for entry {shown:?}"),
            source,
        ),
    }
}

/// Splits an entry path into its components: drops empty and `.` components (so a leading `/`
/// is stripped), rejects `..` and NUL bytes.
fn split_path(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut components = Vec::new();
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("its path contains '..'"),
            c if c.contains(&0) => return Err("its path contains a NUL byte"),
            c => components.push(c),
        }
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn splits_paths_safely() {
        assert_eq!(split_path(b"a/b/c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(split_path(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert_eq!(
            split_path(b"/abs/path").unwrap(),
            vec![&b"abs"[..], b"path"]
        );
        assert!(split_path(b"./").unwrap().is_empty());
        assert!(split_path(b"../x").is_err());
        assert!(split_path(b"a/../../x").is_err());
        assert!(split_path(b"a/..").is_err());
        assert!(split_path(b"a\0b").is_err());
        assert_eq!(split_path(b"..a/b..").unwrap(), vec![&b"..a"[..], b"b.."]);
    }
}
