//! x86_64: system call numbers, the `syscall` instruction and the process entry point.

pub(super) const WRITE: usize = 1;
pub(super) const RT_SIGACTION: usize = 13;
pub(super) const RT_SIGPROCMASK: usize = 14;
pub(super) const IOCTL: usize = 16;
pub(super) const GETPID: usize = 39;
pub(super) const CLONE: usize = 56;
pub(super) const EXECVE: usize = 59;
pub(super) const WAIT4: usize = 61;
pub(super) const KILL: usize = 62;
pub(super) const SETPGID: usize = 109;
pub(super) const RT_SIGTIMEDWAIT: usize = 128;
pub(super) const PRCTL: usize = 157;
pub(super) const EXIT_GROUP: usize = 231;

/// Raw system call `n` with six arguments (the kernel ignores the ones `n` does not take).
/// Returns the kernel's result: a value, or `-errno`.
///
/// # Safety
///
/// The arguments must satisfy the kernel's contract for `n` (valid pointers and lengths).
#[inline]
pub(super) unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux syscall convention: number in rax, arguments in rdi, rsi, rdx,
    // r10, r8, r9; the kernel clobbers rcx and r11 and restores the flags. Memory effects are
    // the caller's contract.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags),
        );
    }
    ret
}

// The kernel starts the process here with argc, argv[], NULL, envp[], NULL at the stack pointer
// (16-byte aligned). Pass that pointer to `start` with the stack aligned for a call.
#[cfg(shoal_init_static)]
core::arch::global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym crate::entry::start,
);
