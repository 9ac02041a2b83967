//! A minimal `docker save` archive writer: layer tars built in memory, then `manifest.json`,
//! `repositories`, the config and one `<diff-id>/layer.tar` per layer, as docker 20.10 writes them.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

/// The fixed modification time of every entry, so archives are reproducible.
const MTIME: u64 = 1_700_000_000;

/// An uncompressed layer tar and its digest (`sha256:<hex>`, the diff id).
pub(crate) struct LayerTar {
    pub(crate) bytes: Vec<u8>,
    pub(crate) diff_id: String,
}

/// Builds one layer tar in memory with fixed owners and timestamps.
pub(crate) struct LayerBuilder {
    tar: Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub(crate) fn new() -> Self {
        LayerBuilder {
            tar: Builder::new(Vec::new()),
        }
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<()> {
        let mut header = header(EntryType::Directory, mode, uid, gid, 0);
        self.tar
            .append_data(&mut header, format!("{path}/"), std::io::empty())
            .with_context(|| format!("adding directory {path} to a layer"))
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut header = header(EntryType::Regular, mode, 0, 0, data.len() as u64);
        self.tar
            .append_data(&mut header, path, data)
            .with_context(|| format!("adding file {path} to a layer"))
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut header = header(EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar
            .append_link(&mut header, path, target)
            .with_context(|| format!("adding symlink {path} to a layer"))
    }

    pub(crate) fn finish(self) -> Result<LayerTar> {
        let bytes = self.tar.into_inner().context("finishing a layer tar")?;
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Ok(LayerTar { bytes, diff_id })
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_size(size);
    header.set_mtime(MTIME);
    header
}

/// Writes a `docker save` archive of one image named `name` (`repo[:tag]`, familiar form).
pub(crate) fn write(out: impl Write, name: &str, config: &[u8], layers: &[LayerTar]) -> Result<()> {
    let (repo, tag) = split_tag(name);
    let mut tar = Builder::new(out);
    let mut layer_paths = Vec::new();
    for layer in layers {
        let dir = layer.diff_id.trim_start_matches("sha256:");
        append(
            &mut tar,
            &format!("{dir}/"),
            EntryType::Directory,
            0o755,
            &[],
        )?;
        append(
            &mut tar,
            &format!("{dir}/VERSION"),
            EntryType::Regular,
            0o644,
            b"1.0",
        )?;
        let path = format!("{dir}/layer.tar");
        append(&mut tar, &path, EntryType::Regular, 0o644, &layer.bytes)?;
        layer_paths.push(path);
    }
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config)));
    append(&mut tar, &config_name, EntryType::Regular, 0o644, config)?;

    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [format!("{repo}:{tag}")],
        "Layers": layer_paths,
    }]);
    append(
        &mut tar,
        "manifest.json",
        EntryType::Regular,
        0o644,
        &serde_json::to_vec(&manifest)?,
    )?;
    if let Some(top) = layers.last() {
        let repositories = json!({ repo: { tag: top.diff_id.trim_start_matches("sha256:") } });
        let repositories = serde_json::to_vec(&repositories)?;
        append(
            &mut tar,
            "repositories",
            EntryType::Regular,
            0o644,
            &repositories,
        )?;
    }
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .context("writing the image archive")
}

fn append(
    tar: &mut Builder<impl Write>,
    path: &str,
    kind: EntryType,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let mut header = header(kind, mode, 0, 0, data.len() as u64);
    tar.append_data(&mut header, path, data)
        .with_context(|| format!("writing {path} to the image archive"))
}

/// Splits `repo[:tag]` (a tag is a `:` after the last `/`), defaulting the tag to `latest`.
fn split_tag(name: &str) -> (&str, &str) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_default_to_latest() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_tag("localhost:5000/a/b"),
            ("localhost:5000/a/b", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/a/b:t"),
            ("localhost:5000/a/b", "t")
        );
    }
}
