//! Turning what a user typed into an image id: a name, `name@digest`, a full id with or without
//! `sha256:`, or a unique id prefix (docker's short ids). Pure: works on an index snapshot.

use crate::error::{Error, Result};
use crate::index::Index;
use crate::reference::{self, is_full_hex_id, is_lower_hex};

/// How a reference matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// By this canonical name (a tag).
    Name(String),
    /// By id or id prefix.
    Id,
    /// By `name@sha256:<manifest digest>`.
    Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) id: String,
    pub(crate) via: Via,
}

/// Resolves `reference` the way docker does: a name wins over an id prefix that looks the same.
pub(crate) fn resolve(index: &Index, reference: &str) -> Result<Resolved> {
    if let Some(hex) = reference.strip_prefix("sha256:") {
        if !is_lower_hex(hex) || hex.len() > 64 {
            return Err(Error::InvalidReference(format!(
                "invalid image id {reference:?}: expected sha256: followed by hex digits"
            )));
        }
        return by_id_prefix(index, hex, reference);
    }
    if is_full_hex_id(reference) {
        return by_id_prefix(index, reference, reference);
    }
    let parsed = reference::parse(reference)?;
    if let Some(digest) = &parsed.digest {
        let repository = parsed.repository();
        let found = index.images.values().find(|r| {
            r.image.manifest_digest == *digest
                && index
                    .names_of(&r.image.id)
                    .iter()
                    .any(|name| reference::parse(name).is_ok_and(|n| n.repository() == repository))
        });
        return match found {
            Some(record) => Ok(Resolved {
                id: record.image.id.clone(),
                via: Via::Digest,
            }),
            None => Err(Error::NotFound(parsed.familiar())),
        };
    }
    let name = parsed.canonical();
    if let Some(id) = index.tags.get(&name) {
        return Ok(Resolved {
            id: id.clone(),
            via: Via::Name(name),
        });
    }
    if is_lower_hex(reference) {
        return by_id_prefix(index, reference, &parsed.familiar());
    }
    Err(Error::NotFound(parsed.familiar()))
}

fn by_id_prefix(index: &Index, hex: &str, shown: &str) -> Result<Resolved> {
    let mut matches = index.images.keys().filter(|id| {
        id.strip_prefix("sha256:")
            .is_some_and(|h| h.starts_with(hex))
    });
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(Resolved {
            id: id.clone(),
            via: Via::Id,
        }),
        (None, _) => Err(Error::NotFound(shown.to_owned())),
        (Some(_), Some(_)) => Err(Error::Ambiguous(shown.to_owned())),
    }
}

/// The 12-hex-digit short form of an id (`sha256:` dropped), as docker prints it.
pub(crate) fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Image, ImageConfig};
    use crate::index::ImageRecord;

    fn image(id: &str, manifest: &str) -> ImageRecord {
        ImageRecord {
            image: Image {
                id: id.to_owned(),
                names: Vec::new(),
                created: None,
                size: 0,
                config: ImageConfig::default(),
                diff_ids: Vec::new(),
                architecture: "amd64".into(),
                os: "linux".into(),
                manifest_digest: manifest.to_owned(),
            },
            layer_blobs: Vec::new(),
        }
    }

    fn index() -> (Index, String, String) {
        let a = format!("sha256:abcd{}", "0".repeat(60));
        let b = format!("sha256:abce{}", "1".repeat(60));
        let mut index = Index::default();
        index
            .images
            .insert(a.clone(), image(&a, &format!("sha256:{}", "9".repeat(64))));
        index
            .images
            .insert(b.clone(), image(&b, &format!("sha256:{}", "8".repeat(64))));
        index
            .tags
            .insert("docker.io/library/busybox:latest".into(), a.clone());
        index.tags.insert("localhost:5000/x/y:t".into(), b.clone());
        // A name that is also a prefix of the other image's id: the name wins.
        index
            .tags
            .insert("docker.io/library/abce:latest".into(), a.clone());
        (index, a, b)
    }

    #[test]
    fn resolves_every_reference_form() {
        let (index, a, b) = index();
        let id = |r: &str| resolve(&index, r).unwrap_or_else(|e| panic!("{r}: {e}")).id;
        assert_eq!(id("busybox"), a);
        assert_eq!(id("busybox:latest"), a);
        assert_eq!(id("docker.io/library/busybox:latest"), a);
        assert_eq!(id("localhost:5000/x/y:t"), b);
        assert_eq!(id(&a), a);
        assert_eq!(id(&a[7..]), a);
        assert_eq!(id("abcd"), a);
        assert_eq!(id("sha256:abce"), b);
        assert_eq!(id("abce"), a, "a name beats an id prefix");
        assert_eq!(id(&format!("busybox@sha256:{}", "9".repeat(64))), a);
        assert_eq!(
            resolve(&index, "busybox").unwrap().via,
            Via::Name("docker.io/library/busybox:latest".into())
        );
    }

    #[test]
    fn reports_missing_ambiguous_and_invalid_references() {
        let (index, _, _) = index();
        let err = |r: &str| resolve(&index, r).unwrap_err();
        assert_eq!(
            err("busybox:1.36").to_string(),
            "no such image: busybox:1.36"
        );
        assert_eq!(err("nginx").to_string(), "no such image: nginx:latest");
        assert!(matches!(err("abc"), Error::Ambiguous(_)));
        assert!(matches!(err("sha256:ab"), Error::Ambiguous(_)));
        assert!(matches!(err("BusyBox"), Error::InvalidReference(_)));
        assert!(matches!(err("sha256:xyz"), Error::InvalidReference(_)));
        assert!(matches!(
            err(&format!("nginx@sha256:{}", "9".repeat(64))),
            Error::NotFound(_)
        ));
        assert!(matches!(err(&"f".repeat(64)), Error::NotFound(_)));
    }

    #[test]
    fn short_ids_have_twelve_digits() {
        assert_eq!(
            short_id(&format!("sha256:{}", "a".repeat(64))),
            "aaaaaaaaaaaa"
        );
        assert_eq!(short_id("abc"), "abc");
    }
}
