//! `create`: from a bundle to a container whose init waits on the exec fifo.
//!
//! Process tree while creating (P = this runtime process):
//!
//! ```text
//! P ──fork──▶ C (intermediate): setns() into namespaces given by path,
//!              └─clone(new namespaces | CLONE_PARENT)──▶ I (init, a child of P)
//! ```
//!
//! C reports I's PID and exits. P puts I into its cgroup and writes its id mappings, then
//! lets it go; I builds the rootfs and reports `Ready` (or the error that stopped it).
//! Everything made on the way is undone if any step fails.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};

use crate::cgroups::{self, CgroupManager};
use crate::container::{validate_id, Container, EXEC_FIFO, STATE_FILE};
use crate::error::{Context, Error, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::Plan;
use crate::spec::{load_bundle, Bundle};
use crate::state::{State, Status};
use crate::sync::{self, Msg, SyncSocket};
use crate::{sys, sysctl};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
}

/// `console`: an already connected console socket (used by `run` to proxy a terminal
/// itself); otherwise `opts.console_socket` is connected when the process wants a terminal.
pub(crate) fn create(
    root: &Path,
    opts: &CreateOptions,
    console: Option<UnixStream>,
) -> Result<Container> {
    validate_id(&opts.id)?;
    sys::set_non_dumpable();
    if sys::thread_count() > 1 {
        return Err(Error::InvalidArgument(
            "create must run in a single-threaded process (use the shoal-runc binary)".into(),
        ));
    }
    let bundle = load_bundle(&opts.bundle)?;
    let spec = &bundle.spec;
    let process = spec.process().as_ref().expect("validated");
    let linux = spec.linux().as_ref().expect("validated");
    let plan = Plan::new(&linux.namespaces().clone().unwrap_or_default())?;
    if let Some(sysctls) = linux.sysctl() {
        sysctl::validate(sysctls, |t| plan.owns(t))?;
    }
    let console = match (process.terminal() == Some(true), &opts.console_socket) {
        (true, _) if console.is_some() => console,
        (true, Some(path)) => Some(
            UnixStream::connect(path)
                .ctx(|| format!("connect to console socket {}", path.display()))?,
        ),
        (true, None) => {
            return Err(Error::InvalidArgument(
                "process.terminal is true: pass --console-socket, or set \"terminal\": false"
                    .into(),
            ))
        }
        (false, _) => None,
    };
    let cgroup_path = cgroups::normalize_path(
        linux
            .cgroups_path()
            .as_deref()
            .unwrap_or(Path::new(&format!("/{}", opts.id))),
    )?;

    fs::create_dir_all(root).ctx(|| format!("create runtime root {}", root.display()))?;
    let dir = root.join(&opts.id);
    match fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(opts.id.clone()))
        }
        Err(e) => return Err(e).ctx(|| format!("create {}", dir.display())),
    }
    let mut cgroup = cgroups::new_manager(cgroups::detect()?, &cgroup_path)?;
    let mut undo = Undo {
        dir: dir.clone(),
        pid: None,
        cgroup_created: false,
    };
    let result = spawn(
        &bundle,
        opts,
        &plan,
        &dir,
        cgroup.as_mut(),
        console,
        &mut undo,
    );
    match result {
        Ok(container) => {
            undo.disarm();
            Ok(container)
        }
        Err(e) => {
            undo.run(cgroup.as_ref());
            Err(e)
        }
    }
}

/// Cleans up after a failed create: kills init, removes its cgroup and the state directory.
struct Undo {
    dir: PathBuf,
    pid: Option<Pid>,
    cgroup_created: bool,
}

impl Undo {
    fn run(&self, cgroup: &dyn CgroupManager) {
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if self.cgroup_created {
            let _ = cgroup.destroy();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn disarm(&mut self) {
        self.pid = None;
        self.cgroup_created = false;
    }
}

fn spawn(
    bundle: &Bundle,
    opts: &CreateOptions,
    plan: &Plan,
    dir: &Path,
    cgroup: &mut dyn CgroupManager,
    console: Option<UnixStream>,
    undo: &mut Undo,
) -> Result<Container> {
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref().expect("validated");
    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .ctx(|| format!("create {}", fifo_path.display()))?;
    // Writable by anyone (umask removed that bit): init may already run as another user, or
    // as root of a user namespace, when it opens the fifo.
    fs::set_permissions(
        &fifo_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o622),
    )
    .ctx(|| format!("chmod {}", fifo_path.display()))?;
    let fifo: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&fifo_path)
        .ctx(|| format!("open {}", fifo_path.display()))?
        .into();

    let mut state = State {
        id: opts.id.clone(),
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        status: Status::Creating,
        cgroup: cgroup.config(),
        config: spec.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        owner: String::new(),
    };
    sys::write_atomic(
        &dir.join(STATE_FILE),
        &serde_json::to_vec(&state).expect("serialise state"),
    )?;

    cgroup.create()?;
    undo.cgroup_created = true;
    // Record which cgroup directories exist now, so a `delete` after a crash mid-create
    // removes them too.
    state.cgroup = cgroup.config();
    sys::write_atomic(
        &dir.join(STATE_FILE),
        &serde_json::to_vec(&state).expect("serialise state"),
    )?;
    let cgroup_config = cgroup.config();
    let args = InitArgs {
        spec,
        rootfs: &bundle.rootfs,
        plan,
        cgroup: &cgroup_config,
        fifo: fifo.as_raw_fd(),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds,
    };
    let child_main = |sock: &SyncSocket| init::run(&args, sock);
    let pid = start_init(plan, plan.clone_flags, &child_main, |pid, sock| {
        undo.pid = Some(Pid::from_raw(pid));
        if let Some(res) = linux.resources() {
            cgroup.set(res)?;
        }
        cgroup.add_process(pid)?;
        if plan.creates(LinuxNamespaceType::User) {
            write_id_map(
                pid,
                "uid_map",
                linux.uid_mappings().as_deref().unwrap_or_default(),
            )?;
            write_id_map(
                pid,
                "gid_map",
                linux.gid_mappings().as_deref().unwrap_or_default(),
            )?;
        }
        sock.send(&Msg::Go)?;
        sock.expect(Msg::Ready, "container init")
    })?;
    drop(console);

    let (start_time, _) = sys::proc_start_time(pid)
        .ok_or_else(|| Error::Init("container init exited right after setup".into()))?;
    state.pid = pid;
    state.pid_start_time = start_time;
    state.status = Status::Created;
    state.cgroup = cgroup.config();
    sys::write_atomic(
        &dir.join(STATE_FILE),
        &serde_json::to_vec(&state).expect("serialise state"),
    )?;
    if let Some(pid_file) = &opts.pid_file {
        sys::write_atomic(pid_file, pid.to_string().as_bytes())?;
    }
    Ok(Container::from_state(dir.to_path_buf(), state))
}

/// Fork the intermediate process, which joins the namespaces of `plan` and clones
/// `child_main` as a child of this process; then hand that child's PID to `parent_side` to
/// finish the handshake.
pub(crate) fn start_init(
    plan: &Plan,
    clone_flags: CloneFlags,
    child_main: &dyn Fn(&SyncSocket),
    parent_side: impl FnOnce(i32, &SyncSocket) -> Result<()>,
) -> Result<i32> {
    let (parent_sock, child_sock) = sync::pair()?;
    // SAFETY: callers checked that this process is single-threaded.
    let intermediate = unsafe { sys::clone_fork(0) }.ctx(|| "fork".into())?;
    if intermediate == 0 {
        drop(parent_sock);
        intermediate_main(plan, clone_flags, child_main, &child_sock);
    }
    drop(child_sock);
    let first = parent_sock.recv();
    let _ = waitpid(Pid::from_raw(intermediate), None);
    let pid = match first? {
        Some(Msg::ChildPid(pid)) => pid,
        Some(Msg::Error(e)) => return Err(Error::Init(sync::strip_prefix(e))),
        other => {
            return Err(Error::Init(format!(
                "intermediate process: unexpected {other:?}"
            )))
        }
    };
    if let Err(e) = parent_side(pid, &parent_sock) {
        // The child is ours (CLONE_PARENT): do not leave it running or as a zombie.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(e);
    }
    Ok(pid)
}

fn intermediate_main(
    plan: &Plan,
    clone_flags: CloneFlags,
    child_main: &dyn Fn(&SyncSocket),
    sock: &SyncSocket,
) -> ! {
    let result = (|| -> Result<i32> {
        plan.enter()?;
        let flags = clone_flags.bits() as libc::c_ulong | libc::CLONE_PARENT as libc::c_ulong;
        // SAFETY: this intermediate process is single-threaded (forked from one).
        let pid = unsafe { sys::clone_fork(flags) }.ctx(|| {
            "clone the container process (are these namespace types supported here?)".into()
        })?;
        if pid == 0 {
            child_main(sock);
            // SAFETY: child mains never return; should one, end the child here.
            unsafe { libc::_exit(1) }
        }
        Ok(pid)
    })();
    let msg = match result {
        Ok(pid) => Msg::ChildPid(pid),
        Err(e) => Msg::Error(e.to_string()),
    };
    let code = i32::from(sock.send(&msg).is_err());
    // SAFETY: _exit ends the intermediate process without running atexit handlers.
    unsafe { libc::_exit(code) }
}

fn write_id_map(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    fs::write(format!("/proc/{pid}/{file}"), &text).ctx(|| format!("write {file} {text:?}"))
}
