//! Restart policies, decided the way docker's restart manager decides them. Pure functions:
//! the lifecycle code asks, then acts.

use std::time::Duration;

use shoal_api::v1::RestartPolicy;

/// First back-off delay; it doubles on each restart up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A container that ran at least this long starts over at [`FIRST_DELAY`].
pub const RESET_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    No,
    Always,
    UnlessStopped,
    OnFailure { max_retries: u32 },
}

impl Policy {
    pub fn from_proto(p: Option<&RestartPolicy>) -> Policy {
        match p.map(|p| (p.name.as_str(), p.maximum_retry_count)) {
            Some(("always", _)) => Policy::Always,
            Some(("unless-stopped", _)) => Policy::UnlessStopped,
            Some(("on-failure", n)) => Policy::OnFailure {
                max_retries: n.max(0) as u32,
            },
            _ => Policy::No,
        }
    }

    /// After the container exited by itself: restart it? `cancelled` is a stop or kill by the
    /// user since it last started.
    pub fn should_restart(self, exit_code: i32, cancelled: bool, restart_count: u32) -> bool {
        if cancelled {
            return false;
        }
        match self {
            Policy::No => false,
            Policy::Always | Policy::UnlessStopped => true,
            Policy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restart_count < max_retries)
            }
        }
    }

    /// When the daemon starts: `always` comes back even after a manual stop; `unless-stopped`
    /// only if it was not stopped by the user; `on-failure` per its rule.
    pub fn restart_on_daemon_start(
        self,
        exit_code: i32,
        manually_stopped: bool,
        restart_count: u32,
    ) -> bool {
        match self {
            Policy::Always => true,
            Policy::UnlessStopped => !manually_stopped,
            Policy::OnFailure { .. } => {
                !manually_stopped && self.should_restart(exit_code, false, restart_count)
            }
            Policy::No => false,
        }
    }
}

/// The next back-off delay: reset after a long enough run, else double, capped.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= RESET_AFTER => FIRST_DELAY,
        None => FIRST_DELAY,
        Some(d) => (d * 2).min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, max: i32) -> Policy {
        Policy::from_proto(Some(&RestartPolicy {
            name: name.into(),
            maximum_retry_count: max,
        }))
    }

    #[test]
    fn decisions_follow_docker() {
        assert!(!policy("no", 0).should_restart(1, false, 0));
        assert!(policy("always", 0).should_restart(0, false, 9));
        assert!(
            !policy("always", 0).should_restart(0, true, 0),
            "a user stop cancels it"
        );
        assert!(policy("on-failure", 0).should_restart(1, false, 100));
        assert!(!policy("on-failure", 0).should_restart(0, false, 0));
        assert!(policy("on-failure", 3).should_restart(2, false, 2));
        assert!(!policy("on-failure", 3).should_restart(2, false, 3));
        assert!(policy("always", 0).restart_on_daemon_start(0, true, 0));
        assert!(!policy("unless-stopped", 0).restart_on_daemon_start(0, true, 0));
        assert!(policy("unless-stopped", 0).restart_on_daemon_start(0, false, 0));
        assert_eq!(Policy::from_proto(None), Policy::No);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_secs(1);
        let mut d = next_delay(None, short);
        assert_eq!(d, FIRST_DELAY);
        for _ in 0..20 {
            d = next_delay(Some(d), short);
        }
        assert_eq!(d, MAX_DELAY);
        assert_eq!(next_delay(Some(d), Duration::from_secs(10)), FIRST_DELAY);
        assert_eq!(
            next_delay(Some(Duration::from_millis(100)), short),
            Duration::from_millis(200)
        );
    }
}
