//! Restart policies end to end, with docker's rules: on-failure with a maximum, always,
//! unless-stopped, back-off between restarts, a user's stop, and what a restarted daemon
//! brings back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::{wait_until, Daemon};

fn status(d: &Daemon, name: &str) -> String {
    d.inspect(name)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn restart_count(d: &Daemon, name: &str) -> i64 {
    d.inspect(name)["RestartCount"]
        .as_i64()
        .expect("RestartCount")
}

fn pid(d: &Daemon, name: &str) -> i64 {
    d.inspect(name)["State"]["Pid"].as_i64().expect("Pid")
}

/// Actions of the container's past events (last minute), e.g. `["create", "start", ...]`.
fn event_actions(d: &Daemon, name: &str, event: &str) -> Vec<String> {
    d.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "--format",
        "json",
        "-f",
        &format!("container={name}"),
        "-f",
        &format!("event={event}"),
    ])
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).expect("event json");
        v["Action"].as_str().unwrap_or_default().to_string()
    })
    .collect()
}

#[test]
fn on_failure_retries_up_to_its_maximum() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    wait_until(
        "flaky exited for good after 2 restarts",
        Duration::from_secs(20),
        || status(&d, "flaky") == "exited" && restart_count(&d, "flaky") == 2,
    );
    // And it stays that way.
    std::thread::sleep(Duration::from_secs(1));
    let c = d.inspect("flaky");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 3);
    assert_eq!(c["RestartCount"], 2);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(
        event_actions(&d, "flaky", "start").len(),
        3,
        "1 start + 2 restarts"
    );
    assert_eq!(event_actions(&d, "flaky", "die").len(), 3);
    // `wait` reports the final exit.
    assert_eq!(d.ok(&["wait", "flaky"]).trim(), "3");

    // A user's start resets the count (docker's ResetRestartManager): the policy gets its
    // two retries again.
    d.ok(&["start", "flaky"]);
    wait_until(
        "flaky restarted twice more after a manual start",
        Duration::from_secs(20),
        || status(&d, "flaky") == "exited" && event_actions(&d, "flaky", "start").len() == 6,
    );
    assert_eq!(restart_count(&d, "flaky"), 2);
}

#[test]
fn on_failure_does_not_restart_a_success_and_no_policy_never_restarts() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2; exit 0",
    ]);
    d.ok(&[
        "run", "-d", "--name", "plain", "busybox", "sh", "-c", "exit 1",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "explicit-no",
        "--restart",
        "no",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    for name in ["fine", "plain", "explicit-no"] {
        wait_until(&format!("{name} exited"), Duration::from_secs(10), || {
            status(&d, name) == "exited"
        });
    }
    std::thread::sleep(Duration::from_millis(1500));
    for name in ["fine", "plain", "explicit-no"] {
        assert_eq!(status(&d, name), "exited", "{name}");
        assert_eq!(restart_count(&d, name), 0, "{name}");
        assert_eq!(event_actions(&d, name, "start").len(), 1, "{name}");
    }
    assert_eq!(
        d.inspect("plain")["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );
}

#[test]
fn always_restarts_until_the_user_stops_it() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "phoenix",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.3; exit 0",
    ]);
    wait_until("phoenix restarted twice", Duration::from_secs(20), || {
        restart_count(&d, "phoenix") >= 2
    });
    d.ok(&["stop", "-t", "1", "phoenix"]);
    assert_eq!(status(&d, "phoenix"), "exited");
    let count = restart_count(&d, "phoenix");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        status(&d, "phoenix"),
        "exited",
        "a stopped container stays stopped"
    );
    assert_eq!(restart_count(&d, "phoenix"), count, "no restart after stop");
    assert!(d.ok(&["ps", "-q"]).is_empty(), "{}", d.ok(&["ps", "-a"]));

    // The same for a container that dies at once, stopped between two restarts.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "crasher",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_until("crasher restarting", Duration::from_secs(20), || {
        restart_count(&d, "crasher") >= 3
    });
    d.ok(&["stop", "crasher"]);
    let count = restart_count(&d, "crasher");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&d, "crasher"), "exited");
    assert_eq!(restart_count(&d, "crasher"), count, "no restart after stop");

    // A user's start brings the policy back.
    d.ok(&["start", "phoenix"]);
    let after = restart_count(&d, "phoenix");
    wait_until("phoenix restarts again", Duration::from_secs(20), || {
        restart_count(&d, "phoenix") > after
    });
    d.ok(&["stop", "-t", "0", "phoenix"]);

    // Removing a container between two restarts cancels the next one.
    d.ok(&["start", "crasher"]);
    wait_until(
        "crasher waits for its next restart",
        Duration::from_secs(20),
        || status(&d, "crasher") == "restarting",
    );
    d.ok(&["rm", "-f", "crasher"]);
    assert_eq!(d.shoal(&["inspect", "crasher"]).status.code(), Some(1));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.ok(&["ps", "-aq"]).lines().count(),
        1,
        "only phoenix is left"
    );
}

#[test]
fn rm_force_removes_a_running_container_with_a_restart_policy() {
    let d = Daemon::with_busybox();
    for policy in ["always", "unless-stopped", "on-failure"] {
        let name = format!("rm-{policy}");
        d.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ]);
        let t = Instant::now();
        let out = d.shoal(&["rm", "-f", &name]);
        if !out.status.success() {
            // Do not leave it to the policy: a stop suspends it, then it can go.
            let _ = d.shoal(&["stop", "-t", "0", &name]);
            let _ = d.shoal(&["rm", "-f", &name]);
        }
        assert!(
            out.status.success(),
            "rm -f {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "rm -f {name} took {:?}",
            t.elapsed()
        );
        assert_eq!(
            d.shoal(&["inspect", &name]).status.code(),
            Some(1),
            "{name} is gone"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        d.ok(&["ps", "-aq"]).is_empty(),
        "no policy brought a removed container back: {}",
        d.ok(&["ps", "-a"])
    );
}

#[test]
fn back_off_grows_and_restarting_is_visible() {
    let d = Daemon::with_busybox();
    let started = Instant::now();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "dies",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    // docker waits 100 ms, then doubles: in 3 s there is room for about 5 restarts, not
    // dozens.
    let wait = Duration::from_secs(3).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let n = restart_count(&d, "dies");
    assert!((2..=6).contains(&n), "RestartCount after ~3 s: {n}");

    // With a long back-off it spends most of its time restarting, and says so.
    wait_until(
        "ps shows the container restarting",
        Duration::from_secs(20),
        || {
            d.ok(&["ps"])
                .lines()
                .any(|l| l.contains("Restarting (1)") && l.ends_with("dies"))
        },
    );
    let c = d.inspect("dies");
    if c["State"]["Status"] == "restarting" {
        assert_eq!(c["State"]["Restarting"], true);
        assert_eq!(c["State"]["ExitCode"], 1);
    }
    // A restarting container cannot be killed, exec'd into or paused; it can be stopped.
    wait_until("dies is between two runs", Duration::from_secs(20), || {
        status(&d, "dies") == "restarting"
    });
    let (_, err) = d.fails(&["exec", "dies", "true"]);
    assert!(
        err.contains("not running") || err.contains("restarting"),
        "{err}"
    );
    d.ok(&["stop", "dies"]);
    assert_eq!(status(&d, "dies"), "exited");
}

#[test]
fn restart_policy_input_is_checked() {
    let d = Daemon::with_busybox();
    for (policy, needle) in [
        ("always:3", "only on-failure takes a maximum retry count"),
        ("sometimes", "invalid restart policy"),
        ("on-failure:x", "must be a number"),
    ] {
        let (code, err) = d.fails(&["run", "--restart", policy, "busybox", "true"]);
        assert_eq!(code, 125, "{policy}");
        assert!(err.contains(needle), "{policy}: {err}");
    }
    let (code, err) = d.fails(&["run", "--restart", "always", "--rm", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("conflicting options"), "{err}");
    let (code, err) = d.fails(&[
        "create",
        "--restart",
        "on-failure:1",
        "--rm",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("conflicting options"), "{err}");
    // --rm with --restart no is fine.
    d.ok(&["run", "--rm", "--restart", "no", "busybox", "true"]);
    assert!(d.ok(&["ps", "-aq"]).is_empty(), "nothing was left behind");
}

#[test]
fn a_restarted_daemon_follows_dockers_rules() {
    let mut d = Daemon::with_busybox();
    let run = |name: &str, policy: &str| {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ]);
    };
    run("always-up", "always");
    run("unless-up", "unless-stopped");
    run("unless-down", "unless-stopped");
    run("always-down", "always");
    run("none-down", "no");
    for name in ["unless-down", "always-down", "none-down"] {
        d.ok(&["stop", "-t", "0", name]);
    }
    d.ok(&[
        "run",
        "-d",
        "--name",
        "gave-up",
        "--restart",
        "on-failure:1",
        "busybox",
        "sh",
        "-c",
        "exit 2",
    ]);
    wait_until("gave-up used its retry", Duration::from_secs(20), || {
        status(&d, "gave-up") == "exited" && restart_count(&d, "gave-up") == 1
    });
    let pids = (pid(&d, "always-up"), pid(&d, "unless-up"));

    d.restart();
    for name in ["always-up", "unless-up", "always-down"] {
        wait_until(
            &format!("{name} runs after the daemon restart"),
            Duration::from_secs(20),
            || status(&d, name) == "running",
        );
    }
    assert_eq!(
        (pid(&d, "always-up"), pid(&d, "unless-up")),
        pids,
        "running containers kept running"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        status(&d, "unless-down"),
        "exited",
        "unless-stopped stays stopped"
    );
    assert_eq!(status(&d, "none-down"), "exited");
    assert_eq!(
        status(&d, "gave-up"),
        "exited",
        "on-failure used up its retries"
    );
    assert_eq!(restart_count(&d, "gave-up"), 1);
    // Still under control of the new daemon.
    d.ok(&["stop", "-t", "0", "always-up", "unless-up", "always-down"]);
    std::thread::sleep(Duration::from_secs(1));
    for name in ["always-up", "unless-up", "always-down"] {
        assert_eq!(status(&d, name), "exited", "{name}");
    }
}

#[test]
fn containers_that_died_while_the_daemon_was_down_are_restarted() {
    let mut d = Daemon::with_busybox();
    for (name, policy) in [
        ("always", "always"),
        ("unless", "unless-stopped"),
        ("onfail", "on-failure"),
        ("nopolicy", "no"),
    ] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    let old: Vec<i64> = ["always", "unless", "onfail", "nopolicy"]
        .iter()
        .map(|n| pid(&d, n))
        .collect();
    d.kill9();
    // The containers die while nobody watches.
    for p in &old {
        // SAFETY: kill(2) on the container's init, a pid we just read from inspect.
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    wait_until("the containers are gone", Duration::from_secs(10), || {
        old.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    });
    d.restart();
    for name in ["always", "unless", "onfail"] {
        wait_until(
            &format!("{name} was restarted by the new daemon"),
            Duration::from_secs(20),
            || status(&d, name) == "running" && restart_count(&d, name) == 1,
        );
    }
    let c = d.inspect("nopolicy");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 137);
    assert_ne!(pid(&d, "always"), old[0], "a new process");
    assert_eq!(
        d.ok(&["exec", "always", "echo", "ok"]),
        "ok\n",
        "the restarted container works"
    );

    // And a crash with containers that keep running: the new daemon takes them over.
    let pids: Vec<i64> = ["always", "unless"].iter().map(|n| pid(&d, n)).collect();
    d.kill9();
    d.restart();
    assert_eq!(status(&d, "always"), "running");
    assert_eq!(
        vec![pid(&d, "always"), pid(&d, "unless")],
        pids,
        "not restarted, re-attached"
    );
    d.ok(&["stop", "-t", "0", "unless", "always", "onfail"]);
    assert_eq!(status(&d, "unless"), "exited");
}

#[test]
fn logs_keep_every_run_and_an_attached_run_returns_after_the_first() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "talky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    wait_until("talky gave up", Duration::from_secs(20), || {
        status(&d, "talky") == "exited" && restart_count(&d, "talky") == 2
    });
    assert_eq!(
        d.ok(&["logs", "talky"]),
        "run\nrun\nrun\n",
        "one line per run"
    );

    // docker run (attached) reports the first exit; the policy goes on in the background.
    let t = Instant::now();
    let out = d.shoal(&[
        "run",
        "--name",
        "attached",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    wait_until("attached gave up", Duration::from_secs(20), || {
        status(&d, "attached") == "exited" && restart_count(&d, "attached") == 2
    });
}
