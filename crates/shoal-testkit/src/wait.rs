//! The one way tests wait for an eventual condition.

use std::thread;
use std::time::{Duration, Instant};

/// Polls `f` until it returns true, sleeping a little longer each time (5 ms up to 100 ms).
///
/// # Panics
///
/// Panics with `timed out after <deadline>: <what>` if `f` is still false after `deadline`, so
/// `what` should say what was expected ("service web has 3 running tasks").
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out after {deadline:?}: {what}");
        }
        thread::sleep(pause.min(deadline - elapsed));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until("third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 50ms: the impossible")]
    fn panics_with_what_was_false() {
        wait_until("the impossible", Duration::from_millis(50), || false);
    }
}
