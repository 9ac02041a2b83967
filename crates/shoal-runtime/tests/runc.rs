//! shoal-runc end to end, as another engine would drive it: real namespaces, mounts and
//! cgroups, as root. Each test has its own runtime root, container id and cgroup, and
//! cleans them up even when it fails.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_testkit::{busybox_bundle, unique_name, wait_until};

const RUNC: &str = env!("CARGO_BIN_EXE_shoal-runc");

/// One container's worth of test fixture.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    root: PathBuf,
    cgroup: String,
    calls: std::sync::atomic::AtomicUsize,
}

impl Fixture {
    fn new(patch: Value) -> Fixture {
        let id = unique_name("rt");
        let dir = tempfile::Builder::new()
            .prefix("shoal-rt-")
            .tempdir()
            .expect("tempdir");
        let cgroup = format!("shoal-t-{id}");
        let mut patch = patch;
        let linux = patch
            .as_object_mut()
            .expect("object")
            .entry("linux")
            .or_insert(json!({}));
        if linux.get("cgroupsPath").is_none() {
            linux["cgroupsPath"] = json!(format!("/{cgroup}/{id}"));
        }
        if linux.get("namespaces").is_none() {
            linux["namespaces"] = json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        }
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

    fn runc(&self, args: &[&str]) -> Output {
        self.runc_env(args, &[])
    }

    /// Output goes to files, not pipes: a created container's init inherits the runtime's
    /// stdio (as with runc), so a pipe would stay open for as long as the container lives.
    fn runc_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("out.{n}"));
        let err_path = self.dir.path().join(format!("err.{n}"));
        let mut c = Command::new(RUNC);
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null());
        c.stdout(std::fs::File::create(&out_path).expect("stdout file"));
        c.stderr(std::fs::File::create(&err_path).expect("stderr file"));
        for (k, v) in env {
            c.env(k, v);
        }
        let status = c.status().expect("run shoal-runc");
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
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

    fn create(&self) {
        self.ok(&[
            "create",
            "--bundle",
            self.bundle().to_str().unwrap(),
            &self.id,
        ]);
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.ok(&["state", &self.id])).expect("state json")
    }

    fn status(&self) -> String {
        self.state()["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn cgroup_file(&self, controller: &str, file: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cgroup)
            .join(&self.id)
            .join(file)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        shoal_testkit::remove_cgroup(&self.cgroup);
    }
}

fn sh(script: &str) -> Value {
    json!({"process": {"args": ["sh", "-c", script]}})
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    let f = Fixture::new(json!({"process": {"args": ["sleep", "1000"]}}));
    f.create();
    let st = f.state();
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], f.id.as_str());
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0 && Path::new(&format!("/proc/{pid}")).exists());
    assert!(f.cgroup_file("memory", "cgroup.procs").exists());

    f.ok(&["start", &f.id]);
    assert_eq!(f.status(), "running");
    let ps: Vec<i32> = serde_json::from_str(&f.ok(&["ps", "--format", "json", &f.id])).unwrap();
    assert_eq!(ps, vec![pid as i32]);

    let err = f.runc(&["delete", &f.id]);
    assert!(
        !err.status.success(),
        "deleting a running container needs --force"
    );

    f.ok(&["kill", &f.id, "KILL"]);
    wait_until(
        "container stops after SIGKILL",
        Duration::from_secs(10),
        || f.status() == "stopped",
    );
    f.ok(&["delete", &f.id]);
    assert!(
        !f.cgroup_file("memory", "").exists(),
        "cgroup removed by delete"
    );
    let gone = f.runc(&["state", &f.id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[test]
fn run_reports_exit_codes_and_runs_as_pid_1() {
    let f = Fixture::new(sh("echo pid=$$ host=$(hostname); exit 3"));
    let (code, out, _) = f.run();
    assert_eq!(code, 3);
    assert_eq!(out.trim(), "pid=1 host=shoal-test");
    let listed = f.ok(&["list", "-q"]);
    assert!(
        !listed.contains(&f.id),
        "run removes the container after it exits"
    );
}

#[test]
fn signal_exit_is_128_plus_signal() {
    // PID 1 ignores signals it has no handler for; a child shell does not.
    let f = Fixture::new(sh("sh -c 'kill -KILL $$'; echo status=$?"));
    let (_, out, _) = f.run();
    assert_eq!(out.trim(), "status=137");
}

#[test]
fn mounts_stay_inside_the_container() {
    let caps = json!(["CAP_SYS_ADMIN"]);
    let f = Fixture::new(json!({"process": {
        "args": ["sh", "-c", "mount -t tmpfs tmpfs /tmp && touch /tmp/inside && grep -c ' /tmp ' /proc/mounts"],
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
    }}));
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(before, after, "no mount leaked to the host");
    assert!(
        !f.bundle().join("rootfs/tmp/inside").exists(),
        "the write went to the container's tmpfs"
    );
}

#[test]
fn resources_are_written_to_cgroups() {
    let f = Fixture::new(json!({
        "process": {"args": ["sleep", "1000"]},
        "linux": {"resources": {
            "memory": {"limit": 67108864, "reservation": 33554432},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 20}
        }}
    }));
    f.create();
    let read = |c: &str, file: &str| {
        std::fs::read_to_string(f.cgroup_file(c, file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("memory", "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(read("pids", "pids.max"), "20");
}

#[test]
fn pids_limit_is_enforced() {
    let f = Fixture::new(json!({
        "process": {"args": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait; echo done"]},
        "linux": {"resources": {"pids": {"limit": 4}}}
    }));
    let (_, out, err) = f.run();
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "stderr: {err}, stdout: {out}"
    );
}

#[test]
fn memory_limit_oom_kills() {
    let f = Fixture::new(json!({
        "process": {"args": ["sh", "-c", "head -c 200m /dev/zero | tail > /dev/null"]},
        "linux": {"resources": {"memory": {"limit": 16777216, "swap": 16777216}}}
    }));
    let (code, _, _) = f.run();
    assert_ne!(code, 0, "the pipeline cannot hold 200 MB in a 16 MB cgroup");
}

#[test]
fn user_groups_capabilities_rlimits_and_env() {
    let f = Fixture::new(json!({"process": {
        "args": ["sh", "-c", "id; grep -E '^Cap(Eff|Bnd)' /proc/self/status; ulimit -n; echo $GREETING; pwd; umask"],
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000], "umask": 63},
        "env": ["PATH=/bin", "GREETING=hello"],
        "cwd": "/home/shoal/work",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 123, "soft": 123}]
    }}));
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "uid=1000(shoal) gid=1000(shoal) groups=2000(extra)"
    );
    assert_eq!(
        lines[1], "CapEff:\t0000000000000000",
        "a non-root user has no effective capabilities"
    );
    assert_eq!(
        lines[2], "CapBnd:\t0000000020000420",
        "bounding set is the spec's"
    );
    assert_eq!(lines[3], "123");
    assert_eq!(lines[4], "hello");
    assert_eq!(lines[5], "/home/shoal/work", "a missing cwd is created");
    assert_eq!(lines[6], "0077");
}

#[test]
fn root_gets_the_spec_capabilities() {
    let f = Fixture::new(sh("grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status"));
    let (_, out, _) = f.run();
    assert_eq!(out, "CapPrm:\t0000000020000420\nCapEff:\t0000000020000420\nCapBnd:\t0000000020000420\nCapAmb:\t0000000000000000\n");
}

#[test]
fn readonly_rootfs_and_masked_paths() {
    let f = Fixture::new(json!({
        "process": {"args": ["sh", "-c", "touch /x 2>/dev/null && echo wrote || echo readonly; cat /proc/keys | wc -c; echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo sys-writable || echo sys-readonly"]},
        "root": {"path": "rootfs", "readonly": true}
    }));
    let (_, out, _) = f.run();
    assert_eq!(out, "readonly\n0\nsys-readonly\n");
}

#[test]
fn exec_joins_the_container() {
    let f = Fixture::new(
        json!({"process": {"args": ["sleep", "1000"], "env": ["PATH=/bin", "FROM_SPEC=1"]}}),
    );
    f.create();
    f.ok(&["start", &f.id]);
    let out = f.runc(&[
        "exec",
        "-e",
        "EXTRA=2",
        &f.id,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $FROM_SPEC$EXTRA; hostname; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sleep 1000 \n12\nshoal-test\n"
    );
    let pids: Vec<i32> = serde_json::from_str(&f.ok(&["ps", "--format", "json", &f.id])).unwrap();
    assert_eq!(
        pids.len(),
        1,
        "the exec'd process is gone and was in the container's cgroup"
    );
    let missing = f.runc(&["exec", &f.id, "no-such-program"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("executable file not found in $PATH"));
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let f = Fixture::new(json!({"process": {"args": ["sleep", "1000"]}}));
    f.create();
    f.ok(&["start", &f.id]);
    f.ok(&["pause", &f.id]);
    assert_eq!(f.status(), "paused");
    let pid = f.state()["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        stat.contains(") D ") || stat.contains(") S "),
        "frozen task is in the freezer: {stat}"
    );
    assert!(
        !f.runc(&["pause", &f.id]).status.success(),
        "pausing twice is refused"
    );
    f.ok(&["resume", &f.id]);
    assert_eq!(f.status(), "running");
}

#[test]
fn cgroup_v2_interface_works_on_the_unified_hierarchy() {
    if !Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        eprintln!("no cgroup2 mount on this host");
        return;
    }
    let f = Fixture::new(json!({"process": {"args": ["sleep", "1000"]}}));
    let env = [("SHOAL_CGROUP_VERSION", "v2")];
    let out = f.runc_env(
        &["create", "--bundle", f.bundle().to_str().unwrap(), &f.id],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(f.root.join(&f.id).join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["cgroup"]["version"], "v2");
    f.ok(&["start", &f.id]);
    f.ok(&["pause", &f.id]);
    assert_eq!(f.status(), "paused");
    f.ok(&["resume", &f.id]);
    f.ok(&["delete", "--force", &f.id]);
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    assert!(
        !Path::new(root).join(&f.cgroup).exists(),
        "v2 cgroup removed with its parent"
    );
}

#[test]
fn terminal_via_console_socket() {
    let f = Fixture::new(
        json!({"process": {"terminal": true, "args": ["sh", "-c", "tty; echo hello-tty"]}}),
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
    let mut file = std::fs::File::from(master);
    let _ = std::io::Read::read_to_end(&mut file, &mut out); // ends with EIO when the slave closes
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("hello-tty"), "{out}");
}

#[test]
fn user_namespace_with_mappings() {
    let f = Fixture::new(json!({
        "process": {"args": ["sh", "-c", "id -u; cat /proc/self/uid_map"]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
        }
    }));
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        vec!["0", "100000", "65536"]
    );
}

#[test]
fn joins_an_existing_namespace_by_path() {
    let a = Fixture::new(json!({"process": {"args": ["sleep", "1000"]}}));
    a.create();
    let pid = a.state()["pid"].as_i64().unwrap();
    let a_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let b = Fixture::new(json!({
        "process": {"args": ["readlink", "/proc/self/ns/net"]},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": format!("/proc/{pid}/ns/net")}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    }));
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), a_net.to_string_lossy());
}

#[test]
fn bad_input_is_refused_without_leftovers() {
    let f = Fixture::new(json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}));
    let out = f.runc(&["create", "--bundle", f.bundle().to_str().unwrap(), &f.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooks are not supported"));
    assert!(!f.root.join(&f.id).exists(), "no state left behind");

    let missing = f.runc(&["create", "--bundle", "/nonexistent/bundle", &f.id]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("bundle /nonexistent/bundle"));

    std::fs::write(f.bundle().join("config.json"), "{not json").unwrap();
    let invalid = f.runc(&["create", "--bundle", f.bundle().to_str().unwrap(), &f.id]);
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("invalid bundle config"));

    let bad_id = f.runc(&["state", "../etc"]);
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("invalid container id"));

    let no_prog = Fixture::new(json!({"process": {"args": ["/no/such/program"]}}));
    let out = no_prog.runc(&[
        "create",
        "--bundle",
        no_prog.bundle().to_str().unwrap(),
        &no_prog.id,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such file or directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!no_prog.root.join(&no_prog.id).exists());
    assert!(
        !no_prog.cgroup_file("memory", "").exists(),
        "cgroup of the failed create is removed"
    );

    let systemd = f.runc(&["--systemd-cgroup", "list"]);
    assert!(String::from_utf8_lossy(&systemd.stderr).contains("--systemd-cgroup is not supported"));
}

#[test]
fn spec_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["terminal"], true);
    assert_eq!(spec["root"]["path"], "rootfs");
    let again = Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "spec does not overwrite");
    let features: Value =
        serde_json::from_slice(&Command::new(RUNC).arg("features").output().unwrap().stdout)
            .unwrap();
    assert_eq!(features["linux"]["cgroup"]["v1"], true);
    assert_eq!(features["linux"]["cgroup"]["v2"], true);
}

#[test]
fn bind_mounts_sysctl_oom_score_no_new_privs_and_ambient_caps() {
    let host_dir = tempfile::Builder::new()
        .prefix("shoal-rt-bind-")
        .tempdir()
        .unwrap();
    std::fs::write(host_dir.path().join("from-host"), "host data\n").unwrap();
    let caps = json!(["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    let f = Fixture::new(json!({
        "process": {
            "args": ["sh", "-c", "cat /data/from-host; touch /data/x 2>/dev/null && echo rw || echo ro; \
                      cat /proc/sys/net/ipv4/ip_forward; cat /proc/self/oom_score_adj; \
                      grep -E '^(NoNewPrivs|CapAmb)' /proc/self/status"],
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": ["CAP_NET_BIND_SERVICE"]},
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/data", "type": "bind", "source": host_dir.path(), "options": ["rbind", "ro", "rprivate"]}
        ],
        "linux": {"sysctl": {"net.ipv4.ip_forward": "1"}}
    }));
    let forward_before = host_ip_forward();
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "host data\nro\n1\n500\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\n"
    );
    assert!(!host_dir.path().join("x").exists());
    assert_eq!(
        host_ip_forward(),
        forward_before,
        "the sysctl changed only the container's namespace"
    );
}

fn host_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn sysctls_outside_the_containers_namespaces_are_refused() {
    let f = Fixture::new(json!({"linux": {"sysctl": {"kernel.panic": "1"}}}));
    let out = f.runc(&["create", "--bundle", f.bundle().to_str().unwrap(), &f.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not namespaced"));
    let g = Fixture::new(json!({
        "linux": {"sysctl": {"net.ipv4.ip_forward": "1"}, "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}
    }));
    let out = g.runc(&["create", "--bundle", g.bundle().to_str().unwrap(), &g.id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("own net namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_come_from_the_cgroup() {
    let f = Fixture::new(json!({
        "process": {"args": ["sh", "-c", "sleep 1000 & sleep 1000"]},
        "linux": {"resources": {"memory": {"limit": 67108864}, "pids": {"limit": 50}}}
    }));
    f.create();
    f.ok(&["start", &f.id]);
    wait_until("both sleeps run", Duration::from_secs(5), || {
        serde_json::from_str::<Vec<i32>>(&f.ok(&["ps", "--format", "json", &f.id]))
            .unwrap()
            .len()
            == 2
    });
    let rt = shoal_runtime::Runtime::new(&f.root);
    let stats = rt.load(&f.id).unwrap().stats().unwrap();
    assert!(stats.memory_usage > 0);
    assert_eq!(stats.memory_limit, Some(67108864));
    assert_eq!(stats.pids_current, 2);
    assert_eq!(stats.pids_limit, Some(50));
    assert_eq!(stats.oom_kills, 0);
}

#[test]
fn run_with_a_terminal_proxies_it() {
    let f = Fixture::new(
        json!({"process": {"terminal": true, "args": ["sh", "-c", "tty; read line; echo got:$line; exit 6"]}}),
    );
    let mut cmd = Command::new(RUNC);
    cmd.arg("--root")
        .arg(&f.root)
        .args(["run", "--bundle", f.bundle().to_str().unwrap(), &f.id]);
    let mut term = shoal_testkit::PtySession::spawn(cmd);
    let shown = term.read_until("/dev/pts/", Duration::from_secs(10));
    assert!(shown.contains("/dev/pts/0"), "{shown}");
    term.send(b"typed\r");
    let shown = term.read_until("got:typed", Duration::from_secs(10));
    assert!(shown.contains("got:typed"), "{shown}");
    assert_eq!(term.wait(Duration::from_secs(10)), Some(6));
}

#[test]
fn dev_setup_never_writes_through_image_symlinks() {
    let target = tempfile::Builder::new()
        .prefix("shoal-rt-target-")
        .tempdir()
        .unwrap();
    let f = Fixture::new(
        json!({"process": {"args": ["sh", "-c", "ls /dev/null >/dev/null && echo ok"]}}),
    );
    let dev = f.bundle().join("rootfs/dev");
    std::fs::remove_dir(&dev).unwrap();
    std::os::unix::fs::symlink(target.path(), &dev).unwrap();
    let (_, out, err) = f.run();
    assert_eq!(out, "ok\n", "{err}");
    let written: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
    assert!(
        written.is_empty(),
        "the host directory the image pointed /dev at was written: {written:?}"
    );
}

#[test]
fn a_spec_without_capabilities_gets_none() {
    let f = Fixture::new(
        json!({"process": {"args": ["sh", "-c", "grep -E '^Cap(Bnd|Eff|Prm)' /proc/self/status"], "capabilities": null}}),
    );
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
    );
}

/// A process with CAP_MKNOD can create any node, but only the allowed ones can be opened:
/// v1 through the devices controller, v2 through the eBPF device filter.
fn device_rules_enforced(env: &[(&str, &str)]) {
    let caps = json!(["CAP_MKNOD", "CAP_DAC_OVERRIDE"]);
    let f = Fixture::new(json!({
        "process": {
            "args": ["sh", "-c", "mknod /tmp/disk b 8 0 && echo made; head -c 1 /tmp/disk; echo x > /dev/null && echo null-ok"],
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
        },
        "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
    }));
    let out = f.runc_env(
        &["run", "--bundle", f.bundle().to_str().unwrap(), &f.id],
        env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("made"),
        "mknod is allowed: {stdout} {stderr}"
    );
    assert!(
        stderr.contains("Operation not permitted"),
        "opening the disk is not: {stderr}"
    );
    assert!(
        stdout.contains("null-ok"),
        "/dev/null still works: {stdout} {stderr}"
    );
}

#[test]
fn device_rules_on_cgroup_v1() {
    device_rules_enforced(&[("SHOAL_CGROUP_VERSION", "v1")]);
}

#[test]
fn device_rules_on_cgroup_v2_via_ebpf() {
    device_rules_enforced(&[("SHOAL_CGROUP_VERSION", "v2")]);
}
