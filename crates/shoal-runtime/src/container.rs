//! A container known to the runtime, and the verbs on it. Each verb refreshes the live
//! status from the kernel first, then checks the state machine allows it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups::{self, Stats};
use crate::error::{Context, Error, Result};
use crate::state::{OciState, State, Status};
use crate::sys;

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const EXEC_FIFO: &str = "exec.fifo";

pub struct Container {
    dir: PathBuf,
    state: State,
}

/// Container ids become directory and cgroup names: keep them boring.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

impl Container {
    pub(crate) fn from_state(dir: PathBuf, state: State) -> Self {
        Container { dir, state }
    }

    pub fn load(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = root.join(id);
        let data = match fs::read(dir.join(STATE_FILE)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.into()))
            }
            Err(e) => return Err(e).ctx(|| format!("read state of {id}")),
        };
        let state: State = serde_json::from_slice(&data)
            .map_err(|e| Error::Init(format!("corrupt state file for {id}: {e}")))?;
        Ok(Container { dir, state })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Host PID of init, if it is still alive.
    pub fn pid(&self) -> Option<i32> {
        sys::process_alive(self.state.pid, self.state.pid_start_time).then_some(self.state.pid)
    }

    /// The live status, from the kernel.
    pub fn status(&self) -> Status {
        if self.state.status == Status::Creating {
            return if self.pid().is_some() {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        if self.pid().is_none() {
            return Status::Stopped;
        }
        if self.dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if cgroups::open(&self.state.cgroup)
            .and_then(|c| c.is_frozen())
            .unwrap_or(false)
        {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: "1.2.0".into(),
            id: self.state.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.state.pid
            },
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created.clone(),
            annotations: self.state.annotations.clone(),
            owner: self.state.owner.clone(),
        }
    }

    fn guard(&self, ok: fn(Status) -> bool, action: &'static str) -> Result<Status> {
        let status = self.status();
        if ok(status) {
            Ok(status)
        } else {
            Err(Error::BadState {
                id: self.state.id.clone(),
                status,
                action,
            })
        }
    }

    /// Release init from the exec fifo so it runs the user's program.
    pub fn start(&mut self) -> Result<()> {
        self.guard(
            Status::can_start,
            "start it (only a created container can start)",
        )?;
        let fifo_path = self.dir.join(EXEC_FIFO);
        let mut fifo = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .ctx(|| format!("open {}", fifo_path.display()))?;
        // Wait for init's write, watching that it is still alive: a dead init never writes.
        loop {
            let mut pfd = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&fifo),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u16)) {
                Ok(n) if n > 0 => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).ctx(|| "wait for container init".into()),
            }
            if self.pid().is_none() {
                return Err(Error::Init(format!(
                    "container {} init exited before start",
                    self.id()
                )));
            }
        }
        let mut buf = [0u8; 1];
        let n = fifo.read(&mut buf).ctx(|| "read exec fifo".into())?;
        if n == 0 {
            return Err(Error::Init(format!(
                "container {} init exited before start",
                self.id()
            )));
        }
        fs::remove_file(&fifo_path).ctx(|| format!("remove {}", fifo_path.display()))?;
        self.state.status = Status::Running;
        self.save()
    }

    /// Send a signal to init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        self.guard(Status::can_kill, "signal it (it is not running)")?;
        if all {
            return signal_all(cgroups::open(&self.state.cgroup)?.as_ref(), signal);
        }
        kill(Pid::from_raw(self.state.pid), signal).ctx(|| format!("signal {signal} to init"))
    }

    /// Remove the container: its cgroup and state. A running or paused container needs
    /// `force` and is killed first; a created one (nothing ran yet) does not, as with runc.
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        let must_kill = !status.can_delete();
        if must_kill && !force && status != Status::Created {
            return Err(Error::BadState {
                id: self.state.id.clone(),
                status,
                action: "delete it (stop it first or use --force)",
            });
        }
        let cgroup = cgroups::open(&self.state.cgroup)?;
        if must_kill {
            let _ = kill(Pid::from_raw(self.state.pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = cgroup.pids()?;
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::cgroup(
                    &self.state.cgroup.path,
                    format!("processes {pids:?} are still running"),
                ));
            }
            // Kill again each round: a process may have forked while we were killing.
            if must_kill {
                signal_all(cgroup.as_ref(), Signal::SIGKILL)?;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cgroup.destroy()?;
        fs::remove_dir_all(&self.dir).ctx(|| format!("remove {}", self.dir.display()))
    }

    /// Change resource limits of a live container (docker update).
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.guard(Status::can_kill, "update it (it is not running)")?;
        cgroups::open(&self.state.cgroup)?.set(resources)
    }

    pub fn pause(&mut self) -> Result<()> {
        self.guard(
            Status::can_pause,
            "pause it (only a running container can be paused)",
        )?;
        cgroups::open(&self.state.cgroup)?.freeze()?;
        self.state.status = Status::Paused;
        self.save()
    }

    pub fn resume(&mut self) -> Result<()> {
        self.guard(Status::can_resume, "resume it (it is not paused)")?;
        cgroups::open(&self.state.cgroup)?.thaw()?;
        self.state.status = Status::Running;
        self.save()
    }

    /// PIDs of the container's processes.
    pub fn pids(&self) -> Result<Vec<i32>> {
        cgroups::open(&self.state.cgroup)?.pids()
    }

    pub fn stats(&self) -> Result<Stats> {
        cgroups::open(&self.state.cgroup)?.stats()
    }

    fn save(&self) -> Result<()> {
        let data = serde_json::to_vec(&self.state).expect("serialise state");
        sys::write_atomic(&self.dir.join(STATE_FILE), &data)
    }
}

/// Signal every process of a cgroup. The cgroup is frozen meanwhile (when it can be) so no
/// process forks past the list, then thawed so the signal is delivered (as runc does).
fn signal_all(cgroup: &dyn cgroups::CgroupManager, signal: Signal) -> Result<()> {
    let was_frozen = cgroup.is_frozen().unwrap_or(false);
    let froze = !was_frozen && cgroup.freeze().is_ok();
    for pid in cgroup.pids()? {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    if froze || (was_frozen && signal == Signal::SIGKILL) {
        cgroup.thaw()?;
    }
    Ok(())
}

/// Ids of all containers under a runtime root.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("read {}", root.display())),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(STATE_FILE).exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_3").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id(&"a".repeat(129)).is_err());
    }
}
