//! Signal numbers and sets, and which signals the init waits for (and so forwards).

// Numbers shared by x86_64 and aarch64 (the kernel's generic numbering).
pub(crate) const SIGILL: i32 = 4;
pub(crate) const SIGTRAP: i32 = 5;
pub(crate) const SIGBUS: i32 = 7;
pub(crate) const SIGFPE: i32 = 8;
pub(crate) const SIGKILL: i32 = 9;
pub(crate) const SIGSEGV: i32 = 11;
pub(crate) const SIGCHLD: i32 = 17;
pub(crate) const SIGSTOP: i32 = 19;
pub(crate) const SIGSYS: i32 = 31;
/// The highest signal number.
pub(crate) const NSIG: i32 = 64;

/// The kernel's signal set: bit `n - 1` stands for signal `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct SigSet(u64);

impl SigSet {
    pub(crate) const EMPTY: SigSet = SigSet(0);
    const ALL: SigSet = SigSet(u64::MAX);

    /// This set with `sig` added.
    #[cfg(test)]
    pub(crate) const fn with(self, sig: i32) -> SigSet {
        SigSet(self.0 | Self::bit(sig))
    }

    /// This set with `sig` removed.
    pub(crate) const fn without(self, sig: i32) -> SigSet {
        SigSet(self.0 & !Self::bit(sig))
    }

    #[cfg(test)]
    pub(crate) const fn contains(self, sig: i32) -> bool {
        self.0 & Self::bit(sig) != 0
    }

    const fn bit(sig: i32) -> u64 {
        if sig >= 1 && sig <= NSIG {
            1 << (sig - 1)
        } else {
            0
        }
    }
}

/// The signals the init blocks and waits for: `SIGCHLD` (reaping) and every signal it forwards,
/// which is all of them except `SIGKILL` and `SIGSTOP` (they cannot be blocked) and the fault
/// signals a bug in the init itself would raise, which keep their default action so such a
/// bug kills the init instead of hanging it (tini leaves the same ones out).
pub(crate) const fn waited() -> SigSet {
    SigSet::ALL
        .without(SIGKILL)
        .without(SIGSTOP)
        .without(SIGILL)
        .without(SIGTRAP)
        .without(SIGBUS)
        .without(SIGFPE)
        .without(SIGSEGV)
        .without(SIGSYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_what_a_container_is_sent_and_for_children() {
        let set = waited();
        // SIGHUP SIGINT SIGQUIT SIGUSR1 SIGUSR2 SIGPIPE SIGALRM SIGTERM SIGCONT SIGTSTP SIGTTIN
        // SIGTTOU SIGWINCH, SIGABRT (kill -ABRT, not our own abort), the real-time signals.
        for sig in [1, 2, 3, 10, 12, 13, 14, 15, 18, 20, 21, 22, 28, 6, 34, 64] {
            assert!(set.contains(sig), "signal {sig} is forwarded");
        }
        assert!(set.contains(SIGCHLD));
        for sig in [
            SIGKILL, SIGSTOP, SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV, SIGSYS,
        ] {
            assert!(!set.contains(sig), "signal {sig} keeps its default action");
        }
    }

    #[test]
    fn sets_use_the_kernel_bit_layout() {
        assert_eq!(SigSet::EMPTY.with(1), SigSet(1));
        assert_eq!(SigSet::EMPTY.with(SIGCHLD), SigSet(1 << 16));
        assert_eq!(SigSet::EMPTY.with(NSIG), SigSet(1 << 63));
        assert_eq!(SigSet::EMPTY.with(0).with(65), SigSet::EMPTY);
        assert!(!SigSet::EMPTY.with(15).without(15).contains(15));
        assert_eq!(core::mem::size_of::<SigSet>(), 8);
    }
}
