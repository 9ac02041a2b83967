//! shoal-shim: supervises one container. See the library docs for the protocol.
//!
//! Usage (by shoald):
//! `shoal-shim --id ID --bundle DIR --state-dir DIR --runtime PATH --runtime-root DIR
//!  --log FILE [--stdin] [--tty]`
//!
//! The process shoald starts forks the real shim, waits for it to report and prints one
//! line, `ok <shim-pid> <shim-start-time> <init-pid>` or `error <message>`, then exits. The
//! real shim has its own session, is the subreaper of the container, and runs until the
//! container has exited and its output is drained.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shoal_shim::frame::{self, Decoder};
use shoal_shim::logfile::LogWriter;
use shoal_shim::time::now_rfc3339;

struct Args {
    id: String,
    bundle: PathBuf,
    state_dir: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    log: PathBuf,
    stdin: bool,
    tty: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut id, mut bundle, mut state_dir, mut runtime, mut runtime_root, mut log) =
        (None, None, None, None, None, None);
    let (mut stdin, mut tty) = (false, false);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--id" => id = Some(val()?),
            "--bundle" => bundle = Some(PathBuf::from(val()?)),
            "--state-dir" => state_dir = Some(PathBuf::from(val()?)),
            "--runtime" => runtime = Some(PathBuf::from(val()?)),
            "--runtime-root" => runtime_root = Some(PathBuf::from(val()?)),
            "--log" => log = Some(PathBuf::from(val()?)),
            "--stdin" => stdin = true,
            "--tty" => tty = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    fn need<T>(v: Option<T>, n: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("missing {n}"))
    }
    Ok(Args {
        id: need(id, "--id")?,
        bundle: need(bundle, "--bundle")?,
        state_dir: need(state_dir, "--state-dir")?,
        runtime: need(runtime, "--runtime")?,
        runtime_root: need(runtime_root, "--runtime-root")?,
        log: need(log, "--log")?,
        stdin,
        tty,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            println!("error shoal-shim: {e}");
            return ExitCode::from(2);
        }
    };
    let (report_r, report_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            println!("error shoal-shim: pipe: {e}");
            return ExitCode::from(1);
        }
    };
    // SAFETY: the launcher is single-threaded here; the child only continues our own code.
    match unsafe { libc::fork() } {
        -1 => {
            println!("error shoal-shim: fork: {}", io::Error::last_os_error());
            ExitCode::from(1)
        }
        0 => {
            drop(report_r);
            shim_main(args, File::from(report_w))
        }
        _ => {
            drop(report_w);
            let mut report = String::new();
            let _ = File::from(report_r).read_to_string(&mut report);
            let report = if report.is_empty() {
                "error shoal-shim exited during setup\n".into()
            } else {
                report
            };
            print!("{report}");
            ExitCode::from(u8::from(!report.starts_with("ok ")))
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The real shim. Never returns.
fn shim_main(args: Args, mut report: File) -> ExitCode {
    // Detach from shoald: own session, stdio to /dev/null (our errors go to shim.log).
    // SAFETY: setsid and prctl with integer arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    redirect_stdio(&args.state_dir);
    let mut shim = match Shim::setup(&args) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "error {}", e.trim());
            eprintln!("setup failed: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = writeln!(
        report,
        "ok {} {} {}",
        std::process::id(),
        own_start_time(),
        shim.init_pid
    );
    drop(report);
    shim.serve();
    ExitCode::SUCCESS
}

fn redirect_stdio(state_dir: &Path) {
    let null = OpenOptions::new().read(true).write(true).open("/dev/null");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("shim.log"));
    // SAFETY: dup2 onto our own standard descriptors.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
            libc::dup2(n.as_raw_fd(), 1);
        }
        if let Ok(l) = &log {
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}

fn own_start_time() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 2..].split(' ').nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Shim {
    state_dir: PathBuf,
    init_pid: i32,
    /// stdout and stderr pipes, or the pty master as stdout.
    outputs: [Option<File>; 2],
    /// The container's stdin (non-blocking) and what is waiting to be written to it.
    stdin: Option<File>,
    stdin_pending: Vec<u8>,
    close_stdin_when_flushed: bool,
    tty: Option<RawFd>,
    listener: UnixListener,
    clients: Vec<Client>,
    log: LogWriter<File>,
    sigchld: OwnedFd,
}

/// An attached client. Everything is non-blocking: output waits in `queue` until the client
/// can take it, so one slow client never stalls the container or the other clients.
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    queue: Vec<u8>,
    /// The client closed its sending side: no more input, but it still gets output.
    input_closed: bool,
    dead: bool,
}

/// Per-client output held back for a slow reader before the client is dropped.
const CLIENT_QUEUE_LIMIT: usize = 8 << 20;
/// Pending stdin above which clients' input is no longer read (back-pressure).
const STDIN_PENDING_LIMIT: usize = 1 << 20;

impl Shim {
    fn setup(args: &Args) -> Result<Shim, String> {
        let sigchld = block_sigchld().map_err(|e| format!("signalfd: {e}"))?;
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)
            .map_err(|e| format!("open log {}: {e}", args.log.display()))?;
        let attach_path = args.state_dir.join("attach.sock");
        let _ = fs::remove_file(&attach_path);
        let listener = UnixListener::bind(&attach_path)
            .map_err(|e| format!("bind {}: {e}", attach_path.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;

        let null = || File::open("/dev/null").map_err(|e| e.to_string());
        let mut cmd = Command::new(&args.runtime);
        let runtime_log = args.state_dir.join("runtime.log");
        let pid_file = args.state_dir.join("init.pid");
        cmd.arg("--root")
            .arg(&args.runtime_root)
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(&args.bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let (mut outputs, mut stdin, console) = ([None, None], None, None);
        let console = if args.tty {
            let path = args.state_dir.join("console.sock");
            let _ = fs::remove_file(&path);
            let l =
                UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
            cmd.arg("--console-socket").arg(&path);
            cmd.stdin(null()?).stdout(null()?).stderr(Stdio::null());
            Some(l)
        } else {
            let (out_r, out_w) = pipe().map_err(|e| e.to_string())?;
            let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            if args.stdin {
                let (in_r, in_w) = pipe().map_err(|e| e.to_string())?;
                cmd.stdin(Stdio::from(in_r));
                stdin = Some(File::from(in_w));
            } else {
                cmd.stdin(null()?);
            }
            outputs = [Some(File::from(out_r)), Some(File::from(err_r))];
            console
        };
        cmd.arg(&args.id);
        let status = cmd
            .status()
            .map_err(|e| format!("run {}: {e}", args.runtime.display()))?;
        if !status.success() {
            return Err(runtime_error(&runtime_log)
                .unwrap_or_else(|| format!("runtime create failed ({status})")));
        }
        let mut tty = None;
        if let Some(l) = console {
            let (conn, _) = l.accept().map_err(|e| format!("accept console: {e}"))?;
            let master = recv_fd(conn.as_raw_fd()).map_err(|e| format!("receive pty: {e}"))?;
            // SAFETY: master is a descriptor we just received and own.
            let master_file = unsafe { File::from_raw_fd(master) };
            let dup = master_file.try_clone().map_err(|e| e.to_string())?;
            tty = Some(master);
            outputs = [Some(master_file), None];
            if args.stdin {
                stdin = Some(dup);
            }
        }
        let init_pid: i32 = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("runtime wrote no pid to {}", pid_file.display()))?;
        for f in outputs.iter().flatten() {
            set_nonblocking(f.as_raw_fd());
        }
        if let Some(f) = &stdin {
            set_nonblocking(f.as_raw_fd());
        }
        Ok(Shim {
            state_dir: args.state_dir.clone(),
            init_pid,
            outputs,
            stdin,
            stdin_pending: Vec::new(),
            close_stdin_when_flushed: false,
            tty,
            listener,
            clients: Vec::new(),
            log: LogWriter::new(log_file),
            sigchld,
        })
    }

    fn serve(&mut self) {
        let mut exit_status: Option<i32> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let outputs_done = self.outputs.iter().all(Option::is_none);
            let clients_flushed = self.clients.iter().all(|c| c.queue.is_empty());
            if exit_status.is_some() && outputs_done && clients_flushed {
                break;
            }
            // Orphans that keep our pipes open, or clients that stopped reading, do not hold
            // the container's exit hostage.
            if drain_deadline.is_some_and(|d| Instant::now() > d) {
                break;
            }
            let read_input = self.stdin_pending.len() < STDIN_PENDING_LIMIT;
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(5 + self.clients.len());
            let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            fds.push(pfd(self.sigchld.as_raw_fd(), libc::POLLIN));
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            for o in &self.outputs {
                fds.push(pfd(o.as_ref().map_or(-1, |f| f.as_raw_fd()), libc::POLLIN));
            }
            let stdin_fd = match (&self.stdin, self.stdin_pending.is_empty()) {
                (Some(f), false) => f.as_raw_fd(),
                _ => -1,
            };
            fds.push(pfd(stdin_fd, libc::POLLOUT));
            for c in &self.clients {
                let mut ev = 0;
                if read_input && !c.input_closed {
                    ev |= libc::POLLIN;
                }
                if !c.queue.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pfd(c.stream.as_raw_fd(), ev));
            }
            let polled_clients = self.clients.len();
            let timeout = if exit_status.is_some() { 100 } else { -1 };
            // SAFETY: poll reads/writes the pollfd array we own for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("poll: {}", io::Error::last_os_error());
                break;
            }
            if fds[0].revents != 0 {
                if let Some(st) = self.reap() {
                    exit_status = Some(st);
                    drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
            }
            if fds[1].revents != 0 {
                self.accept();
            }
            for stream in 0..2 {
                if fds[2 + stream].revents != 0 {
                    self.read_output(stream);
                }
            }
            if fds[4].revents != 0 {
                self.flush_stdin();
            }
            // New clients from accept() come after the polled ones; nothing is removed from
            // `clients` until the end of the iteration, so indices stay valid.
            for i in 0..polled_clients {
                let rev = fds[5 + i].revents;
                if rev & libc::POLLOUT != 0 {
                    self.clients[i].flush();
                }
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    && !self.clients[i].input_closed
                {
                    self.read_client(i);
                }
            }
            self.clients.retain(|c| !c.dead);
        }
        let _ = self.log.flush_partial();
        self.write_exit(exit_status.unwrap_or(0));
        // Clients see end of stream when we exit.
    }

    /// Reap children; the init's wait status once it has exited.
    fn reap(&mut self) -> Option<i32> {
        let mut buf = [0u8; 128];
        // SAFETY: read into our buffer from the signalfd; the content is not needed.
        unsafe { libc::read(self.sigchld.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut result = None;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into our integer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == self.init_pid {
                result = Some(status);
            }
        }
        result
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    decoder: Decoder::default(),
                    queue: Vec::new(),
                    input_closed: false,
                    dead: false,
                });
            }
        }
    }

    fn read_output(&mut self, stream: usize) {
        let mut buf = [0u8; 32 * 1024];
        let Some(f) = self.outputs[stream].as_mut() else {
            return;
        };
        match f.read(&mut buf) {
            Ok(0) => self.outputs[stream] = None,
            Ok(n) => {
                let data = &buf[..n];
                if let Err(e) = self.log.write(stream, data) {
                    eprintln!("write log: {e}");
                }
                let kind = if stream == 0 {
                    frame::STDOUT
                } else {
                    frame::STDERR
                };
                let wire = frame::encode(kind, data);
                for c in self.clients.iter_mut().filter(|c| !c.dead) {
                    c.queue.extend_from_slice(&wire);
                    c.flush();
                    if c.queue.len() > CLIENT_QUEUE_LIMIT {
                        eprintln!("dropping an attach client that stopped reading");
                        c.dead = true;
                    }
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: the pty's last slave closed.
            Err(_) => self.outputs[stream] = None,
        }
    }

    /// Input from a client: frames for stdin, resize, close.
    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 32 * 1024];
        match self.clients[i].stream.read(&mut buf) {
            Ok(0) => self.clients[i].input_closed = true,
            Ok(n) => {
                self.clients[i].decoder.feed(&buf[..n]);
                loop {
                    match self.clients[i].decoder.next_frame() {
                        Ok(Some((kind, payload))) => self.handle_frame(kind, &payload),
                        Ok(None) => break,
                        Err(_) => {
                            self.clients[i].dead = true;
                            break;
                        }
                    }
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.clients[i].dead = true,
        }
    }

    fn handle_frame(&mut self, kind: u8, payload: &[u8]) {
        match kind {
            frame::STDIN if self.stdin.is_some() => {
                self.stdin_pending.extend_from_slice(payload);
                self.flush_stdin();
            }
            frame::CLOSE_STDIN if self.tty.is_none() => {
                self.close_stdin_when_flushed = true;
                self.flush_stdin();
            }
            frame::RESIZE if payload.len() == 4 => {
                if let Some(fd) = self.tty {
                    let ws = libc::winsize {
                        ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                        ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads the winsize we pass.
                    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
                }
            }
            _ => {}
        }
    }

    /// Write what the container's stdin can take now; close it once drained if asked to.
    fn flush_stdin(&mut self) {
        let Some(f) = self.stdin.as_mut() else {
            self.stdin_pending.clear();
            return;
        };
        while !self.stdin_pending.is_empty() {
            match f.write(&self.stdin_pending) {
                Ok(n) => {
                    self.stdin_pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The container closed its stdin: input has nowhere to go.
                Err(_) => {
                    self.stdin = None;
                    self.stdin_pending.clear();
                    return;
                }
            }
        }
        if self.close_stdin_when_flushed {
            self.stdin = None;
        }
    }

    fn write_exit(&self, status: i32) {
        let tmp = self.state_dir.join(".exit.tmp");
        let text = format!("{{\"status\":{status},\"time\":\"{}\"}}\n", now_rfc3339());
        let ok = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, self.state_dir.join("exit")));
        if let Err(e) = ok {
            eprintln!("write exit status: {e}");
        }
    }
}

impl Client {
    /// Write as much of the queue as the socket takes now.
    fn flush(&mut self) {
        while !self.queue.is_empty() {
            match self.stream.write(&self.queue) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    self.queue.clear();
                    return;
                }
            }
        }
    }
}

fn block_sigchld() -> io::Result<OwnedFd> {
    // SAFETY: building and applying a signal set we own; signalfd returns a new descriptor.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// The last error the runtime logged (JSON lines with a "msg" field).
fn runtime_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let start = line.find("\"msg\":\"")? + 7;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some('t') => out.push(' '),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// Receive one descriptor over a unix socket (SCM_RIGHTS).
fn recv_fd(sock: RawFd) -> io::Result<RawFd> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u8; 64];
    // SAFETY: msghdr points at buffers we own, sized as declared; CMSG macros walk them.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len();
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no descriptor received",
            ));
        }
        Ok(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
        ))
    }
}
