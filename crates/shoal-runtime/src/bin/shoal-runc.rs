//! `shoal-runc`: shoal's OCI runtime with runc's command line.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use oci_spec::runtime::{Capability, Process, User};
use shoal_runtime::{console, features, sys, wait, Container, CreateOptions, ExecOptions, Runtime};

#[derive(Parser)]
#[command(
    name = "shoal-runc",
    version,
    about = "OCI runtime of shoal (runc-compatible command line)"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/shoal-runc")]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[arg(long, global = true)]
    debug: bool,
    /// Not supported: shoal-runc drives cgroupfs directly.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless mode (only "false" and "auto" as root are accepted).
    #[arg(long, global = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print the OCI state of a container.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped container.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, and wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: OutFormat,
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the features this runtime supports (JSON).
    Features,
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: OutFormat,
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility; session keyrings are not created.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(clap::Args)]
struct ExecArgs {
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    #[arg(short, long)]
    tty: bool,
    /// UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// A process.json to run instead of the command line.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone();
    let log_format = cli.log_format;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if let Some(path) = log {
                log_error(&path, log_format, &msg);
            }
            eprintln!("shoal-runc: {msg}");
            ExitCode::from(1)
        }
    }
}

fn log_error(path: &Path, format: LogFormat, msg: &str) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({ "level": "error", "msg": msg, "time": time }).to_string()
        }
        LogFormat::Text => format!("time=\"{time}\" level=error msg={msg:?}"),
    };
    let _ = writeln!(f, "{line}");
}

fn run(cli: Cli) -> Result<u8> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: shoal-runc manages cgroupfs directly; drop the flag");
    }
    if let Some(r) = cli.rootless.as_deref() {
        if !matches!(r, "false" | "auto") {
            bail!("--rootless={r} is not supported: run shoal-runc as root");
        }
    }
    let rt = Runtime::new(&cli.root);
    match cli.command {
        Command::Create(args) => {
            rt.create(&create_options(&args))?;
        }
        Command::Start { id } => rt.load(&id)?.start()?,
        Command::State { id } => {
            let state = rt.load(&id)?.oci_state();
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Kill { all, id, signal } => {
            let sig =
                sys::parse_signal(&signal).ok_or_else(|| anyhow!("unknown signal {signal:?}"))?;
            rt.load(&id)?.kill(sig, all)?;
        }
        Command::Delete { force, id } => match rt.load(&id) {
            Ok(c) => c.delete(force)?,
            Err(shoal_runtime::Error::NotFound(_)) if force => {}
            Err(e) => return Err(e.into()),
        },
        Command::Run {
            create,
            detach,
            keep,
        } => return run_container(&rt, &create, detach, keep),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps(&rt.load(&id)?, format, &ps_args)?,
        Command::Exec(args) => return exec(&rt, args),
        Command::Pause { id } => rt.load(&id)?.pause()?,
        Command::Resume { id } => rt.load(&id)?.resume()?,
        Command::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists: remove it first", path.display());
            }
            let rootless =
                cli.rootless.as_deref() == Some("true") || !nix::unistd::getuid().is_root();
            let text = serde_json::to_string_pretty(&features::default_spec(rootless))?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
        Command::Features => println!("{}", serde_json::to_string_pretty(&features::features())?),
        Command::List { format, quiet } => list(&rt, format, quiet)?,
    }
    Ok(0)
}

fn create_options(args: &CreateArgs) -> CreateOptions {
    let _ = args.no_new_keyring;
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        preserve_fds: args.preserve_fds,
    }
}

/// Does the bundle ask for a terminal? (Decides whether `run` proxies one itself.)
fn wants_terminal(bundle: &Path) -> bool {
    shoal_runtime::spec::load_bundle(bundle)
        .ok()
        .and_then(|b| b.spec.process().as_ref().and_then(|p| p.terminal()))
        == Some(true)
}

fn run_container(rt: &Runtime, args: &CreateArgs, detach: bool, keep: bool) -> Result<u8> {
    let opts = create_options(args);
    let proxy_tty = !detach && opts.console_socket.is_none() && wants_terminal(&opts.bundle);
    if detach && opts.console_socket.is_none() && wants_terminal(&opts.bundle) {
        bail!("cannot detach a container with a terminal without --console-socket");
    }
    let signals = if detach {
        None
    } else {
        Some(wait::block_signals()?)
    };
    let (mut container, master) = if proxy_tty {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let c = rt.create_with_console(&opts, theirs)?;
        (c, Some(console::recv_fd(ours.as_raw_fd())?))
    } else {
        (rt.create(&opts)?, None)
    };
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.into());
    }
    let Some(signals) = signals else { return Ok(0) };
    let pid = container.state().pid;
    let _tty = master.as_ref().map(|m| TtyProxy::start(m.as_raw_fd()));
    let master_fd = master.as_ref().map(|m| m.as_raw_fd());
    let code = wait::wait_forwarding(pid, &signals, |sig| {
        if sig == nix::sys::signal::Signal::SIGWINCH {
            if let Some(fd) = master_fd {
                resize_from_stdin(fd);
            }
        }
    })?;
    drop(_tty);
    if !keep {
        rt.load(&args.id)?.delete(true)?;
    }
    Ok(code as u8)
}

/// Copies stdin to a pty master and the master to stdout, with the local terminal in raw
/// mode while it lasts.
struct TtyProxy {
    saved: Option<nix::sys::termios::Termios>,
}

impl TtyProxy {
    fn start(master: i32) -> TtyProxy {
        let stdin = std::io::stdin();
        let saved = if stdin.is_terminal() {
            let saved = nix::sys::termios::tcgetattr(&stdin).ok();
            if let Some(t) = &saved {
                let mut raw = t.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ =
                    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
            }
            resize_from_stdin(master);
            saved
        } else {
            None
        };
        // SAFETY: dup gives each thread its own descriptor for the master.
        let (rd, wr) = unsafe { (libc::dup(master), libc::dup(master)) };
        std::thread::spawn(move || {
            // SAFETY: rd is a fresh descriptor from dup that this thread owns.
            let mut m = unsafe { std::fs::File::from_raw_fd(rd) };
            let _ = std::io::copy(&mut m, &mut std::io::stdout());
        });
        std::thread::spawn(move || {
            // SAFETY: wr is a fresh descriptor from dup that this thread owns.
            let mut m = unsafe { std::fs::File::from_raw_fd(wr) };
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || m.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        TtyProxy { saved }
    }
}

impl Drop for TtyProxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
        let _ = std::io::stdout().flush();
    }
}

fn resize_from_stdin(master: i32) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
        let _ = console::set_winsize(master, ws.ws_row, ws.ws_col);
    }
}

fn exec(rt: &Runtime, args: ExecArgs) -> Result<u8> {
    let container = rt.load(&args.id)?;
    let mut process: Process = match &args.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?
        }
        None => {
            let mut p = container
                .state()
                .config
                .process()
                .clone()
                .ok_or_else(|| anyhow!("container has no process config"))?;
            if args.command.is_empty() {
                bail!("exec needs a command: shoal-runc exec ID COMMAND [ARG...]");
            }
            p.set_args(Some(args.command.clone()));
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(args.env.iter().cloned());
            p.set_env(Some(env));
            if let Some(cwd) = &args.cwd {
                p.set_cwd(cwd.clone());
            }
            p.set_terminal(Some(args.tty));
            if let Some(u) = &args.user {
                let (uid, gid) = match u.split_once(':') {
                    Some((a, b)) => (a.parse()?, b.parse()?),
                    None => (u.parse()?, 0),
                };
                let mut user = User::default();
                user.set_uid(uid);
                user.set_gid(gid);
                user.set_additional_gids(Some(args.additional_gids.clone()));
                p.set_user(user);
            }
            if args.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !args.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                for name in &args.cap {
                    let cap: Capability =
                        serde_json::from_value(serde_json::Value::String(name.clone()))
                            .map_err(|_| anyhow!("unknown capability {name:?}"))?;
                    let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                        let mut s = s.clone().unwrap_or_default();
                        s.insert(cap);
                        Some(s)
                    };
                    caps.set_bounding(add(caps.bounding()));
                    caps.set_effective(add(caps.effective()));
                    caps.set_permitted(add(caps.permitted()));
                }
                p.set_capabilities(Some(caps));
            }
            p
        }
    };
    if args.process.is_some() && args.tty {
        process.set_terminal(Some(true));
    }
    let wants_tty = process.terminal() == Some(true);
    let proxy_tty = !args.detach && args.console_socket.is_none() && wants_tty;
    if args.detach && args.console_socket.is_none() && wants_tty {
        bail!("cannot detach a process with a terminal without --console-socket");
    }
    let signals = if args.detach {
        None
    } else {
        Some(wait::block_signals()?)
    };
    let opts = ExecOptions {
        process: Some(process),
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        preserve_fds: args.preserve_fds,
    };
    // A terminal we proxy ourselves comes over a socketpair: exec forks, so no helper
    // thread may exist yet.
    let (pid, master) = if proxy_tty {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let pid = rt.exec_with_console(&container, &opts, theirs)?;
        (pid, Some(console::recv_fd(ours.as_raw_fd())?))
    } else {
        (rt.exec(&container, &opts)?, None)
    };
    let Some(signals) = signals else { return Ok(0) };
    let _tty = master.as_ref().map(|m| TtyProxy::start(m.as_raw_fd()));
    let master_fd = master.as_ref().map(|m| m.as_raw_fd());
    let code = wait::wait_forwarding(pid, &signals, |sig| {
        if sig == nix::sys::signal::Signal::SIGWINCH {
            if let Some(fd) = master_fd {
                resize_from_stdin(fd);
            }
        }
    })?;
    Ok(code as u8)
}

fn ps(container: &Container, format: OutFormat, ps_args: &[String]) -> Result<()> {
    let pids = container.pids()?;
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn list(rt: &Runtime, format: OutFormat, quiet: bool) -> Result<()> {
    let containers = rt.list()?;
    if quiet {
        for c in &containers {
            println!("{}", c.id());
        }
        return Ok(());
    }
    let states: Vec<_> = containers.iter().map(Container::oci_state).collect();
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string(&states)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<10} {:<40} {:<30}",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for s in states {
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<30}",
            s.id,
            s.pid,
            s.status,
            s.bundle.display(),
            s.created
        );
    }
    Ok(())
}
