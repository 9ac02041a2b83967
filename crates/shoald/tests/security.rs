//! Security defaults and options, proven from inside the container.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use shoal_testkit::Daemon;

fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    let out = d.shoal(&full);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_line(out: &str, key: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

/// docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

#[test]
fn default_capabilities_seccomp_and_masked_paths() {
    let d = Daemon::with_busybox();
    let (_, out, _) = run(&d, &["busybox", "cat", "/proc/self/status"]);
    assert_eq!(
        status_line(&out, "CapEff:"),
        format!("CapEff:\t{DOCKER_DEFAULT_CAPS}")
    );
    assert_eq!(
        status_line(&out, "CapBnd:"),
        format!("CapBnd:\t{DOCKER_DEFAULT_CAPS}")
    );
    assert_eq!(
        status_line(&out, "Seccomp:"),
        "Seccomp:\t2",
        "docker's default seccomp profile is on"
    );
    assert_eq!(status_line(&out, "NoNewPrivs:"), "NoNewPrivs:\t0");
    let (code, _, err) = run(&d, &["busybox", "mount", "-t", "tmpfs", "x", "/mnt"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("denied") || err.contains("not permitted"),
        "{err}"
    );
    let (code, _, _) = run(&d, &["busybox", "unshare", "-U", "true"]);
    assert_ne!(
        code, 0,
        "creating a user namespace is blocked by the default profile"
    );
    let (_, out, _) = run(&d, &["busybox", "sh", "-c", "cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable; wc -c < /proc/keys; wc -c < /proc/timer_list; echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; echo done"]);
    assert_eq!(out, "0\n0\ndone\n");
    // The runtime's caches live on the host, never in the container's filesystem.
    d.ok(&["run", "--name", "clean", "busybox", "true"]);
    let (_, out, _) = run(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "ls -d /run/shoal-runc 2>/dev/null || echo absent",
        ],
    );
    assert_eq!(out, "absent\n");
    let upper = d.data_root().join("containers");
    let leaked = std::process::Command::new("find")
        .arg(&upper)
        .args(["-path", "*/fs/upper/run*"])
        .output()
        .unwrap();
    assert!(
        leaked.stdout.is_empty(),
        "nothing written into a container's rootfs: {}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    let (_, out, _) = run(&d, &["busybox", "sh", "-c", "echo x > /sys/fs/cgroup/memory/release_agent 2>/dev/null && echo writable || echo refused"]);
    assert_eq!(out, "refused\n", "cgroup release_agent is not writable");
}

#[test]
fn cap_add_cap_drop_and_privileged() {
    let d = Daemon::with_busybox();
    let (_, out, _) = run(
        &d,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "kill",
            "busybox",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(status_line(&out, "CapEff:"), "CapEff:\t0000000000000020");
    let (_, out, _) = run(
        &d,
        &[
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "CAP_CHOWN",
            "busybox",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(status_line(&out, "CapEff:"), "CapEff:\t00000000a80435fa");
    let (code, err) = d.fails(&["run", "--rm", "--cap-add", "FLYING", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown capability"), "{err}");
    let (code, out, err) = run(&d, &["--privileged", "busybox", "sh", "-c", "grep Seccomp: /proc/self/status; mount -t tmpfs x /tmp && echo mounted; ls /dev | grep -c ."]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Seccomp:\t0");
    assert_eq!(lines[1], "mounted");
    let host_devs = std::fs::read_dir("/dev").unwrap().count();
    let seen: usize = lines[2].parse().unwrap();
    assert!(
        seen >= host_devs / 2,
        "privileged sees the host's devices ({seen} of {host_devs})"
    );
}

#[test]
fn read_only_rootfs_ulimits_sysctls_and_groups() {
    let d = Daemon::with_busybox();
    let (_, out, _) = run(
        &d,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null && echo wrote || echo refused; touch /tmp/ok && echo tmp-ok",
        ],
    );
    assert_eq!(out, "refused\ntmp-ok\n");
    let (_, out, _) = run(
        &d,
        &[
            "--ulimit",
            "nofile=123:456",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn",
        ],
    );
    assert_eq!(out, "123\n456\n");
    let (_, out, _) = run(
        &d,
        &[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "busybox",
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    assert_eq!(out, "1\n");
    let (code, err) = d.fails(&[
        "run",
        "--rm",
        "--sysctl",
        "kernel.panic=1",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("not allowed"), "{err}");
    let (code, err) = d.fails(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("--network host"), "{err}");
    let (_, out, _) = run(
        &d,
        &[
            "-u",
            "shoal",
            "--group-add",
            "nogroup",
            "--group-add",
            "4242",
            "busybox",
            "id",
            "-G",
        ],
    );
    // The kernel keeps supplementary groups sorted.
    assert_eq!(out.trim(), "1000 2000 4242 65534");
}

#[test]
fn seccomp_unconfined_and_custom_profiles() {
    let d = Daemon::with_busybox();
    let (code, _, err) = run(
        &d,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
            "unshare",
            "-U",
            "true",
        ],
    );
    assert_eq!(code, 0, "unconfined allows it: {err}");
    let profile = d.root.join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let (_, out, _) = run(
        &d,
        &[
            "--security-opt",
            &opt,
            "busybox",
            "sh",
            "-c",
            "mkdir /tmp/x 2>&1 || echo blocked",
        ],
    );
    assert!(
        out.contains("Permission denied") && out.contains("blocked"),
        "{out}"
    );
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_DANCE"}]}"#).unwrap();
    let before = d.ok(&["ps", "-aq"]);
    let (code, err) = d.fails(&["run", "--rm", "--security-opt", &opt, "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid seccomp profile"), "{err}");
    assert_eq!(d.ok(&["ps", "-aq"]), before, "no container left behind");
    let (code, err) = d.fails(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=/no/such/file.json",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("/no/such/file.json"), "{err}");
}

/// A setuid-root program that prints its effective uid, built static so it runs in busybox.
fn setuid_probe(dir: &std::path::Path) -> PathBuf {
    let src = dir.join("euid.c");
    std::fs::write(&src, "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"%d\\n\",(int)geteuid());return 0;}\n").unwrap();
    let bin = dir.join("euid");
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc (apt-get install gcc libc6-dev)");
    assert!(st.success(), "gcc -static failed");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    bin
}

#[test]
fn no_new_privileges_stops_setuid() {
    let d = Daemon::with_busybox();
    let dir = d.root.join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    setuid_probe(&dir);
    let vol = format!("{}:/probe:ro", dir.display());
    let (_, out, err) = run(&d, &["-u", "1000", "-v", &vol, "busybox", "/probe/euid"]);
    assert_eq!(
        out.trim(),
        "0",
        "without no-new-privileges setuid works: {err}"
    );
    let (_, out, err) = run(
        &d,
        &[
            "-u",
            "1000",
            "-v",
            &vol,
            "--security-opt",
            "no-new-privileges",
            "busybox",
            "/probe/euid",
        ],
    );
    assert_eq!(
        out.trim(),
        "1000",
        "no-new-privileges: the setuid bit gains nothing: {err}"
    );
}

#[test]
fn no_host_descriptor_or_directory_leaks_in() {
    let d = Daemon::with_busybox();
    // CVE-2024-21626 class: only stdio (and ls's own directory) are open, the cwd is inside.
    let (_, out, _) = run(
        &d,
        &[
            "-w",
            "/tmp",
            "busybox",
            "sh",
            "-c",
            "ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/self/cwd",
        ],
    );
    assert_eq!(out, "0 1 2 3 \n/tmp\n");
    d.ok(&["run", "-d", "--name", "fds", "busybox", "sleep", "1000"]);
    // stdin is the host's /dev/null, as with docker; anything else naming a path would leak.
    let out = d.ok(&["exec", "fds", "sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/self/cwd; ls -l /proc/1/fd | grep -- '-> /' | grep -v /dev/null | wc -l"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0 1 2 3 ", "exec: {out}");
    assert_eq!(lines[1], "/");
    assert_eq!(
        lines[2], "0",
        "init holds no file descriptor to any path: {out}"
    );
}

#[test]
fn init_runs_as_pid_1_forwards_signals_and_reaps() {
    let d = Daemon::with_busybox();
    let (_, out, err) = run(
        &d,
        &[
            "--init",
            "busybox",
            "sh",
            "-c",
            "echo $$; tr '\\0' ' ' < /proc/1/cmdline",
        ],
    );
    assert_eq!(
        out.lines().next(),
        Some("2"),
        "the program is PID 2: {out} {err}"
    );
    assert!(out.contains("/sbin/shoal-init -- sh -c"), "{out}");
    // Without --init, sleep as PID 1 ignores SIGTERM; with it, stop is quick.
    d.ok(&[
        "run", "-d", "--name", "inited", "--init", "busybox", "sleep", "1000",
    ]);
    let t = std::time::Instant::now();
    d.ok(&["stop", "-t", "5", "inited"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "SIGTERM reached sleep"
    );
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "inited"])).unwrap();
    assert_eq!(v[0]["State"]["ExitCode"], 143);
    assert_eq!(v[0]["HostConfig"]["Init"], true);
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// CVE-2019-5736 class: a program whose interpreter is `#!/proc/self/exe`, started by exec,
/// while another process of the container tries to open and write every process's exe.
#[test]
fn the_container_cannot_reach_the_runtime_binary() {
    let d = Daemon::with_busybox();
    let bins: Vec<PathBuf> = ["shoal-runc", "shoal-shim", "shoald"]
        .iter()
        .map(|b| shoal_testkit::bin(b))
        .collect();
    let before: Vec<String> = bins.iter().map(|b| sha256_of(b)).collect();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "busybox",
        "sh",
        "-c",
        "printf '#!/proc/self/exe\\n' > /evil; chmod +x /evil; sleep 1000",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let attacker = "end=$(( $(date +%s) + 4 )); while [ $(date +%s) -lt $end ]; do \
        for p in /proc/[0-9]*; do \
          t=$(readlink $p/exe 2>/dev/null) || continue; \
          case \"$t\" in /bin/busybox) continue;; esac; \
          echo \"seen $t\" >> /tmp/report; \
          (echo pwned >> $p/exe) 2>/dev/null && echo \"WROTE $t\" >> /tmp/report; \
        done; done; echo done >> /tmp/report";
    d.ok(&["exec", "-d", "victim", "sh", "-c", attacker]);
    for _ in 0..5 {
        let out = d.shoal(&["exec", "victim", "/evil"]);
        assert_ne!(out.status.code(), Some(0), "the script must not run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("interpreter") || err.contains("exec"), "{err}");
    }
    shoal_testkit::wait_until(
        "the attacker finished",
        std::time::Duration::from_secs(15),
        || {
            d.shoal(&["exec", "victim", "grep", "-q", "done", "/tmp/report"])
                .status
                .success()
        },
    );
    let report = d.ok(&["exec", "victim", "cat", "/tmp/report"]);
    assert!(
        !report.contains("WROTE"),
        "a container process wrote a binary: {report}"
    );
    assert!(
        !report.contains("shoal-runc") && !report.contains("shoald"),
        "the runtime's binary was reachable: {report}"
    );
    let after: Vec<String> = bins.iter().map(|b| sha256_of(b)).collect();
    assert_eq!(before, after, "host binaries unchanged");
}
