//! `shoal-init` (`--init`) as PID 1 of a real container: the static binary from the
//! `shoal-init` crate is bind-mounted into a busybox bundle at /sbin/shoal-init and run by
//! shoal-runc. Each test has its own runtime root, container id and cgroup, and cleans them up
//! even when it fails.
//!
//! The binary is the one shoal-runtime embeds (`shoal_runtime::dmz::INIT_BINARY`).

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_testkit::{base_config, busybox_bundle, unique_name, wait_until};

const RUNC: &str = env!("CARGO_BIN_EXE_shoal-runc");
const INIT: &str = "/sbin/shoal-init";
const DEADLINE: Duration = Duration::from_secs(10);

/// One container's worth of test fixture.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    root: PathBuf,
    cgroup: String,
    calls: std::sync::atomic::AtomicUsize,
}

impl Fixture {
    /// A container running `args` under shoal-init.
    fn with_init(args: &[&str]) -> Fixture {
        Fixture::with_process(init_args(args), json!({}))
    }

    /// A container running `args` directly, as PID 1.
    fn without_init(args: &[&str]) -> Fixture {
        Fixture::with_process(args.to_vec(), json!({}))
    }

    /// `process.args` = `args` (plus the `process` keys in `extra`), with shoal-init mounted.
    fn with_process(args: Vec<&str>, extra: Value) -> Fixture {
        let id = unique_name("init");
        let dir = tempfile::Builder::new()
            .prefix("shoal-init-")
            .tempdir()
            .expect("tempdir");
        let cgroup = format!("shoal-t-{id}");
        let mut process = json!({ "args": args });
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                process[k] = v;
            }
        }
        let mut mounts = base_config()["mounts"].clone();
        let init = dir.path().join("shoal-init");
        std::fs::write(&init, shoal_runtime::dmz::INIT_BINARY).expect("write shoal-init");
        std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        mounts.as_array_mut().expect("mounts").push(json!({
            "destination": INIT,
            "type": "bind",
            "source": init,
            "options": ["rbind", "ro"],
        }));
        let patch = json!({
            "process": process,
            "mounts": mounts,
            "linux": {"cgroupsPath": format!("/{cgroup}/{id}")},
        });
        busybox_bundle(&dir.path().join("bundle"), patch).expect("bundle");
        let root = dir.path().join("state");
        Fixture {
            id,
            dir,
            root,
            cgroup,
            calls: Default::default(),
        }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// A path inside the container's root filesystem, seen from the host.
    fn rootfs(&self, path: &str) -> PathBuf {
        self.bundle()
            .join("rootfs")
            .join(path.trim_start_matches('/'))
    }

    /// A shoal-runc command writing to fresh files, not pipes: a container's init inherits the
    /// runtime's stdio, so a pipe would stay open for as long as the container lives.
    fn command(&self, args: &[&str]) -> (Command, PathBuf, PathBuf) {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.dir.path().join(format!("out.{n}"));
        let err = self.dir.path().join(format!("err.{n}"));
        let mut c = Command::new(RUNC);
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"));
        (c, out, err)
    }

    fn runc(&self, args: &[&str]) -> Output {
        let (mut c, out, err) = self.command(args);
        let status = c.status().expect("run shoal-runc");
        Output {
            status,
            stdout: std::fs::read(out).unwrap_or_default(),
            stderr: std::fs::read(err).unwrap_or_default(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(
            out.status.success(),
            "shoal-runc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `run` in the foreground: (exit code, stdout, stderr).
    fn run(&self) -> (i32, String, String) {
        let out = self.runc(&["run", "--bundle", self.bundle().to_str().unwrap(), &self.id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `run` in the background, once the container is running.
    fn spawn_run(&self) -> Running<'_> {
        let (mut c, _, err) =
            self.command(&["run", "--bundle", self.bundle().to_str().unwrap(), &self.id]);
        let child = c.spawn().expect("spawn shoal-runc run");
        let running = Running {
            fixture: self,
            child,
            stderr: err,
        };
        wait_until("the container is running", DEADLINE, || {
            self.state()
                .is_some_and(|st| st["status"] == "running" && st["pid"].as_i64() > Some(0))
        });
        running
    }

    fn state(&self) -> Option<Value> {
        let out = self.runc(&["state", &self.id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// The container's processes, from /proc inside it (via `exec`).
    fn processes(&self) -> Vec<Proc> {
        let out = self.runc(&["exec", &self.id, "sh", "-c", "cat /proc/[0-9]*/stat"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(Proc::parse)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        shoal_testkit::remove_cgroup(&self.cgroup);
    }
}

/// A container started by a background `shoal-runc run`.
struct Running<'f> {
    fixture: &'f Fixture,
    child: Child,
    stderr: PathBuf,
}

impl Running<'_> {
    /// The host pid of the container's init.
    fn init_pid(&self) -> i64 {
        self.fixture.state().expect("state")["pid"]
            .as_i64()
            .expect("pid")
    }

    fn kill(&self, signal: &str) {
        self.fixture.ok(&["kill", &self.fixture.id, signal]);
    }

    /// Waits for `run` to end; returns the container's exit code.
    fn exit_code(mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for shoal-runc run") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "container still running after {DEADLINE:?}; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of /proc/<pid>/stat.
#[derive(Debug)]
struct Proc {
    pid: i32,
    comm: String,
    state: char,
    ppid: i32,
}

impl Proc {
    fn parse(line: &str) -> Option<Proc> {
        let (pid, rest) = line.split_once(" (")?;
        let (comm, rest) = rest.rsplit_once(") ")?;
        let mut fields = rest.split(' ');
        Some(Proc {
            pid: pid.parse().ok()?,
            comm: comm.to_string(),
            state: fields.next()?.chars().next()?,
            ppid: fields.next()?.parse().ok()?,
        })
    }
}

fn init_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![INIT, "--"];
    v.extend_from_slice(args);
    v
}

#[test]
fn init_is_pid_1_and_the_program_pid_2_in_its_own_process_group() {
    // /proc/self/stat fields 5, 6, 8: process group, session, terminal foreground group.
    let f = Fixture::with_init(&[
        "sh",
        "-c",
        "echo $$ $PPID; cut -d' ' -f5,6,8 /proc/$$/stat; tr '\\0' ' ' < /proc/1/cmdline",
    ]);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2 1", "the program is PID 2, a child of the init");
    assert_eq!(
        lines[1], "2 1 -1",
        "own process group, in the init's session, no terminal"
    );
    assert!(
        lines[2].starts_with("/sbin/shoal-init -- sh -c "),
        "{}",
        lines[2]
    );
}

#[test]
fn orphans_are_reaped_by_the_init_and_not_by_a_plain_pid_1() {
    // The subshell exits at once, so its `sleep 2` is re-parented to PID 1.
    let script = ["sh", "-c", "(sleep 2 &); exec sleep 1000"];
    let orphan = |p: &Proc| p.comm == "sleep" && p.ppid == 1 && p.pid != 2;

    let plain = Fixture::without_init(&script);
    let _run = plain.spawn_run();
    wait_until(
        "without an init, the orphan is re-parented to PID 1",
        DEADLINE,
        || {
            plain
                .processes()
                .iter()
                .any(|p| orphan(p) && p.state != 'Z')
        },
    );
    wait_until(
        "without an init, the orphan stays a zombie",
        DEADLINE,
        || {
            plain
                .processes()
                .iter()
                .any(|p| orphan(p) && p.state == 'Z')
        },
    );

    let f = Fixture::with_init(&script);
    let _run = f.spawn_run();
    wait_until("the orphan is re-parented to shoal-init", DEADLINE, || {
        f.processes().iter().any(|p| orphan(p) && p.state != 'Z')
    });
    wait_until(
        "the orphan exits and is reaped: gone, no zombie left",
        DEADLINE,
        || {
            let procs = f.processes();
            !procs.is_empty() && !procs.iter().any(|p| orphan(p) || p.state == 'Z')
        },
    );
    let procs = f.processes();
    let program = procs.iter().find(|p| p.pid == 2);
    assert!(
        program.is_some_and(|p| p.comm == "sleep" && p.ppid == 1),
        "the program keeps running: {procs:?}"
    );
}

#[test]
fn sigterm_reaches_a_program_that_traps_it() {
    let f = Fixture::with_init(&[
        "sh",
        "-c",
        "trap 'exit 3' TERM; touch /tmp/ready; while true; do sleep 0.1; done",
    ]);
    let run = f.spawn_run();
    wait_until("the trap is set", DEADLINE, || {
        f.rootfs("tmp/ready").exists()
    });
    run.kill("TERM");
    assert_eq!(run.exit_code(), 3);
}

#[test]
fn sigterm_kills_a_program_without_handlers() {
    // As PID 1, `sleep` would ignore SIGTERM; as PID 2 it dies of it, and the init reports it.
    let f = Fixture::with_init(&["sleep", "1000"]);
    let run = f.spawn_run();
    let init = run.init_pid();
    wait_until("shoal-init has started the program", DEADLINE, || {
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .is_ok_and(|c| !c.trim().is_empty())
    });
    run.kill("TERM");
    assert_eq!(run.exit_code(), 143);
}

#[test]
fn every_signal_sent_to_the_container_is_forwarded() {
    let signals = ["HUP", "INT", "QUIT", "USR1", "USR2", "WINCH", "CONT"];
    let traps: String = signals
        .iter()
        .map(|s| format!("trap 'echo {s} >> /tmp/log' {s}; "))
        .collect();
    let script =
        format!("{traps} trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 0.1; done");
    let f = Fixture::with_init(&["sh", "-c", &script]);
    let run = f.spawn_run();
    wait_until("the traps are set", DEADLINE, || {
        f.rootfs("tmp/ready").exists()
    });
    let log = f.rootfs("tmp/log");
    for (n, signal) in signals.iter().enumerate() {
        run.kill(signal);
        wait_until(&format!("the program got SIG{signal}"), DEADLINE, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() == n + 1)
        });
    }
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        signals,
        "each signal arrived once, in order"
    );
    run.kill("TERM");
    assert_eq!(run.exit_code(), 0);
}

#[test]
fn exit_codes_pass_through() {
    for (script, expected) in [
        ("exit 7", 7),
        ("kill -KILL $$", 137),
        // Not PID 1, so a shell without a trap dies of SIGTERM.
        ("kill -TERM $$", 143),
    ] {
        let f = Fixture::with_init(&["sh", "-c", script]);
        let (code, _, err) = f.run();
        assert_eq!(code, expected, "{script}: {err}");
    }
}

#[test]
fn programs_that_cannot_run_exit_127_or_126_with_a_message() {
    let f = Fixture::with_init(&["no-such-program", "arg"]);
    let (code, _, err) = f.run();
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("shoal-init: no-such-program: executable file not found in $PATH"),
        "{err}"
    );

    let f = Fixture::with_init(&["/no/such/path"]);
    let (code, _, err) = f.run();
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("exec /no/such/path: no such file or directory"),
        "{err}"
    );

    let f = Fixture::with_init(&["/etc/passwd"]);
    let (code, _, err) = f.run();
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("exec /etc/passwd: permission denied"), "{err}");
}

#[test]
fn with_a_terminal_the_program_is_the_foreground_process_group() {
    let f = Fixture::with_process(
        init_args(&["sh", "-c", "cut -d' ' -f5,6,8 /proc/$$/stat"]),
        json!({"terminal": true}),
    );
    let sock = f.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    f.ok(&[
        "create",
        "--bundle",
        f.bundle().to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        &f.id,
    ]);
    let (conn, _) = listener.accept().unwrap();
    let master = shoal_runtime::console::recv_fd(std::os::fd::AsRawFd::as_raw_fd(&conn)).unwrap();
    f.ok(&["start", &f.id]);
    let mut out = Vec::new();
    let mut file = File::from(master);
    let _ = std::io::Read::read_to_end(&mut file, &mut out); // ends with EIO when the slave closes
    let out = String::from_utf8_lossy(&out);
    // Process group 2 in the init's session 1, and the terminal's foreground group is 2.
    assert_eq!(out.trim(), "2 1 2", "{out:?}");
}

#[test]
fn init_binary_is_static() {
    let elf = shoal_runtime::dmz::INIT_BINARY;
    assert_eq!(&elf[..4], b"\x7fELF");
    // No PT_INTERP program header: nothing for a loader to do, any root filesystem works.
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(elf[0x36..0x38].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[0x38..0x3a].try_into().unwrap()) as usize;
    const PT_INTERP: u32 = 3;
    const PT_DYNAMIC: u32 = 2;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert!(
            kind != PT_INTERP && kind != PT_DYNAMIC,
            "shoal-init has a dynamic loader or section"
        );
    }
}
