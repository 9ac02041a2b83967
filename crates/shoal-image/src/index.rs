//! `index.json`: the store's catalogue of images, names and unpacked layers.
//!
//! The whole index is small (kilobytes per image), kept in memory and rewritten atomically
//! (temporary file, fsync, rename) after every change, so a crash leaves the old or the new
//! index, never a mix. Names live only in `tags`; image records carry none on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Image;
use crate::error::{Error, Result};
use crate::fsutil;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    pub(crate) version: u32,
    /// Image id → record.
    pub(crate) images: BTreeMap<String, ImageRecord>,
    /// Canonical name → image id.
    pub(crate) tags: BTreeMap<String, String>,
    /// Diff id → unpacked layer.
    pub(crate) layers: BTreeMap<String, LayerRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// The image, with `names` empty.
    pub(crate) image: Image,
    /// Digests of the layer blobs the manifest lists, in order.
    pub(crate) layer_blobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// Bytes of file content once unpacked.
    pub(crate) size: u64,
    /// Length of the uncompressed tar (what `save` writes as `layer.tar`).
    pub(crate) tar_size: u64,
    /// A blob this layer was unpacked from.
    pub(crate) blob: String,
}

impl Index {
    /// Reads `path`; a missing file is an empty index.
    pub(crate) fn load(path: &Path) -> Result<Index> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: VERSION,
                    ..Index::default()
                })
            }
            Err(err) => return Err(Error::io(format!("reading {}", path.display()), err)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|err| {
            Error::Corrupt(format!(
                "{} cannot be parsed ({err}); restore it from a backup or move it away to start with an empty store",
                path.display()
            ))
        })?;
        if index.version != VERSION {
            return Err(Error::Corrupt(format!(
                "{} has version {}, this shoal understands version {VERSION}",
                path.display(),
                index.version
            )));
        }
        Ok(index)
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|err| Error::io("serializing the image index", io::Error::other(err)))?;
        fsutil::write_atomic(path, &bytes)
    }

    /// The image `id` with its names filled in.
    pub(crate) fn image(&self, id: &str) -> Option<Image> {
        let record = self.images.get(id)?;
        let mut image = record.image.clone();
        image.names = self.names_of(id);
        Some(image)
    }

    /// Canonical names pointing at `id`, sorted.
    pub(crate) fn names_of(&self, id: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, target)| *target == id)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Diff ids some image uses.
    pub(crate) fn referenced_layers(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(|r| r.image.diff_ids.iter().cloned())
            .collect()
    }

    /// Blob digests some image uses: configs, manifests, layer blobs.
    pub(crate) fn referenced_blobs(&self) -> BTreeSet<String> {
        let mut blobs = BTreeSet::new();
        for record in self.images.values() {
            blobs.insert(record.image.id.clone());
            blobs.insert(record.image.manifest_digest.clone());
            blobs.extend(record.layer_blobs.iter().cloned());
        }
        for (diff_id, layer) in &self.layers {
            if self
                .images
                .values()
                .any(|r| r.image.diff_ids.contains(diff_id))
            {
                blobs.insert(layer.blob.clone());
            }
        }
        blobs
    }
}
