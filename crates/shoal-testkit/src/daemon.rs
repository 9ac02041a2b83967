//! A real `shoald` for one test: its own data root, exec root, socket and cgroup parent
//! under a unique short directory, its own network namespace standing in for the host's
//! (so its bridges, nftables table, sysctls and published ports never meet another test's),
//! and the `shoal` CLI pointed at it. Everything it made (containers, shims, mounts,
//! cgroups, links, files) is removed when it is dropped, also when the test failed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{bin, unique_name, wait_until};

pub struct Daemon {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    /// Environment the daemon runs with (test hooks), kept across restarts.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with_env(&[])
    }

    /// A daemon with these environment variables (test hooks such as
    /// `SHOAL_TEST_CONTENT_RATE`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Daemon {
        let name = unique_name("sh");
        let root = PathBuf::from("/tmp").join(&name);
        std::fs::create_dir_all(&root).expect("create daemon root");
        let ns = root.join("hostns");
        shoal_net::netns::create(&ns).expect("create the daemon's network namespace");
        shoal_net::link::loopback_only(&ns).expect("bring lo up in the daemon's namespace");
        let mut d = Daemon {
            socket: root.join("s.sock"),
            cgroup_parent: format!("shoal-t-{name}"),
            root,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        d.spawn();
        d
    }

    pub fn data_root(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.root.join("x")
    }

    /// The network namespace the daemon runs in: the test's stand-in for the host's.
    pub fn netns(&self) -> PathBuf {
        self.root.join("hostns")
    }

    /// A command run in the daemon's network namespace (the "host" of its containers).
    pub fn host_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    /// Run a command in the daemon's namespace; its output, whether it succeeded.
    pub fn host_run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = self
            .host_cmd(program, args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("shoald.log"))
            .expect("open daemon log");
        // nsenter execs shoald in place: the child's pid is the daemon's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(bin("shoald"))
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--log-level")
            .arg("debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn shoald");
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_until(
            "shoald listens on its socket",
            Duration::from_secs(20),
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        );
    }

    /// Stop the daemon the hard way (containers keep running under their shims).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the daemon again on the same roots.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start a stopped or killed daemon again on the same roots.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Send `sig` to the daemon (SIGSTOP freezes it like a hung host, SIGCONT thaws it).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Whether the daemon process is running (not killed or stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stop the daemon cleanly (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        // A frozen daemon cannot handle SIGTERM.
        self.signal(libc::SIGCONT);
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A `shoal` command pointed at this daemon.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("shoal"));
        c.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        c
    }

    pub fn shoal(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// Run `shoal`, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert!(
            out.status.success(),
            "shoal {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `shoal`, require failure, return stderr.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.shoal(args);
        assert!(
            !out.status.success(),
            "shoal {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A daemon with the busybox test image loaded: what most tests start from.
    pub fn with_busybox() -> Daemon {
        let d = Daemon::start();
        d.load_busybox();
        d
    }

    /// `shoal inspect <name>` as JSON: the one object.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let mut v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0].take()
    }

    pub fn load_busybox(&self) {
        let image = crate::busybox_image().expect("build the busybox test image");
        self.ok(&["image", "load", "-i", image.to_str().expect("utf-8 path")]);
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("shoald.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.shoal(&["ps", "-aq", "--no-trunc"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = self.shoal(&["rm", "-f", id]);
            }
        }
        self.stop();
        cleanup_tree(&self.root, &self.cgroup_parent);
    }
}

/// Kill processes started from `root`, unmount everything under it, remove the cgroup
/// parent in every hierarchy, and delete `root`.
pub fn cleanup_tree(root: &Path, cgroup_parent: &str) {
    let needle = root.display().to_string();
    for _ in 0..3 {
        let mut found = false;
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle)
                    && pid != std::process::id() as i32
                {
                    // SAFETY: kill(2) with a pid we just read; a stale pid fails harmlessly.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    found = true;
                }
            }
        }
        if !found {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let c = std::ffi::CString::new(m).expect("mount path");
        // SAFETY: umount2 on a path string we own.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    remove_cgroup(cgroup_parent);
    let _ = std::fs::remove_dir_all(root);
}

/// Remove `/<name>` (and anything below it) in every cgroup hierarchy, killing what still
/// runs in it. Only test cgroups (`shoal-t-…`); any other name is left alone.
pub fn remove_cgroup(name: &str) {
    // Only a test's own cgroup: an empty name would be every hierarchy's root (and every
    // process on the machine).
    if !name.starts_with("shoal-t-") || name.contains('/') || name.contains("..") {
        return;
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let dirs: Vec<PathBuf> = hierarchies
        .flatten()
        .map(|h| h.path().join(name))
        .filter(|d| d.is_dir())
        .collect();
    // Processes whose command line does not name the test's root (a container's own
    // program, left behind when a killed daemon's shim went) still hold the cgroup.
    for _ in 0..50 {
        let mut alive = false;
        for d in &dirs {
            alive |= kill_procs(d);
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        rmdir_tree(d);
    }
}

/// SIGKILL every process in the cgroup tree at `dir`; whether there was any.
fn kill_procs(dir: &Path) -> bool {
    let mut found = false;
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a pid read from the test's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            found = true;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                found |= kill_procs(&e.path());
            }
        }
    }
    found
}

fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
