//! The init's loop: wait for a signal; on `SIGCHLD` reap every exited child, forward anything
//! else to the program; stop once the program itself has been reaped.

use crate::signals::{self, SIGCHLD};
use crate::status;
use crate::sys::{self, Errno, Pid};

/// Supervises `program` (a child of this process) until it ends; returns the exit code.
pub(crate) fn supervise(program: Pid) -> i32 {
    let waited = signals::waited();
    loop {
        match sys::wait_signal(&waited) {
            Ok(SIGCHLD) => {}
            // The program may already be gone (ESRCH): its SIGCHLD is on its way.
            Ok(sig) => {
                let _ = sys::kill(program, sig);
            }
            // EINTR when the init itself was stopped and continued.
            Err(_) => {}
        }
        // Reaping on every wake-up, not only on SIGCHLD, costs one system call and cannot miss
        // a child whose SIGCHLD merged with an earlier one.
        if let Some(code) = reap(program) {
            return code;
        }
    }
}

/// Reaps every child that has exited (the program and any orphan re-parented to the init);
/// returns the program's exit code if it was among them.
fn reap(program: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match sys::reap_one() {
            Ok(Some((pid, wait_status))) if pid == program => {
                code = status::from_wait_status(wait_status);
            }
            Ok(Some(_orphan)) => {}
            Err(Errno::EINTR) => {}
            // None left that has exited (Ok(None)), or no children at all (ECHILD).
            Ok(None) | Err(_) => return code,
        }
    }
}
