//! Container ids and names: random 256-bit hex ids, docker-style `adjective_surname` names.

use std::io::Read;

use crate::error::{Error, Result};

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agile",
    "amazing",
    "bold",
    "brave",
    "calm",
    "clever",
    "cool",
    "crisp",
    "daring",
    "eager",
    "elegant",
    "epic",
    "fervent",
    "fond",
    "gallant",
    "gentle",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "lucid",
    "merry",
    "modest",
    "nimble",
    "noble",
    "optimistic",
    "patient",
    "peaceful",
    "quick",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "steady",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "wonderful",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "albattani",
    "allen",
    "babbage",
    "bardeen",
    "bell",
    "bohr",
    "borg",
    "cerf",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "fermat",
    "feynman",
    "gauss",
    "goldberg",
    "hamilton",
    "hopper",
    "hypatia",
    "johnson",
    "kalam",
    "knuth",
    "kowalevski",
    "lamarr",
    "lamport",
    "liskov",
    "lovelace",
    "mccarthy",
    "meitner",
    "noether",
    "pascal",
    "perlman",
    "pike",
    "poincare",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
    "wilson",
    "wozniak",
    "yalow",
    "yonath",
];

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if ok.is_err() {
        // Fall back to time and pid; ids only need to be unique on this node.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    buf
}

pub fn new_id() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn random_name() -> String {
    let r = random_bytes::<4>();
    let a = ADJECTIVES[usize::from(r[0]) % ADJECTIVES.len()];
    let s = SURNAMES[usize::from(r[1]) % SURNAMES.len()];
    format!("{a}_{s}")
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading '/' is dropped.
pub fn validate_name(name: &str) -> Result<String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = n.len() >= 2
        && n.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(n.to_string())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container name {name:?}: use at least 2 characters from [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
        assert!(random_name().contains('_'));
        assert_eq!(validate_name("/web-1").unwrap(), "web-1");
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a").is_err());
        assert!(validate_name("a b").is_err());
    }
}
