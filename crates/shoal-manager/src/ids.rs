//! Identifiers: random ones, and ones derived from what they stand for.

use sha2::{Digest, Sha256};

/// docker-style ids: 25 lowercase base-36 characters (~128 bits).
pub fn random_id() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("kernel randomness");
    base36(u128::from_be_bytes(raw))
}

/// An id of the same shape derived from `parts`: the same parts, the same id. The control
/// loop names a new task after its service, spec version, slot or node, and the task it
/// follows, so a plan made twice from the same state (a write that timed out but still
/// committed) creates the task once: the second create is refused as existing.
pub fn derived_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&digest[..16]);
    base36(u128::from_be_bytes(raw))
}

fn base36(mut n: u128) -> String {
    let mut s = String::with_capacity(25);
    for _ in 0..25 {
        s.push(char::from_digit((n % 36) as u32, 36).expect("digit"));
        n /= 36;
    }
    s
}

/// A node's id in Raft: random, never 0.
pub fn random_raft_id() -> u64 {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("kernel randomness");
    u64::from_be_bytes(raw).max(1)
}
