//! `ImageStore::save`: write a `docker save` archive that docker 20.10's `docker load` accepts:
//! `<diff-id hex>/layer.tar` (uncompressed, verified against the diff id while it is copied),
//! `<config hex>.json`, `manifest.json` and `repositories`.
//!
//! Layers are written from the stored blobs, decompressed on the fly, so the bytes are exactly
//! the layer as loaded and the diff ids (hence the image id) survive a save/load round trip.
//! The output is deterministic: saving the same images twice gives identical archives.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufWriter, Write};

use serde_json::{json, Value};
use tar::{EntryType, Header};

use crate::compression::{decompress, DecompressError};
use crate::digest::{sha256_hex, VerifyingReader};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::reference;
use crate::resolve::{resolve, Via};
use crate::store::ImageStore;

const OUTPUT_BUFFER: usize = 1024 * 1024;

impl ImageStore {
    /// Writes the images `refs` name (names or ids) to `out` as a `docker save` archive. As in
    /// docker, a name puts that name in the archive (a name without tag: every tag of that
    /// repository on the image), an id puts the image in without names.
    ///
    /// # Errors
    ///
    /// A reference names no image, a stored layer no longer matches its digest, or writing fails.
    pub fn save(&self, refs: &[String], out: impl Write) -> Result<()> {
        if refs.is_empty() {
            return Err(Error::InvalidReference(
                "nothing to save: give at least one image name or id".into(),
            ));
        }
        let _shared = self.gc_shared();
        let index = self.index().clone();
        let selected = select(&index, refs)?;

        let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, out);
        let mut tar = tar::Builder::new(&mut out);
        let mut written = HashSet::new();
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (id, names) in &selected {
            let record = index
                .images
                .get(id)
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            let mut layer_paths = Vec::new();
            for diff_id in &record.image.diff_ids {
                let hex = sha256_hex(diff_id)
                    .ok_or_else(|| Error::Corrupt(format!("invalid diff id {diff_id:?}")))?;
                let path = format!("{hex}/layer.tar");
                if written.insert(diff_id.clone()) {
                    self.write_layer(&mut tar, &index, diff_id, hex)?;
                }
                layer_paths.push(path);
            }
            let config_hex =
                sha256_hex(id).ok_or_else(|| Error::Corrupt(format!("invalid image id {id:?}")))?;
            let config_name = format!("{config_hex}.json");
            append(&mut tar, &config_name, &self.blobs.read(id)?)?;

            let familiar: Vec<String> = names.iter().map(|n| reference::familiar_name(n)).collect();
            if let Some(top) = layer_paths.last().and_then(|p| p.split('/').next()) {
                for name in names {
                    if let Ok(parsed) = reference::parse(name) {
                        let tag = parsed
                            .tag
                            .clone()
                            .unwrap_or_else(|| reference::DEFAULT_TAG.to_owned());
                        repositories
                            .entry(parsed.familiar_repository())
                            .or_default()
                            .insert(tag, top.to_owned());
                    }
                }
            }
            manifest.push(json!({
                "Config": config_name,
                "RepoTags": if familiar.is_empty() { Value::Null } else { json!(familiar) },
                "Layers": layer_paths,
            }));
        }
        append(&mut tar, "manifest.json", &to_json(&manifest)?)?;
        if !repositories.is_empty() {
            append(&mut tar, "repositories", &to_json(&repositories)?)?;
        }
        tar.finish()
            .map_err(Error::with_io("writing the image archive"))?;
        drop(tar);
        out.flush()
            .map_err(Error::with_io("writing the image archive"))?;
        Ok(())
    }

    /// `<hex>/` and `<hex>/layer.tar`, the layer decompressed from its blob and verified.
    fn write_layer(
        &self,
        tar: &mut tar::Builder<impl Write>,
        index: &Index,
        diff_id: &str,
        hex: &str,
    ) -> Result<()> {
        let layer = index.layers.get(diff_id).ok_or_else(|| {
            Error::Corrupt(format!(
                "layer {diff_id} has no record in the index; load the image again"
            ))
        })?;
        let mut dir = header(EntryType::Directory, 0o755, 0);
        tar.append_data(&mut dir, format!("{hex}/"), io::empty())
            .map_err(Error::with_io("writing the image archive"))?;
        append(tar, &format!("{hex}/VERSION"), b"1.0")?;

        let (_, reader) = decompress(self.blobs.open(&layer.blob)?).map_err(|err| match err {
            DecompressError::Io(err) => Error::io(format!("reading blob {}", layer.blob), err),
            DecompressError::Unsupported(reason) => {
                Error::Corrupt(format!("blob {}: {reason}", layer.blob))
            }
        })?;
        let reader = VerifyingReader::new(reader, diff_id, layer.tar_size);
        let mut file = header(EntryType::Regular, 0o644, layer.tar_size);
        tar.append_data(&mut file, format!("{hex}/layer.tar"), reader)
            .map_err(|err| match err.kind() {
                io::ErrorKind::InvalidData => Error::Corrupt(format!(
                    "layer {diff_id} (blob {}): {err}; remove the image and load it again",
                    layer.blob
                )),
                _ => Error::io("writing the image archive", err),
            })
    }
}

/// The images to save, in the order first named, each with the names to put in the archive.
fn select(index: &Index, refs: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    let mut selected: Vec<(String, Vec<String>)> = Vec::new();
    for reference in refs {
        for (id, names) in expand(index, reference)? {
            match selected.iter_mut().find(|(existing, _)| *existing == id) {
                Some((_, existing)) => {
                    for name in names {
                        if !existing.contains(&name) {
                            existing.push(name);
                        }
                    }
                }
                None => selected.push((id, names)),
            }
        }
    }
    Ok(selected)
}

/// The images one reference stands for: a repository without tag means every tagged image of
/// that repository (docker's `docker save busybox`), a name that name, an id the image unnamed.
fn expand(index: &Index, reference: &str) -> Result<Vec<(String, Vec<String>)>> {
    if let Ok(parsed) = reference::parse_normalized(reference) {
        if parsed.tag.is_none() && parsed.digest.is_none() && !reference.starts_with("sha256:") {
            let repository = parsed.repository();
            let mut images: Vec<(String, Vec<String>)> = Vec::new();
            for (name, id) in &index.tags {
                if reference::parse(name).is_ok_and(|n| n.repository() == repository) {
                    match images.iter_mut().find(|(existing, _)| existing == id) {
                        Some((_, names)) => names.push(name.clone()),
                        None => images.push((id.clone(), vec![name.clone()])),
                    }
                }
            }
            if !images.is_empty() {
                return Ok(images);
            }
        }
    }
    let resolved = resolve(index, reference)?;
    let names = match resolved.via {
        Via::Name(name) => vec![name],
        Via::Id | Via::Digest => Vec::new(),
    };
    Ok(vec![(resolved.id, names)])
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append(tar: &mut tar::Builder<impl Write>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = header(EntryType::Regular, 0o644, data.len() as u64);
    tar.append_data(&mut header, path, data)
        .map_err(Error::with_io("writing the image archive"))
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|err| Error::io("serializing archive metadata", io::Error::other(err)))
}
