//! OCI image layouts: `oci-layout`, `index.json` and `blobs/sha256/<hex>`. Each top-level
//! descriptor of `index.json` is an image; an image index is resolved to the host platform's
//! manifest (else linux/amd64). Names come from the `io.containerd.image.name` annotation, or
//! from `org.opencontainers.image.ref.name` when it is a full reference rather than a bare tag.

use super::{blob_path, ImportImage, StagedManifest, Staging};
use crate::error::{Error, Result};
use crate::manifest::{
    host_architecture, select_platform, Descriptor, Index, Manifest, ManifestKind,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use crate::reference;

pub(crate) const INDEX: &str = "index.json";
const LAYOUT: &str = "oci-layout";
const MAX_NESTING: usize = 4;

pub(crate) fn images(staging: &Staging) -> Result<Vec<ImportImage>> {
    if !staging.contains(LAYOUT) {
        tracing::debug!("OCI layout without an oci-layout file");
    }
    let index = read_index(staging)?;
    if index.manifests.is_empty() {
        return Err(Error::InvalidArchive("index.json lists no images".into()));
    }
    let mut images = Vec::new();
    for descriptor in &index.manifests {
        let names = names(descriptor)?;
        let (manifest, staged) = resolve(staging, descriptor, 0)?;
        let (config_digest, _) = staging.blob_at(
            &blob_path(&manifest.config.digest)?,
            "image config",
            Some(&manifest.config.digest),
        )?;
        let mut layer_blobs = Vec::new();
        for layer in &manifest.layers {
            let path = blob_path(&layer.digest)?;
            let what = match layer.media_type.as_deref() {
                Some(t) if t.contains("nondistributable") || t.contains("foreign") => {
                    "non-distributable layer (shoal cannot fetch it from its URLs)"
                }
                _ => "layer",
            };
            let (digest, blob) = staging.blob_at(&path, what, Some(&layer.digest))?;
            check_size(&path, layer, blob.size)?;
            layer_blobs.push(digest);
        }
        images.push(ImportImage {
            names,
            config_digest,
            manifest: Some(staged),
            layer_blobs,
        });
    }
    Ok(images)
}

/// The manifest in this layout whose config is `config_digest` and whose layers are
/// `layer_blobs`, if there is one (docker ≥ 25 archives carry both formats).
pub(crate) fn manifest_for_config(
    staging: &Staging,
    config_digest: &str,
    layer_blobs: &[String],
) -> Option<StagedManifest> {
    let index = read_index(staging).ok()?;
    index.manifests.iter().find_map(|descriptor| {
        let (manifest, staged) = resolve(staging, descriptor, 0).ok()?;
        let layers: Vec<&str> = manifest.layers.iter().map(|l| l.digest.as_str()).collect();
        (manifest.config.digest == config_digest && layers == layer_blobs).then_some(staged)
    })
}

fn read_index(staging: &Staging) -> Result<Index> {
    let (_, bytes) = staging.read_small(INDEX, "file", None)?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::InvalidArchive(format!("index.json cannot be parsed: {err}")))
}

/// Follows `descriptor` to an image manifest, choosing a platform in image indexes.
fn resolve(
    staging: &Staging,
    descriptor: &Descriptor,
    depth: usize,
) -> Result<(Manifest, StagedManifest)> {
    if depth > MAX_NESTING {
        return Err(Error::InvalidArchive(format!(
            "image indexes nested more than {MAX_NESTING} deep"
        )));
    }
    let path = blob_path(&descriptor.digest)?;
    let (digest, bytes) = staging.read_small(&path, "manifest", Some(&descriptor.digest))?;
    check_size(&path, descriptor, bytes.len() as u64)?;
    let parsed = ManifestKind::parse(&bytes, descriptor.media_type.as_deref()).map_err(|err| {
        Error::InvalidArchive(format!("manifest {digest} cannot be parsed: {err}"))
    })?;
    match parsed {
        ManifestKind::Manifest(manifest) => Ok((manifest, StagedManifest { bytes, digest })),
        ManifestKind::Index(index) => {
            let chosen = select_platform(&index.manifests).ok_or_else(|| {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect();
                Error::Unsupported(format!(
                    "image index {digest} has no manifest for linux/{} or linux/amd64 (it has: {}); export the image for this platform",
                    host_architecture(),
                    available.join(", ")
                ))
            })?;
            resolve(staging, chosen, depth + 1)
        }
    }
}

fn check_size(path: &str, descriptor: &Descriptor, actual: u64) -> Result<()> {
    if descriptor.size != actual {
        return Err(Error::InvalidArchive(format!(
            "{path} has {actual} bytes but its descriptor says {}",
            descriptor.size
        )));
    }
    Ok(())
}

/// The canonical names an `index.json` descriptor gives its image.
fn names(descriptor: &Descriptor) -> Result<Vec<String>> {
    let full = descriptor.annotation(ANNOTATION_IMAGE_NAME).or_else(|| {
        // A bare tag ("latest", "1.36") names no repository: the image is loaded untagged.
        descriptor
            .annotation(ANNOTATION_REF_NAME)
            .filter(|r| r.contains(['/', ':', '@']))
    });
    let Some(name) = full else {
        return Ok(Vec::new());
    };
    let parsed = reference::parse(name).map_err(|err| {
        Error::InvalidArchive(format!("index.json: bad image name {name:?}: {err}"))
    })?;
    if parsed.tag.is_none() {
        // name@digest: keep the digest pin out of the tag list.
        return Ok(Vec::new());
    }
    Ok(vec![reference::Reference {
        digest: None,
        ..parsed
    }
    .canonical()])
}
