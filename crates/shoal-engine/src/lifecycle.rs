//! start, stop, kill, restart, remove, wait, and what happens when a container exits.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_api::v1::{Container, ContainerState};
use shoal_api::ContainerStatus;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::error::{Error, IoContext, Result};
use crate::restart::Policy;
use crate::rootfs::{self, RootfsDirs};
use crate::shim::{self, ShimInfo};
use crate::spec::{self, SpecInput};
use crate::{user, Engine, Entry};

const DEFAULT_STOP_TIMEOUT: i32 = 10;

pub(crate) fn is_running(s: ContainerStatus) -> bool {
    matches!(
        s,
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
    )
}

impl Engine {
    /// Start a created or exited container (docker start). Starting a running one is a no-op.
    pub async fn start(&self, reference: &str) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        self.reset_restart_manager(&entry)?;
        self.start_locked(&entry, false).await.map(|_| ())
    }

    /// A user's start or restart: the policy starts counting again (docker's
    /// ResetRestartManager(true)).
    pub(crate) fn reset_restart_manager(&self, entry: &Arc<Entry>) -> Result<()> {
        if entry.status() != ContainerStatus::Running {
            self.update(entry, |r| r.restart_count = 0)?;
            *entry.backoff.lock().expect("backoff lock") = None;
        }
        Ok(())
    }

    /// Start, returning a connection to the shim's attach socket made before the program
    /// runs, so no output is lost. The caller holds the operation lock.
    pub(crate) async fn start_locked(
        &self,
        entry: &Arc<Entry>,
        attach: bool,
    ) -> Result<Option<UnixStream>> {
        let c = entry.snapshot();
        match c.status() {
            ContainerStatus::Running => {
                return if attach {
                    Ok(Some(self.connect_shim(&c.id).await?))
                } else {
                    Ok(None)
                };
            }
            ContainerStatus::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is paused: unpause it instead of starting it",
                    c.name
                )))
            }
            ContainerStatus::Removing | ContainerStatus::Dead => {
                return Err(Error::Conflict(format!(
                    "container {} is being removed",
                    c.name
                )))
            }
            _ => {}
        }
        let dirs = RootfsDirs::new(&self.inner.cfg.container_dir(&c.id));
        let image = self.image(&c.image_id).await?;
        let layers = self.layer_dirs(image).await?;
        dirs.mount(&layers)?;
        let result = self.start_mounted(entry, &c, &dirs, attach).await;
        if let Err(e) = &result {
            self.net_down(entry).await;
            let _ = dirs.unmount();
            for m in c.mount_points.iter().filter(|m| m.r#type == "volume") {
                self.unmount_volume_if_unused(&m.name);
            }
            let (message, exit_code) = match e {
                Error::StartFailed { message, exit_code } => (message.clone(), *exit_code),
                other => (other.to_string(), 128),
            };
            let _ = self.update(entry, |r| {
                let st = r.state.get_or_insert_with(Default::default);
                st.error = message;
                st.exit_code = exit_code;
            });
        }
        result
    }

    async fn start_mounted(
        &self,
        entry: &Arc<Entry>,
        c: &Container,
        dirs: &RootfsDirs,
        attach: bool,
    ) -> Result<Option<UnixStream>> {
        let cfg = &self.inner.cfg;
        let id = &c.id;
        let config = c.config.clone().unwrap_or_default();
        let host = c.host_config.clone().unwrap_or_default();
        // Volumes first: the user database may come from a mount (-v ./passwd:/etc/passwd).
        self.prepare_volumes(&c.mount_points, &dirs.merged)?;
        let view = user::RootView {
            rootfs: &dirs.merged,
            mounts: c
                .mount_points
                .iter()
                .map(|m| (m.destination.as_str(), Path::new(m.source.as_str())))
                .collect(),
        };
        let mut user = user::resolve(&view, &config.user)?;
        for g in &host.group_add {
            let gid = user::resolve_group(&view, g)?;
            if !user.additional_gids.contains(&gid) {
                user.additional_gids.push(gid);
            }
        }
        let caps = crate::security::effective_caps(&host)?;
        let seccomp = crate::security::seccomp(&host, &caps)?;
        let init_path = cfg.init_binary();
        let init_binary = host.init.then_some(init_path.as_path());
        let net = self.net_up(entry, c).await?;
        let host_network = matches!(net.netns, crate::network::NetNs::Host);
        let hostname = if let Some(h) = &net.hostname {
            h.clone()
        } else if host_network && config.hostname == id[..12] {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        rootfs::write_etc_files(&dirs.etc, &hostname, &net.hosts, &net.resolv_conf)?;
        let env = spec::runtime_env(c, &hostname, &user);
        let spec = spec::build(&SpecInput {
            container: c,
            rootfs: &dirs.merged,
            user: &user,
            env,
            hostname: &hostname,
            etc_dir: &dirs.etc,
            cgroup_path: format!("/{}/{}", cfg.cgroup_parent.trim_matches('/'), id),
            swap_supported: spec::swap_supported(),
            caps,
            seccomp,
            init_binary,
            netns: &net.netns,
        });
        let shim_dir = cfg.shim_dir(id);
        std::fs::create_dir_all(&shim_dir).ctx(|| format!("create {}", shim_dir.display()))?;
        let _ = std::fs::remove_file(shim_dir.join("exit"));
        let bundle_config =
            serde_json::to_vec_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(shim_dir.join("config.json"), bundle_config)
            .ctx(|| "write bundle config".into())?;
        self.runtime_delete(id).await;

        let info = shim::spawn(
            cfg,
            id,
            &shim_dir,
            c.log_path.as_ref(),
            config.open_stdin,
            config.tty,
        )
        .await?;
        let stream = if attach {
            match self.connect_shim(id).await {
                Ok(s) => Some(s),
                Err(e) => {
                    self.abort_created(id).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let rt = self.inner.runtime.clone();
        let cid = id.clone();
        let started = tokio::task::spawn_blocking(move || rt.load(&cid)?.start())
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Err(e) = started {
            self.abort_created(id).await;
            return Err(Error::StartFailed {
                exit_code: 128,
                message: e.to_string(),
            });
        }
        // Mark it running, then watch the shim (finalize only acts on a running container).
        // A failure to save the record is logged, not returned: the container runs and must
        // stay supervised.
        self.update_running(entry, &info);
        self.spawn_monitor(entry.clone(), info);
        if let Some(hc) = c.resolved_healthcheck.clone() {
            self.spawn_health_monitor(entry.clone(), hc);
        }
        tracing::info!(container_id = %id, pid = info.init_pid, "started container");
        Ok(stream)
    }

    fn update_running(&self, entry: &Arc<Entry>, info: &ShimInfo) {
        let saved = self.update(entry, |r| {
            r.state = Some(ContainerState {
                status: ContainerStatus::Running as i32,
                pid: info.init_pid,
                started_at: crate::now(),
                ..Default::default()
            });
            r.shim_pid = info.shim_pid;
            r.shim_start_time = info.shim_start_time;
            r.manually_stopped = false;
        });
        self.emit("start", &entry.id, &[]);
        if let Err(e) = saved {
            tracing::error!(container_id = %entry.id, error = %e, "saving the running container failed");
        }
    }

    pub(crate) async fn connect_shim(&self, id: &str) -> Result<UnixStream> {
        let path = self.inner.cfg.shim_dir(id).join("attach.sock");
        UnixStream::connect(&path)
            .await
            .ctx(|| format!("attach to container {}", &id[..12]))
    }

    /// A created-but-not-started runtime container that must go: kill it, the shim follows.
    async fn abort_created(&self, id: &str) {
        self.runtime_delete(id).await;
    }

    /// Force-delete the runtime's container if it exists (cgroup and runtime state).
    async fn runtime_delete(&self, id: &str) {
        let rt = self.inner.runtime.clone();
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || match rt.load(&id) {
            Ok(c) => c.delete(true),
            Err(e) => Err(e),
        })
        .await;
    }

    fn spawn_monitor(&self, entry: Arc<Entry>, info: ShimInfo) {
        let engine = self.clone();
        tokio::spawn(async move {
            wait_process_exit(info.shim_pid, info.shim_start_time).await;
            engine.finalize(&entry).await;
        });
    }

    /// The shim has exited: record how the container ended and clean up after it.
    async fn finalize(&self, entry: &Arc<Entry>) {
        let c = entry.snapshot();
        if !is_running(c.status()) {
            return;
        }
        let id = c.id.clone();
        let shim_dir = self.inner.cfg.shim_dir(&id);
        let (exit_code, finished_at, error) = match shim::read_exit(&shim_dir) {
            Some((status, time)) => (shim::exit_code(status), time, String::new()),
            None => {
                let why = shim_failure(
                    &std::fs::read_to_string(shim_dir.join("shim.log")).unwrap_or_default(),
                );
                (
                    255,
                    crate::now(),
                    format!("the container's supervisor exited unexpectedly: {why}"),
                )
            }
        };
        let rt = self.inner.runtime.clone();
        let rid = id.clone();
        let oom_killed = tokio::task::spawn_blocking(move || {
            let container = rt.load(&rid).ok()?;
            let oom = container.stats().map(|s| s.oom_kills > 0).unwrap_or(false);
            let _ = container.delete(true);
            Some(oom)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        self.net_down(entry).await;
        let dirs = RootfsDirs::new(&self.inner.cfg.container_dir(&id));
        if let Err(e) = dirs.unmount() {
            tracing::warn!(container_id = %id, error = %e, "unmounting rootfs failed");
        }
        let _ = std::fs::remove_dir_all(&shim_dir);
        let auto_remove = c.host_config.as_ref().is_some_and(|h| h.auto_remove);
        let policy = Policy::from_proto(
            c.host_config
                .as_ref()
                .and_then(|h| h.restart_policy.as_ref()),
        );
        let restart =
            !auto_remove && policy.should_restart(exit_code, c.manually_stopped, c.restart_count);
        let started_at = c
            .state
            .as_ref()
            .map(|s| s.started_at.clone())
            .unwrap_or_default();
        let ran_for = ran_for(&started_at, &finished_at);
        let updated = self.update(entry, |r| {
            if restart {
                r.restart_count += 1;
            }
            r.state = Some(ContainerState {
                status: if restart {
                    ContainerStatus::Restarting
                } else {
                    ContainerStatus::Exited
                } as i32,
                exit_code,
                oom_killed,
                error,
                started_at: r
                    .state
                    .as_ref()
                    .map(|s| s.started_at.clone())
                    .unwrap_or_default(),
                finished_at,
                pid: 0,
                health: None,
            });
            r.shim_pid = 0;
            r.shim_start_time = 0;
        });
        if let Err(e) = updated {
            tracing::error!(container_id = %id, error = %e, "saving exited container failed");
        }
        tracing::info!(container_id = %id, exit_code, oom_killed, restart, "container exited");
        for m in c.mount_points.iter().filter(|m| m.r#type == "volume") {
            self.unmount_volume_if_unused(&m.name);
        }
        if oom_killed {
            self.emit("oom", &id, &[]);
        }
        self.emit("die", &id, &[("exitCode", exit_code.to_string())]);
        if restart {
            let delay = {
                let mut b = entry.backoff.lock().expect("backoff lock");
                let d = crate::restart::next_delay(*b, ran_for);
                *b = Some(d);
                d
            };
            self.schedule_restart(entry.clone(), delay);
        }
        if auto_remove {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.remove(&id, true, true).await {
                    tracing::warn!(container_id = %id, error = %e, "auto-remove failed");
                }
            });
        }
    }

    /// Start a container again after its restart delay, unless the user stopped or removed
    /// it meanwhile.
    pub(crate) fn schedule_restart(&self, entry: Arc<Entry>, delay: Duration) {
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = engine
                .inner
                .recovered
                .subscribe()
                .wait_for(|done| *done)
                .await;
            let _op = entry.op.lock().await;
            if entry.status() != ContainerStatus::Restarting {
                return;
            }
            if let Err(e) = engine.start_locked(&entry, false).await {
                tracing::warn!(container_id = %entry.id, error = %e, "restart failed");
                let _ = engine.update(&entry, |r| {
                    let st = r.state.get_or_insert_with(Default::default);
                    st.status = ContainerStatus::Exited as i32;
                    st.error = e.to_string();
                });
            }
        });
    }

    /// Containers the daemon starts when it starts (restart policy, docker's rules).
    pub(crate) fn restart_on_daemon_start(&self, entry: &Arc<Entry>) {
        let c = entry.snapshot();
        let st = c.state.clone().unwrap_or_default();
        let ever_started = !st.started_at.is_empty();
        let policy = Policy::from_proto(
            c.host_config
                .as_ref()
                .and_then(|h| h.restart_policy.as_ref()),
        );
        if ever_started
            && st.status() == ContainerStatus::Exited
            && policy.restart_on_daemon_start(st.exit_code, c.manually_stopped, c.restart_count)
        {
            let _ = self.update(entry, |r| {
                r.state.get_or_insert_with(Default::default).status =
                    ContainerStatus::Restarting as i32;
            });
            self.schedule_restart(entry.clone(), Duration::ZERO);
        }
    }

    /// Re-attach to a container found running when the daemon starts.
    pub(crate) async fn reattach(&self, entry: &Arc<Entry>) {
        let c = entry.snapshot();
        if shim::shim_alive(c.shim_pid, c.shim_start_time) {
            tracing::info!(container_id = %c.id, "re-attached to running container");
            self.spawn_monitor(
                entry.clone(),
                ShimInfo {
                    shim_pid: c.shim_pid,
                    shim_start_time: c.shim_start_time,
                    init_pid: c.state.as_ref().map_or(0, |s| s.pid),
                },
            );
            // Health checks resume where the previous daemon left them.
            if let Some(hc) = c.resolved_healthcheck.clone() {
                self.spawn_health_monitor(entry.clone(), hc);
            }
        } else {
            self.finalize(entry).await;
        }
    }

    /// Stop: the stop signal, then SIGKILL after the timeout (docker stop).
    pub async fn stop(&self, reference: &str, timeout: Option<i32>) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        self.stop_locked(&entry, timeout).await
    }

    async fn stop_locked(&self, entry: &Arc<Entry>, timeout: Option<i32>) -> Result<()> {
        let c = entry.snapshot();
        if !is_running(c.status()) {
            return Ok(());
        }
        // A user stop suspends the restart policy (docker's HasBeenManuallyStopped).
        self.update(entry, |r| r.manually_stopped = true)?;
        if c.status() == ContainerStatus::Restarting {
            // Nothing runs between two restarts: just cancel the next one.
            self.update(entry, |r| {
                r.state.get_or_insert_with(Default::default).status =
                    ContainerStatus::Exited as i32;
            })?;
            self.emit("stop", &c.id, &[]);
            return Ok(());
        }
        let timeout = timeout
            .or(c.config.as_ref().and_then(|c| c.stop_timeout))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let signal =
            shoal_runtime::sys::parse_signal(&c.resolved_stop_signal).unwrap_or(Signal::SIGTERM);
        let rx = entry.state.subscribe();
        if c.status() == ContainerStatus::Paused {
            self.runtime_signal(&c.id, Signal::SIGKILL, true).await;
        } else {
            self.runtime_signal(&c.id, signal, false).await;
        }
        let graceful = match timeout {
            t if t < 0 => None,
            t => Some(Duration::from_secs(t as u64)),
        };
        self.emit("kill", &c.id, &[("signal", (signal as i32).to_string())]);
        if wait_not_running(rx.clone(), graceful).await {
            self.emit("stop", &c.id, &[]);
            return Ok(());
        }
        tracing::info!(container_id = %c.id, timeout, "container did not stop in time: killing it");
        self.runtime_signal(&c.id, Signal::SIGKILL, true).await;
        if wait_not_running(rx, Some(Duration::from_secs(30))).await {
            self.emit("stop", &c.id, &[]);
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "container {} did not exit after SIGKILL",
                c.name
            )))
        }
    }

    async fn runtime_signal(&self, id: &str, signal: Signal, all: bool) {
        let rt = self.inner.runtime.clone();
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || rt.load(&id)?.kill(signal, all)).await;
    }

    /// Send a signal to the container's main process (docker kill; default SIGKILL).
    pub async fn kill(&self, reference: &str, signal: &str) -> Result<()> {
        let entry = self.lookup(reference)?;
        let c = entry.snapshot();
        let sig = if signal.is_empty() { "SIGKILL" } else { signal };
        let sig = shoal_runtime::sys::parse_signal(sig)
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal:?}")))?;
        match c.status() {
            ContainerStatus::Running | ContainerStatus::Paused => {}
            ContainerStatus::Restarting => {
                return Err(Error::Conflict(format!(
                    "container {} is restarting: wait until it is running",
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
        self.update(&entry, |r| r.manually_stopped = true)?;
        let rt = self.inner.runtime.clone();
        let id = c.id.clone();
        tokio::task::spawn_blocking(move || rt.load(&id)?.kill(sig, false))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.emit("kill", &c.id, &[("signal", (sig as i32).to_string())]);
        Ok(())
    }

    pub async fn restart(&self, reference: &str, timeout: Option<i32>) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        self.stop_locked(&entry, timeout).await?;
        self.reset_restart_manager(&entry)?;
        self.start_locked(&entry, false).await?;
        self.emit("restart", &entry.id, &[]);
        Ok(())
    }

    /// Remove a container; a running one only with `force` (killed first). With `volumes`,
    /// its anonymous volumes go too (docker rm -v).
    pub async fn remove(&self, reference: &str, force: bool, volumes: bool) -> Result<()> {
        let entry = self.lookup(reference)?;
        let _op = entry.op.lock().await;
        let mut c = entry.snapshot();
        if c.status() == ContainerStatus::Restarting {
            // Between two restarts nothing runs; removing it cancels the restart.
            c = self.update(&entry, |r| {
                r.state.get_or_insert_with(Default::default).status =
                    ContainerStatus::Exited as i32;
            })?;
        }
        if is_running(c.status()) {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove running container {}: stop it first or use --force",
                    c.name
                )));
            }
            // Like a stop: the kill must not trigger the restart policy.
            self.update(&entry, |r| r.manually_stopped = true)?;
            let rx = entry.state.subscribe();
            self.runtime_signal(&c.id, Signal::SIGKILL, true).await;
            if !wait_not_running(rx, Some(Duration::from_secs(30))).await {
                return Err(Error::Internal(format!(
                    "container {} did not exit after SIGKILL",
                    c.name
                )));
            }
        }
        self.update(&entry, |r| {
            r.state.get_or_insert_with(Default::default).status = ContainerStatus::Removing as i32;
        })?;
        self.runtime_delete(&c.id).await;
        let dirs = RootfsDirs::new(&self.inner.cfg.container_dir(&c.id));
        dirs.unmount()?;
        let _ = std::fs::remove_dir_all(self.inner.cfg.shim_dir(&c.id));
        let dir = self.inner.cfg.container_dir(&c.id);
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
        self.emit("destroy", &c.id, &[]);
        self.unregister(&c.id);
        if volumes {
            for m in c.mount_points.iter().filter(|m| m.r#type == "volume") {
                let anonymous = self.inspect_volume(&m.name).is_ok_and(|v| v.anonymous);
                if anonymous {
                    if let Err(e) = self.remove_volume(&m.name, true) {
                        tracing::info!(volume = %m.name, error = %e, "kept anonymous volume");
                    }
                }
            }
        }
        tracing::info!(container_id = %c.id, "removed container");
        Ok(())
    }

    /// Block until the container is not running; its exit code and error (docker wait).
    pub async fn wait(&self, reference: &str) -> Result<(i32, String)> {
        let entry = self.lookup(reference)?;
        let rx = entry.state.subscribe();
        drop(entry);
        wait_not_running(rx.clone(), None).await;
        let st = rx.borrow().clone();
        Ok((st.exit_code, st.error))
    }

    /// State changes of a container, for attach.
    pub(crate) fn subscribe(
        &self,
        reference: &str,
    ) -> Result<(Arc<Entry>, watch::Receiver<ContainerState>)> {
        let entry = self.lookup(reference)?;
        let rx = entry.state.subscribe();
        Ok((entry, rx))
    }
}

/// How long a container ran, from its RFC 3339 start and finish times.
fn ran_for(started: &str, finished: &str) -> Duration {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (parse(started), parse(finished)) {
        (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// Wait until the state is not running; false if `timeout` passed first. A dropped sender
/// (container removed) counts as not running.
pub(crate) async fn wait_not_running(
    mut rx: watch::Receiver<ContainerState>,
    timeout: Option<Duration>,
) -> bool {
    let fut = async {
        loop {
            if !is_running(rx.borrow_and_update().status()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.is_ok(),
        None => {
            fut.await;
            true
        }
    }
}

/// Resolves when the process exits (pidfd), or at once if it is already gone.
async fn wait_process_exit(pid: i32, start_time: u64) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return;
        }
        // No pidfd (old kernel, descriptor limit): poll instead of giving up on it.
        while shim::shim_alive(pid, start_time) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return;
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pid may have been reused between the shim's exit and pidfd_open.
    if !shim::shim_alive(pid, start_time) {
        return;
    }
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and the same for
    // the AsyncFd's whole life.
    match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while shim::shim_alive(pid, start_time) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The useful part of a supervisor's log: its panic message, or its last line.
fn shim_failure(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let msg = lines.get(i + 1).copied().unwrap_or_default();
        return format!("{} {}", lines[i].trim(), msg.trim());
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .map_or_else(
            || "no reason recorded".to_string(),
            |l| l.trim().to_string(),
        )
}
