//! Health checks end to end, with docker's states and flags: `--health-*`, the image's
//! HEALTHCHECK, `--no-healthcheck`, timeouts, the start period, the log of the last five
//! probes, and `health_status` events.

use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{wait_until, Daemon};

fn health(d: &Daemon, name: &str) -> Value {
    d.inspect(name)["State"]["Health"].clone()
}

fn health_status(d: &Daemon, name: &str) -> String {
    health(d, name)["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `health_status: ...` actions of the container in the last minute.
fn health_events(d: &Daemon, name: &str) -> Vec<String> {
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
        "event=health_status",
    ])
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).expect("event json");
        v["Action"].as_str().unwrap_or_default().to_string()
    })
    .collect()
}

/// Processes in the container whose command line is exactly `args` (from `top`).
fn count_processes(d: &Daemon, name: &str, args: &str) -> usize {
    d.ok(&["top", name, "-o", "pid,args"])
        .lines()
        .skip(1)
        .filter(|l| {
            l.trim()
                .split_once(char::is_whitespace)
                .is_some_and(|(_, a)| a.trim() == args)
        })
        .count()
}

#[test]
fn starting_then_healthy_once_the_check_passes() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ]);
    // Before its first probe a container is "starting" (one that probes hourly stays so).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "patient",
        "--health-cmd",
        "true",
        "--health-interval",
        "1h",
        "busybox",
        "sleep",
        "1000",
    ]);
    wait_until("patient is starting", Duration::from_secs(5), || {
        health_status(&d, "patient") == "starting"
    });
    let h = health(&d, "patient");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert_eq!(h["Log"], serde_json::json!([]), "{h}");
    let hc = &d.inspect("web")["Config"]["Healthcheck"];
    assert_eq!(
        hc["Test"],
        serde_json::json!(["CMD-SHELL", "test -f /tmp/ok"])
    );
    assert_eq!(hc["Interval"], 200_000_000);
    assert_eq!(hc["Retries"], 2);

    d.ok(&["exec", "web", "touch", "/tmp/ok"]);
    wait_until("web is healthy", Duration::from_secs(10), || {
        health_status(&d, "web") == "healthy"
    });
    let h = health(&d, "web");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    let log = h["Log"].as_array().expect("Log");
    let last = log.last().expect("a probe result");
    assert_eq!(last["ExitCode"], 0, "{h}");
    assert!(last["Start"].as_str().unwrap() <= last["End"].as_str().unwrap());
    assert!(
        health_events(&d, "web").contains(&"health_status: healthy".to_string()),
        "{:?}",
        health_events(&d, "web")
    );

    // Healthy → unhealthy when the check starts failing, after the retries.
    d.ok(&["exec", "web", "rm", "/tmp/ok"]);
    wait_until("web is unhealthy", Duration::from_secs(10), || {
        health_status(&d, "web") == "unhealthy"
    });
    assert!(health(&d, "web")["FailingStreak"].as_i64().unwrap() >= 2);
    assert!(health_events(&d, "web").contains(&"health_status: unhealthy".to_string()));
    // And back.
    d.ok(&["exec", "web", "touch", "/tmp/ok"]);
    wait_until("web is healthy again", Duration::from_secs(10), || {
        health_status(&d, "web") == "healthy"
    });

    // A restart starts over at "starting": becoming healthy again is a new transition.
    let healthy = |d: &Daemon| {
        health_events(d, "web")
            .iter()
            .filter(|e| *e == "health_status: healthy")
            .count()
    };
    let before = healthy(&d);
    d.ok(&["restart", "-t", "0", "web"]);
    wait_until(
        "web becomes healthy anew after its restart",
        Duration::from_secs(10),
        || healthy(&d) == before + 1,
    );
}

#[test]
fn a_failing_check_goes_unhealthy_and_keeps_five_results() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "echo probe-output; exit 1",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ]);
    wait_until("sick is unhealthy", Duration::from_secs(10), || {
        health_status(&d, "sick") == "unhealthy"
    });
    let h = health(&d, "sick");
    assert!(h["FailingStreak"].as_i64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["ExitCode"], 1, "{h}");
    assert_eq!(last["Output"], "probe-output\n", "{h}");

    wait_until("seven probes ran", Duration::from_secs(15), || {
        health(&d, "sick")["FailingStreak"].as_i64().unwrap_or(0) >= 7
    });
    let h = health(&d, "sick");
    assert_eq!(
        h["Log"].as_array().unwrap().len(),
        5,
        "the last five only: {h}"
    );
    assert_eq!(h["Status"], "unhealthy");
    let events = health_events(&d, "sick");
    assert_eq!(
        events,
        ["health_status: unhealthy"],
        "one event per change of status"
    );
    // The container itself keeps running (docker does not act on health).
    assert_eq!(d.inspect("sick")["State"]["Status"], "running");
}

#[test]
fn a_hanging_probe_is_killed_at_the_timeout() {
    let d = Daemon::with_busybox();
    for (name, cmd) in [("hang", "sleep 10"), ("hang2", "sleep 10; echo never")] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--health-cmd",
            cmd,
            "--health-timeout",
            "300ms",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    for name in ["hang", "hang2"] {
        wait_until(
            &format!("{name} is unhealthy"),
            Duration::from_secs(10),
            || health_status(&d, name) == "unhealthy",
        );
        let h = health(&d, name);
        let last = h["Log"].as_array().unwrap().last().cloned().unwrap();
        assert_eq!(
            last["Output"], "Health check exceeded timeout (300ms)",
            "docker's message: {h}"
        );
        assert_ne!(last["ExitCode"], 0);
    }
    // Several probes timed out by now; none of them may still run (at most the current one).
    wait_until("four probes timed out", Duration::from_secs(15), || {
        health(&d, "hang2")["FailingStreak"].as_i64().unwrap_or(0) >= 4
    });
    for name in ["hang", "hang2"] {
        let n = count_processes(&d, name, "sleep 10");
        assert!(n <= 1, "{name}: {n} probes still run after their timeout");
    }
}

#[test]
fn the_start_period_keeps_it_starting_while_failing() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-start-period",
        "2s",
        "busybox",
        "sleep",
        "1000",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let h = health(&d, "slow");
    assert_eq!(
        h["Status"], "starting",
        "failures in the start period do not count: {h}"
    );
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert!(
        !h["Log"].as_array().unwrap().is_empty(),
        "the probes ran and were logged: {h}"
    );
    wait_until(
        "slow is unhealthy after its start period",
        Duration::from_secs(10),
        || health_status(&d, "slow") == "unhealthy",
    );

    // A success during the start period ends it at once.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "quick",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "--health-start-period",
        "30s",
        "busybox",
        "sleep",
        "1000",
    ]);
    wait_until("quick is healthy", Duration::from_secs(10), || {
        health_status(&d, "quick") == "healthy"
    });
}

#[test]
fn the_images_healthcheck_is_honoured_and_can_be_disabled() {
    let d = Daemon::with_busybox();
    let img = shoal_testkit::busybox_image_with(
        serde_json::json!({
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 200_000_000},
            "Cmd": ["sleep", "1000"],
        }),
        "checked:1",
    )
    .expect("variant image");
    d.ok(&["load", "-i", img.to_str().unwrap()]);

    d.ok(&["run", "-d", "--name", "fromimage", "checked:1"]);
    assert_eq!(
        d.inspect("fromimage")["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    wait_until("fromimage is healthy", Duration::from_secs(10), || {
        health_status(&d, "fromimage") == "healthy"
    });

    d.ok(&[
        "run",
        "-d",
        "--name",
        "nocheck",
        "--no-healthcheck",
        "checked:1",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        d.inspect("nocheck")["State"]["Health"],
        Value::Null,
        "no health state without a check"
    );
    assert!(health_events(&d, "nocheck").is_empty());

    // Flags override the image's test and keep its interval.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "override",
        "--health-cmd",
        "exit 1",
        "--health-retries",
        "1",
        "checked:1",
    ]);
    wait_until("override is unhealthy", Duration::from_secs(10), || {
        health_status(&d, "override") == "unhealthy"
    });
    let hc = &d.inspect("override")["Config"]["Healthcheck"];
    assert_eq!(hc["Test"], serde_json::json!(["CMD-SHELL", "exit 1"]));
    assert_eq!(hc["Interval"], 200_000_000);

    // A container without any check has no health.
    d.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"]);
    assert_eq!(d.inspect("plain")["State"]["Health"], Value::Null);
    assert_eq!(d.inspect("plain")["Config"]["Healthcheck"], Value::Null);

    let (code, err) = d.fails(&[
        "run",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("conflicts"), "{err}");
    let (code, err) = d.fails(&["run", "--health-interval", "soon", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid --health-interval"), "{err}");
}

#[test]
fn health_checks_go_on_after_a_daemon_restart() {
    let mut d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "steady",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 1000",
    ]);
    wait_until("steady is healthy", Duration::from_secs(10), || {
        health_status(&d, "steady") == "healthy"
    });
    d.restart();
    d.ok(&["exec", "steady", "rm", "/tmp/ok"]);
    wait_until(
        "the new daemon probes steady and sees it unhealthy",
        Duration::from_secs(10),
        || health_status(&d, "steady") == "unhealthy",
    );
}

#[test]
fn ps_shows_the_health_like_docker() {
    let d = Daemon::start();
    d.load_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "hps",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "1000",
    ]);
    shoal_testkit::wait_until(
        "ps shows (healthy)",
        std::time::Duration::from_secs(10),
        || d.ok(&["ps", "--filter", "name=hps"]).contains("(healthy)"),
    );
}
