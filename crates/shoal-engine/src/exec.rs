//! `exec`: run another process in a running container through the runtime's `exec`, with
//! its stdio streamed to the caller (pipes, or a pty whose master shoald holds).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shoal_api::ContainerStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::attach::{AttachEvent, AttachInput, Attached};
use crate::error::{Error, IoContext, Result};
use crate::rootfs::RootfsDirs;
use crate::{names, user, Engine};

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub tty: bool,
    pub stdin: bool,
    pub detach: bool,
    pub privileged: bool,
    pub size: Option<(u16, u16)>,
}

/// Files of one exec session in the container's shim directory.
pub(crate) struct ExecFiles {
    process: PathBuf,
    pub(crate) pid: PathBuf,
    log: PathBuf,
    console: PathBuf,
}

impl ExecFiles {
    pub(crate) fn new(dir: &Path) -> Self {
        let tag: String = names::random_bytes::<6>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ExecFiles {
            process: dir.join(format!("exec-{tag}.json")),
            pid: dir.join(format!("exec-{tag}.pid")),
            log: dir.join(format!("exec-{tag}.log")),
            console: dir.join(format!("exec-{tag}.sock")),
        }
    }

    pub(crate) fn remove(&self) {
        for p in [&self.process, &self.pid, &self.log, &self.console] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The runtime's error, when the process could not be started.
    pub(crate) fn runtime_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        let v: Value = serde_json::from_str(line).ok()?;
        let msg = v["msg"].as_str()?;
        Some(msg.trim_start_matches("container init: ").to_string())
    }
}

impl Engine {
    /// `shoal-runc exec` for a process spec, logging and recording its pid in `files`.
    pub(crate) fn runtime_exec(
        &self,
        files: &ExecFiles,
        process: &Value,
    ) -> Result<tokio::process::Command> {
        std::fs::write(&files.process, serde_json::to_vec(process).expect("json"))
            .ctx(|| "write the exec process spec".into())?;
        let mut cmd = tokio::process::Command::new(&self.inner.cfg.runtime);
        cmd.arg("--root")
            .arg(self.inner.cfg.runtime_root())
            .arg("--log")
            .arg(&files.log)
            .arg("--log-format")
            .arg("json")
            .arg("exec")
            .arg("--process")
            .arg(&files.process)
            .arg("--pid-file")
            .arg(&files.pid);
        Ok(cmd)
    }

    /// The process spec for an exec: the container's, with the request's overrides.
    pub(crate) fn exec_process(&self, id: &str, opts: &ExecOptions) -> Result<Value> {
        let bundle = self.inner.cfg.shim_dir(id).join("config.json");
        let spec: Value = serde_json::from_slice(
            &std::fs::read(&bundle).ctx(|| format!("read {}", bundle.display()))?,
        )
        .map_err(|e| Error::Internal(format!("container spec: {e}")))?;
        let mut p = spec["process"].clone();
        p["args"] = serde_json::json!(opts.cmd);
        p["terminal"] = Value::Bool(opts.tty);
        let mut env: Vec<String> = p["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        env = crate::create::merge_env(&env, &opts.env);
        if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        p["env"] = serde_json::json!(env);
        if !opts.working_dir.is_empty() {
            if !opts.working_dir.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "the working directory {:?} must be absolute",
                    opts.working_dir
                )));
            }
            self.check_exec_cwd(id, &opts.working_dir)?;
            p["cwd"] = Value::String(opts.working_dir.clone());
        }
        if !opts.user.is_empty() {
            // The user database as the container sees it, bind mounts and volumes included
            // (runc resolves it inside the container); the rootfs if it is not running.
            let root = match self.init_pid(id) {
                Some(pid) => PathBuf::from(format!("/proc/{pid}/root")),
                None => RootfsDirs::new(&self.inner.cfg.container_dir(id)).merged,
            };
            let u = user::resolve(&user::RootView::plain(&root), &opts.user)?;
            p["user"] = serde_json::json!({"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids});
            // The spec's HOME is the container user's, added at start; another user gets
            // their own unless the container or this exec set HOME explicitly (docker/runc).
            let configured = self
                .lookup(id)
                .map(|e| e.snapshot().resolved_env)
                .unwrap_or_default();
            let has_home = |env: &[String]| env.iter().any(|e| e.starts_with("HOME="));
            if !has_home(&configured) && !has_home(&opts.env) {
                env.retain(|e| !e.starts_with("HOME="));
                env.push(format!("HOME={}", u.home));
                p["env"] = serde_json::json!(env);
            }
        }
        if opts.privileged {
            let all: Vec<String> = shoal_runtime::process::own_bounding_capabilities();
            p["capabilities"] =
                serde_json::json!({"bounding": all, "effective": all, "permitted": all});
        }
        Ok(p)
    }

    /// The host pid of a running container's init.
    fn init_pid(&self, id: &str) -> Option<i32> {
        let pid = self.lookup(id).ok()?.snapshot().state?.pid;
        (pid > 0).then_some(pid)
    }

    /// docker runs an exec only in a working directory that exists (`run` creates it, the
    /// runtime would too): look it up in the container's own view of its filesystem.
    fn check_exec_cwd(&self, id: &str, cwd: &str) -> Result<()> {
        let Some(pid) = self.init_pid(id) else {
            return Ok(());
        };
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let Ok(path) = shoal_runtime::paths::secure_join(&root, Path::new(cwd)) else {
            return Ok(());
        };
        if path.is_dir() {
            return Ok(());
        }
        let why = if path.exists() {
            "not a directory"
        } else {
            "no such file or directory"
        };
        Err(Error::InvalidArgument(format!(
            "chdir to cwd ({cwd:?}) set in config.json failed: {why}"
        )))
    }

    /// Start a process in a running container; events stream its output and end with its
    /// exit code (docker's 126 when it could not be started).
    pub async fn exec(&self, reference: &str, opts: ExecOptions) -> Result<Attached> {
        let entry = self.lookup(reference)?;
        let c = entry.snapshot();
        match c.status() {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is paused: unpause it before exec",
                    c.name
                )))
            }
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is not running",
                    c.name
                )))
            }
        }
        if opts.cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let process = self.exec_process(&c.id, &opts)?;
        let files = ExecFiles::new(&self.inner.cfg.shim_dir(&c.id));
        let mut cmd = self.runtime_exec(&files, &process)?;
        if opts.detach {
            cmd.arg("--detach");
        }
        let console = if opts.tty {
            let l = std::os::unix::net::UnixListener::bind(&files.console)
                .ctx(|| "bind the exec console socket".into())?;
            cmd.arg("--console-socket").arg(&files.console);
            Some(l)
        } else {
            None
        };
        cmd.arg(&c.id).kill_on_drop(false);
        let piped = !opts.tty && !opts.detach;
        cmd.stdin(if piped && opts.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(if piped { Stdio::piped() } else { Stdio::null() });
        cmd.stderr(if piped { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd
            .spawn()
            .ctx(|| format!("run {}", self.inner.cfg.runtime.display()))?;
        self.emit("exec_start", &c.id, &[("execID", opts.cmd.join(" "))]);

        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel::<AttachInput>(64);
        let mut in_rx = Some(in_rx);
        let mut outputs = Vec::new();
        if piped {
            if let Some(out) = child.stdout.take() {
                outputs.push(tokio::spawn(pump(out, ev_tx.clone(), false)));
            }
            if let Some(err) = child.stderr.take() {
                outputs.push(tokio::spawn(pump(err, ev_tx.clone(), true)));
            }
            let mut stdin = child.stdin.take();
            let mut in_rx = in_rx.take().expect("input not taken yet");
            tokio::spawn(async move {
                while let Some(i) = in_rx.recv().await {
                    let failed = match (i, stdin.as_mut()) {
                        (AttachInput::Stdin(d), Some(s)) => s.write_all(&d).await.is_err(),
                        (AttachInput::CloseStdin, _) => true,
                        _ => false,
                    };
                    if failed {
                        stdin = None;
                    }
                }
            });
        }
        if let Some(listener) = console {
            // The runtime connects once it has created the pty; it may also fail first.
            listener
                .set_nonblocking(true)
                .ctx(|| "the exec console socket".into())?;
            let listener = tokio::net::UnixListener::from_std(listener)
                .ctx(|| "the exec console socket".into())?;
            let accept = async move {
                let (conn, _) = listener.accept().await?;
                let conn = conn.into_std()?;
                conn.set_nonblocking(false)?;
                tokio::task::spawn_blocking(move || -> std::io::Result<OwnedFd> {
                    shoal_runtime::console::recv_fd(conn.as_raw_fd())
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .await
                .map_err(std::io::Error::other)?
            };
            tokio::pin!(accept);
            let master = tokio::select! {
                m = &mut accept => m.ok(),
                // With --detach the runtime exits right after handing the pty over: take
                // it if it was sent (dropping it would hang up the process).
                _ = child.wait() => tokio::time::timeout(Duration::from_secs(1), accept)
                    .await
                    .ok()
                    .and_then(|m| m.ok()),
            };
            if let Some(master) = master {
                if let Some((r, c)) = opts.size {
                    let _ = shoal_runtime::console::set_winsize(master.as_raw_fd(), r, c);
                }
                let input = in_rx.take().expect("input not taken yet");
                outputs.push(pty_session(master, ev_tx.clone(), input));
            }
        }
        let engine = self.clone();
        let id = c.id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            for o in outputs {
                let _ = tokio::time::timeout(Duration::from_secs(2), o).await;
            }
            let started = files.pid.exists();
            let code = match status {
                Ok(s) if started => s.code().unwrap_or(
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0),
                ),
                _ => {
                    // With pipes the runtime already printed why on the process's stderr.
                    if !piped {
                        let msg = files
                            .runtime_error()
                            .unwrap_or_else(|| "the runtime failed to start the process".into());
                        let _ = ev_tx
                            .send(AttachEvent::Stderr(format!("{msg}\n").into_bytes()))
                            .await;
                    }
                    126
                }
            };
            files.remove();
            engine.emit("exec_die", &id, &[("exitCode", code.to_string())]);
            let _ = ev_tx
                .send(AttachEvent::Exit {
                    code,
                    error: String::new(),
                })
                .await;
        });
        Ok(Attached {
            events: ev_rx,
            input: in_tx,
        })
    }
}

async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::Sender<AttachEvent>,
    stderr: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let ev = if stderr {
                    AttachEvent::Stderr(data)
                } else {
                    AttachEvent::Stdout(data)
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Shuttle between a pty master and the session on two blocking threads (a pty master is
/// not something tokio's reactor reads well); returns a handle that ends with the output.
fn pty_session(
    master: OwnedFd,
    tx: mpsc::Sender<AttachEvent>,
    mut input: mpsc::Receiver<AttachInput>,
) -> tokio::task::JoinHandle<()> {
    let fd = master.as_raw_fd();
    let mut writer = std::fs::File::from(master.try_clone().expect("dup pty master"));
    tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            match i {
                AttachInput::Stdin(d) => {
                    if writer.write_all(&d).is_err() {
                        return;
                    }
                }
                AttachInput::Resize(r, c) => {
                    let _ = shoal_runtime::console::set_winsize(fd, r, c);
                }
                AttachInput::CloseStdin => {}
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut reader = std::fs::File::from(master);
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return, // EIO once the exec'd process is gone
                Ok(n) => {
                    if tx
                        .blocking_send(AttachEvent::Stdout(buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}
