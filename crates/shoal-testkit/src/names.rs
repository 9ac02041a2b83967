//! Unique, short resource names for tests (containers, images, network namespaces).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest name [`unique_name`] returns.
const MAX_LEN: usize = 24;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns `prefix` followed by `-` and a suffix made of the process id, a per-process counter and
/// a few time-derived characters, at most 24 characters in all (the prefix is shortened if needed,
/// never the suffix). Only lowercase letters, digits and `-` are added, so the result is a valid
/// container, image and interface-name fragment whenever the prefix is.
pub fn unique_name(prefix: &str) -> String {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Mix the bits so consecutive calls differ in their last characters too.
    let noise = (nanos ^ count.wrapping_mul(0x9e37_79b9)) % (36 * 36 * 36);
    let mut suffix = base36(u64::from(std::process::id()));
    suffix.push_str(&base36(u64::from(count)));
    suffix.push_str(&format!("{:0>3}", base36(u64::from(noise))));

    let room = MAX_LEN.saturating_sub(suffix.len() + 1);
    let prefix: String = prefix.chars().take(room).collect();
    if prefix.is_empty() {
        suffix
    } else {
        format!("{prefix}-{suffix}")
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_short_unique_and_keep_the_prefix() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("ctr")).collect();
        assert_eq!(names.len(), 1000);
        for name in &names {
            assert!(name.starts_with("ctr-"), "{name}");
            assert!(name.len() <= MAX_LEN, "{name}");
        }
        let long = unique_name("a-very-long-prefix-that-does-not-fit");
        assert!(long.len() <= MAX_LEN, "{long}");
        assert!(long.starts_with("a-very"), "{long}");
    }
}
