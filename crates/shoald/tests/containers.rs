//! Containers end to end, as a user types them: a real shoald per test, the `shoal` CLI,
//! real namespaces, overlayfs and cgroups.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::{wait_until, Daemon};

fn run_out(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = d.shoal(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    let d = Daemon::with_busybox();
    let (code, out, err) = run_out(
        &d,
        &[
            "run",
            "--name",
            "c1",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 42",
        ],
    );
    assert_eq!(code, 42);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let c = d.inspect("c1");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 42);
    assert_eq!(c["Name"], "/c1");
    // --rm removes it; the exit code still comes back.
    let (code, out, _) = run_out(
        &d,
        &["run", "--rm", "busybox", "sh", "-c", "echo bye; exit 3"],
    );
    assert_eq!((code, out.as_str()), (3, "bye\n"));
    let ids = d.ok(&["ps", "-aq"]);
    assert_eq!(ids.lines().count(), 1, "only c1 is left: {ids}");
}

#[test]
fn pid_1_hostname_env_workdir_and_user() {
    let d = Daemon::with_busybox();
    let (code, out, err) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "-h",
            "myhost",
            "-e",
            "A=1",
            "-w",
            "/data/sub",
            "-u",
            "shoal",
            "busybox",
            "sh",
            "-c",
            "echo $$ $(hostname) $A $HOSTNAME $HOME; pwd; id",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1 myhost 1 myhost /home/shoal");
    assert_eq!(lines[1], "/data/sub");
    assert_eq!(
        lines[2],
        "uid=1000(shoal) gid=1000(shoal) groups=1000(shoal),2000(extra)"
    );
    let (_, out, _) = run_out(&d, &["run", "--rm", "-u", "4242:2000", "busybox", "id"]);
    assert_eq!(out.trim(), "uid=4242 gid=2000(extra) groups=2000(extra)");
    let env_file = d.root.join("env.list");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n\nB=2\n").unwrap();
    let (_, out, _) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "B=3",
            "busybox",
            "sh",
            "-c",
            "echo $FROM_FILE $B $PATH",
        ],
    );
    assert_eq!(
        out.trim(),
        "yes 3 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn containers_are_isolated_from_each_other_and_from_the_image() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo secret > /etc/shoal-test-image; echo x > /tmp/mine; sleep 1000",
    ]);
    wait_until("writer wrote its files", Duration::from_secs(10), || {
        d.ok(&["logs", "writer"]).is_empty() && d.inspect("writer")["State"]["Running"] == true
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "cat /etc/shoal-test-image; ls /tmp/mine 2>&1",
        ],
    );
    assert!(
        out.starts_with("shoal test image"),
        "the image is unchanged for others: {out}"
    );
    assert!(out.contains("No such file"), "{out}");
    let (_, mounts, _) = run_out(&d, &["run", "--rm", "busybox", "cat", "/proc/mounts"]);
    assert!(
        !mounts.contains("/sys/fs/cgroup/memory type cgroup rw"),
        "cgroupfs is read-only"
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let overlays = host_mounts
        .lines()
        .filter(|l| l.contains(d.root.to_str().unwrap()) && l.contains(" - overlay "))
        .count();
    assert_eq!(
        overlays, 1,
        "only the running container's rootfs is mounted on the host"
    );
    d.ok(&["rm", "-f", "writer"]);
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts
            .lines()
            .any(|l| l.contains(d.root.to_str().unwrap()) && l.contains(" - overlay ")),
        "rm unmounts the rootfs"
    );
}

#[test]
fn memory_limit_oom_is_137_and_oom_killed() {
    let d = Daemon::with_busybox();
    let (code, _, _) = run_out(
        &d,
        &[
            "run",
            "--name",
            "oom",
            "-m",
            "16m",
            "busybox",
            "sh",
            "-c",
            "exec tail /dev/zero",
        ],
    );
    assert_eq!(code, 137);
    let c = d.inspect("oom");
    assert_eq!(c["State"]["OOMKilled"], true);
    assert_eq!(c["State"]["ExitCode"], 137);
    assert_eq!(c["HostConfig"]["Memory"], 16 << 20);
}

#[test]
fn pids_limit_and_cpu_quota_reach_the_cgroup() {
    let d = Daemon::with_busybox();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--cpus",
            "0.5",
            "--pids-limit",
            "5",
            "-m",
            "64m",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let cg = |ctl: &str, file: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{ctl}/{}/{id}/{file}",
            d.cgroup_parent
        ))
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cg("pids", "pids.max"), "5");
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    let (_, _, err) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--pids-limit",
            "4",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6; do sleep 2 & done; wait",
        ],
    );
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );
    d.ok(&["rm", "-f", &id]);
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/pids/{}/{id}", d.cgroup_parent)).exists(),
        "cgroup removed"
    );
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_the_timeout() {
    let d = Daemon::with_busybox();
    // sleep as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM: stop must kill.
    d.ok(&[
        "run", "-d", "--name", "stubborn", "busybox", "sleep", "1000",
    ]);
    let t = Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    assert_eq!(d.inspect("stubborn")["State"]["ExitCode"], 137);

    d.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    d.ok(&["stop", "polite"]);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(d.inspect("polite")["State"]["ExitCode"], 0);
    assert_eq!(d.ok(&["logs", "polite"]), "got-term\n");

    d.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 9' USR1; while true; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["stop", "usr1"]);
    assert_eq!(d.inspect("usr1")["State"]["ExitCode"], 9);

    d.ok(&["start", "usr1"]);
    assert_eq!(d.inspect("usr1")["State"]["Status"], "running");
    d.ok(&["kill", "-s", "TERM", "usr1"]);
    d.ok(&["kill", "usr1"]);
    assert_eq!(d.ok(&["wait", "usr1"]).trim(), "137");
}

#[test]
fn logs_tail_timestamps_and_follow() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 1; echo three",
    ]);
    // follow ends when the container exits and has everything
    let out = d.shoal(&["logs", "-f", "talker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    assert_eq!(d.ok(&["logs", "--tail", "1", "talker"]), "three\n");
    let ts = d.ok(&["logs", "-t", "talker"]);
    let first = ts.lines().next().unwrap();
    assert!(
        first.ends_with(" one") && first.starts_with("20") && first.contains('T'),
        "{first}"
    );
    let (code, err) = d.fails(&["logs", "--tail", "x", "talker"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid --tail"));
}

#[test]
fn entrypoint_and_cmd_follow_docker() {
    let d = Daemon::with_busybox();
    let load = |patch: Value, name: &str| {
        let img = shoal_testkit::busybox_image_with(patch, name).unwrap();
        d.ok(&["load", "-i", img.to_str().unwrap()]);
    };
    load(
        serde_json::json!({"Entrypoint": ["echo", "ep"], "Cmd": ["cmd"]}),
        "ep:1",
    );
    load(
        serde_json::json!({"Entrypoint": ["/bin/sh", "-c", "echo shell-form"], "Cmd": ["ignored"]}),
        "shellform:1",
    );
    load(
        serde_json::json!({"WorkingDir": "/srv", "User": "shoal", "Env": ["PATH=/bin", "FOO=bar"], "Cmd": ["sh", "-c", "pwd; id -u; echo $FOO"]}),
        "cfg:1",
    );
    let table: &[(&[&str], &str)] = &[
        (&["ep:1"], "ep cmd"),
        (&["ep:1", "x", "y"], "ep x y"),
        (&["--entrypoint", "echo", "ep:1"], ""),
        (&["--entrypoint", "echo", "ep:1", "only"], "only"),
        (&["--entrypoint", "", "ep:1", "echo", "plain"], "plain"),
        (&["shellform:1"], "shell-form"),
        (&["shellform:1", "extra"], "shell-form"),
        (&["busybox", "echo", "-n", "dash-args"], "dash-args"),
        (&["cfg:1"], "/srv\n1000\nbar"),
        (&["-w", "/tmp", "-u", "0", "cfg:1"], "/tmp\n0\nbar"),
    ];
    for (args, want) in table {
        let mut full = vec!["run", "--rm"];
        full.extend_from_slice(args);
        let (code, out, err) = run_out(&d, &full);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out.trim_end(), *want, "{args:?}");
    }
    let (code, err) = d.fails(&["run", "--rm", "--entrypoint", "", "ep:1"]);
    assert_eq!(code, 125);
    assert!(err.contains("no command specified"), "{err}");
}

#[test]
fn start_failures_use_dockers_exit_codes() {
    let d = Daemon::with_busybox();
    let (code, err) = d.fails(&["run", "--name", "nf", "busybox", "no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    let c = d.inspect("nf");
    assert_eq!(c["State"]["Status"], "created");
    assert_eq!(c["State"]["ExitCode"], 127);
    assert!(c["State"]["Error"]
        .as_str()
        .unwrap()
        .contains("no-such-command"));
    let (code, err) = d.fails(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    let (code, err) = d.fails(&["run", "busybox:nope", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("no such image"), "{err}");
    let (code, err) = d.fails(&["run", "-u", "ghost", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let d = Daemon::with_busybox();
    let before = d.ok(&["ps", "-aq"]);
    for (args, needle) in [
        (
            &["run", "-m", "lots", "busybox", "true"][..],
            "invalid size",
        ),
        (
            &["run", "-m", "1k", "busybox", "true"][..],
            "minimum memory limit",
        ),
        (
            &["run", "--cpus", "64", "busybox", "true"][..],
            "range of CPUs",
        ),
        (
            &["run", "--cpus", "x", "busybox", "true"][..],
            "invalid --cpus",
        ),
        (
            &["run", "--network", "nowhere", "busybox", "true"][..],
            "network nowhere not found",
        ),
        (
            &["run", "--name", "bad name", "busybox", "true"][..],
            "invalid container name",
        ),
        (
            &["run", "-w", "relative", "busybox", "true"][..],
            "absolute path",
        ),
        (
            &["run", "--stop-signal", "NOPE", "busybox", "true"][..],
            "invalid stop signal",
        ),
        (
            &["run", "-e", "=x", "busybox", "true"][..],
            "invalid environment variable",
        ),
    ] {
        let (code, err) = d.fails(args);
        assert_eq!(code, 125, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error for {args:?}: {err}"
        );
    }
    assert_eq!(d.ok(&["ps", "-aq"]), before, "nothing half-created");
    d.ok(&["create", "--name", "dup", "busybox", "true"]);
    let (code, err) = d.fails(&["run", "--name", "dup", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("already in use"), "{err}");
    let (_, err) = d.fails(&["start", "nosuch"]);
    assert!(err.contains("no such container: nosuch"), "{err}");
    d.ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "1000"]);
    let (_, err) = d.fails(&["rm", "busy"]);
    assert!(err.contains("stop it first or use --force"), "{err}");
    d.ok(&["rm", "-f", "busy"]);
}

#[test]
fn ps_inspect_and_filters() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "create", "--name", "made", "-l", "tier=web", "busybox", "true",
    ]);
    d.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "1000"]);
    assert_eq!(
        d.shoal(&["run", "--name", "done", "busybox", "sh", "-c", "exit 2"])
            .status
            .code(),
        Some(2)
    );
    let running = d.ok(&["ps"]);
    assert!(
        running.contains(" up") && !running.contains("made"),
        "{running}"
    );
    assert!(running.starts_with("CONTAINER ID   IMAGE"), "{running}");
    let all = d.ok(&["ps", "-a"]);
    assert!(
        all.contains("Created") && all.contains("Exited (2)") && all.contains("Up "),
        "{all}"
    );
    assert_eq!(
        d.ok(&["ps", "-aq", "--filter", "label=tier=web"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        d.ok(&["ps", "-q", "--filter", "status=exited"])
            .lines()
            .count(),
        1
    );
    let json_lines = d.ok(&["ps", "-a", "--format", "json"]);
    for l in json_lines.lines() {
        let v: Value = serde_json::from_str(l).expect("one JSON document per line");
        assert!(v["Names"].is_string());
    }
    let c = d.inspect("up");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sleep", "1000"]));
    let started = c["State"]["StartedAt"].as_str().unwrap().to_string();
    d.ok(&["restart", "-t", "0", "up"]);
    let c2 = d.inspect("up");
    assert_ne!(
        c2["State"]["StartedAt"].as_str().unwrap(),
        started,
        "restart starts it again"
    );
    assert_eq!(c2["State"]["Running"], true);
}

#[test]
fn image_stop_signal_is_honoured() {
    let d = Daemon::with_busybox();
    let img = shoal_testkit::busybox_image_with(serde_json::json!({"StopSignal": "SIGUSR2", "Cmd": ["sh", "-c", "trap 'exit 12' USR2; while true; do sleep 0.1; done"]}), "stopsig:1").unwrap();
    d.ok(&["load", "-i", img.to_str().unwrap()]);
    d.ok(&["run", "-d", "--name", "sig", "stopsig:1"]);
    assert_eq!(d.inspect("sig")["Config"]["StopSignal"], "SIGUSR2");
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["stop", "sig"]);
    assert_eq!(d.inspect("sig")["State"]["ExitCode"], 12);
}

#[test]
fn a_client_that_goes_away_does_not_hurt_the_container() {
    use std::io::Read;
    let d = Daemon::with_busybox();
    let mut child = d
        .cmd(&[
            "run",
            "--name",
            "chatty",
            "busybox",
            "sh",
            "-c",
            "yes | head -n 300000; exit 4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take()); // like `| head -1`
    let _ = child.wait();
    wait_until("chatty exits on its own", Duration::from_secs(20), || {
        d.inspect("chatty")["State"]["Status"] == "exited"
    });
    let c = d.inspect("chatty");
    assert_eq!(c["State"]["ExitCode"], 4, "{c}");
    assert_eq!(c["State"]["Error"], "");
    assert_eq!(
        d.ok(&["logs", "--tail", "1", "chatty"]),
        "y\n",
        "all output reached the log"
    );
}

#[test]
fn large_stdin_and_stdout_at_once_do_not_deadlock() {
    use std::io::{Read, Write};
    let d = Daemon::with_busybox();
    let mut child = d
        .cmd(&["run", "-i", "--rm", "busybox", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            stdin.write_all(&chunk).unwrap();
        }
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.len(), 64 * 64 * 1024, "4 MiB in, 4 MiB out");
}
