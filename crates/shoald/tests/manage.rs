//! Managing containers beyond their lifecycle, as a docker user types it: top, stats,
//! pause/unpause, rename, update, container prune, system df, system prune and events.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

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

/// The cells of a docker-style table (columns are at least three spaces apart), header
/// first.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// One JSON document per line.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn full_id(d: &Daemon, name: &str) -> String {
    d.inspect(name)["Id"].as_str().expect("Id").to_string()
}

fn cgroup_file(d: &Daemon, controller: &str, id: &str, file: &str) -> String {
    let path = format!(
        "/sys/fs/cgroup/{controller}/{}/{id}/{file}",
        d.cgroup_parent
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .to_string()
}

/// `events --since 1m --until 0s` with `filters`, as JSON documents.
fn past_events(d: &Daemon, filters: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "events", "--since", "1m", "--until", "0s", "--format", "json",
    ];
    for f in filters {
        args.extend_from_slice(&["-f", f]);
    }
    json_lines(&d.ok(&args))
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["Action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn top_shows_only_the_containers_processes() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "topper",
        "busybox",
        "sh",
        "-c",
        "sleep 1001 & exec sleep 1002",
    ]);
    d.ok(&["run", "-d", "--name", "other", "busybox", "sleep", "1003"]);
    wait_until("both sleeps of topper run", Duration::from_secs(10), || {
        d.ok(&["top", "topper"]).contains("sleep 1001")
    });

    let t = table(&d.ok(&["top", "topper"]));
    let header = &t[0];
    assert!(
        header.contains(&"PID".to_string()) && header.contains(&"CMD".to_string()),
        "{header:?}"
    );
    let cmd_col = header.iter().position(|h| h == "CMD").expect("CMD column");
    let pid_col = header.iter().position(|h| h == "PID").expect("PID column");
    let mut cmds: Vec<&str> = t[1..].iter().map(|r| r[cmd_col].as_str()).collect();
    cmds.sort();
    assert_eq!(cmds, ["sleep 1001", "sleep 1002"], "{t:?}");
    // PIDs are host PIDs, as in docker; the container's init is among them.
    let init = d.inspect("topper")["State"]["Pid"].as_i64().expect("Pid");
    assert!(
        t[1..].iter().any(|r| r[pid_col] == init.to_string()),
        "init pid {init} in {t:?}"
    );

    // Custom ps options.
    let t = table(&d.ok(&["top", "topper", "-o", "pid,comm"]));
    assert_eq!(t[0], ["PID", "COMMAND"]);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t[1..].iter().all(|r| r[1] == "sleep"), "{t:?}");

    let (code, err) = d.fails(&["top", "topper", "-o", "nosuchfield"]);
    assert_eq!(code, 1);
    assert!(!err.is_empty());
    d.ok(&["stop", "-t", "0", "other"]);
    let (_, err) = d.fails(&["top", "other"]);
    assert!(err.contains("is not running"), "{err}");
    let (_, err) = d.fails(&["top", "nosuch"]);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn stats_no_stream_reports_each_running_container() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run", "-d", "--name", "limited", "-m", "64m", "busybox", "sleep", "1000",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "three",
        "busybox",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000 & wait",
    ]);
    d.ok(&["create", "--name", "idle", "busybox", "true"]);
    wait_until(
        "three runs three processes",
        Duration::from_secs(10),
        || table(&d.ok(&["top", "three"])).len() == 4,
    );

    let t = table(&d.ok(&["stats", "--no-stream"]));
    assert_eq!(
        t[0],
        [
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS"
        ]
    );
    let mut names: Vec<&str> = t[1..].iter().map(|r| r[1].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["limited", "three"],
        "running containers only: {t:?}"
    );
    let row = |name: &str| t[1..].iter().find(|r| r[1] == name).cloned().expect("row");
    let limited = row("limited");
    assert_eq!(limited[0], full_id(&d, "limited")[..12]);
    // docker prints memory in binary units: the limit is exactly what -m said.
    assert!(limited[3].ends_with(" / 64MiB"), "{limited:?}");
    assert_eq!(limited[7], "1");
    assert_eq!(row("three")[7], "3");

    let docs = json_lines(&d.ok(&["stats", "--no-stream", "--format", "json"]));
    assert_eq!(docs.len(), 2, "one object per running container: {docs:?}");
    let three = docs
        .iter()
        .find(|v| v["Name"] == "three")
        .expect("three in json");
    assert_eq!(three["PIDs"], "3");
    let lim = docs
        .iter()
        .find(|v| v["Name"] == "limited")
        .expect("limited in json");
    assert!(
        lim["MemUsage"].as_str().unwrap().ends_with(" / 64MiB"),
        "{lim}"
    );
    let pct = lim["MemPerc"].as_str().unwrap();
    let pct: f64 = pct.trim_end_matches('%').parse().expect("MemPerc number");
    assert!(pct > 0.0 && pct < 100.0, "{lim}");
    assert!(lim["CPUPerc"].as_str().unwrap().ends_with('%'));

    // Named containers: only those; a wrong name is an error.
    let docs = json_lines(&d.ok(&["stats", "--no-stream", "--format", "json", "three"]));
    assert_eq!(docs.len(), 1);
    let (code, err) = d.fails(&["stats", "--no-stream", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done",
    ]);
    let count = || d.ok(&["logs", "ticker"]).lines().count();
    wait_until("the ticker ticks", Duration::from_secs(10), || count() > 3);

    d.ok(&["pause", "ticker"]);
    let c = d.inspect("ticker");
    assert_eq!(c["State"]["Status"], "paused");
    assert_eq!(c["State"]["Paused"], true);
    assert_eq!(c["State"]["Running"], true);
    let ps = d.ok(&["ps", "--format", "json"]);
    let row = json_lines(&ps)
        .into_iter()
        .find(|r| r["Names"] == "ticker")
        .expect("ticker in ps");
    assert!(
        row["Status"].as_str().unwrap().ends_with("(Paused)"),
        "{row}"
    );
    assert!(d.ok(&["ps"]).contains("(Paused)"));
    // Frozen: nothing more is written while paused.
    std::thread::sleep(Duration::from_millis(300));
    let frozen = count();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(count(), frozen, "the counter advanced while paused");

    let (code, err) = d.fails(&["pause", "ticker"]);
    assert_eq!(code, 1);
    assert!(err.contains("already paused"), "{err}");

    d.ok(&["unpause", "ticker"]);
    assert_eq!(d.inspect("ticker")["State"]["Status"], "running");
    assert_eq!(d.inspect("ticker")["State"]["Paused"], false);
    wait_until("the counter runs again", Duration::from_secs(10), || {
        count() > frozen + 3
    });
    let (_, err) = d.fails(&["unpause", "ticker"]);
    assert!(err.contains("not paused"), "{err}");

    // A paused container can still be stopped, and removed by force.
    d.ok(&["pause", "ticker"]);
    d.ok(&["stop", "-t", "1", "ticker"]);
    assert_eq!(d.inspect("ticker")["State"]["Status"], "exited");
    d.ok(&["start", "ticker"]);
    d.ok(&["pause", "ticker"]);
    d.ok(&["rm", "-f", "ticker"]);
    assert!(d.ok(&["ps", "-aq"]).is_empty());

    d.ok(&["create", "--name", "never", "busybox", "true"]);
    let (_, err) = d.fails(&["pause", "never"]);
    assert!(err.contains("is not running"), "{err}");

    let acts = actions(&past_events(&d, &["event=pause", "event=unpause"]));
    assert_eq!(acts, ["pause", "unpause", "pause", "pause"], "{acts:?}");
}

#[test]
fn rename_moves_the_name() {
    let mut d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "before", "busybox", "sleep", "1000"]);
    d.ok(&["create", "--name", "taken", "busybox", "true"]);
    let id = full_id(&d, "before");

    d.ok(&["rename", "before", "after"]);
    assert_eq!(d.inspect("after")["Name"], "/after");
    assert_eq!(full_id(&d, "after"), id);
    let (code, err) = d.fails(&["inspect", "before"]);
    assert_eq!(code, 1);
    assert!(
        err.to_lowercase().contains("no such object: before"),
        "{err}"
    );
    assert_eq!(d.ok(&["exec", "after", "echo", "hi"]), "hi\n");
    let names: Vec<String> = json_lines(&d.ok(&["ps", "-a", "--format", "json"]))
        .iter()
        .map(|r| r["Names"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"after".into()) && !names.contains(&"before".into()),
        "{names:?}"
    );
    // The old name is free again.
    d.ok(&["create", "--name", "before", "busybox", "true"]);

    let (code, err) = d.fails(&["rename", "after", "taken"]);
    assert_eq!(code, 1);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(full_id(&d, "after"), id, "a refused rename changes nothing");
    let (_, err) = d.fails(&["rename", "after", "bad name"]);
    assert!(err.contains("invalid container name"), "{err}");
    let (_, err) = d.fails(&["rename", "nosuch", "whatever"]);
    assert!(err.contains("no such container"), "{err}");

    let ev = past_events(&d, &["event=rename"]);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["Actor"]["ID"], id.as_str());
    assert_eq!(ev[0]["Actor"]["Attributes"]["oldName"], "before");
    assert_eq!(ev[0]["Actor"]["Attributes"]["name"], "after");

    // The new name is what the daemon remembers.
    d.restart();
    assert_eq!(full_id(&d, "after"), id);
    assert_eq!(d.inspect("after")["State"]["Status"], "running");
}

#[test]
fn update_changes_limits_live_and_they_survive_a_restart() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "upd", "busybox", "sleep", "1000"]);
    let id = full_id(&d, "upd");

    d.ok(&[
        "update",
        "--memory",
        "128m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "upd",
    ]);
    let check = |phase: &str| {
        assert_eq!(
            cgroup_file(&d, "memory", &id, "memory.limit_in_bytes"),
            (128u64 << 20).to_string(),
            "{phase}"
        );
        assert_eq!(
            cgroup_file(&d, "cpu", &id, "cpu.cfs_quota_us"),
            "50000",
            "{phase}"
        );
        assert_eq!(
            cgroup_file(&d, "cpu", &id, "cpu.cfs_period_us"),
            "100000",
            "{phase}"
        );
        assert_eq!(cgroup_file(&d, "pids", &id, "pids.max"), "50", "{phase}");
        let host = &d.inspect("upd")["HostConfig"];
        assert_eq!(host["Memory"], 128 << 20, "{phase}");
        assert_eq!(host["NanoCpus"], 500_000_000, "{phase}");
        assert_eq!(host["PidsLimit"], 50, "{phase}");
    };
    check("after update");
    // The limit is real: 60 processes do not fit.
    let (_, _, err) = run_out(
        &d,
        &[
            "exec",
            "upd",
            "sh",
            "-c",
            "for i in $(seq 60); do sleep 5 & done; wait",
        ],
    );
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );

    d.ok(&["restart", "-t", "0", "upd"]);
    check("after restart");
    d.ok(&["stop", "-t", "0", "upd"]);
    // A stopped container takes the new values at its next start.
    d.ok(&["update", "--memory", "96m", "upd"]);
    d.ok(&["start", "upd"]);
    assert_eq!(
        cgroup_file(&d, "memory", &id, "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );

    // -1 and 0 lift the limits again.
    d.ok(&["update", "--pids-limit", "-1", "--cpus", "0", "upd"]);
    assert_eq!(cgroup_file(&d, "pids", &id, "pids.max"), "max");
    assert_eq!(cgroup_file(&d, "cpu", &id, "cpu.cfs_quota_us"), "-1");

    d.ok(&["update", "--restart", "on-failure:3", "upd"]);
    let rp = &d.inspect("upd")["HostConfig"]["RestartPolicy"];
    assert_eq!(rp["Name"], "on-failure");
    assert_eq!(rp["MaximumRetryCount"], 3);
    d.ok(&["update", "--restart", "unless-stopped", "upd"]);
    let rp = &d.inspect("upd")["HostConfig"]["RestartPolicy"];
    assert_eq!(rp["Name"], "unless-stopped");
    assert_eq!(rp["MaximumRetryCount"], 0);

    let (_, err) = d.fails(&["update", "upd"]);
    assert!(err.contains("nothing to update"), "{err}");
    let (_, err) = d.fails(&["update", "--memory", "lots", "upd"]);
    assert!(err.contains("invalid size"), "{err}");
    let (_, err) = d.fails(&["update", "--cpus", "0.5", "nosuch"]);
    assert!(err.contains("no such container"), "{err}");
    // docker refuses a restart policy on an auto-removed container.
    d.ok(&[
        "run", "-d", "--rm", "--name", "auto", "busybox", "sleep", "1000",
    ]);
    let (_, err) = d.fails(&["update", "--restart", "always", "auto"]);
    assert!(err.contains("--rm") || err.contains("AutoRemove"), "{err}");
    // Stopped by the user, so the teardown's rm -f does not meet the restart policy
    // (see restart.rs, rm_force_removes_a_running_container_with_a_restart_policy).
    d.ok(&["stop", "-t", "0", "upd"]);
}

#[test]
fn container_prune_removes_only_stopped_containers() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "alive", "busybox", "sleep", "1000"]);
    d.ok(&["create", "--name", "made", "busybox", "true"]);
    d.ok(&[
        "run",
        "--name",
        "heavy",
        "busybox",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /blob",
    ]);
    d.ok(&["run", "--name", "kept", "-l", "keep=yes", "busybox", "true"]);
    let heavy = full_id(&d, "heavy");
    let made = full_id(&d, "made");
    let kept = full_id(&d, "kept");

    let out = d.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Deleted Containers:", "{out}");
    let mut deleted: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    deleted.sort();
    let mut want = vec![heavy.as_str(), made.as_str()];
    want.sort();
    assert_eq!(deleted, want, "{out}");
    let total = lines.last().expect("a total line");
    assert!(
        total.starts_with("Total reclaimed space: 30") && total.ends_with("kB"),
        "the 300 kB written to the container's layer: {total}"
    );
    let mut left: Vec<String> = json_lines(&d.ok(&["ps", "-a", "--format", "json"]))
        .iter()
        .map(|r| r["Names"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["alive", "kept"]);

    // until= takes a duration ago (docker): kept is younger than an hour, older than 1s.
    let out = d.ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    std::thread::sleep(Duration::from_millis(1100));
    let out = d.ok(&["container", "prune", "-f", "--filter", "until=1s"]);
    assert!(out.contains(&kept), "{out}");
    let (_, err) = d.fails(&["container", "prune", "-f", "--filter", "until=soon"]);
    assert!(err.contains("invalid"), "{err}");

    let out = d.ok(&["container", "prune", "-f"]);
    assert!(!out.contains(&full_id(&d, "alive")), "{out}");
    assert_eq!(
        d.ok(&["ps", "-aq"]).lines().count(),
        1,
        "only alive is left"
    );
    let out = d.ok(&["container", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    // Without -f it asks, and no answer means no.
    d.ok(&["create", "--name", "asked", "busybox", "true"]);
    let out = d.shoal(&["container", "prune"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Are you sure"));
    assert_eq!(
        d.ok(&["ps", "-aq"]).lines().count(),
        2,
        "nothing was removed"
    );
}

#[test]
fn system_df_counts_images_containers_and_volumes() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "dfvol:/data",
        "busybox",
        "sh",
        "-c",
        "head -c 50000 /dev/zero > /data/f; sleep 1000",
    ]);
    d.ok(&[
        "run",
        "--name",
        "gone",
        "busybox",
        "sh",
        "-c",
        "head -c 20000 /dev/zero > /x",
    ]);
    d.ok(&["volume", "create", "spare"]);
    wait_until("the volume has its data", Duration::from_secs(10), || {
        run_out(&d, &["exec", "user", "stat", "-c", "%s", "/data/f"]).1 == "50000\n"
    });

    let t = table(&d.ok(&["system", "df"]));
    assert_eq!(t[0], ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    let row = |kind: &str| {
        t.iter()
            .find(|r| r[0] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} row: {t:?}"))
    };
    let images = row("Images");
    assert_eq!((images[1].as_str(), images[2].as_str()), ("1", "1"));
    assert!(
        images[3].ends_with("MB"),
        "busybox is about 2 MB: {images:?}"
    );
    assert_eq!(images[4], "0B (0%)", "the only image is in use");
    let containers = row("Containers");
    assert_eq!((containers[1].as_str(), containers[2].as_str()), ("2", "1"));
    assert!(
        containers[4].starts_with("20") && containers[4].contains("kB"),
        "the exited container's 20 kB are reclaimable: {containers:?}"
    );
    let volumes = row("Local Volumes");
    assert_eq!((volumes[1].as_str(), volumes[2].as_str()), ("2", "1"));
    assert!(
        volumes[3].starts_with("50") && volumes[3].ends_with("kB"),
        "{volumes:?}"
    );
    assert!(volumes[4].starts_with("0B"), "spare is empty: {volumes:?}");

    d.ok(&["rm", "-f", "user", "gone"]);
    d.ok(&["volume", "rm", "dfvol", "spare"]);
}

#[test]
fn system_prune_removes_stopped_containers_and_dangling_images() {
    let d = Daemon::with_busybox();
    // Two loads of the same name: the first image loses it and is dangling.
    for cmd in ["first", "second"] {
        let img =
            shoal_testkit::busybox_image_with(serde_json::json!({"Cmd": ["echo", cmd]}), "twice:1")
                .expect("variant image");
        d.ok(&["load", "-i", img.to_str().unwrap()]);
    }
    let images = d.ok(&["images", "--format", "json"]);
    let dangling: Vec<Value> = json_lines(&images)
        .into_iter()
        .filter(|i| i["Repository"] == "<none>")
        .collect();
    assert_eq!(dangling.len(), 1, "{images}");

    d.ok(&["run", "-d", "--name", "alive", "busybox", "sleep", "1000"]);
    d.ok(&["run", "--name", "done", "twice:1"]);
    d.ok(&["run", "--name", "anon", "-v", "/scratch", "busybox", "true"]);
    d.ok(&["rm", "anon"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "vuser",
        "-v",
        "busyvol:/v",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).lines().count(), 2);

    // Without -f it asks first; no answer (stdin closed) means no.
    let out = d.shoal(&["system", "prune"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("all stopped containers") && err.contains("all dangling images"),
        "{err}"
    );
    assert_eq!(
        d.ok(&["ps", "-aq"]).lines().count(),
        3,
        "nothing was removed yet"
    );

    let out = d.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(out.contains("Deleted Images:"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let mut left: Vec<String> = json_lines(&d.ok(&["ps", "-a", "--format", "json"]))
        .iter()
        .map(|r| r["Names"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["alive", "vuser"], "stopped containers are gone");
    let images = json_lines(&d.ok(&["images", "--format", "json"]));
    assert_eq!(images.len(), 2, "busybox and twice:1 stay: {images:?}");
    assert!(images.iter().all(|i| i["Repository"] != "<none>"));
    assert_eq!(
        d.ok(&["volume", "ls", "-q"]).lines().count(),
        2,
        "volumes stay without --volumes"
    );

    let out = d.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(
        d.ok(&["volume", "ls", "-q"]).trim(),
        "busyvol",
        "the unused anonymous volume went, the one in use stayed"
    );

    // -a: every image no container uses (twice:1 now has none).
    let out = d.ok(&["system", "prune", "-f", "-a"]);
    assert!(out.contains("Deleted Images:"), "{out}");
    let images = json_lines(&d.ok(&["images", "--format", "json"]));
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["Repository"], "busybox");
    d.ok(&["rm", "-f", "vuser"]);
    d.ok(&["volume", "rm", "busyvol"]);
}

#[test]
fn events_list_a_containers_life_with_filters() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "--name", "ev1", "busybox", "true"]);
    d.ok(&["rm", "ev1"]);
    let _ = run_out(
        &d,
        &["run", "--name", "ev2", "busybox", "sh", "-c", "exit 3"],
    );

    let life = past_events(&d, &["container=ev1"]);
    let acts = actions(&life);
    let core: Vec<&str> = acts
        .iter()
        .map(String::as_str)
        .filter(|a| matches!(*a, "create" | "start" | "die" | "destroy"))
        .collect();
    assert_eq!(core, ["create", "start", "die", "destroy"], "{acts:?}");
    for e in &life {
        assert_eq!(e["Type"], "container");
        assert_eq!(e["Actor"]["Attributes"]["name"], "ev1", "{e}");
        assert_eq!(e["Actor"]["Attributes"]["image"], "busybox", "{e}");
        let id = e["Actor"]["ID"].as_str().unwrap();
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{e}"
        );
        // docker's JSON: Unix seconds and nanoseconds, and the old top-level fields.
        let (secs, nanos) = (e["time"].as_i64().unwrap(), e["timeNano"].as_i64().unwrap());
        assert_eq!(nanos / 1_000_000_000, secs, "{e}");
        let now = chrono::Utc::now().timestamp();
        assert!(secs > now - 120 && secs <= now, "{e}");
        assert_eq!(e["status"], e["Action"], "{e}");
        assert_eq!(e["id"], e["Actor"]["ID"], "{e}");
        assert_eq!(e["from"], "busybox", "{e}");
    }
    let die = life.iter().find(|e| e["Action"] == "die").unwrap();
    assert_eq!(die["Actor"]["Attributes"]["exitCode"], "0");

    let dies = past_events(&d, &["event=die"]);
    assert_eq!(actions(&dies), ["die", "die"]);
    let codes: Vec<&str> = dies
        .iter()
        .map(|e| e["Actor"]["Attributes"]["exitCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["0", "3"]);
    // Filters of different keys must all match; values of one key are alternatives.
    assert_eq!(past_events(&d, &["event=die", "container=ev2"]).len(), 1);
    assert_eq!(
        past_events(&d, &["container=ev1", "container=ev2", "event=start"]).len(),
        2
    );
    assert!(past_events(&d, &["container=nosuch"]).is_empty());

    // The plain format: time, type, action, id, attributes.
    let text = d.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "-f",
        "event=create",
    ]);
    let first = text.lines().next().expect("a create event");
    let fields: Vec<&str> = first.splitn(5, ' ').collect();
    assert_eq!(fields[1..3], ["container", "create"], "{first}");
    assert!(fields[4].contains("name=ev1"), "{first}");

    // Events before --since are not shown.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        json_lines(&d.ok(&["events", "--since", "1s", "--until", "0s", "--format", "json"]))
            .is_empty()
    );
    let (_, err) = d.fails(&["events", "-f", "color=red"]);
    assert!(err.contains("invalid filter"), "{err}");
}

#[test]
fn a_live_events_stream_sees_what_happens_after_it_started() {
    let d = Daemon::with_busybox();
    d.ok(&["create", "--name", "later", "busybox", "sleep", "1000"]);
    let mut child = d
        .cmd(&["events", "--format", "json", "-f", "type=container"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    // Until the stream is subscribed we cannot know it is; probe with throwaway containers
    // until one of them shows up.
    let mut subscribed = false;
    for i in 0..50 {
        let name = format!("probe{i}");
        d.ok(&["create", "--name", &name, "busybox", "true"]);
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(ev["Action"], "create", "{ev}");
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the live stream never showed a create");
    d.ok(&["start", "later"]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) {
            let is_it = ev["Action"] == "start" && ev["Actor"]["Attributes"]["name"] == "later";
            seen.push(ev);
            if is_it {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|e| e["Action"] == "start" && e["Actor"]["Attributes"]["name"] == "later"),
        "no start event for later: {seen:?}"
    );
}

#[test]
fn events_since_and_until_take_any_time_format() {
    let d = Daemon::with_busybox();
    // Start right after a second begins, so the events fall in the same whole second.
    while chrono::Utc::now().timestamp_subsec_millis() > 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = chrono::Utc::now();
    d.ok(&["create", "--name", "timed", "busybox", "true"]);
    let count = |since: &str, until: &str| {
        let mut args = vec!["events", "-f", "container=timed", "--since", since];
        args.extend_from_slice(&["--until", until]);
        d.ok(&args).lines().count()
    };
    let second = before.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(count(&second, "0s"), 1, "since {second} (whole seconds)");
    let offset = before
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    assert_eq!(count(&offset, "0s"), 1, "since {offset} (another offset)");
    let unix = before.timestamp().to_string();
    assert_eq!(count(&unix, "0s"), 1, "since {unix} (Unix seconds)");
    // An until before the event excludes it, whatever its form.
    let until = (before - chrono::Duration::seconds(1))
        .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(count("1m", &until), 0, "until {until}");
    let (_, err) = d.fails(&["events", "--since", "yesterday"]);
    assert!(err.contains("invalid time"), "{err}");
}
