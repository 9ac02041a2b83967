//! Docker image references: `busybox`, `busybox:1.36`, `localhost:5000/x/y:t`, `name@sha256:…`.
//!
//! The rules are docker's (`distribution/reference`): the first path component is a registry
//! domain if it contains `.` or `:`, is `localhost`, or has upper-case letters; otherwise the
//! domain is `docker.io`, where single-component names get `library/`. Repository names are
//! lower case; the tag defaults to `latest`. Canonical names (`docker.io/library/busybox:latest`)
//! are what the store keeps; familiar names (`busybox:latest`) are what users type and read.

use std::fmt;

use crate::error::Error;

/// The registry a name without a domain refers to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag a name without tag or digest refers to.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host and optional port, e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub path: String,
    /// The tag, if any. [`parse`] sets `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if the reference pins a manifest digest.
    pub digest: Option<String>,
}

/// Parses a reference and applies the default tag `latest` when it has neither tag nor digest.
///
/// # Errors
///
/// [`Error::InvalidReference`] with docker's wording (`invalid reference format: …`).
pub fn parse(s: &str) -> Result<Reference, Error> {
    let mut reference = parse_normalized(s)?;
    if reference.tag.is_none() && reference.digest.is_none() {
        reference.tag = Some(DEFAULT_TAG.to_owned());
    }
    Ok(reference)
}

/// Parses a reference without adding a default tag (`busybox` stays tag-less), as `docker save
/// busybox` needs to mean "every tag of busybox".
///
/// # Errors
///
/// As [`parse`].
pub fn parse_normalized(s: &str) -> Result<Reference, Error> {
    let invalid = |reason: &str| {
        Error::InvalidReference(format!("invalid reference format: {reason}: {s:?}"))
    };
    if s.is_empty() {
        return Err(invalid("repository name must have at least one component"));
    }
    if is_full_hex_id(s) {
        return Err(Error::InvalidReference(format!(
            "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(parse_digest(digest).map_err(invalid)?)),
        None => (s, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(invalid("invalid tag"));
        }
    }
    if name.len() > NAME_MAX {
        return Err(invalid(
            "repository name must not be more than 255 characters",
        ));
    }
    let (domain, path) = split_domain(name);
    if !is_valid_domain(domain) {
        return Err(invalid("invalid registry domain"));
    }
    if !is_valid_path(path) {
        if is_valid_path(&path.to_lowercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        return Err(invalid("invalid repository name"));
    }
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    Ok(Reference {
        domain: domain.to_owned(),
        path,
        tag: tag.map(str::to_owned),
        digest,
    })
}

/// The familiar form of a name (`docker.io/library/busybox:latest` → `busybox:latest`), or the
/// input unchanged if it does not parse.
pub fn familiar_name(name: &str) -> String {
    parse_normalized(name).map_or_else(|_| name.to_owned(), |r| r.familiar())
}

/// Whether `s` is exactly 64 lower-case hex digits (an image id without `sha256:`).
pub fn is_full_hex_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// Whether `s` is non-empty and only lower-case hex digits.
pub(crate) fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Reference {
    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as users write it, e.g. `busybox`, `localhost:5000/x/y`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        }
    }

    /// The full name: `docker.io/library/busybox:latest` (`latest` if neither tag nor digest).
    pub fn canonical(&self) -> String {
        format!("{}{}", self.repository(), self.suffix())
    }

    /// The short name: `busybox:latest`, `localhost:5000/x/y:t`.
    pub fn familiar(&self) -> String {
        format!("{}{}", self.familiar_repository(), self.suffix())
    }

    fn suffix(&self) -> String {
        let mut out = String::new();
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                out.push(':');
                out.push_str(tag);
            }
            (None, None) => {
                out.push(':');
                out.push_str(DEFAULT_TAG);
            }
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    }
}

fn parse_digest(digest: &str) -> Result<String, &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("invalid digest");
    };
    if algorithm != "sha256" {
        return Err("unsupported digest algorithm, only sha256 is supported");
    }
    if !is_full_hex_id(hex) {
        return Err("invalid sha256 digest, expected 64 lower-case hex digits");
    }
    Ok(digest.to_owned())
}

fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `host[:port]`, host a dotted name or a bracketed IPv6 address.
fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((ipv6, after)) = rest.split_once(']') else {
            return false;
        };
        if ipv6.is_empty()
            || !ipv6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, separated by `/`.
fn is_valid_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(is_valid_component)
}

fn is_valid_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = component.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one or two '_', or any number of '-'.
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let ok = match sep {
            b'.' => i - start == 1,
            b'_' => i - start <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).canonical()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(canonical("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canonical("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            canonical("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canonical("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(canonical("user/app"), "docker.io/user/app:latest");
        assert_eq!(canonical("localhost/app"), "localhost/app:latest");
        assert_eq!(canonical("localhost:5000/x/y:t"), "localhost:5000/x/y:t");
        assert_eq!(
            canonical("quay.io/a/b-c__d.e:v1.2-rc_3"),
            "quay.io/a/b-c__d.e:v1.2-rc_3"
        );
        assert_eq!(canonical("[::1]:5000/app"), "[::1]:5000/app:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            canonical(&format!("busybox@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
        assert_eq!(
            canonical(&format!("busybox:1.36@{digest}")),
            format!("docker.io/library/busybox:1.36@{digest}")
        );
    }

    #[test]
    fn familiar_forms_are_short() {
        assert_eq!(
            parse("docker.io/library/busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(
            parse("docker.io/user/app:1").unwrap().familiar(),
            "user/app:1"
        );
        assert_eq!(
            parse("localhost:5000/x/y:t").unwrap().familiar(),
            "localhost:5000/x/y:t"
        );
        assert_eq!(
            parse("docker.io/library/a/b").unwrap().familiar(),
            "library/a/b:latest"
        );
        assert_eq!(
            familiar_name("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(parse_normalized("busybox").unwrap().tag, None);
    }

    #[test]
    fn rejects_invalid_references_with_docker_messages() {
        let message = |s: &str| parse(s).unwrap_err().to_string();
        assert!(message("BusyBox")
            .contains("invalid reference format: repository name must be lowercase"));
        assert!(message("library/BusyBox").contains("repository name must be lowercase"));
        assert!(message("").contains("invalid reference format"));
        assert!(message("busy box").contains("invalid reference format"));
        assert!(message("busybox:").contains("invalid tag"));
        assert!(message("busybox:-x").contains("invalid tag"));
        assert!(message("a//b").contains("invalid reference format"));
        assert!(message("a..b").contains("invalid reference format"));
        assert!(message("a___b").contains("invalid reference format"));
        assert!(message("-a").contains("invalid reference format"));
        assert!(message("busybox@sha256:abc").contains("invalid sha256 digest"));
        assert!(message("busybox@md5:abc").contains("unsupported digest algorithm"));
        assert!(message(&"a".repeat(256)).contains("must not be more than 255 characters"));
        assert!(message(&"a".repeat(64)).contains("cannot specify 64-byte hexadecimal strings"));
        assert!(message("localhost:x/app").contains("invalid registry domain"));
        assert!(message(&format!("a:{}", "t".repeat(129))).contains("invalid tag"));
    }

    #[test]
    fn upper_case_first_component_is_a_domain() {
        // docker treats a first component with capitals as a registry host.
        assert_eq!(canonical("Registry/app"), "Registry/app:latest");
    }
}
