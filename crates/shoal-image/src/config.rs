//! The image as the engine sees it ([`Image`], [`ImageConfig`]) and parsing of the image config
//! JSON (docker's `application/vnd.docker.container.image.v1+json`, OCI's image config).
//!
//! Parsing is lenient where docker is (`null` for absent lists and maps, `Cmd` as a string) and
//! keeps the difference between an absent `Cmd`/`Entrypoint` (`None`) and an empty one
//! (`Some(vec![])`), which ENTRYPOINT/CMD resolution depends on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>`, the digest of the config blob.
    pub id: String,
    /// Canonical names (`docker.io/library/busybox:latest`), sorted.
    pub names: Vec<String>,
    /// The config's `created` timestamp (RFC 3339), if any.
    pub created: Option<String>,
    /// Bytes of file content in all layers, unpacked.
    pub size: u64,
    /// Defaults for containers run from this image.
    pub config: ImageConfig,
    /// Digests of the uncompressed layers, bottom layer first (the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
    pub architecture: String,
    pub os: String,
    /// `sha256:<hex>` of the image manifest: the archive's own for OCI layouts (and docker
    /// archives that carry one), else of a manifest the store wrote from the layer blobs as given.
    pub manifest_digest: String,
}

/// The container defaults of an image config (its `config` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    /// `None`: the image sets no CMD; `Some(vec![])`: it sets an empty one.
    pub cmd: Option<Vec<String>>,
    /// `None`: the image sets no ENTRYPOINT; `Some(vec![])`: it sets an empty one.
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: Option<String>,
    /// `port/proto` keys of `ExposedPorts`, sorted (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Paths of `Volumes`, sorted.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub healthcheck: Option<HealthConfig>,
}

/// docker's `HEALTHCHECK`; durations in nanoseconds, 0 meaning "inherit the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `[]` inherit, `["NONE"]` disabled, `["CMD", args…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// The parts of an image config file the store reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default)]
    config: Option<RawContainerConfig>,
    pub(crate) rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) diff_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainerConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<StringOrList>,
    #[serde(default)]
    entrypoint: Option<StringOrList>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    healthcheck: Option<RawHealth>,
}

/// docker accepts `"Cmd": "echo hi"` as well as a list (its `strslice`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHealth {
    #[serde(default)]
    test: Option<Vec<String>>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    start_period: Option<u64>,
    #[serde(default)]
    start_interval: Option<u64>,
    #[serde(default)]
    retries: Option<u32>,
}

impl ConfigFile {
    /// Parses and checks a config blob; `what` names it in errors.
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<ConfigFile, Error> {
        let config: ConfigFile = serde_json::from_slice(bytes).map_err(|err| {
            Error::InvalidArchive(format!("{what} is not a valid image config: {err}"))
        })?;
        if config.rootfs.kind != "layers" {
            return Err(Error::InvalidArchive(format!(
                "{what}: unsupported rootfs type {:?}, expected \"layers\"",
                config.rootfs.kind
            )));
        }
        for diff_id in config.diff_ids() {
            if crate::digest::sha256_hex(diff_id).is_none() {
                return Err(Error::InvalidArchive(format!(
                    "{what}: layer diff id {diff_id:?} is not a sha256 digest"
                )));
            }
        }
        Ok(config)
    }

    pub(crate) fn diff_ids(&self) -> &[String] {
        self.rootfs.diff_ids.as_deref().unwrap_or_default()
    }

    /// The container defaults, normalized.
    pub(crate) fn image_config(&self) -> ImageConfig {
        let raw = match &self.config {
            Some(raw) => raw,
            None => return ImageConfig::default(),
        };
        ImageConfig {
            env: raw.env.clone().unwrap_or_default(),
            cmd: raw.cmd.as_ref().map(|c| c.clone_vec()),
            entrypoint: raw.entrypoint.as_ref().map(|e| e.clone_vec()),
            working_dir: raw.working_dir.clone().unwrap_or_default(),
            user: raw.user.clone().unwrap_or_default(),
            stop_signal: raw.stop_signal.clone().filter(|s| !s.is_empty()),
            exposed_ports: raw
                .exposed_ports
                .iter()
                .flat_map(|m| m.keys().cloned())
                .collect(),
            volumes: raw.volumes.iter().flat_map(|m| m.keys().cloned()).collect(),
            labels: raw.labels.clone().unwrap_or_default(),
            healthcheck: raw.healthcheck.as_ref().map(|h| HealthConfig {
                test: h.test.clone().unwrap_or_default(),
                interval: h.interval.unwrap_or(0),
                timeout: h.timeout.unwrap_or(0),
                start_period: h.start_period.unwrap_or(0),
                start_interval: h.start_interval.unwrap_or(0),
                retries: h.retries.unwrap_or(0),
            }),
        }
    }
}

impl StringOrList {
    fn clone_vec(&self) -> Vec<String> {
        match self {
            StringOrList::String(s) => vec![s.clone()],
            StringOrList::List(list) => list.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(config: &str) -> ImageConfig {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{config},"rootfs":{{"type":"layers","diff_ids":["{DIFF}"]}}}}"#
        );
        ConfigFile::parse(json.as_bytes(), "test config")
            .unwrap()
            .image_config()
    }

    #[test]
    fn keeps_absent_and_empty_cmd_apart() {
        assert_eq!(parse(r#"{}"#).cmd, None);
        assert_eq!(parse(r#"{"Cmd":null}"#).cmd, None);
        assert_eq!(parse(r#"{"Cmd":[]}"#).cmd, Some(vec![]));
        assert_eq!(parse(r#"{"Entrypoint":[]}"#).entrypoint, Some(vec![]));
        assert_eq!(
            parse(r#"{"Cmd":"echo hi"}"#).cmd,
            Some(vec!["echo hi".to_owned()])
        );
    }

    #[test]
    fn reads_every_field() {
        let config = parse(
            r#"{"Env":["A=1"],"Cmd":["sh"],"Entrypoint":["/init"],"WorkingDir":"/w","User":"1000:1000",
            "StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{},"53/udp":{}},"Volumes":{"/data":{}},
            "Labels":{"a":"b"},"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000,"Retries":3}}"#,
        );
        assert_eq!(config.env, ["A=1"]);
        assert_eq!(config.entrypoint, Some(vec!["/init".to_owned()]));
        assert_eq!(config.working_dir, "/w");
        assert_eq!(config.user, "1000:1000");
        assert_eq!(config.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(config.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(config.volumes, ["/data"]);
        assert_eq!(config.labels.get("a").map(String::as_str), Some("b"));
        let health = config.healthcheck.unwrap();
        assert_eq!(health.test, ["CMD", "true"]);
        assert_eq!(
            (health.interval, health.timeout, health.retries),
            (1_000_000_000, 0, 3)
        );
    }

    #[test]
    fn null_maps_and_missing_config_are_empty() {
        let config = parse(r#"{"Env":null,"Labels":null,"ExposedPorts":null,"Volumes":null}"#);
        assert_eq!(config, ImageConfig::default());
        let json = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{DIFF}"]}}}}"#);
        let file = ConfigFile::parse(json.as_bytes(), "c").unwrap();
        assert_eq!(file.image_config(), ImageConfig::default());
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(ConfigFile::parse(b"{}", "c").is_err());
        assert!(ConfigFile::parse(br#"{"rootfs":{"type":"other"}}"#, "c").is_err());
        assert!(
            ConfigFile::parse(br#"{"rootfs":{"type":"layers","diff_ids":["md5:x"]}}"#, "c")
                .is_err()
        );
        assert!(ConfigFile::parse(b"not json", "c").is_err());
    }
}
