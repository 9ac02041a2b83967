//! Waiting for a child process while forwarding the signals the caller receives to it, as
//! `runc run` and `runc exec` do in the foreground.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Result};

const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Shell-style exit code of a wait status: the code, or 128 + signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Block the forwarded signals (call before creating the child, so none is lost).
pub fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(*s);
    }
    set.thread_block().ctx(|| "block signals".into())?;
    Ok(set)
}

/// Wait for `pid` to exit, forwarding signals; also reaps other children (processes
/// re-parented to us when we are a subreaper). `on_signal` sees each forwarded signal first
/// (e.g. to resize a terminal on SIGWINCH).
pub fn wait_forwarding(pid: i32, set: &SigSet, mut on_signal: impl FnMut(Signal)) -> Result<i32> {
    let target = Pid::from_raw(pid);
    loop {
        // Reap first: the child may already be gone.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(st) => {
                    if st.pid() == Some(target) {
                        if let Some(code) = exit_code(st) {
                            return Ok(code);
                        }
                    }
                }
                Err(nix::errno::Errno::ECHILD) => {
                    return Err(std::io::Error::from_raw_os_error(libc::ECHILD))
                        .ctx(|| format!("wait for process {pid}"));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).ctx(|| format!("wait for process {pid}")),
            }
        }
        let sig = set.wait().ctx(|| "wait for signals".into())?;
        if sig != Signal::SIGCHLD {
            on_signal(sig);
            let _ = kill(target, sig);
        }
    }
}
