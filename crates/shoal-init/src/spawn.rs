//! The child, between `fork` and `exec`: its own process group (the terminal's foreground
//! group when there is one), the signal state the init was started with, then the program.

use crate::args::{Env, Program};
use crate::sys::{self, Errno};
use crate::{msg, path, status, Saved, EXIT_INIT_FAILED};

const STDIN: i32 = 0;

/// Runs in the forked child: never returns.
pub(crate) fn exec_program(program: Program, env: Env, saved: &Saved) -> ! {
    isolate();
    if let Err(e) = restore_signals(saved) {
        msg::error_errno(&[b"restore the signal mask"], e);
        sys::exit_group(EXIT_INIT_FAILED);
    }
    let search_path = env.get(b"PATH").unwrap_or(path::DEFAULT_PATH);
    let err = path::search(program.name, search_path, |candidate| {
        // SAFETY: argv and envp are the NULL-terminated arrays the kernel gave the init.
        unsafe { sys::execve(candidate, program.argv(), env.as_ptr()) }
    });
    let name = program.name.to_bytes();
    if err == Errno::ENOENT && path::searches_path(program.name) {
        msg::error(&[name, b": executable file not found in $PATH"]);
    } else {
        msg::error_errno(&[b"exec ", name], err);
    }
    sys::exit_group(status::exec_failed(err))
}

/// The dmz: exec `program.name` (an absolute path the runtime resolved) with `program.argv`,
/// nothing else. Never returns.
pub(crate) fn exec_exactly(program: Program, env: Env) -> ! {
    // SAFETY: argv and envp are the NULL-terminated arrays the kernel gave us.
    let err = unsafe { sys::execve(program.name, program.argv(), env.as_ptr()) };
    msg::error_errno(&[b"exec ", program.name.to_bytes()], err);
    sys::exit_group(status::exec_failed(err))
}

/// Puts the child in a process group of its own and, if stdin is a terminal, makes that group
/// the terminal's foreground group, as tini does: an interactive shell then has job control,
/// and ^C from the terminal goes to the program's group, not to the init. All signals are
/// still blocked here, so `tcsetpgrp` from a background group cannot stop us with `SIGTTOU`.
fn isolate() {
    // Cannot fail: a freshly forked child is not a session leader.
    let _ = sys::new_process_group();
    match sys::set_foreground(STDIN, sys::getpid()) {
        // No terminal, or not ours: nothing to hand over.
        Ok(()) | Err(Errno::ENOTTY | Errno::ENXIO) => {}
        Err(e) => msg::error_errno(&[b"warning: give the terminal to the program"], e),
    }
}

fn restore_signals(saved: &Saved) -> Result<(), Errno> {
    if saved.sigchld_ignored {
        sys::ignore_sigchld()?;
    }
    sys::set_mask(&saved.mask)
}
