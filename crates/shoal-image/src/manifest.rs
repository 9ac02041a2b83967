//! OCI / docker distribution manifests and indexes (the subset the store reads and writes), and
//! choosing one platform's manifest out of an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Annotation holding the full image name (containerd, docker ≥ 25, buildkit).
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's ref name annotation: a full reference, or only a tag.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

/// An image manifest (OCI or docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// An image index / manifest list, and the OCI layout's `index.json`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Index {
    pub(crate) manifests: Vec<Descriptor>,
}

/// What a manifest-like blob turned out to be.
pub(crate) enum ManifestKind {
    Manifest(Manifest),
    Index(Index),
}

impl ManifestKind {
    /// Parses by media type if given, else by shape (`manifests` means an index).
    pub(crate) fn parse(
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<ManifestKind, serde_json::Error> {
        let is_index = match media_type {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            _ => serde_json::from_slice::<serde_json::Value>(bytes)?
                .get("manifests")
                .is_some(),
        };
        if is_index {
            Ok(ManifestKind::Index(serde_json::from_slice(bytes)?))
        } else {
            Ok(ManifestKind::Manifest(serde_json::from_slice(bytes)?))
        }
    }
}

impl Descriptor {
    pub(crate) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// Build attestations (SBOMs, provenance) that docker and buildkit put next to images.
    fn is_attestation(&self) -> bool {
        self.annotation(ANNOTATION_REFERENCE_TYPE) == Some("attestation-manifest")
            || self.platform.as_ref().is_some_and(|p| p.os == "unknown")
    }
}

/// The GOARCH-style name of the architecture this binary runs on.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Picks the manifest to import from an index: the host platform, else linux/amd64, else the
/// only candidate if there is exactly one and it names no platform.
pub(crate) fn select_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let candidates: Vec<&Descriptor> = manifests.iter().filter(|d| !d.is_attestation()).collect();
    let matching = |arch: &str| {
        candidates.iter().copied().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
    };
    matching(host_architecture())
        .or_else(|| matching("amd64"))
        .or_else(|| match candidates.as_slice() {
            [only] if only.platform.is_none() => Some(*only),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(arch: &str, os: &str) -> Descriptor {
        Descriptor {
            media_type: Some(OCI_MANIFEST.into()),
            digest: format!("sha256:{arch}{os}"),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: None,
            }),
            annotations: None,
        }
    }

    #[test]
    fn selects_the_host_platform_and_skips_attestations() {
        let host = host_architecture();
        let list = vec![
            descriptor("unknown", "unknown"),
            descriptor("s390x", "linux"),
            descriptor(host, "linux"),
        ];
        assert_eq!(
            select_platform(&list).map(|d| d.digest.clone()),
            Some(format!("sha256:{host}linux"))
        );
        let mut only = descriptor("s390x", "linux");
        only.platform = None;
        let list = vec![only, descriptor("unknown", "unknown")];
        assert_eq!(
            select_platform(&list).map(|d| d.digest.as_str()),
            Some("sha256:s390xlinux")
        );
        let list = vec![descriptor("s390x", "linux")];
        assert!(select_platform(&list).is_none());
        let list = vec![descriptor("s390x", "linux"), descriptor("riscv64", "linux")];
        assert!(select_platform(&list).is_none());
    }

    #[test]
    fn tells_indexes_from_manifests() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ManifestKind::parse(index, None),
            Ok(ManifestKind::Index(_))
        ));
        let manifest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:a","size":1},"layers":[]}"#;
        assert!(matches!(
            ManifestKind::parse(manifest, None),
            Ok(ManifestKind::Manifest(_))
        ));
        assert!(ManifestKind::parse(b"[]", None).is_err());
    }
}
