//! Reading image archives: the outer tar is streamed once into a scratch directory ("staging"),
//! every regular file hashed on the way, then interpreted as a `docker save` archive
//! ([`docker`]) or an OCI image layout ([`oci`]).
//!
//! Staging never creates files at the archive's paths: each file is written to a numbered
//! scratch file and remembered by its normalized archive path and sha256 digest. Archive paths
//! must be plain relative names: absolute paths and `..` components are rejected. Symlinks and
//! hard links inside the archive (docker uses them for repeated layers) are resolved by name
//! within the archive, and must stay inside it.

pub(crate) mod docker;
pub(crate) mod oci;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::blob::MAX_JSON_BLOB;
use crate::compression::{decompress, DecompressError, MAGIC_LEN};
use crate::digest::{sha256_hex, HashingWriter};
use crate::error::{Error, Result};

const COPY_BUFFER: usize = 256 * 1024;
const MAX_LINK_HOPS: usize = 40;

/// One image found in an archive, with its blobs staged and digests known.
#[derive(Debug)]
pub(crate) struct ImportImage {
    /// Canonical names to give the image.
    pub(crate) names: Vec<String>,
    pub(crate) config_digest: String,
    /// The archive's own manifest, if it has one for this image.
    pub(crate) manifest: Option<StagedManifest>,
    /// Digests of the staged layer blobs, bottom layer first.
    pub(crate) layer_blobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct StagedManifest {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: String,
}

/// A staged regular file.
#[derive(Debug)]
pub(crate) struct StagedBlob {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// Its first bytes, to detect compression.
    pub(crate) magic: Vec<u8>,
}

#[derive(Debug)]
enum Node {
    /// A regular file, by digest.
    File(String),
    /// A symlink or hard link, by normalized target path.
    Link(String),
}

/// The files of an archive, staged in a scratch directory.
#[derive(Debug)]
pub(crate) struct Staging {
    nodes: HashMap<String, Node>,
    blobs: HashMap<String, StagedBlob>,
}

impl Staging {
    /// Streams `archive` (a tar, possibly gzip- or zstd-compressed) into `dir`.
    pub(crate) fn read(archive: impl Read, dir: &Path) -> Result<Staging> {
        let (_, reader) = decompress(archive).map_err(|err| match err {
            DecompressError::Io(err) => Error::io("reading the image archive", err),
            DecompressError::Unsupported(reason) => Error::InvalidArchive(reason),
        })?;
        let mut staging = Staging {
            nodes: HashMap::new(),
            blobs: HashMap::new(),
        };
        let mut buf = vec![0; COPY_BUFFER];
        let mut archive = tar::Archive::new(BufReader::with_capacity(COPY_BUFFER, reader));
        let entries = archive
            .entries()
            .map_err(|err| Error::InvalidArchive(format!("not a tar archive: {err}")))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|err| {
                Error::InvalidArchive(format!("corrupt or truncated archive: {err}"))
            })?;
            let path = normalize(&entry.path_bytes())?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let file = dir.join(n.to_string());
                    let (digest, blob) = stage_file(&mut entry, &file, &mut buf)?;
                    if blob.size != entry.size() {
                        return Err(Error::InvalidArchive(format!(
                            "archive is truncated inside {path}"
                        )));
                    }
                    if staging.blobs.contains_key(&digest) {
                        let _ = std::fs::remove_file(&file);
                    } else {
                        staging.blobs.insert(digest.clone(), blob);
                    }
                    staging.nodes.insert(path, Node::File(digest));
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let target = resolve_symlink(&path, &target)?;
                    staging.nodes.insert(path, Node::Link(target));
                }
                tar::EntryType::Link => {
                    let target = normalize(&entry.link_name_bytes().unwrap_or_default())?;
                    staging.nodes.insert(path, Node::Link(target));
                }
                _ => {}
            }
        }
        // Read to the end: a writer on the other end of a pipe can finish (`docker save | shoal
        // load`), and a compressed stream's end (and checksum) is checked.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|err| {
            Error::InvalidArchive(format!(
                "corrupt or truncated archive after its last entry: {err}"
            ))
        })?;
        Ok(staging)
    }

    /// An empty staging, for content that does not come from an archive (a registry pull):
    /// files are added with [`Staging::add`].
    pub(crate) fn new() -> Staging {
        Staging {
            nodes: HashMap::new(),
            blobs: HashMap::new(),
        }
    }

    /// Stages what `content` yields at `path` (written to `file`, hashed on the way); its
    /// digest.
    pub(crate) fn add(
        &mut self,
        path: &str,
        content: &mut impl Read,
        file: &Path,
    ) -> Result<String> {
        let mut buf = vec![0; COPY_BUFFER];
        let (digest, blob) = stage_file(content, file, &mut buf)?;
        if self.blobs.contains_key(&digest) {
            let _ = std::fs::remove_file(file);
        } else {
            self.blobs.insert(digest.clone(), blob);
        }
        self.nodes
            .insert(path.to_owned(), Node::File(digest.clone()));
        Ok(digest)
    }

    /// Stages `file`, already written and hashed to `digest` by the caller, at `path`.
    pub(crate) fn add_file(&mut self, path: &str, digest: &str, file: PathBuf) -> Result<()> {
        let context = || format!("staging {}", file.display());
        let mut f = File::open(&file).map_err(Error::with_io(context()))?;
        let size = f.metadata().map_err(Error::with_io(context()))?.len();
        let mut magic = Vec::with_capacity(MAGIC_LEN);
        (&mut f)
            .take(MAGIC_LEN as u64)
            .read_to_end(&mut magic)
            .map_err(Error::with_io(context()))?;
        self.blobs.entry(digest.to_owned()).or_insert(StagedBlob {
            path: file,
            size,
            magic,
        });
        self.nodes
            .insert(path.to_owned(), Node::File(digest.to_owned()));
        Ok(())
    }

    pub(crate) fn contains(&self, path: &str) -> bool {
        self.resolve(path).is_some()
    }

    /// The digest of the regular file at `path`, following links.
    fn resolve(&self, path: &str) -> Option<&str> {
        let mut path = path;
        for _ in 0..MAX_LINK_HOPS {
            match self.nodes.get(path)? {
                Node::File(digest) => return Some(digest),
                Node::Link(target) => path = target,
            }
        }
        None
    }

    pub(crate) fn blob(&self, digest: &str) -> Option<&StagedBlob> {
        self.blobs.get(digest)
    }

    /// The staged file at `path`: its digest, checked against the digest its name promises
    /// (`blobs/sha256/<hex>`) and against `expected` when known. `what` names it in errors.
    pub(crate) fn blob_at(
        &self,
        path: &str,
        what: &str,
        expected: Option<&str>,
    ) -> Result<(String, &StagedBlob)> {
        let digest = self.resolve(path).ok_or_else(|| {
            Error::InvalidArchive(format!("{what} {path} is missing from the archive"))
        })?;
        let by_name = path
            .strip_prefix("blobs/")
            .map(|rest| rest.replacen('/', ":", 1));
        for promised in by_name.as_deref().into_iter().chain(expected) {
            if promised != digest {
                return Err(Error::DigestMismatch {
                    what: format!("{what} {path}"),
                    expected: promised.to_owned(),
                    actual: digest.to_owned(),
                });
            }
        }
        let blob = self.blobs.get(digest).ok_or_else(|| {
            Error::InvalidArchive(format!("{what} {path} is missing from the archive"))
        })?;
        Ok((digest.to_owned(), blob))
    }

    /// Reads a small JSON file of the archive.
    pub(crate) fn read_small(
        &self,
        path: &str,
        what: &str,
        expected: Option<&str>,
    ) -> Result<(String, Vec<u8>)> {
        let (digest, blob) = self.blob_at(path, what, expected)?;
        if blob.size > MAX_JSON_BLOB {
            return Err(Error::InvalidArchive(format!(
                "{what} {path} is too large ({} bytes)",
                blob.size
            )));
        }
        let bytes =
            std::fs::read(&blob.path).map_err(Error::with_io(format!("reading staged {path}")))?;
        Ok((digest, bytes))
    }
}

/// The archive path of the blob with `digest` in an OCI layout.
pub(crate) fn blob_path(digest: &str) -> Result<String> {
    match sha256_hex(digest) {
        Some(hex) => Ok(format!("blobs/sha256/{hex}")),
        None if digest.starts_with("sha256:") => {
            Err(Error::InvalidArchive(format!("invalid digest {digest:?}")))
        }
        None => Err(Error::Unsupported(format!(
            "digest {digest:?}: only sha256 digests are supported"
        ))),
    }
}

/// Writes one entry's content to `file`, hashing it.
fn stage_file(entry: &mut impl Read, file: &Path, buf: &mut [u8]) -> Result<(String, StagedBlob)> {
    let context = || format!("staging archive content in {}", file.display());
    let out = File::options()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(Error::with_io(context()))?;
    let mut out = HashingWriter::new(out);
    let mut magic = Vec::with_capacity(MAGIC_LEN);
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(Error::InvalidArchive(format!(
                    "corrupt or truncated archive: {err}"
                )))
            }
        };
        if magic.len() < MAGIC_LEN {
            let take = (MAGIC_LEN - magic.len()).min(n);
            magic.extend_from_slice(&buf[..take]);
        }
        out.write_all(&buf[..n])
            .map_err(Error::with_io(context()))?;
    }
    let (digest, size, _) = out.finish();
    Ok((
        digest,
        StagedBlob {
            path: file.to_owned(),
            size,
            magic,
        },
    ))
}

/// An archive path as `a/b/c`: `./` and empty components dropped; absolute paths, `..` and
/// non-UTF-8 names rejected.
fn normalize(raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw).map_err(|_| {
        Error::InvalidArchive(format!(
            "archive entry name {:?} is not UTF-8",
            String::from_utf8_lossy(raw)
        ))
    })?;
    if text.starts_with('/') {
        return Err(Error::InvalidArchive(format!(
            "archive entry {text:?} has an absolute path"
        )));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::InvalidArchive(format!(
                    "archive entry {text:?} contains '..'"
                )))
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The archive path a symlink at `path` with `target` points to; it must stay in the archive.
fn resolve_symlink(path: &str, target: &[u8]) -> Result<String> {
    let target = std::str::from_utf8(target)
        .map_err(|_| Error::InvalidArchive(format!("symlink {path} has a non-UTF-8 target")))?;
    if target.starts_with('/') {
        return Err(Error::InvalidArchive(format!(
            "symlink {path} points to the absolute path {target:?}"
        )));
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::InvalidArchive(format!(
                        "symlink {path} points outside the archive ({target:?})"
                    )));
                }
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Reads the images of a staged archive, whichever format it is.
pub(crate) fn images(staging: &Staging) -> Result<Vec<ImportImage>> {
    if staging.contains(docker::MANIFEST) {
        docker::images(staging)
    } else if staging.contains(oci::INDEX) {
        oci::images(staging)
    } else if staging.contains("repositories") {
        Err(Error::Unsupported(
            "archive has no manifest.json: legacy `docker save` archives (docker < 1.10) cannot be loaded".into(),
        ))
    } else {
        Err(Error::InvalidArchive(
            "neither manifest.json (docker save) nor index.json (OCI image layout) found; is this an image archive?".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_must_be_plain_and_relative() {
        assert_eq!(normalize(b"./a/b.json").unwrap(), "a/b.json");
        assert_eq!(normalize(b"manifest.json").unwrap(), "manifest.json");
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"\xff").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_archive() {
        assert_eq!(
            resolve_symlink("b/layer.tar", b"../a/layer.tar").unwrap(),
            "a/layer.tar"
        );
        assert_eq!(resolve_symlink("layer.tar", b"./x").unwrap(), "x");
        assert!(resolve_symlink("b/layer.tar", b"../../x").is_err());
        assert!(resolve_symlink("b/layer.tar", b"/etc/passwd").is_err());
    }
}
