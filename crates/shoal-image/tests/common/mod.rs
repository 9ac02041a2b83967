//! Fixtures for the image store's integration tests: layer tars built entry by entry (with raw
//! headers, so malicious names survive), `docker save` archives and OCI layouts around them, and
//! a sandboxed store whose surroundings can be checked for stray writes.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shoal_image::ImageStore;
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// One entry of a hand-made layer tar. Names and link targets are written into the header
/// verbatim (no `..` or absolute-path checks), so they can be malicious.
#[derive(Clone)]
pub enum E {
    Dir(&'static str, u32),
    File(&'static str, &'static [u8], u32),
    Owned(&'static str, &'static [u8], u32, u64, u64),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
    /// A file with PAX `SCHILY.xattr.<name>=<value>` records.
    Xattr(&'static str, &'static [u8], &'static str, &'static [u8]),
    /// A file whose name needs a GNU long-name record (> 100 bytes).
    Long(String, &'static [u8]),
}

/// A tar of `entries`, uncompressed.
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            E::Dir(path, mode) => raw(&mut tar, EntryType::Directory, path, None, b"", *mode, 0, 0),
            E::File(path, data, mode) => {
                raw(&mut tar, EntryType::Regular, path, None, data, *mode, 0, 0)
            }
            E::Owned(path, data, mode, uid, gid) => raw(
                &mut tar,
                EntryType::Regular,
                path,
                None,
                data,
                *mode,
                *uid,
                *gid,
            ),
            E::Symlink(path, target) => raw(
                &mut tar,
                EntryType::Symlink,
                path,
                Some(target),
                b"",
                0o777,
                0,
                0,
            ),
            E::Hardlink(path, target) => raw(
                &mut tar,
                EntryType::Link,
                path,
                Some(target),
                b"",
                0o644,
                0,
                0,
            ),
            E::Char(path, major, minor) => {
                let mut header = header(EntryType::Char, path, None, 0, 0o666, 0, 0);
                header.set_device_major(*major).unwrap();
                header.set_device_minor(*minor).unwrap();
                header.set_cksum();
                tar.append(&header, &b""[..]).unwrap();
            }
            E::Fifo(path) => raw(&mut tar, EntryType::Fifo, path, None, b"", 0o600, 0, 0),
            E::Xattr(path, data, name, value) => {
                let key = format!("SCHILY.xattr.{name}");
                tar.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                raw(&mut tar, EntryType::Regular, path, None, data, 0o644, 0, 0);
            }
            E::Long(path, data) => {
                let mut header = Header::new_gnu();
                header.set_entry_type(EntryType::Regular);
                header.set_mode(0o644);
                header.set_mtime(MTIME);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path, *data).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

fn header(
    kind: EntryType,
    path: &str,
    link: Option<&str>,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(MTIME);
    header.set_size(size);
    let old = header.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header
}

#[allow(clippy::too_many_arguments)]
fn raw(
    tar: &mut tar::Builder<Vec<u8>>,
    kind: EntryType,
    path: &str,
    link: Option<&str>,
    data: &[u8],
    mode: u32,
    uid: u64,
    gid: u64,
) {
    let mut header = header(kind, path, link, data.len() as u64, mode, uid, gid);
    header.set_cksum();
    tar.append(&header, data).unwrap();
}

/// A layer blob as it goes into an archive, and the diff id of its content.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub media_type: &'static str,
}

pub fn plain(tar: Vec<u8>) -> Layer {
    Layer {
        diff_id: sha256(&tar),
        blob: tar,
        media_type: "application/vnd.oci.image.layer.v1.tar",
    }
}

pub fn gzip(tar: Vec<u8>) -> Layer {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).unwrap();
    Layer {
        diff_id: sha256(&tar),
        blob: encoder.finish().unwrap(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

/// A zstd-compressed layer (gzip when shoal-image is built without its `zstd` feature).
pub fn zstd(tar: Vec<u8>) -> Layer {
    #[cfg(feature = "zstd")]
    return Layer {
        diff_id: sha256(&tar),
        blob: zstd::stream::encode_all(tar.as_slice(), 3).unwrap(),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    #[cfg(not(feature = "zstd"))]
    gzip(tar)
}

/// An image config for `layers` with `config` as its container config.
pub fn config_json(layers: &[Layer], config: Value) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap()
}

/// A tar archive of `files` (path, content); directories are implied.
pub fn outer_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A classic `docker save` archive of one image.
pub fn docker_archive(tags: &[&str], layers: &[Layer], config: &[u8]) -> Vec<u8> {
    let config_name = format!("{}.json", hex_of(&sha256(config)));
    let mut files = vec![(config_name.clone(), config.to_vec())];
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("layer{i}/layer.tar");
        files.push((path.clone(), layer.blob.clone()));
        paths.push(path);
    }
    let manifest = json!([{ "Config": config_name, "RepoTags": tags, "Layers": paths }]);
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    outer_tar(&files)
}

/// An OCI manifest for `layers` and `config`.
pub fn oci_manifest(layers: &[Layer], config: &[u8]) -> Vec<u8> {
    let layer_descriptors: Vec<Value> = layers
        .iter()
        .map(|l| json!({ "mediaType": l.media_type, "digest": sha256(&l.blob), "size": l.blob.len() }))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len() },
        "layers": layer_descriptors,
    }))
    .unwrap()
}

/// An OCI layout: `blobs` are stored by digest, `index` is written as `index.json`.
pub fn oci_layout(blobs: &[&[u8]], index: Value) -> Vec<u8> {
    let mut files = vec![(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    for blob in blobs {
        files.push((
            format!("blobs/sha256/{}", hex_of(&sha256(blob))),
            blob.to_vec(),
        ));
    }
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    outer_tar(&files)
}

/// A store in a fresh temporary directory (`<sandbox>/store`), with helpers to check that
/// nothing but the store's own files exist in the sandbox.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub store: ImageStore,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();
        Sandbox { dir, store }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Every path under the sandbox, relative to it.
    pub fn tree(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }

    /// No image registered, no layer, no blob, nothing in tmp/, and nothing outside the store.
    pub fn assert_empty(&self) {
        assert!(
            self.store.list().unwrap().is_empty(),
            "an image was registered"
        );
        let allowed: BTreeSet<String> = [
            "store",
            "store/lock",
            "store/blobs",
            "store/blobs/sha256",
            "store/layers",
            "store/tmp",
            "store/index.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let extra: Vec<String> = self.tree().difference(&allowed).cloned().collect();
        assert!(extra.is_empty(), "unexpected files left behind: {extra:?}");
    }

    pub fn load(&self, archive: &[u8]) -> shoal_image::Result<Vec<shoal_image::LoadedImage>> {
        self.store.load(archive)
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.insert(
            path.strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if entry.file_type().unwrap().is_dir() {
            walk(base, &path, out);
        }
    }
}

/// A path under /tmp unique to this test, removed when dropped.
pub struct Outside(pub PathBuf);

impl Outside {
    pub fn new(tag: &str) -> Outside {
        Outside(
            std::env::temp_dir().join(shoal_testkit::unique_name(&format!("shoal-escape-{tag}"))),
        )
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Leaks `s` for use in `E` entries (tests only).
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
