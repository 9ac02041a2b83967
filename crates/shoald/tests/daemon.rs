//! The daemon itself: several on one machine, one per data root, and containers that
//! outlive it.

use std::time::Duration;

use shoal_testkit::{wait_until, Daemon};

#[test]
fn two_daemons_coexist_and_a_data_root_has_one_owner() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.load_busybox();
    b.load_busybox();
    a.ok(&["run", "-d", "--name", "same", "busybox", "sleep", "1000"]);
    b.ok(&["run", "-d", "--name", "same", "busybox", "sleep", "1000"]);
    assert_eq!(a.ok(&["ps", "-q"]).lines().count(), 1);
    assert_eq!(b.ok(&["ps", "-q"]).lines().count(), 1);
    let out = std::process::Command::new(shoal_testkit::bin("shoald"))
        .arg("--data-root")
        .arg(a.data_root())
        .arg("--exec-root")
        .arg(a.root.join("other-exec"))
        .arg("--socket")
        .arg(a.root.join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another shoald") && err.contains("--data-root"),
        "{err}"
    );
}

#[test]
fn cli_without_a_daemon_says_what_to_do() {
    let out = std::process::Command::new(shoal_testkit::bin("shoal"))
        .args(["-H", "unix:///tmp/no-such-shoald.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to shoald at /tmp/no-such-shoald.sock")
            && err.contains("Is shoald running?"),
        "{err}"
    );
}

#[test]
fn containers_survive_a_daemon_crash() {
    let mut d = Daemon::start();
    d.load_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 5",
    ]);
    let pid = d.inspect("counter")["State"]["Pid"].as_i64().unwrap();
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container kept running"
    );
    d.restart();
    assert_eq!(d.inspect("counter")["State"]["Status"], "running");
    wait_until(
        "the short container is seen exited",
        Duration::from_secs(10),
        || d.inspect("short")["State"]["Status"] == "exited",
    );
    assert_eq!(d.inspect("short")["State"]["ExitCode"], 5);
    // The log has no gap: every number is there.
    let logs = d.ok(&["logs", "counter"]);
    let nums: Vec<u64> = logs.lines().map(|l| l.parse().unwrap()).collect();
    assert!(nums.len() > 20, "{nums:?}");
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap in the log around {}", w[0]);
    }
    // And the re-attached daemon still controls it.
    d.ok(&["stop", "-t", "1", "counter"]);
    assert_eq!(d.inspect("counter")["State"]["Status"], "exited");
}
