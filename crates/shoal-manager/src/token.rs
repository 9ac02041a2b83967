//! Join tokens, docker's format: `SWMTKN-1-<CA fingerprint>-<secret>`.
//!
//! The fingerprint (SHA-256 of the root certificate, base 36, 50 characters) lets a joining
//! node pin the cluster's CA before it trusts anything a manager sends; the secret (25
//! characters, base 36, ~128 bits) authorises the role. Worker and manager tokens have their
//! own secrets and rotate independently; managers compare secrets in constant time.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const FINGERPRINT_LEN: usize = 50;
const SECRET_LEN: usize = 25;

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The root CA's SHA-256 fingerprint.
    pub fingerprint: [u8; 32],
    pub secret: String,
}

impl JoinToken {
    /// A new token for the CA with this fingerprint.
    pub fn generate(fingerprint: [u8; 32]) -> Result<JoinToken> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| Error::Other(format!("random secret: {e}")))?;
        let secret = pad(&base36(&raw), SECRET_LEN);
        Ok(JoinToken {
            fingerprint,
            secret,
        })
    }

    /// Does `other` carry this token's secret (for the same CA)? Constant time.
    pub fn authorises(&self, other: &JoinToken) -> bool {
        let a = self.secret.as_bytes();
        let b = other.secret.as_bytes();
        let mut diff = (a.len() ^ b.len()) as u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        diff == 0 && self.fingerprint == other.fingerprint
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            pad(&base36(&self.fingerprint), FINGERPRINT_LEN),
            self.secret
        )
    }
}

/// Never print a secret by accident.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken({PREFIX}-{VERSION}-{}-…)",
            pad(&base36(&self.fingerprint), FINGERPRINT_LEN)
        )
    }
}

impl FromStr for JoinToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<JoinToken> {
        let bad = |why: &str| {
            Error::InvalidToken(format!(
                "invalid join token: {why} (expected SWMTKN-1-<50 characters>-<25 characters>, as printed by `shoal swarm join-token`)"
            ))
        };
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != PREFIX {
            return Err(bad("not a swarm join token"));
        }
        if parts[1] != VERSION {
            return Err(bad(&format!("unsupported version {:?}", parts[1])));
        }
        let (fp, secret) = (parts[2], parts[3]);
        let is_base36 = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        };
        if fp.len() != FINGERPRINT_LEN || !is_base36(fp) {
            return Err(bad("the CA fingerprint part is malformed"));
        }
        if secret.len() != SECRET_LEN || !is_base36(secret) {
            return Err(bad("the secret part is malformed"));
        }
        let fingerprint =
            from_base36(fp).ok_or_else(|| bad("the CA fingerprint part is malformed"))?;
        Ok(JoinToken {
            fingerprint,
            secret: secret.to_string(),
        })
    }
}

fn pad(s: &str, len: usize) -> String {
    format!("{s:0>len$}")
}

/// Big-endian bytes in base 36 (lowercase digits).
fn base36(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // little-endian base-36 digits
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            let v = (*d as u32) * 256 + carry;
            *d = (v % 36) as u8;
            carry = v / 36;
        }
        while carry > 0 {
            digits.push((carry % 36) as u8);
            carry /= 36;
        }
    }
    if digits.is_empty() {
        digits.push(0);
    }
    digits
        .iter()
        .rev()
        .map(|&d| char::from_digit(d as u32, 36).expect("digit < 36"))
        .collect()
}

/// Base 36 back to 32 big-endian bytes; None if it does not fit.
fn from_base36(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for c in s.chars() {
        let mut carry = c.to_digit(36)?;
        for b in out.iter_mut().rev() {
            let v = (*b as u32) * 36 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pins_the_ca() {
        let fp = [0xabu8; 32];
        let t = JoinToken::generate(fp).unwrap();
        let s = t.to_string();
        assert!(s.starts_with("SWMTKN-1-"), "{s}");
        assert_eq!(s.len(), "SWMTKN-1-".len() + 50 + 1 + 25, "{s}");
        let back: JoinToken = s.parse().unwrap();
        assert_eq!(back, t);
        assert!(t.authorises(&back));
        let other = JoinToken::generate(fp).unwrap();
        assert!(!t.authorises(&other), "another secret");
        let foreign = JoinToken {
            fingerprint: [1; 32],
            secret: t.secret.clone(),
        };
        assert!(!t.authorises(&foreign), "another CA");
        assert!(
            !format!("{t:?}").contains(&t.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn base36_is_exact_at_the_edges() {
        for fp in [[0u8; 32], [0xff; 32], {
            let mut a = [0u8; 32];
            a[31] = 1;
            a
        }] {
            let s = pad(&base36(&fp), FINGERPRINT_LEN);
            assert_eq!(s.len(), FINGERPRINT_LEN);
            assert_eq!(from_base36(&s), Some(fp));
        }
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (input, want) in [
            ("hello", "not a swarm join token"),
            ("SWMTKN-2-aaaa-bbbb", "unsupported version"),
            ("SWMTKN-1-abc-0123456789012345678901234", "fingerprint"),
            (
                "SWMTKN-1-00000000000000000000000000000000000000000000000000-short",
                "secret",
            ),
            (
                "SWMTKN-1-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-0123456789012345678901234",
                "fingerprint",
            ),
        ] {
            let e = input.parse::<JoinToken>().unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
