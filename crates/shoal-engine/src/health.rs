//! Health checks: a probe run as an exec on the container's interval, with docker's states
//! (starting, healthy, unhealthy), failing streak, last five results and events.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::v1::{Health, HealthCheck, HealthLog};
use shoal_api::ContainerStatus;
use tokio::io::AsyncReadExt;

use crate::exec::{ExecFiles, ExecOptions};
use crate::{Engine, Entry};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: i32 = 3;
/// Output kept per probe, as docker.
const MAX_OUTPUT: usize = 4096;
const KEEP_RESULTS: usize = 5;

fn duration(ns: i64, default: Duration) -> Duration {
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        default
    }
}

/// The probe command: CMD args as they are, CMD-SHELL through /bin/sh -c.
fn probe_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
        }
        _ => None,
    }
}

/// Next health after a probe result; pure, so the rules are tested without a container.
pub(crate) fn next_health(
    prev: &Health,
    exit_code: i32,
    retries: i32,
    in_start_period: bool,
) -> Health {
    let mut h = prev.clone();
    if exit_code == 0 {
        h.status = "healthy".into();
        h.failing_streak = 0;
    } else if !(in_start_period && h.status == "starting") {
        // Failures during the start period do not count until the first success.
        h.failing_streak += 1;
        if h.failing_streak >= retries {
            h.status = "unhealthy".into();
        }
    }
    h
}

impl Engine {
    /// Probe this run of the container until it stops (or starts again, which starts a new
    /// monitor).
    pub(crate) fn spawn_health_monitor(&self, entry: Arc<Entry>, hc: HealthCheck) {
        let Some(cmd) = probe_command(&hc.test) else {
            return;
        };
        let engine = self.clone();
        let run = entry
            .snapshot()
            .state
            .map(|s| s.started_at)
            .unwrap_or_default();
        let interval = duration(hc.interval_ns, DEFAULT_INTERVAL);
        let timeout = duration(hc.timeout_ns, DEFAULT_TIMEOUT);
        let start_period = duration(hc.start_period_ns, Duration::ZERO);
        let retries = if hc.retries > 0 {
            hc.retries
        } else {
            DEFAULT_RETRIES
        };
        let started = Instant::now();
        tokio::spawn(async move {
            let _ = engine.update(&entry, |r| {
                // A new run starts over; a daemon restart keeps what was learnt.
                if let Some(st) = r.state.as_mut().filter(|st| st.health.is_none()) {
                    st.health = Some(Health {
                        status: "starting".into(),
                        ..Default::default()
                    });
                }
            });
            loop {
                tokio::time::sleep(interval).await;
                let c = entry.snapshot();
                let st = c.state.clone().unwrap_or_default();
                if st.started_at != run
                    || !matches!(
                        st.status(),
                        ContainerStatus::Running | ContainerStatus::Paused
                    )
                {
                    return;
                }
                if st.status() == ContainerStatus::Paused {
                    continue;
                }
                let begin = crate::now();
                let (code, output) = engine.probe(&c.id, &cmd, timeout).await;
                let log = HealthLog {
                    start: begin,
                    end: crate::now(),
                    exit_code: code,
                    output,
                };
                let mut transition = None;
                let _ = engine.update(&entry, |r| {
                    let Some(st) = r.state.as_mut() else { return };
                    if st.started_at != run {
                        return;
                    }
                    let prev = st.health.clone().unwrap_or_default();
                    let mut h = next_health(&prev, code, retries, started.elapsed() < start_period);
                    h.log.push(log.clone());
                    let excess = h.log.len().saturating_sub(KEEP_RESULTS);
                    h.log.drain(..excess);
                    if h.status != prev.status {
                        transition = Some(h.status.clone());
                    }
                    st.health = Some(h);
                });
                if let Some(status) = transition {
                    engine.emit(&format!("health_status: {status}"), &c.id, &[]);
                }
            }
        });
    }

    /// Run one probe; (exit code, output). A probe still running at `timeout` is killed and
    /// counts as a failure, as docker's does.
    async fn probe(&self, id: &str, cmd: &[String], timeout: Duration) -> (i32, String) {
        let opts = ExecOptions {
            cmd: cmd.to_vec(),
            ..Default::default()
        };
        let process = match self.exec_process(id, &opts) {
            Ok(p) => p,
            Err(e) => return (-1, e.to_string()),
        };
        let files = ExecFiles::new(&self.inner.cfg.shim_dir(id));
        let mut command = match self.runtime_exec(&files, &process) {
            Ok(c) => c,
            Err(e) => return (-1, e.to_string()),
        };
        command
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return (-1, format!("run the probe: {e}")),
        };
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let collect = async {
            // Both at once, so a probe that fills one pipe while we wait on the other does
            // not hang until the timeout.
            let (mut buf, mut ebuf) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(o) = out.as_mut() {
                    let _ = o.read_to_end(&mut buf).await;
                }
            };
            let read_err = async {
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_end(&mut ebuf).await;
                }
            };
            tokio::join!(read_out, read_err);
            buf.extend_from_slice(&ebuf);
            let status = child.wait().await;
            (status, buf)
        };
        let result = tokio::time::timeout(timeout, collect).await;
        let outcome = match result {
            Ok((Ok(status), buf)) if files.pid.exists() => {
                let code = status.code().unwrap_or(-1);
                let text = String::from_utf8_lossy(&buf[..buf.len().min(MAX_OUTPUT)]).into_owned();
                (code, text)
            }
            Ok(_) => (
                -1,
                files
                    .runtime_error()
                    .unwrap_or_else(|| "the probe could not be started".into()),
            ),
            Err(_) => {
                // Kill the probe inside the container with everything it started (`sh -c
                // 'a; b'` forks): the runtime makes an exec'd process a session and group
                // leader, and a shell without job control keeps its children in that group.
                // The runtime process follows.
                if let Some(pid) = std::fs::read_to_string(&files.pid)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                {
                    use nix::sys::signal::{kill, killpg, Signal};
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = killpg(pid, Signal::SIGKILL);
                    let _ = kill(pid, Signal::SIGKILL);
                }
                (
                    -1,
                    format!("Health check exceeded timeout ({})", go_duration(timeout)),
                )
            }
        };
        files.remove();
        outcome
    }
}

/// A duration as Go prints one (`300ms`, `30s`, `1m30s`, `1.5s`), since docker's timeout
/// message shows the probe timeout that way.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    match ns {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", trim(format!("{:.3}", n as f64 / 1e3))),
        n if n < 1_000_000_000 => format!("{}ms", trim(format!("{:.6}", n as f64 / 1e6))),
        n => {
            let secs = n as f64 / 1e9;
            let (h, rest) = ((secs / 3600.0).floor(), secs % 3600.0);
            let (m, s) = ((rest / 60.0).floor(), rest % 60.0);
            let s = format!("{}s", trim(format!("{s:.9}")));
            match (h as u64, m as u64) {
                (0, 0) => s,
                (0, m) => format!("{m}m{s}"),
                (h, m) => format!("{h}h{m}m{s}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(status: &str, streak: i32) -> Health {
        Health {
            status: status.into(),
            failing_streak: streak,
            log: vec![],
        }
    }

    #[test]
    fn health_transitions() {
        assert_eq!(
            next_health(&h("starting", 0), 0, 3, false).status,
            "healthy"
        );
        let f1 = next_health(&h("healthy", 0), 1, 3, false);
        assert_eq!((f1.status.as_str(), f1.failing_streak), ("healthy", 1));
        let f3 = next_health(&h("healthy", 2), 1, 3, false);
        assert_eq!((f3.status.as_str(), f3.failing_streak), ("unhealthy", 3));
        let grace = next_health(&h("starting", 0), 1, 1, true);
        assert_eq!(
            (grace.status.as_str(), grace.failing_streak),
            ("starting", 0),
            "start period"
        );
        assert_eq!(
            next_health(&h("unhealthy", 5), 0, 3, false).failing_streak,
            0
        );
    }

    #[test]
    fn timeouts_print_like_go() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(300)), "300ms");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn probe_commands() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(probe_command(&s(&["CMD", "true"])), Some(s(&["true"])));
        assert_eq!(
            probe_command(&s(&["CMD-SHELL", "exit 1"])),
            Some(s(&["/bin/sh", "-c", "exit 1"]))
        );
        assert_eq!(probe_command(&s(&["NONE"])), None);
        assert_eq!(probe_command(&s(&[])), None);
    }
}
