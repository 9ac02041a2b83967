//! `docker save` archives: `manifest.json` lists each image's config file, names (`RepoTags`)
//! and layer files (`<id>/layer.tar` before docker 25, `blobs/sha256/<hex>` since). Docker ≥ 25
//! archives are also OCI layouts; their manifest is then taken from `index.json`.

use serde::Deserialize;

use super::{oci, ImportImage, Staging};
use crate::error::{Error, Result};
use crate::reference;

pub(crate) const MANIFEST: &str = "manifest.json";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

pub(crate) fn images(staging: &Staging) -> Result<Vec<ImportImage>> {
    let (_, bytes) = staging.read_small(MANIFEST, "file", None)?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes)
        .map_err(|err| Error::InvalidArchive(format!("manifest.json cannot be parsed: {err}")))?;
    if entries.is_empty() {
        return Err(Error::InvalidArchive(
            "manifest.json lists no images".into(),
        ));
    }
    let mut images = Vec::new();
    for entry in entries {
        let (config_digest, _) = staging.blob_at(&entry.config, "image config", None)?;
        let mut layer_blobs = Vec::new();
        for layer in &entry.layers {
            layer_blobs.push(staging.blob_at(layer, "layer", None)?.0);
        }
        let mut names = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            let name = reference::parse(&tag).map_err(|err| {
                Error::InvalidArchive(format!("manifest.json: bad RepoTags entry {tag:?}: {err}"))
            })?;
            if name.digest.is_some() {
                return Err(Error::InvalidArchive(format!(
                    "manifest.json: RepoTags entry {tag:?} has a digest"
                )));
            }
            names.push(name.canonical());
        }
        let manifest = if staging.contains(oci::INDEX) {
            oci::manifest_for_config(staging, &config_digest, &layer_blobs)
        } else {
            None
        };
        images.push(ImportImage {
            names,
            config_digest,
            manifest,
            layer_blobs,
        });
    }
    Ok(images)
}
