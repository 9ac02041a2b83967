//! The kernel interface: every system call the init makes, each behind a small safe wrapper.
//!
//! Only the instruction that enters the kernel and the call numbers differ between
//! architectures ([`arch`]); the wrappers, the structures and the constants below are the same
//! on x86_64 and aarch64 (both use the generic signal numbers and tty ioctls).

#[cfg(target_arch = "aarch64")]
#[path = "aarch64.rs"]
mod arch;
#[cfg(target_arch = "x86_64")]
#[path = "x86_64.rs"]
mod arch;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("shoal-init supports x86_64 and aarch64 Linux only");

use core::ffi::CStr;

use crate::signals::{SigSet, SIGCHLD};

/// A process id.
pub(crate) type Pid = i32;

/// An error number returned by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    pub(crate) const EPERM: Errno = Errno(1);
    pub(crate) const ENOENT: Errno = Errno(2);
    pub(crate) const EINTR: Errno = Errno(4);
    pub(crate) const ENXIO: Errno = Errno(6);
    pub(crate) const E2BIG: Errno = Errno(7);
    pub(crate) const ENOEXEC: Errno = Errno(8);
    pub(crate) const EAGAIN: Errno = Errno(11);
    pub(crate) const ENOMEM: Errno = Errno(12);
    pub(crate) const EACCES: Errno = Errno(13);
    pub(crate) const ENOTDIR: Errno = Errno(20);
    pub(crate) const EISDIR: Errno = Errno(21);
    pub(crate) const EINVAL: Errno = Errno(22);
    pub(crate) const ENOTTY: Errno = Errno(25);
    pub(crate) const ETXTBSY: Errno = Errno(26);
    pub(crate) const ENAMETOOLONG: Errno = Errno(36);
    pub(crate) const ELOOP: Errno = Errno(40);
}

/// The kernel returns `-errno` in the last page of the address space.
fn check(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// Size of the kernel's signal set, as `rt_sig*` calls want it.
const SIGSET_SIZE: usize = core::mem::size_of::<SigSet>();

const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
const WNOHANG: usize = 1;
const TIOCSPGRP: usize = 0x5410;
const PR_SET_CHILD_SUBREAPER: usize = 36;

/// Writes `buf` to `fd`; returns how much was written.
pub(crate) fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    check(unsafe {
        arch::syscall(
            arch::WRITE,
            [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// Ends the process with `code`.
pub(crate) fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes an int and does not return.
    unsafe {
        arch::syscall(arch::EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]);
    }
    // The kernel does not return from exit_group; satisfy the type without a panic path.
    loop {
        core::hint::spin_loop();
    }
}

/// This process's id (in its pid namespace).
pub(crate) fn getpid() -> Pid {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { arch::syscall(arch::GETPID, [0; 6]) as Pid }
}

/// Makes this process a child subreaper: orphaned descendants are re-parented to it.
pub(crate) fn set_child_subreaper() -> Result<(), Errno> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    check(unsafe { arch::syscall(arch::PRCTL, [PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0]) }).map(drop)
}

/// Which side of a [`fork`] this is.
pub(crate) enum Fork {
    Child,
    Parent(Pid),
}

/// `fork()`, as `clone(SIGCHLD)`: aarch64 has no fork system call.
pub(crate) fn fork() -> Result<Fork, Errno> {
    // SAFETY: clone without CLONE_VM or a new stack is fork: the child continues on a
    // copy-on-write copy of this (single-threaded) process, returning 0 from the syscall.
    let ret = check(unsafe { arch::syscall(arch::CLONE, [SIGCHLD as usize, 0, 0, 0, 0, 0]) })?;
    Ok(match ret {
        0 => Fork::Child,
        pid => Fork::Parent(pid as Pid),
    })
}

/// Executes `path`; returns only on failure, with the error.
///
/// # Safety
///
/// `argv` and `envp` must be NULL-terminated arrays of NUL-terminated strings.
pub(crate) unsafe fn execve(path: &CStr, argv: *const *const u8, envp: *const *const u8) -> Errno {
    // SAFETY: path is NUL-terminated; the arrays are the caller's contract.
    let ret = unsafe {
        arch::syscall(
            arch::EXECVE,
            [
                path.as_ptr() as usize,
                argv as usize,
                envp as usize,
                0,
                0,
                0,
            ],
        )
    };
    check(ret).err().unwrap_or(Errno::EINVAL)
}

/// `wait4(-1, WNOHANG)`: a child that has exited and its wait status, `None` if children
/// remain but none has exited, `Err(ECHILD)` if there are no children.
pub(crate) fn reap_one() -> Result<Option<(Pid, i32)>, Errno> {
    let mut status: i32 = 0;
    // SAFETY: status is a valid int to write; the rusage pointer is NULL.
    let ret = unsafe {
        arch::syscall(
            arch::WAIT4,
            [
                -1isize as usize,
                &mut status as *mut i32 as usize,
                WNOHANG,
                0,
                0,
                0,
            ],
        )
    };
    Ok(match check(ret)? {
        0 => None,
        pid => Some((pid as Pid, status)),
    })
}

/// Sends `sig` to process `pid`.
pub(crate) fn kill(pid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes two integers.
    check(unsafe { arch::syscall(arch::KILL, [pid as usize, sig as usize, 0, 0, 0, 0]) }).map(drop)
}

/// Puts this process in a new process group of its own (`setpgid(0, 0)`).
pub(crate) fn new_process_group() -> Result<(), Errno> {
    // SAFETY: setpgid takes two integers.
    check(unsafe { arch::syscall(arch::SETPGID, [0; 6]) }).map(drop)
}

/// `tcsetpgrp(fd, pgrp)`: makes `pgrp` the foreground process group of the terminal `fd`.
pub(crate) fn set_foreground(fd: i32, pgrp: Pid) -> Result<(), Errno> {
    // SAFETY: TIOCSPGRP reads one pid_t through the pointer.
    check(unsafe {
        arch::syscall(
            arch::IOCTL,
            [
                fd as usize,
                TIOCSPGRP,
                &pgrp as *const Pid as usize,
                0,
                0,
                0,
            ],
        )
    })
    .map(drop)
}

fn sigprocmask(how: usize, set: &SigSet) -> Result<SigSet, Errno> {
    let mut old = SigSet::EMPTY;
    // SAFETY: both sets are valid SIGSET_SIZE-byte signal sets.
    check(unsafe {
        arch::syscall(
            arch::RT_SIGPROCMASK,
            [
                how,
                set as *const SigSet as usize,
                &mut old as *mut SigSet as usize,
                SIGSET_SIZE,
                0,
                0,
            ],
        )
    })?;
    Ok(old)
}

/// Adds `set` to the blocked signals; returns the previous mask.
pub(crate) fn block(set: &SigSet) -> Result<SigSet, Errno> {
    sigprocmask(SIG_BLOCK, set)
}

/// Replaces the blocked signals with `set`.
pub(crate) fn set_mask(set: &SigSet) -> Result<(), Errno> {
    sigprocmask(SIG_SETMASK, set).map(drop)
}

/// Waits for one of the (blocked) signals in `set` and takes it off the pending list.
pub(crate) fn wait_signal(set: &SigSet) -> Result<i32, Errno> {
    // SAFETY: set is a valid signal set; the siginfo and timeout pointers are NULL (no
    // details, no timeout).
    check(unsafe {
        arch::syscall(
            arch::RT_SIGTIMEDWAIT,
            [set as *const SigSet as usize, 0, 0, SIGSET_SIZE, 0, 0],
        )
    })
    .map(|sig| sig as i32)
}

/// The kernel's `struct sigaction` (with `sa_restorer`, as on both architectures).
#[repr(C)]
struct SigAction {
    handler: usize,
    flags: usize,
    restorer: usize,
    mask: SigSet,
}

/// Sets the action of `sig` to `handler` (`SIG_DFL` or `SIG_IGN`); returns the previous one.
fn set_disposition(sig: i32, handler: usize) -> Result<usize, Errno> {
    let new = SigAction {
        handler,
        flags: 0,
        restorer: 0,
        mask: SigSet::EMPTY,
    };
    let mut old = SigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: SigSet::EMPTY,
    };
    // SAFETY: both pointers are valid kernel sigaction structures.
    check(unsafe {
        arch::syscall(
            arch::RT_SIGACTION,
            [
                sig as usize,
                &new as *const SigAction as usize,
                &mut old as *mut SigAction as usize,
                SIGSET_SIZE,
                0,
                0,
            ],
        )
    })?;
    Ok(old.handler)
}

/// Makes sure `SIGCHLD` has its default action: an inherited `SIG_IGN` would make the kernel
/// reap children itself, and the init would never learn the program's status. Returns
/// whether it was ignored (exec resets every other inherited action and flag).
pub(crate) fn reset_sigchld() -> Result<bool, Errno> {
    Ok(set_disposition(SIGCHLD, SIG_DFL)? == SIG_IGN)
}

/// Ignores `SIGCHLD` again (in the child, when the init inherited it ignored).
pub(crate) fn ignore_sigchld() -> Result<(), Errno> {
    set_disposition(SIGCHLD, SIG_IGN).map(drop)
}
