//! The container's first process, from clone(2) to execve(2).
//!
//! It waits for the runtime to put it in its cgroup and write its id mappings, builds the
//! root filesystem, becomes the configured user, reports `Ready`, then blocks on the exec
//! fifo until `start` opens it, and finally executes the user's program. Any failure before
//! `Ready` goes back to the runtime as a message, so `create` fails with the reason.
//! Where the seccomp filter goes in this sequence, and why, is explained in `seccomp`.

use std::io::Write;
use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process, Spec};

use crate::cgroups::CgroupConfig;
use crate::console;
use crate::error::{Context, Result};
use crate::namespaces::Plan;
use crate::process::{self, ExecPlan};
use crate::rootfs::{self, RootfsContext};
use crate::seccomp::{self, Program};
use crate::sync::{Msg, SyncSocket};
use crate::{sys, sysctl};

pub(crate) struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a std::path::Path,
    pub plan: &'a Plan,
    pub cgroup: &'a CgroupConfig,
    /// O_PATH descriptor of the exec fifo.
    pub fifo: RawFd,
    /// Connected console socket when the process wants a terminal.
    pub console: Option<RawFd>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
}

/// Entry point in the cloned child. Never returns.
pub(crate) fn run(args: &InitArgs<'_>, sync: &SyncSocket) -> ! {
    let (plan, filter) = match setup(args, sync) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = sync.send(&Msg::Error(e.to_string()));
            // SAFETY: _exit ends this process without running the parent's atexit handlers.
            unsafe { libc::_exit(1) }
        }
    };
    if let Err(e) = sync.send(&Msg::Ready) {
        die(&format!("report ready: {e}"));
    }
    if let Err(e) = wait_for_start(args.fifo) {
        die(&e.to_string());
    }
    process::reset_signals();
    if let Err(e) = sys::cloexec_from(3 + args.preserve_fds) {
        die(&format!("close descriptors: {e}"));
    }
    if let Some(filter) = &filter {
        if let Err(e) = filter.load() {
            die(&format!("install the seccomp filter: {e}"));
        }
    }
    die(&process::exec(&plan).to_string())
}

fn die(msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "shoal-runc init: {msg}");
    // SAFETY: _exit ends this process immediately.
    unsafe { libc::_exit(127) }
}

fn setup(args: &InitArgs<'_>, sync: &SyncSocket) -> Result<(ExecPlan, Option<Program>)> {
    sync.expect(Msg::Go, "waiting for the runtime")?;
    let spec = args.spec;
    let process = spec
        .process()
        .as_ref()
        .expect("validated: process is present");
    let plan = args.plan;

    if plan.creates(LinuxNamespaceType::User) {
        // The runtime has written our id mappings: become root of the new namespace.
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .ctx(|| "setgid 0 in the user namespace".into())?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .ctx(|| "setuid 0 in the user namespace".into())?;
    }
    if plan.new_cgroup_ns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .ctx(|| "create cgroup namespace".into())?;
    }
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if plan.creates(LinuxNamespaceType::Network) {
        sys::loopback_up().ctx(|| "bring up lo".into())?;
    }
    process::apply_rlimits(process)?;
    process::set_oom_score_adj(process)?;

    let ctx = RootfsContext {
        spec,
        rootfs: args.rootfs,
        in_new_userns: plan.creates(LinuxNamespaceType::User),
        new_cgroup_ns: plan.new_cgroup_ns,
        new_net_ns: plan.creates(LinuxNamespaceType::Network),
        cgroup: args.cgroup,
    };
    rootfs::prepare(&ctx)?;
    let pty = match (process.terminal() == Some(true), args.console) {
        (true, Some(sock)) => {
            let pty = console::create_pty(args.rootfs)?;
            use std::os::fd::AsRawFd;
            console::send_fd(sock, pty.master.as_raw_fd(), "/dev/ptmx")?;
            if let Some(size) = process.console_size() {
                console::set_winsize(
                    pty.master.as_raw_fd(),
                    size.height() as u16,
                    size.width() as u16,
                )?;
            }
            Some(pty.slave_path)
        }
        _ => None,
    };
    rootfs::enter(args.rootfs, args.no_pivot)?;
    if let Some(slave) = &pty {
        console::attach_slave(slave)?;
    }

    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: setdomainname reads len bytes from a valid pointer.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| format!("set domainname {d:?}"));
        }
    }
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        sysctl::apply(sysctls)?;
    }
    // Sysctls go in before /proc/sys becomes read-only.
    rootfs::finish(spec)?;
    let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    finalize(process, profile)
}

/// Identity, capabilities, the seccomp filter and the program to run. Shared with `exec`.
///
/// Returns the filter when it is still to be installed, as the caller's last step before
/// execve (with no_new_privileges); without no_new_privileges it is installed here, while
/// the process still has CAP_SYS_ADMIN (see `seccomp` for the reasoning).
pub(crate) fn finalize(
    process: &Process,
    profile: Option<&LinuxSeccomp>,
) -> Result<(ExecPlan, Option<Program>)> {
    process::enter_cwd(process)?;
    let mut filter = profile.map(seccomp::compile_in_container).transpose()?;
    process::drop_bounding(process.capabilities().as_ref())?;
    if process.no_new_privileges() != Some(true) {
        if let Some(f) = filter.take() {
            f.load()
                .ctx(|| "install the seccomp filter (without noNewPrivileges)".into())?;
        }
    }
    process::set_identity(process)?;
    process::set_capabilities(process.capabilities().as_ref())?;
    process::set_umask(process);
    let plan = process::plan_exec(process)?;
    process::set_no_new_privileges(process)?;
    Ok((plan, filter))
}

/// Block until `start` opens the exec fifo for reading, then tell it we are going.
fn wait_for_start(fifo: RawFd) -> Result<()> {
    let path = format!("/proc/self/fd/{fifo}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .ctx(|| "open the exec fifo (the container needs /proc mounted)".into())?;
    f.write_all(b"0").ctx(|| "write the exec fifo".into())
}
