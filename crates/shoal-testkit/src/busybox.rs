//! The busybox test image: Debian's `busybox-static` packed as a two-layer `docker save` archive.
//!
//! Archives are cached under `$TMPDIR/shoal-testkit/`, keyed by a hash of the busybox binary, the
//! image name and the config patch, and written through a temporary file and a rename, so parallel
//! test processes share one copy and never read a half-written one. The layer tars are built with
//! fixed timestamps and owners, so the same inputs always give the same image id.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::docker_archive::{self, LayerTar};

/// The name [`busybox_image`] gives its image.
pub const BUSYBOX_IMAGE_NAME: &str = "busybox:latest";

const BUSYBOX: &str = "/bin/busybox";
/// Bump when the image content changes, so stale cached archives are not reused.
const GENERATOR: &str = "shoal-testkit busybox image v1";
const CREATED: &str = "2024-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
shoal:x:1000:1000::/home/shoal:/bin/sh\n";
pub(crate) const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nshoal:x:1000:\nextra:x:2000:shoal\n";
const MARKER: &str = "shoal test image, layer 2\n";

/// Returns the path of a `docker save` archive of `busybox:latest` (Cmd `["sh"]`, two layers),
/// building it on first use.
///
/// # Errors
///
/// Fails if `/bin/busybox` is missing (install Debian's `busybox-static`) or the cache directory
/// cannot be written.
pub fn busybox_image() -> Result<PathBuf> {
    cached_image(&Value::Null, BUSYBOX_IMAGE_NAME)
}

/// Like [`busybox_image`], but the image is named `name` and the keys of `config_patch` (a JSON
/// object such as `{"Entrypoint": ["/bin/echo"], "Cmd": null}`) replace those of the image
/// config's `config` section: `Entrypoint`, `Cmd`, `WorkingDir`, `User`, `Env`, `StopSignal`, …
/// A `null` value is written as `null` (docker's "not set").
///
/// # Errors
///
/// As [`busybox_image`], and if `config_patch` is neither an object nor null.
pub fn busybox_image_with(config_patch: Value, name: &str) -> Result<PathBuf> {
    if !(config_patch.is_object() || config_patch.is_null()) {
        bail!("busybox_image_with: config_patch must be a JSON object, got {config_patch}");
    }
    cached_image(&config_patch, name)
}

fn cached_image(patch: &Value, name: &str) -> Result<PathBuf> {
    static MEMO: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let binary_hash = busybox_hash()?;
    let mut key = Sha256::new();
    for part in [GENERATOR, binary_hash, name, &patch.to_string()] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    let key = hex::encode(key.finalize());

    let memo = MEMO.get_or_init(Default::default);
    let mut memo = memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = memo.get(&key) {
        if path.exists() {
            return Ok(path.clone());
        }
    }
    let dir = std::env::temp_dir().join("shoal-testkit");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("busybox-{}.tar", &key[..16]));
    if !path.exists() {
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        write_image(patch, name, tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("renaming the image archive to {}", path.display()))?;
    }
    memo.insert(key, path.clone());
    Ok(path)
}

/// The sha256 of `/bin/busybox`, computed once per process.
fn busybox_hash() -> Result<&'static str> {
    static HASH: OnceLock<String> = OnceLock::new();
    if let Some(hash) = HASH.get() {
        return Ok(hash);
    }
    let binary = read_busybox()?;
    Ok(HASH.get_or_init(|| hex::encode(Sha256::digest(&binary))))
}

fn read_busybox() -> Result<Vec<u8>> {
    fs::read(BUSYBOX).map_err(|err| {
        anyhow!("cannot read {BUSYBOX} ({err}): the test image needs it, run `apt-get install busybox-static`")
    })
}

/// Writes the `docker save` archive of the busybox image (with `patch` applied) to `out`.
fn write_image(patch: &Value, name: &str, out: impl Write) -> Result<()> {
    let binary = read_busybox()?;
    let applets = applets(Path::new(BUSYBOX))?;
    let layers = [base_layer(&binary, &applets)?, marker_layer()?];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();

    let mut config = json!({ "Env": [PATH_ENV], "Cmd": ["sh"] });
    if let (Some(config), Some(patch)) = (config.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            config.insert(key.clone(), value.clone());
        }
    }
    let image_config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [
            { "created": CREATED, "created_by": "shoal-testkit: busybox-static and applet links" },
            { "created": CREATED, "created_by": "shoal-testkit: /etc/shoal-test-image" },
        ],
    });
    let config_bytes = serde_json::to_vec(&image_config)?;
    docker_archive::write(out, name, &config_bytes, &layers)
}

/// The applet names `busybox --list` prints.
pub(crate) fn applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !output.status.success() {
        bail!("{} --list failed: {}", busybox.display(), output.status);
    }
    let list = String::from_utf8(output.stdout).context("busybox --list printed non-UTF-8")?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "busybox")
        .map(str::to_owned)
        .collect())
}

/// Layer 1: the busybox binary, its applet links, users and groups, and the usual directories.
fn base_layer(binary: &[u8], applets: &[String]) -> Result<LayerTar> {
    let mut tar = docker_archive::LayerBuilder::new();
    for dir in ["bin", "dev", "etc", "home", "proc", "sys"] {
        tar.dir(dir, 0o755, 0, 0)?;
    }
    tar.dir("home/shoal", 0o755, 1000, 1000)?;
    tar.dir("root", 0o700, 0, 0)?;
    tar.dir("tmp", 0o1777, 0, 0)?;
    tar.file("bin/busybox", 0o755, binary)?;
    for applet in applets {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    tar.file("etc/group", 0o644, GROUP.as_bytes())?;
    tar.finish()
}

/// Layer 2: one small file, so every test image has more than one layer.
fn marker_layer() -> Result<LayerTar> {
    let mut tar = docker_archive::LayerBuilder::new();
    tar.dir("etc", 0o755, 0, 0)?;
    tar.file("etc/shoal-test-image", 0o644, MARKER.as_bytes())?;
    tar.finish()
}
