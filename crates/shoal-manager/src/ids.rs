//! Random identifiers.

/// docker-style ids: 25 lowercase base-36 characters (~128 bits).
pub fn random_id() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("kernel randomness");
    let mut n = u128::from_be_bytes(raw);
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
