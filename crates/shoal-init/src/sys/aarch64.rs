//! aarch64: system call numbers (the generic table), the `svc` instruction and the process
//! entry point. There is no `fork` system call here; [`super::fork`] uses `clone` on both.

pub(super) const IOCTL: usize = 29;
pub(super) const WRITE: usize = 64;
pub(super) const EXIT_GROUP: usize = 94;
pub(super) const KILL: usize = 129;
pub(super) const RT_SIGACTION: usize = 134;
pub(super) const RT_SIGPROCMASK: usize = 135;
pub(super) const RT_SIGTIMEDWAIT: usize = 137;
pub(super) const SETPGID: usize = 154;
pub(super) const PRCTL: usize = 167;
pub(super) const GETPID: usize = 172;
pub(super) const CLONE: usize = 220;
pub(super) const EXECVE: usize = 221;
pub(super) const WAIT4: usize = 260;

/// Raw system call `n` with six arguments (the kernel ignores the ones `n` does not take).
/// Returns the kernel's result: a value, or `-errno`.
///
/// # Safety
///
/// The arguments must satisfy the kernel's contract for `n` (valid pointers and lengths).
#[inline]
pub(super) unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux syscall convention: number in x8, arguments and result in
    // x0..x5; nothing else is clobbered. Memory effects are the caller's contract.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack, preserves_flags),
        );
    }
    ret
}

// The kernel starts the process here with argc, argv[], NULL, envp[], NULL at sp (16-byte
// aligned). Clear the frame and link registers so backtraces end here.
#[cfg(shoal_init_static)]
core::arch::global_asm!(
    ".globl _start",
    ".type _start,%function",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "bl {start}",
    "udf #0",
    start = sym crate::entry::start,
);
