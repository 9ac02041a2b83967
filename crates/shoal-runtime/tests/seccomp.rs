//! seccomp end to end, as root on the real kernel: docker's default profile, custom OCI
//! profiles with errno actions and argument conditions, the filter of `exec`'d processes,
//! and profiles refused before anything is created.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use shoal_runtime::seccomp::docker_default_profile;
use shoal_testkit::{busybox_bundle, unique_name};

const RUNC: &str = env!("CARGO_BIN_EXE_shoal-runc");

/// docker's default capability set.
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// One container: its own runtime root, id and cgroup, removed on drop.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    root: PathBuf,
    cgroup: String,
    calls: std::sync::atomic::AtomicUsize,
}

impl Fixture {
    fn new(mut patch: Value) -> Fixture {
        let id = unique_name("sc");
        let dir = tempfile::Builder::new()
            .prefix("shoal-rt-sc-")
            .tempdir()
            .expect("tempdir");
        let cgroup = format!("shoal-t-{id}");
        let linux = patch
            .as_object_mut()
            .expect("object")
            .entry("linux")
            .or_insert(json!({}));
        linux["cgroupsPath"] = json!(format!("/{cgroup}/{id}"));
        linux["namespaces"] = json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
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

    fn bundle(&self) -> String {
        self.dir.path().join("bundle").display().to_string()
    }

    /// Output goes to files: a created container's init inherits the runtime's stdio.
    fn runc(&self, args: &[&str]) -> Output {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("out.{n}"));
        let err_path = self.dir.path().join(format!("err.{n}"));
        let status = Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("run shoal-runc");
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
        let out = self.runc(&["run", "--bundle", &self.bundle(), &self.id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `create` that must fail: its stderr.
    fn create_fails(&self) -> String {
        let out = self.runc(&["create", "--bundle", &self.bundle(), &self.id]);
        assert!(!out.status.success(), "create succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn leaves_nothing(&self) {
        assert!(!self.root.join(&self.id).exists(), "no state left behind");
        let cgroup = Path::new("/sys/fs/cgroup/memory").join(&self.cgroup);
        assert!(!cgroup.join(&self.id).exists(), "no cgroup left behind");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        shoal_testkit::remove_cgroup(&self.cgroup);
    }
}

fn caps(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A container running `script` with capabilities `process_caps` and filter `seccomp`.
fn container(script: &str, process_caps: &[&str], seccomp: Value, nnp: bool) -> Fixture {
    let caps = json!(process_caps);
    Fixture::new(json!({
        "process": {
            "args": ["sh", "-c", script],
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": nnp,
            // Processes killed by the filter dump no core.
            "rlimits": [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
        },
        "linux": {"seccomp": seccomp},
    }))
}

/// Each of these prints `<name>-ok` or `<name>-blocked`.
const PROBES: &str = "
    t() { name=$1; shift; if \"$@\" >/dev/null 2>&1; then echo $name-ok; else echo $name-blocked; fi; }
    grep -E '^Seccomp(_filters)?:' /proc/self/status
    t unshare-user unshare -U true
    t unshare-mount unshare -m true
    t mount mount -t tmpfs x /tmp
    t everyday sh -c 'ls / && date && sleep 0.1 && echo x > /tmp/f && cat /tmp/f'
    t ping ping -c1 -W2 127.0.0.1
    t linux32 linux32 true
";

#[test]
fn docker_default_profile_blocks_namespaces_and_mounts_even_with_the_capability() {
    // The process holds CAP_SYS_ADMIN, but its filter is docker's for the default set: the
    // kernel would allow unshare and mount, the filter does not.
    let with_admin = [DOCKER_CAPS, &["CAP_SYS_ADMIN"]].concat();
    let profile = docker_default_profile(&caps(DOCKER_CAPS));
    let f = container(PROBES, &with_admin, json!(profile), true);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "Seccomp:\t2",
        "Seccomp_filters:\t1",
        "unshare-user-blocked",
        "unshare-mount-blocked",
        "mount-blocked",
        "everyday-ok",
        "ping-ok",
        "linux32-ok",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }

    // The same process with docker's profile for a container holding CAP_SYS_ADMIN.
    let profile = docker_default_profile(&caps(&with_admin));
    let f = container(PROBES, &with_admin, json!(profile), true);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "Seccomp:\t2",
        "unshare-user-ok",
        "unshare-mount-ok",
        "mount-ok",
        "everyday-ok",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }
}

#[test]
fn without_no_new_privileges_the_filter_is_installed_before_dropping_privileges() {
    // Installing a filter needs CAP_SYS_ADMIN when no_new_privs is off: it goes in before
    // the switch to uid 1000, and the runtime's remaining steps run under it.
    let profile = docker_default_profile(&caps(DOCKER_CAPS));
    let f = container(
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; id -u; \
         unshare -U true 2>/dev/null || echo unshare-blocked",
        DOCKER_CAPS,
        json!(profile),
        false,
    );
    let config = f.dir.path().join("bundle/config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "NoNewPrivs:\t0\nSeccomp:\t2\n1000\nunshare-blocked\n",
        "{err}"
    );
}

#[test]
fn with_no_new_privileges_only_execve_runs_under_the_filter() {
    // The runtime marks its descriptors close-on-exec with close_range just before execve.
    // A profile killing close_range does not hurt when the filter goes in after that (with
    // no_new_privs), and kills the init when it has to go in earlier (without).
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_KILL_PROCESS"}],
    });
    let f = container("echo started", &["CAP_KILL"], profile.clone(), true);
    let (code, out, err) = f.run();
    assert_eq!((code, out.as_str()), (0, "started\n"), "{err}");

    let f = container("echo started", &["CAP_KILL"], profile, false);
    let (code, out, _) = f.run();
    assert_ne!(code, 0);
    assert_eq!(out, "", "the program never ran");
}

fn errno_rule(names: &[&str], errno: u32, args: Value) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": args})
}

#[test]
fn custom_profile_errno_kill_and_argument_conditions() {
    let setuid_bit =
        json!([{"index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]);
    let setuid_bit_at =
        json!([{"index": 2, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]);
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            errno_rule(&["mkdir", "mkdirat"], 13, json!(null)),
            errno_rule(&["chmod", "fchmod"], 1, setuid_bit),
            errno_rule(&["fchmodat", "fchmodat2"], 1, setuid_bit_at),
            errno_rule(&["personality"], 1, json!([{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}])),
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_KILL"},
        ],
    });
    let script = "
        mkdir /tmp/x; echo mkdir=$?
        touch /tmp/f; chmod 755 /tmp/f; echo chmod755=$?; chmod 4755 /tmp/f; echo chmod4755=$?
        stat -c %a /tmp/f
        linux64 true; echo linux64=$?; linux32 true 2>/dev/null; echo linux32=$?
        sh -c 'hostname other'; echo hostname=$?
    ";
    let f = container(script, &["CAP_SYS_ADMIN"], profile, true);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "mkdir=1\nchmod755=0\nchmod4755=1\n755\nlinux64=0\nlinux32=1\nhostname=159\n",
        "{err}"
    );
    assert!(
        err.contains("Permission denied"),
        "mkdir reports EACCES: {err}"
    );
}

#[test]
fn exec_gets_the_containers_filter() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [errno_rule(&["mkdir", "mkdirat"], 13, json!(null))],
    });
    let f = container("sleep 1000", &["CAP_KILL"], profile, true);
    f.ok(&["create", "--bundle", &f.bundle(), &f.id]);
    f.ok(&["start", &f.id]);
    let out = f.runc(&[
        "exec",
        &f.id,
        "sh",
        "-c",
        "grep -E '^Seccomp:' /proc/self/status; mkdir /tmp/y",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Seccomp:\t2\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[test]
fn malformed_profiles_are_refused_before_anything_is_created() {
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]}),
            "linux.seccomp.syscalls[0].action: unknown variant `SCMP_ACT_BOGUS`",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}),
            "linux.seccomp.syscalls[0].args[0].op: unknown variant `SCMP_CMP_ALMOST`",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names is empty",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "linux.seccomp.syscalls[0].args[0].index 6 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}),
            "seccomp agents (SCMP_ACT_NOTIFY) are not supported",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "SCMP_ACT_NOTIFY is not supported",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_KILL_ALL"}),
            "linux.seccomp.defaultAction",
        ),
    ];
    for (profile, expected) in cases {
        let f = container("true", &["CAP_KILL"], profile, true);
        let err = f.create_fails();
        assert!(err.contains(expected), "expected {expected:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        f.leaves_nothing();
    }
}

#[test]
fn features_report_seccomp() {
    let out = Command::new(RUNC).arg("features").output().unwrap();
    let features: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seccomp = &features["linux"]["seccomp"];
    assert_eq!(seccomp["enabled"], true);
    for (list, item) in [
        ("actions", "SCMP_ACT_ERRNO"),
        ("operators", "SCMP_CMP_MASKED_EQ"),
        ("archs", "SCMP_ARCH_X86_64"),
        ("supportedFlags", "SECCOMP_FILTER_FLAG_TSYNC"),
    ] {
        let values = seccomp[list].as_array().unwrap();
        assert!(values.iter().any(|v| v == item), "{list}: {values:?}");
    }
}
