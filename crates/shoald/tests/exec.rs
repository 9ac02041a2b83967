//! `shoal exec` end to end, as a docker user types it: output and exit codes, environment,
//! working directory and user, piped stdin, a terminal, detached processes, and the errors.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use shoal_testkit::{wait_until, Daemon, PtySession};

/// (exit code, stdout, stderr) of a `shoal` command that may fail.
fn run_out(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = d.shoal(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running container named `name` that does nothing but sleep.
fn sleeper(d: &Daemon, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sleep", "1000"]);
    d.ok(&args);
}

#[test]
fn exec_passes_output_and_exit_code_through() {
    let d = Daemon::with_busybox();
    sleeper(&d, "box", &[]);

    let (code, out, err) = run_out(
        &d,
        &["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    let (code, out, err) = run_out(&d, &["exec", "box", "echo", "-n", "dash-args"]);
    assert_eq!((code, out.as_str()), (0, "dash-args"), "{err}");

    // A process killed by a signal reports 128 + the signal, as docker does.
    let (code, _, _) = run_out(&d, &["exec", "box", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code, 137);

    // The container is unaffected by its execs.
    assert_eq!(d.inspect("box")["State"]["Status"], "running");
}

#[test]
fn exec_environment_workdir_and_user() {
    let d = Daemon::with_busybox();
    sleeper(
        &d,
        "envbox",
        &["-e", "FROM_RUN=run", "-e", "SHARED=run", "-w", "/srv"],
    );

    // The container's environment and working directory are inherited.
    let out = d.ok(&[
        "exec",
        "envbox",
        "sh",
        "-c",
        "echo $FROM_RUN $SHARED $PATH; pwd",
    ]);
    assert_eq!(
        out,
        "run run /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/srv\n"
    );

    // -e adds and overrides, -w changes the directory for this process only.
    let out = d.ok(&[
        "exec",
        "-e",
        "EXTRA=x",
        "-e",
        "SHARED=exec",
        "-w",
        "/tmp",
        "envbox",
        "sh",
        "-c",
        "echo $FROM_RUN $SHARED $EXTRA; pwd",
    ]);
    assert_eq!(out, "run exec x\n/tmp\n");
    // -e KEY takes the value from the client's environment, or is dropped when unset.
    let out = d
        .cmd(&[
            "exec",
            "-e",
            "FROM_CLIENT",
            "-e",
            "UNSET_HERE",
            "envbox",
            "sh",
            "-c",
            "echo $FROM_CLIENT; env | grep -c UNSET_HERE",
        ])
        .env("FROM_CLIENT", "client-value")
        .env_remove("UNSET_HERE")
        .output()
        .expect("run shoal exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "client-value\n0\n");
    assert_eq!(d.ok(&["exec", "envbox", "pwd"]), "/srv\n");

    // -u by name (with the groups of /etc/group) and as uid:gid.
    assert_eq!(
        d.ok(&["exec", "-u", "shoal", "envbox", "id"]).trim(),
        "uid=1000(shoal) gid=1000(shoal) groups=1000(shoal),2000(extra)"
    );
    assert_eq!(
        d.ok(&["exec", "-u", "4242:2000", "envbox", "id"]).trim(),
        "uid=4242 gid=2000(extra) groups=2000(extra)"
    );
    assert_eq!(
        d.ok(&["exec", "-u", "shoal", "envbox", "sh", "-c", "echo $HOME"])
            .trim(),
        "/home/shoal"
    );
    assert_eq!(d.ok(&["exec", "envbox", "id", "-u"]).trim(), "0");

    let (code, err) = d.fails(&["exec", "-u", "ghost", "envbox", "id"]);
    assert_ne!(code, 0);
    assert!(err.contains("unable to find user ghost"), "{err}");
    let (_, err) = d.fails(&["exec", "-w", "relative", "envbox", "pwd"]);
    assert!(err.contains("must be absolute"), "{err}");
    // docker: a working directory that does not exist is an error for exec (only `run`
    // creates it), and it must not appear in the container as a side effect.
    let (code, err) = d.fails(&["exec", "-w", "/no/such/dir", "envbox", "pwd"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/no/such/dir") && err.contains("no such file or directory"),
        "{err}"
    );
    let (code, _, _) = run_out(&d, &["exec", "envbox", "test", "-e", "/no/such/dir"]);
    assert_eq!(code, 1, "exec -w must not create the directory");
}

/// 1 MiB of bytes that are not all the same, so reordering or loss would show.
fn payload() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

#[test]
fn exec_interactive_stdin_round_trips_a_mebibyte() {
    let d = Daemon::with_busybox();
    sleeper(&d, "catbox", &[]);
    let data = payload();
    let mut child = d
        .cmd(&["exec", "-i", "catbox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn shoal exec -i");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).expect("write stdin");
        // Dropping stdin closes it: cat sees EOF and exits.
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    writer.join().expect("writer thread");
    let status = child.wait().expect("wait shoal exec");
    assert!(status.success(), "{status}");
    assert_eq!(out.len(), data.len(), "all bytes came back");
    assert!(out == data, "the bytes came back unchanged and in order");

    // Without -i the process gets no stdin (EOF at once), like docker.
    let mut child = d
        .cmd(&["exec", "catbox", "sh", "-c", "cat; echo eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn shoal exec");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(b"ignored\n");
    let out = child.wait_with_output().expect("wait shoal exec");
    drop(stdin);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "eof\n");
}

#[test]
fn exec_with_a_terminal() {
    let d = Daemon::with_busybox();
    sleeper(&d, "ttybox", &[]);
    let mut term = PtySession::spawn(d.cmd(&["exec", "-it", "ttybox", "sh"]));
    let prompt = term.read_until("# ", Duration::from_secs(15));
    assert!(prompt.contains("# "), "shell prompt: {prompt:?}");
    term.send(b"tty; echo TERM=$TERM; echo $((6*7))\r");
    let out = term.read_until("42\r\n", Duration::from_secs(10));
    let pts = out
        .lines()
        .find(|l| l.starts_with("/dev/pts/"))
        .unwrap_or_else(|| panic!("tty printed no /dev/pts/N: {out:?}"));
    assert!(
        pts.trim()["/dev/pts/".len()..]
            .chars()
            .all(|c| c.is_ascii_digit()),
        "{pts:?}"
    );
    assert!(out.contains("TERM=xterm"), "{out:?}");
    assert!(out.contains("42"), "{out:?}");
    term.send(b"exit 3\r");
    assert_eq!(term.wait(Duration::from_secs(15)), Some(3));
    assert_eq!(d.inspect("ttybox")["State"]["Status"], "running");
}

#[test]
fn exec_detached_returns_at_once_and_keeps_running() {
    let d = Daemon::with_busybox();
    sleeper(&d, "bgbox", &[]);
    let t = Instant::now();
    let out = d.ok(&[
        "exec",
        "-d",
        "bgbox",
        "sh",
        "-c",
        "echo started > /tmp/flag; exec sleep 777",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "exec -d waited for the process: {:?}",
        t.elapsed()
    );
    assert_eq!(out, "", "exec -d prints nothing");
    wait_until(
        "the detached process wrote its flag",
        Duration::from_secs(10),
        || run_out(&d, &["exec", "bgbox", "cat", "/tmp/flag"]).1 == "started\n",
    );
    let ps = d.ok(&["exec", "bgbox", "ps", "-o", "args"]);
    assert!(
        ps.lines().any(|l| l.trim() == "sleep 777"),
        "the detached process still runs: {ps}"
    );

    // With a terminal too (docker exec -dt).
    let t = Instant::now();
    assert_eq!(d.ok(&["exec", "-d", "-t", "bgbox", "sleep", "666"]), "");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    wait_until(
        "the detached sleep 666 runs",
        Duration::from_secs(10),
        || d.ok(&["top", "bgbox"]).contains("sleep 666"),
    );
}

#[test]
fn exec_errors() {
    let d = Daemon::with_busybox();
    sleeper(&d, "errbox", &[]);

    let (code, out, err) = run_out(&d, &["exec", "errbox", "no-such-command"]);
    assert_eq!(code, 126, "stdout: {out} stderr: {err}");
    assert!(err.contains("executable file not found"), "{err}");
    assert!(err.contains("no-such-command"), "{err}");
    let (code, _, err) = run_out(&d, &["exec", "errbox", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let (code, _, err) = run_out(&d, &["exec", "-t", "errbox", "no-such-command"]);
    assert_eq!(code, 126, "with a terminal too: {err}");

    let (code, err) = d.fails(&["exec", "nosuch", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such container: nosuch"), "{err}");

    d.ok(&["create", "--name", "fresh", "busybox", "sleep", "1000"]);
    let (code, err) = d.fails(&["exec", "fresh", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");

    d.ok(&["pause", "errbox"]);
    let (code, err) = d.fails(&["exec", "errbox", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("paused"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    d.ok(&["unpause", "errbox"]);
    assert_eq!(d.ok(&["exec", "errbox", "echo", "thawed"]), "thawed\n");

    d.ok(&["stop", "-t", "0", "errbox"]);
    let (code, err) = d.fails(&["exec", "errbox", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn exec_joins_the_containers_namespaces() {
    let d = Daemon::with_busybox();
    sleeper(&d, "nsbox", &["-h", "inside"]);
    // The container's PID 1 is its sleep; the exec'd ps sees it and itself, nothing of the
    // host.
    let ps = d.ok(&["exec", "nsbox", "ps", "-o", "pid,args"]);
    let rows: Vec<(String, String)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim();
            let (pid, args) = l.split_once(char::is_whitespace)?;
            Some((pid.to_string(), args.trim().to_string()))
        })
        .collect();
    assert!(
        rows.contains(&("1".to_string(), "sleep 1000".to_string())),
        "{ps}"
    );
    assert!(rows.iter().any(|(_, a)| a == "ps -o pid,args"), "{ps}");
    assert!(
        !rows.iter().any(|(_, a)| a.contains("shoald")),
        "host processes are not visible: {ps}"
    );
    assert_eq!(
        d.ok(&["exec", "nsbox", "cat", "/proc/1/cmdline"]),
        "sleep\u{0}1000\u{0}"
    );
    assert_eq!(d.ok(&["exec", "nsbox", "hostname"]), "inside\n");
    // Its network namespace: loopback and its own eth0.
    assert_eq!(
        d.ok(&["exec", "nsbox", "ls", "/sys/class/net"]),
        "eth0\nlo\n"
    );
    // A file written by one exec is seen by the next: same mount namespace and rootfs.
    d.ok(&["exec", "nsbox", "sh", "-c", "echo shared > /tmp/x"]);
    assert_eq!(d.ok(&["exec", "nsbox", "cat", "/tmp/x"]), "shared\n");
    // And the exec'd process is in the container's cgroup: top (cgroup based) lists it.
    d.ok(&["exec", "-d", "nsbox", "sleep", "555"]);
    wait_until(
        "top lists the exec'd sleep",
        Duration::from_secs(10),
        || d.ok(&["top", "nsbox"]).contains("sleep 555"),
    );
}

#[test]
fn exec_privileged_gets_every_capability() {
    let d = Daemon::with_busybox();
    sleeper(&d, "capbox", &[]);
    let caps = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["capbox", "grep", "CapEff", "/proc/self/status"]);
        let out = d.ok(&args);
        u64::from_str_radix(out.split_whitespace().nth(1).expect("CapEff value"), 16)
            .expect("hex capability mask")
    };
    let default = caps(&[]);
    assert_eq!(default, 0xa80425fb, "docker's default set: {default:x}");
    let all = caps(&["--privileged"]);
    // Every capability the daemon has (its bounding set, which may lack some on this host).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(all, bounding, "all capabilities: {all:x}");
    assert_eq!(caps(&[]), default, "only that exec was privileged");
}

#[test]
fn exec_resolves_users_with_the_containers_own_files() {
    let d = Daemon::with_busybox();
    let passwd = d.root.join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nbob:x:4321:4321::/home/bob:/bin/sh\n",
    )
    .unwrap();
    sleeper(
        &d,
        "userbox",
        &["-v", &format!("{}:/etc/passwd:ro", passwd.display())],
    );
    // bob exists only in the bind-mounted /etc/passwd, not in the image.
    let out = d.ok(&[
        "exec",
        "-u",
        "bob",
        "userbox",
        "sh",
        "-c",
        "id -u; echo $HOME",
    ]);
    assert_eq!(out, "4321\n/home/bob\n");
    let (_, err) = d.fails(&["exec", "-u", "shoal", "userbox", "id"]);
    assert!(err.contains("unable to find user shoal"), "{err}");
}

#[test]
fn an_exec_ends_when_its_container_stops() {
    let d = Daemon::with_busybox();
    sleeper(&d, "stopbox", &[]);
    let mut child = d
        .cmd(&["exec", "stopbox", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal exec");
    wait_until("the exec'd sleep runs", Duration::from_secs(10), || {
        d.ok(&["top", "stopbox"]).contains("sleep 300")
    });
    d.ok(&["stop", "-t", "1", "stopbox"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("shoal exec returned once the container stopped");
    assert_eq!(
        status.code(),
        Some(137),
        "killed with its container: {status}"
    );
}
