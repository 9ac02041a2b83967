//! Exit codes: the program's wait status as a shell reports it, and failed launches.

use crate::sys::Errno;

/// The exit code for a wait status: the code the program exited with, or 128 + the number of
/// the signal that killed it. `None` for a stopped or continued child, which has not ended.
pub(crate) fn from_wait_status(status: i32) -> Option<i32> {
    let sig = status & 0x7f;
    match sig {
        0 => Some((status >> 8) & 0xff),
        // Stopped (`sig << 8 | 0x7f`) or continued (`0xffff`).
        0x7f => None,
        _ => Some(128 + sig),
    }
}

/// The exit code when the program could not be executed, as shells do: 127 when it does not
/// exist, 126 when it exists but cannot run (permission, format...).
pub(crate) fn exec_failed(err: Errno) -> i32 {
    match err {
        Errno::ENOENT | Errno::ENOTDIR => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_signals_become_shell_exit_codes() {
        assert_eq!(from_wait_status(0), Some(0));
        assert_eq!(from_wait_status(7 << 8), Some(7));
        assert_eq!(from_wait_status(255 << 8), Some(255));
        assert_eq!(from_wait_status(9), Some(137), "SIGKILL");
        assert_eq!(from_wait_status(15), Some(143), "SIGTERM");
        assert_eq!(
            from_wait_status(0x80 | 11),
            Some(139),
            "SIGSEGV with a core dump"
        );
        assert_eq!(from_wait_status(64), Some(192), "SIGRTMAX");
    }

    #[test]
    fn stopped_and_continued_children_have_not_ended() {
        assert_eq!(
            from_wait_status((20 << 8) | 0x7f),
            None,
            "stopped by SIGTSTP"
        );
        assert_eq!(from_wait_status(0xffff), None, "continued");
    }

    #[test]
    fn launch_failures_follow_the_shell() {
        assert_eq!(exec_failed(Errno::ENOENT), 127);
        assert_eq!(exec_failed(Errno::ENOTDIR), 127);
        assert_eq!(exec_failed(Errno::EACCES), 126);
        assert_eq!(exec_failed(Errno::ENOEXEC), 126);
    }
}
