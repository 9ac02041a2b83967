//! `exec`: run another process inside a running container, joining all its namespaces and
//! its cgroup, with the container's process settings unless overridden.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::cgroups;
use crate::console;
use crate::container::Container;
use crate::create::start_init;
use crate::error::{Context, Error, Result};
use crate::init;
use crate::namespaces::{self, JoinNs, Plan};
use crate::process;
use crate::seccomp::Program;
use crate::state::Status;
use crate::sync::{Msg, SyncSocket};
use crate::sys;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub process: Option<Process>,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
}

/// Start `opts.process` in the container; returns the new process's host PID. The process
/// is a child of the caller, which may wait for it.
pub fn exec(container: &Container, opts: &ExecOptions, console: Option<UnixStream>) -> Result<i32> {
    let status = container.status();
    if !status.can_exec() {
        return Err(Error::BadState {
            id: container.id().into(),
            status,
            action: "exec in it (it is not running)",
        });
    }
    if status == Status::Paused {
        return Err(Error::BadState {
            id: container.id().into(),
            status,
            action: "exec in it (resume it first)",
        });
    }
    sys::set_non_dumpable();
    if sys::thread_count() > 1 {
        return Err(Error::InvalidArgument(
            "exec must run in a single-threaded process".into(),
        ));
    }
    let process = opts
        .process
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("exec needs a process".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidArgument("exec needs a command to run".into()));
    }
    let init_pid = container.pid().ok_or_else(|| Error::BadState {
        id: container.id().into(),
        status: Status::Stopped,
        action: "exec in it (it is not running)",
    })?;
    let spec = &container.state().config;
    let mut plan = Plan {
        clone_flags: CloneFlags::empty(),
        new_cgroup_ns: false,
        join: Vec::new(),
    };
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let path = PathBuf::from(format!(
            "/proc/{init_pid}/ns/{}",
            namespaces::proc_name(ns.typ())
        ));
        if !namespaces::is_own(ns.typ(), &path) {
            plan.join.push(namespaces::open_ns(ns.typ(), &path)?);
        }
    }
    sort_joins(&mut plan.join);
    let console = match (process.terminal() == Some(true), &opts.console_socket) {
        (true, _) if console.is_some() => console,
        (true, Some(path)) => Some(
            UnixStream::connect(path)
                .ctx(|| format!("connect to console socket {}", path.display()))?,
        ),
        (true, None) => {
            return Err(Error::InvalidArgument(
                "--tty needs --console-socket".into(),
            ))
        }
        (false, _) => None,
    };
    let cgroup = cgroups::open(&container.state().cgroup)?;
    let console_fd = console.as_ref().map(|c| c.as_raw_fd());
    let preserve = opts.preserve_fds;
    // The exec'd process gets the container's filter too (a process.json cannot bring one).
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    // Compile here, on the host: the exec'd process finds the result in its copy of our memory.
    if let Some(s) = seccomp {
        crate::seccomp::compile(s)?;
    }
    let child_main = |sock: &SyncSocket| exec_child(process, seccomp, console_fd, preserve, sock);
    let pid = start_init(&plan, CloneFlags::empty(), &child_main, |pid, sock| {
        let placed = cgroup.add_process(pid);
        if placed.is_err() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        placed?;
        sock.send(&Msg::Go)?;
        sock.expect(Msg::Ready, "exec process")
    })?;
    if let Some(pid_file) = &opts.pid_file {
        sys::write_atomic(pid_file, pid.to_string().as_bytes())?;
    }
    Ok(pid)
}

fn sort_joins(join: &mut [JoinNs]) {
    use oci_spec::runtime::LinuxNamespaceType as T;
    join.sort_by_key(|j| match j.typ {
        T::User => 0,
        T::Mount => 2,
        _ => 1,
    });
}

fn exec_child(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    console: Option<i32>,
    preserve_fds: u32,
    sock: &SyncSocket,
) -> ! {
    let result = (|| -> Result<(process::ExecPlan, Option<Program>)> {
        sock.expect(Msg::Go, "waiting for the runtime")?;
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        process::apply_rlimits(process)?;
        if let Some(sock_fd) = console {
            let pty = console::open_pty(std::path::Path::new("/dev/pts/ptmx"))?;
            console::send_fd(sock_fd, pty.master.as_raw_fd(), "/dev/ptmx")?;
            if let Some(size) = process.console_size() {
                console::set_winsize(
                    pty.master.as_raw_fd(),
                    size.height() as u16,
                    size.width() as u16,
                )?;
            }
            console::attach_slave(&pty.slave_path)?;
        }
        init::finalize(process, seccomp)
    })();
    let (plan, filter) = match result {
        Ok(ready) => ready,
        Err(e) => {
            let _ = sock.send(&Msg::Error(e.to_string()));
            // SAFETY: _exit ends this child without running the parent's atexit handlers.
            unsafe { libc::_exit(1) }
        }
    };
    let _ = sock.send(&Msg::Ready);
    process::reset_signals();
    let _ = sys::cloexec_from(3 + preserve_fds);
    // With no_new_privileges, the filter goes in last: nothing but execve runs under it.
    if let Some(filter) = &filter {
        if let Err(e) = filter.load() {
            eprintln!("shoal-runc exec: install the seccomp filter: {e}");
            // SAFETY: _exit ends this child immediately.
            unsafe { libc::_exit(127) }
        }
    }
    let err = process::exec(&plan);
    eprintln!("shoal-runc exec: {err}");
    // SAFETY: _exit ends this child immediately.
    unsafe { libc::_exit(127) }
}
