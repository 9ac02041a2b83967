//! `ImageStore::load`: import a `docker save` archive or an OCI image layout.
//!
//! Phases: stage the archive (one streaming pass, every file hashed), read the images it holds,
//! unpack each new layer once into a scratch directory and verify its diff id, rename it into
//! `layers/`, sync the file system, move the blobs into the blob store, and register the images
//! in one atomic index write. A failure anywhere registers nothing; scratch directories go away
//! with the load, and layers it had already moved into place are garbage-collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::archive::{self, ImportImage, StagedManifest, Staging};
use crate::compression::Compression;
use crate::config::{ConfigFile, Image};
use crate::digest::{sha256_digest, sha256_hex};
use crate::error::{Error, Result};
use crate::fsutil::{self, TmpDir};
use crate::index::{ImageRecord, LayerRecord};
use crate::manifest::{Descriptor, Manifest, OCI_CONFIG, OCI_MANIFEST};
use crate::store::ImageStore;
use crate::unpack::{diff_id_of, unpack_layer};

/// Layers are unpacked in parallel, up to this many at once (and no more than the CPUs).
const MAX_PARALLEL_LAYERS: usize = 4;

/// An image a load registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// `sha256:<hex>` of the config.
    pub id: String,
    /// Canonical names the archive gave it (it may have none).
    pub names: Vec<String>,
}

/// One image of the archive, checked and ready to register.
struct Plan {
    import: ImportImage,
    config: ConfigFile,
    manifest: StagedManifest,
}

/// The record of a layer an unpacking job made present; `None` for verify-only jobs.
type LayerOutcome = Option<(String, LayerRecord)>;

/// One (layer, blob) pair to make present and verify.
struct LayerJob {
    diff_id: String,
    blob: String,
    /// The first blob of each diff id unpacks it (if missing); the others are only verified.
    unpack: bool,
}

impl ImageStore {
    /// Imports every image of `archive`: a `docker save` archive (`manifest.json`, also docker
    /// ≥ 25's OCI form) or an OCI image layout (`index.json`, image indexes resolved to this
    /// host's platform or linux/amd64), optionally gzip- or zstd-compressed as a whole. The
    /// archive is read once, as a stream (stdin is fine). Names the archive gives move to the
    /// loaded images.
    ///
    /// # Errors
    ///
    /// A malformed archive, a layer or config whose digest does not match, an unsafe layer entry,
    /// or a file system failure. Nothing is registered then.
    pub fn load(&self, archive: impl Read) -> Result<Vec<LoadedImage>> {
        let result = {
            let _shared = self.gc_shared();
            self.load_shared(archive)
        };
        if let Err(err) = &result {
            tracing::warn!(error = %err, "image load failed");
            if let Err(gc) = self.collect_garbage() {
                tracing::warn!(error = %gc, "cannot remove the layers of a failed load");
            }
        }
        result
    }

    fn load_shared(&self, archive: impl Read) -> Result<Vec<LoadedImage>> {
        let work = TmpDir::new(&self.tmp, "load")?;
        let staging = Staging::read(archive, work.path())?;
        self.import_staged(&staging, work.path())
    }

    /// Registers the images of a staged archive or OCI layout (`work` is the scratch
    /// directory the staging lives in).
    pub(crate) fn import_staged(&self, staging: &Staging, work: &Path) -> Result<Vec<LoadedImage>> {
        let imports = merge_duplicates(archive::images(staging)?);
        let plans = imports
            .into_iter()
            .map(|import| plan(staging, import))
            .collect::<Result<Vec<Plan>>>()?;

        let jobs = layer_jobs(&plans);
        let known = self.index().layers.clone();
        let layers = self.ensure_layers(staging, work, &jobs, &known)?;
        // Layers and blobs reach the disk before the index that references them.
        fsutil::sync_filesystem(&self.layers)?;

        for plan in &plans {
            for digest in
                std::iter::once(&plan.import.config_digest).chain(&plan.import.layer_blobs)
            {
                if let Some(blob) = staging.blob(digest) {
                    self.blobs.adopt(digest, &blob.path)?;
                }
            }
            self.blobs
                .write(&plan.manifest.digest, &plan.manifest.bytes)?;
        }
        self.blobs.sync()?;

        let loaded = self.update(|index| {
            let mut loaded = Vec::new();
            for plan in &plans {
                let id = plan.import.config_digest.clone();
                let size = plan.config.diff_ids().iter().filter_map(|d| layers.get(d)).map(|l| l.size).sum();
                index.images.entry(id.clone()).or_insert_with(|| ImageRecord {
                    image: Image {
                        id: id.clone(),
                        names: Vec::new(),
                        created: plan.config.created.clone(),
                        size,
                        config: plan.config.image_config(),
                        diff_ids: plan.config.diff_ids().to_vec(),
                        architecture: plan.config.architecture.clone(),
                        os: plan.config.os.clone(),
                        manifest_digest: plan.manifest.digest.clone(),
                    },
                    layer_blobs: plan.import.layer_blobs.clone(),
                });
                for name in &plan.import.names {
                    if let Some(previous) = index.tags.insert(name.clone(), id.clone()) {
                        if previous != id {
                            tracing::info!(name = %name, previous = %previous, "name moved to the loaded image");
                        }
                    }
                }
                loaded.push(LoadedImage {
                    id,
                    names: plan.import.names.clone(),
                });
            }
            for (diff_id, record) in &layers {
                index.layers.entry(diff_id.clone()).or_insert_with(|| record.clone());
            }
            Ok(loaded)
        })?;
        for image in &loaded {
            tracing::info!(id = %image.id, names = ?image.names, "image loaded");
        }
        Ok(loaded)
    }

    /// Makes every layer present and verifies every blob, in parallel. Returns a record per
    /// diff id.
    fn ensure_layers(
        &self,
        staging: &Staging,
        work: &Path,
        jobs: &[LayerJob],
        known: &BTreeMap<String, LayerRecord>,
    ) -> Result<HashMap<String, LayerRecord>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_PARALLEL_LAYERS)
            .min(jobs.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Result<LayerOutcome>>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = self.ensure_layer(staging, work, job, known.get(&job.diff_id));
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(result);
                });
            }
        });
        let mut records = HashMap::new();
        for result in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            if let Some((diff_id, record)) = result? {
                records.insert(diff_id, record);
            }
        }
        Ok(records)
    }

    fn ensure_layer(
        &self,
        staging: &Staging,
        work: &Path,
        job: &LayerJob,
        known: Option<&LayerRecord>,
    ) -> Result<LayerOutcome> {
        let blob = staging.blob(&job.blob).ok_or_else(|| {
            Error::InvalidArchive(format!(
                "layer blob {} is missing from the archive",
                job.blob
            ))
        })?;
        let dest = self.layer_path(&job.diff_id)?;
        let hex = sha256_hex(&job.diff_id).unwrap_or_default();
        let open = || {
            File::open(&blob.path)
                .map_err(Error::with_io(format!("opening staged layer {}", job.blob)))
        };
        let mismatch = |actual: String| Error::DigestMismatch {
            what: format!("layer {} (blob {})", job.diff_id, job.blob),
            expected: job.diff_id.clone(),
            actual,
        };

        if job.unpack && !dest.exists() {
            let scratch = work.join(format!("layer-{hex}"));
            fs::create_dir(&scratch)
                .and_then(|()| fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755)))
                .map_err(Error::with_io(format!("creating {}", scratch.display())))?;
            let started = std::time::Instant::now();
            let unpacked = unpack_layer(open()?, &scratch, &job.diff_id)?;
            if unpacked.diff_id != job.diff_id {
                return Err(mismatch(unpacked.diff_id));
            }
            match fs::rename(&scratch, &dest) {
                Ok(()) => {}
                // Another load unpacked the same layer meanwhile; ours is dropped with `work`.
                Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
                Err(err) => {
                    return Err(Error::io(
                        format!("moving layer into {}", dest.display()),
                        err,
                    ))
                }
            }
            tracing::debug!(layer = %job.diff_id, bytes = unpacked.size, elapsed = ?started.elapsed(), "layer unpacked");
            let record = LayerRecord {
                size: unpacked.size,
                tar_size: unpacked.tar_size,
                blob: job.blob.clone(),
            };
            return Ok(Some((job.diff_id.clone(), record)));
        }

        // The layer is present: only check that this blob really is that layer.
        let tar_size = if job.blob == job.diff_id {
            blob.size
        } else if let Some(record) = known.filter(|r| r.blob == job.blob) {
            record.tar_size
        } else {
            let (actual, tar_size) = diff_id_of(open()?, &job.diff_id)?;
            if actual != job.diff_id {
                return Err(mismatch(actual));
            }
            tar_size
        };
        if !job.unpack {
            return Ok(None);
        }
        let record = match known {
            Some(record) => record.clone(),
            None => LayerRecord {
                size: disk_usage(&dest)
                    .map_err(Error::with_io(format!("measuring {}", dest.display())))?,
                tar_size,
                blob: job.blob.clone(),
            },
        };
        Ok(Some((job.diff_id.clone(), record)))
    }
}

/// Reads and checks an image's config and settles its manifest (the archive's, or one written
/// from the layer blobs as given).
fn plan(staging: &Staging, import: ImportImage) -> Result<Plan> {
    let id = import.config_digest.clone();
    let blob = staging.blob(&id).ok_or_else(|| {
        Error::InvalidArchive(format!("image config {id} is missing from the archive"))
    })?;
    if blob.size > crate::blob::MAX_JSON_BLOB {
        return Err(Error::InvalidArchive(format!(
            "image config {id} is too large ({} bytes)",
            blob.size
        )));
    }
    let bytes =
        fs::read(&blob.path).map_err(Error::with_io(format!("reading staged config {id}")))?;
    let config = ConfigFile::parse(&bytes, &format!("image config {id}"))?;
    if config.diff_ids().len() != import.layer_blobs.len() {
        return Err(Error::InvalidArchive(format!(
            "image {id}: the config lists {} layers (rootfs.diff_ids) but the archive gives {}",
            config.diff_ids().len(),
            import.layer_blobs.len()
        )));
    }
    let manifest = match &import.manifest {
        Some(manifest) => manifest.clone(),
        None => synthesize_manifest(staging, &import, blob.size)?,
    };
    Ok(Plan {
        import,
        config,
        manifest,
    })
}

/// An OCI manifest for an archive that carries none (classic `docker save`).
fn synthesize_manifest(
    staging: &Staging,
    import: &ImportImage,
    config_size: u64,
) -> Result<StagedManifest> {
    let mut layers = Vec::new();
    for digest in &import.layer_blobs {
        let blob = staging.blob(digest).ok_or_else(|| {
            Error::InvalidArchive(format!("layer blob {digest} is missing from the archive"))
        })?;
        let compression = Compression::detect(&blob.magic).unwrap_or(Compression::None);
        layers.push(descriptor(
            compression.oci_layer_media_type(),
            digest,
            blob.size,
        ));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: descriptor(OCI_CONFIG, &import.config_digest, config_size),
        layers,
    };
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|err| Error::io("serializing a manifest", io::Error::other(err)))?;
    Ok(StagedManifest {
        digest: sha256_digest(&bytes),
        bytes,
    })
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: Some(media_type.to_owned()),
        digest: digest.to_owned(),
        size,
        platform: None,
        annotations: None,
    }
}

/// One entry per image id, names merged (an OCI index may list one image under several names).
fn merge_duplicates(imports: Vec<ImportImage>) -> Vec<ImportImage> {
    let mut merged: Vec<ImportImage> = Vec::new();
    for import in imports {
        match merged
            .iter_mut()
            .find(|m| m.config_digest == import.config_digest)
        {
            Some(existing) => {
                for name in import.names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
            }
            None => merged.push(import),
        }
    }
    merged
}

/// Distinct (diff id, blob) pairs; the first pair of each diff id is the one that unpacks.
fn layer_jobs(plans: &[Plan]) -> Vec<LayerJob> {
    let mut pairs = HashSet::new();
    let mut unpacking = HashSet::new();
    let mut jobs = Vec::new();
    for plan in plans {
        for (diff_id, blob) in plan.config.diff_ids().iter().zip(&plan.import.layer_blobs) {
            if pairs.insert((diff_id.clone(), blob.clone())) {
                jobs.push(LayerJob {
                    diff_id: diff_id.clone(),
                    blob: blob.clone(),
                    unpack: unpacking.insert(diff_id.clone()),
                });
            }
        }
    }
    jobs
}

/// Bytes of regular file content under `dir` (hard links counted once).
fn disk_usage(dir: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert(meta.ino())) {
                total += meta.len();
            }
        }
    }
    Ok(total)
}
