//! `shoal-init`: the container init behind `--init`, shoal's equivalent of tini / docker-init.
//!
//! `shoal-init [--] PROGRAM [ARGS...]` runs as PID 1 of a container. It starts PROGRAM as its
//! only child, forwards every signal it receives to that child (to the child only, like tini
//! without `-g`), reaps every zombie re-parented to it, and exits with the child's status: its
//! exit code, or 128 + the signal that killed it. A program that cannot be found exits 127, one
//! that cannot be executed 126, both with a message on stderr. When it is not PID 1 it makes
//! itself a child subreaper so orphans are still re-parented to it.
//!
//! # Why no_std, and why `build.rs` builds the executable
//!
//! The binary is bind-mounted into arbitrary images (busybox, alpine/musl, scratch), so it must
//! be a fully static executable that needs no loader and no libc. With only the
//! `x86_64-unknown-linux-gnu` target available that rules out std: linking std against static
//! glibc with `-static` from a build script yields a broken executable on this toolchain (rustc
//! still asks for `-Bdynamic -lgcc_s` and PIE), and would weigh ~1 MB. So the init is `no_std`,
//! talks to the kernel with raw `syscall`/`svc` instructions (`sys`) and has its own `_start`.
//!
//! A `no_std` executable must be compiled with `-C panic=abort` on stable Rust ("unwinding
//! panics are not supported without std"). Cargo cannot set `panic` per package and the
//! workspace's profiles must stay `unwind` for everyone else, so cargo never builds the
//! executable itself: `build.rs` runs rustc on this same file as a binary with
//! `--cfg shoal_init_static -C panic=abort -C relocation-model=static` and the link arguments
//! `-nostartfiles -nostdlib -static`. Cargo builds this file as an ordinary `no_std` library (an
//! rlib needs no panic runtime), which is what the unit tests and clippy check.
//!
//! # Design
//!
//! * [`main`] blocks every signal it forwards plus `SIGCHLD` *before* forking, so nothing
//!   arrives unhandled between the fork and the wait loop, and resets an inherited ignored
//!   `SIGCHLD` (which would make the kernel reap the child behind its back).
//! * The child (`spawn`) gets its own process group and, when stdin is a terminal, becomes
//!   its foreground group (tini's `tcsetpgrp`), so an interactive shell has job control. It
//!   restores the original signal mask, then execs PROGRAM, searching `$PATH` like `execvp`.
//! * The parent (`supervise`) waits with `rt_sigtimedwait`: `SIGCHLD` means reap with
//!   `wait4(-1, WNOHANG)` until nothing is left; any other signal is sent to the child with
//!   `kill`. Blocked signals are never discarded, even for a namespace's PID 1, so signals
//!   sent from inside the container (`kill 1`) are forwarded as well as `shoal-runc kill`'s.
//! * Decisions are pure functions with unit tests: the exit code of a wait status
//!   (`status`), the `$PATH` search order and its error (`path`).
//!
//! The code never allocates and avoids `core::fmt`, which keeps the executable small: about
//! 12 KB in release builds (stripped), 0.8 MB in debug builds, mostly debug info.
//!
//! The executable is not installed anywhere: `build.rs` leaves it in `OUT_DIR` and announces
//! its path as link metadata (`links = "shoal_init"`), so the crates that need it
//! (shoal-runtime embeds it as its "dmz", shoald writes it out for `--init`) read it from
//! `DEP_SHOAL_INIT_BINARY` at build time.

#![cfg_attr(not(test), no_std)]
#![cfg_attr(shoal_init_static, no_main)]
// The crate defines `memcpy` and friends for the static executable: keep LLVM from turning
// their loops into calls to themselves.
#![no_builtins]

// Only in the static executable: `_start`, the panic handler and memcpy & co would clash
// with libc's when this crate is linked as a library into a std program.
#[cfg(shoal_init_static)]
mod entry;
#[cfg(shoal_init_static)]
mod mem;

mod args;
mod msg;
mod path;
mod signals;
mod spawn;
mod status;
mod supervise;
mod sys;

pub use args::{Args, Env, DMZ_NAME};

use args::Invocation;
use signals::SigSet;
use sys::Errno;

/// Exit code when the init itself fails (bad usage, cannot fork).
pub(crate) const EXIT_INIT_FAILED: i32 = 2;

/// Runs the init: parses `args`, starts the program, supervises it; returns the exit code.
pub fn main(args: Args, env: Env) -> i32 {
    let program = match args::parse(args) {
        Invocation::Run(program) => program,
        Invocation::Exec(program) => spawn::exec_exactly(program, env),
        Invocation::Help => {
            msg::write_out(args::USAGE);
            return 0;
        }
        Invocation::Usage(problem, arg) => {
            msg::error(&[problem, arg]);
            msg::write_err(args::USAGE);
            return EXIT_INIT_FAILED;
        }
    };

    if sys::getpid() != 1 {
        // Not a namespace's init: adopt orphans anyway (tini's -s). Best effort.
        let _ = sys::set_child_subreaper();
    }
    let saved = match block_signals() {
        Ok(saved) => saved,
        Err(e) => {
            msg::error_errno(&[b"block signals"], e);
            return EXIT_INIT_FAILED;
        }
    };
    match sys::fork() {
        Ok(sys::Fork::Child) => spawn::exec_program(program, env, &saved),
        Ok(sys::Fork::Parent(child)) => supervise::supervise(child),
        Err(e) => {
            msg::error_errno(&[b"fork"], e);
            EXIT_INIT_FAILED
        }
    }
}

/// What the child restores before exec: the signal state the init was started with.
pub(crate) struct Saved {
    /// The signal mask before [`block_signals`].
    pub(crate) mask: SigSet,
    /// Whether `SIGCHLD` was ignored.
    pub(crate) sigchld_ignored: bool,
}

/// Blocks the signals the init waits for and makes sure `SIGCHLD` is not ignored.
fn block_signals() -> Result<Saved, Errno> {
    let sigchld_ignored = sys::reset_sigchld()?;
    let mask = sys::block(&signals::waited())?;
    Ok(Saved {
        mask,
        sigchld_ignored,
    })
}
