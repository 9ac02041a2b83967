//! Services on a real swarm: tasks spread over the nodes and run as containers, heal when a
//! node dies, scale, and go away with the service.

use std::time::Duration;

use serde_json::Value;
use shoal_chaos_tests::{task_rows, wait_until, Cluster};

const SETTLE: Duration = Duration::from_secs(30);

/// A swarm (heartbeat 1 s) with busybox on every host and every node ready.
fn ready_swarm(managers: usize, workers: usize) -> Cluster {
    let c = Cluster::swarm(managers, workers, "1s");
    for d in &c.hosts {
        d.load_busybox();
    }
    wait_until("all ready", SETTLE, || {
        c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == managers + workers
    });
    c
}

/// `service create FLAGS… busybox sleep 3600` on host 0 (it returns once converged).
fn create_sleeper(c: &Cluster, flags: &[&str]) -> String {
    let mut args = vec!["service", "create"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sleep", "3600"]);
    c.hosts[0].ok(&args)
}

/// `svc ps` as (node hostname, desired state, current state) for each task.
fn tasks(c: &Cluster, from: usize, svc: &str) -> Vec<(String, String, String)> {
    task_rows(&c.hosts[from].ok(&["service", "ps", svc]))
}

fn running_on(c: &Cluster, from: usize, svc: &str) -> Vec<String> {
    let mut v: Vec<String> = tasks(c, from, svc)
        .into_iter()
        .filter(|(_, d, s)| d == "Running" && s == "Running")
        .map(|(n, _, _)| n)
        .collect();
    v.sort();
    v
}

#[test]
fn a_replicated_service_spreads_heals_scales_and_goes() {
    let mut c = ready_swarm(1, 2);

    // Bad input is refused before anything is made.
    let (_, e) = c.hosts[0].fails(&["service", "create", "--name", "bad name", "busybox"]);
    assert!(e.contains("invalid service name"), "{e}");
    let (_, e) = c.hosts[0].fails(&[
        "service",
        "create",
        "--constraint",
        "node.colour==red",
        "busybox",
    ]);
    assert!(e.contains("invalid constraint"), "{e}");
    let (_, e) = c.hosts[1].fails(&["service", "ls"]);
    assert!(e.contains("worker"), "{e}");

    // Without -d the command follows the rollout and ends when it converged.
    let out = create_sleeper(&c, &["--name", "web", "--replicas", "3"]);
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("converged"), "{out}");
    assert_eq!(running_on(&c, 0, "web").len(), 3);
    // Spread: one container per host (the hosts share a hostname, so count on each).
    for i in 0..3 {
        assert_eq!(c.containers(i, "web"), 1, "host {i}");
    }
    let ls = c.hosts[0].ok(&["service", "ls"]);
    assert!(
        ls.contains("web") && ls.contains("3/3") && ls.contains("replicated"),
        "{ls}"
    );
    let v: Value = serde_json::from_str(&c.hosts[0].ok(&["service", "inspect", "web"])).unwrap();
    assert!(
        v[0]["spec"]["task"]["image_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "the image is pinned: {v}"
    );

    // A worker dies: its task is replaced on the others within three heartbeats and a bit.
    c.kill9(2);
    let killed = std::time::Instant::now();
    wait_until("the lost task runs elsewhere", SETTLE, || {
        running_on(&c, 0, "web").len() == 3 && c.containers(0, "web") + c.containers(1, "web") == 3
    });
    eprintln!("replaced after {:?}", killed.elapsed());
    let ps = c.hosts[0].ok(&["service", "ps", "web"]);
    assert!(
        ps.contains("Orphaned"),
        "the lost task stays in the history: {ps}"
    );

    // A drained node's tasks move to the nodes still active.
    let worker = c.node_id(1);
    c.hosts[0].ok(&["node", "update", "--availability", "drain", &worker]);
    wait_until("the drained node's task moved", SETTLE, || {
        running_on(&c, 0, "web").len() == 3
            && c.containers(1, "web") == 0
            && c.containers(0, "web") == 3
    });
    c.hosts[0].ok(&["node", "update", "--availability", "active", &worker]);

    // Scale down to 1: the other containers go.
    c.hosts[0].ok(&["service", "scale", "web=1"]);
    wait_until("one task left", SETTLE, || {
        running_on(&c, 0, "web").len() == 1 && c.containers(0, "web") + c.containers(1, "web") == 1
    });

    // Removing the service removes its containers everywhere.
    c.hosts[0].ok(&["service", "rm", "web"]);
    wait_until("the containers are gone", SETTLE, || {
        c.containers(0, "web") == 0 && c.containers(1, "web") == 0
    });
    let (_, e) = c.hosts[0].fails(&["service", "inspect", "web"]);
    assert!(e.contains("no such service"), "{e}");
}

#[test]
fn unplaceable_services_say_why_and_the_command_fails() {
    let c = Cluster::swarm(1, 1, "1s");
    for d in &c.hosts {
        d.load_busybox();
    }
    let out = c.hosts[0].shoal(&[
        "service",
        "create",
        "--name",
        "zoned",
        "--constraint",
        "node.labels.zone==b",
        "busybox",
        "sleep",
        "3600",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot converge: no suitable node (2 nodes lack label zone=b)"),
        "{stderr}"
    );
    // Labelling a node lets it run.
    let worker = c.node_id(1);
    c.hosts[0].ok(&["node", "update", "--label-add", "zone=b", &worker]);
    wait_until("the task runs", SETTLE, || {
        running_on(&c, 0, "zoned").len() == 1
    });
}

/// Images of the running tasks, from `svc ps` (desired Running, current Running).
fn running_images(c: &Cluster, svc: &str) -> Vec<String> {
    let out = c.hosts[0].ok(&["service", "ps", svc]);
    let mut v: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols[4] == "Running" && cols[5] == "Running")
        .map(|cols| cols[2].to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn rolling_updates_roll_back_and_keep_the_running_count() {
    let c = Cluster::swarm(1, 2, "1s");
    for d in &c.hosts {
        d.load_busybox();
        d.ok(&["tag", "busybox", "busybox:v2"]);
    }
    wait_until("all ready", SETTLE, || {
        c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == 3
    });
    create_sleeper(
        &c,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "--update-parallelism",
            "1",
            "--update-monitor",
            "1s",
            "--stop-grace-period",
            "1s",
        ],
    );

    // stop-first, parallelism 1: while it rolls, 2 or 3 tasks run, never more, never fewer.
    c.hosts[0].ok(&["service", "update", "-d", "--image", "busybox:v2", "web"]);
    let (mut lo, mut hi) = (usize::MAX, 0);
    wait_until("the update completes", Duration::from_secs(60), || {
        let n: usize = (0..3).map(|i| c.containers(i, "web")).sum();
        lo = lo.min(n);
        hi = hi.max(n);
        let v: Value =
            serde_json::from_str(&c.hosts[0].ok(&["service", "inspect", "web"])).unwrap();
        v[0]["update_status"]["state"] == "completed"
    });
    assert!(
        lo >= 2 && hi <= 3,
        "running containers stayed within 2..=3: {lo}..={hi}"
    );
    assert_eq!(running_images(&c, "web"), ["busybox:v2"; 3]);

    // A manual rollback goes back to the previous spec everywhere.
    let out = c.hosts[0].shoal(&["service", "rollback", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(running_images(&c, "web"), ["busybox"; 3]);

    // An update whose tasks fail is rolled back by itself (failure action rollback), and
    // the command says so and fails.
    let out = c.hosts[0].shoal(&[
        "service",
        "update",
        "--args",
        "false",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "web",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    wait_until("the old tasks run again", SETTLE, || {
        running_images(&c, "web").len() == 3
    });
    let v: Value = serde_json::from_str(&c.hosts[0].ok(&["service", "inspect", "web"])).unwrap();
    assert_eq!(
        v[0]["spec"]["task"]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    assert_eq!(v[0]["update_status"]["state"], "rollback_completed");
}

#[test]
fn global_services_follow_nodes_and_agents_survive_a_daemon_restart() {
    let mut c = ready_swarm(1, 1);
    create_sleeper(
        &c,
        &[
            "--name",
            "agent",
            "--mode",
            "global",
            "--stop-grace-period",
            "1s",
        ],
    );
    assert_eq!(running_on(&c, 0, "agent").len(), 2);
    // `node ps` lists a node's tasks.
    let ps = c.hosts[0].ok(&["node", "ps"]);
    assert_eq!(ps.matches("agent.").count(), 1, "{ps}");
    let worker_tasks = c.hosts[0].ok(&["node", "ps", &c.node_id(1)]);
    assert_eq!(worker_tasks.matches("agent.").count(), 1, "{worker_tasks}");

    // A node that joins gets one; a drained node's task goes.
    let new = c.add_host();
    c.hosts[new].load_busybox();
    let token = c.token("worker");
    c.hosts[new].ok(&["swarm", "join", "--token", &token, &c.addr(0)]);
    wait_until("the new node runs one", SETTLE, || {
        running_on(&c, 0, "agent").len() == 3 && c.containers(new, "agent") == 1
    });
    let worker = c.node_id(1);
    c.hosts[0].ok(&["node", "update", "--availability", "drain", &worker]);
    wait_until("the drained node's task is gone", SETTLE, || {
        running_on(&c, 0, "agent").len() == 2 && c.containers(1, "agent") == 0
    });

    // The daemon of a node restarts: its task's container is found again, not restarted
    // and not duplicated.
    let before = c.hosts[new].ok(&["ps", "-q", "--no-trunc"]);
    c.hosts[new].restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.hosts[new].ok(&["ps", "-q", "--no-trunc"]), before);
    assert_eq!(running_on(&c, 0, "agent").len(), 2);
    // Even when it stays away long enough to be marked down: a global task belongs to its
    // node, so it waits for the node instead of being shut down.
    let new_id = c.node_id(new);
    c.stop(new);
    wait_until("the stopped node is down", SETTLE, || {
        c.node(0, &new_id)["Status"]["State"] == "down"
    });
    c.start(new);
    wait_until("the node is back", SETTLE, || {
        c.node(0, &new_id)["Status"]["State"] == "ready"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.hosts[new].ok(&["ps", "-q", "--no-trunc"]),
        before,
        "{}\n{}\n{}",
        c.hosts[new].ok(&["ps", "-a"]),
        c.hosts[0].ok(&["service", "ps", "agent"]),
        c.hosts[new].log_tail()
    );
    assert_eq!(running_on(&c, 0, "agent").len(), 2);
    let tasks_now = c.hosts[0]
        .ok(&["service", "ps", "-q", "agent"])
        .lines()
        .count();
    assert_eq!(
        tasks_now, 3,
        "two running, one shut down on the drained node: no new task"
    );

    // A node that leaves the swarm takes its tasks' containers with it (as docker's).
    c.hosts[new].ok(&["swarm", "leave"]);
    assert_eq!(c.containers(new, "agent"), 0);
    assert_eq!(c.hosts[new].ok(&["ps", "-aq"]), "");
}

#[test]
fn a_replicated_job_runs_to_completion() {
    let c = ready_swarm(1, 1);
    let out = c.hosts[0].ok(&[
        "service",
        "create",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "--max-concurrent",
        "2",
        "busybox",
        "true",
    ]);
    assert!(out.contains("job complete: 3 out of 3 tasks"), "{out}");
    let ps = c.hosts[0].ok(&["service", "ps", "batch"]);
    assert_eq!(ps.matches("Complete").count(), 3, "{ps}");
}

#[test]
fn health_checks_gate_running_and_an_unhealthy_update_rolls_back() {
    let c = ready_swarm(1, 1);
    // Healthy after a second: the create waits for it.
    let out = c.hosts[0].ok(&[
        "service",
        "create",
        "--name",
        "checked",
        "--replicas",
        "2",
        "--stop-grace-period",
        "1s",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "--health-start-period",
        "3s",
        "busybox",
        "sh",
        "-c",
        "sleep 1; touch /tmp/ok; exec sleep 3600",
    ]);
    assert!(out.contains("converged"), "{out}");
    // An update whose tasks never become healthy fails and is rolled back.
    let out = c.hosts[0].shoal(&[
        "service",
        "update",
        "--args",
        "sleep 3600",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1s",
        "checked",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    let ps = c.hosts[0].ok(&["service", "ps", "--no-trunc", "checked"]);
    assert!(ps.contains("unhealthy container"), "{ps}");
}

/// `svc logs` from host `from`: (exit code, stdout, stderr).
fn svc_logs(c: &Cluster, from: usize, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["service", "logs"];
    all.extend_from_slice(args);
    let out = c.hosts[from].shoal(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn service_logs_come_from_every_node_through_any_manager() {
    // Two managers and a worker: the agents hold their sessions with manager 0, and the
    // logs are asked of manager 1, which gathers them through manager 0.
    let mut c = ready_swarm(2, 1);
    c.hosts[0].ok(&[
        "service",
        "create",
        "--name",
        "talk",
        "--replicas",
        "3",
        "busybox",
        "sh",
        "-c",
        "echo start; echo oops >&2; while sleep 1; do echo tick; done",
    ]);
    let hostnames: Vec<String> = (0..3)
        .map(|i| {
            c.node(0, &c.node_id(i))["Description"]["Hostname"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let (code, out, err) = svc_logs(&c, 1, &["talk"]);
    assert_eq!(code, 0, "{err}");
    let starts: Vec<&str> = out.lines().filter(|l| l.ends_with("| start")).collect();
    assert_eq!(
        starts.len(),
        3,
        "{out}\n{err}\n{}",
        c.hosts[0].ok(&["service", "ps", "talk"])
    );
    for h in &hostnames {
        assert!(
            starts.iter().any(|l| l.contains(&format!("@{h} "))),
            "no line from {h}: {out}"
        );
    }
    for slot in 1..=3 {
        assert!(
            starts
                .iter()
                .any(|l| l.starts_with(&format!("talk.{slot}."))),
            "{out}"
        );
    }
    // What the tasks wrote to stderr is on stderr.
    assert_eq!(
        err.lines().filter(|l| l.ends_with("| oops")).count(),
        3,
        "{out}\n{err}"
    );

    // --tail, --raw, --no-task-ids, and one task by id.
    // (The last line of each task may be on stdout or stderr, depending on timing.)
    let (code, out, err) = svc_logs(&c, 1, &["--tail", "1", "--raw", "talk"]);
    let last: Vec<&str> = out.lines().chain(err.lines()).collect();
    assert_eq!(last.len(), 3, "{code} {out}\n{err}");
    assert!(
        last.iter().all(|l| ["tick", "oops"].contains(l)),
        "{last:?}"
    );
    let (_, out, _) = svc_logs(&c, 0, &["--no-task-ids", "talk"]);
    assert!(out.lines().any(|l| l.starts_with("talk.1@")), "{out}");
    let task = c.hosts[0].ok(&["service", "ps", "-q", "--no-trunc", "talk"]);
    let task = task.lines().next().expect("a task");
    let (_, out, _) = svc_logs(&c, 1, &[task]);
    let starts = out.lines().filter(|l| l.ends_with("| start")).count();
    assert_eq!(starts, 1, "{out}");
    let (code, _, err) = svc_logs(&c, 1, &["nothing-here"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no such service or task: nothing-here"),
        "{err}"
    );

    // -f follows, and picks up the tasks of a scale up.
    let mut follow = c.hosts[1]
        .cmd(&["service", "logs", "-f", "--raw", "talk"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("svc logs -f");
    let stdout = follow.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    c.hosts[0].ok(&["service", "scale", "talk=4", "--detach"]);
    let deadline = std::time::Instant::now() + SETTLE;
    let mut starts = 0;
    while starts < 4 && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            starts += usize::from(l == "start");
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        starts, 4,
        "the fourth task's first line reached the follower"
    );

    // A node no manager can reach: its logs are missing, and the command says so.
    let worker_name = hostnames[2].clone();
    c.stop(2);
    let (code, out, err) = svc_logs(&c, 1, &["talk"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "node {worker_name} is not connected to any manager"
        )),
        "{err}"
    );
    assert!(
        out.lines().filter(|l| l.ends_with("| start")).count() >= 2,
        "{out}"
    );
}

#[test]
fn a_start_first_update_carries_on_across_a_leader_kill() {
    // Three managers (drained: the tasks run on the two workers only, so a killed manager
    // leaves no running container behind) and two workers.
    let mut c = ready_swarm(3, 2);
    for d in &c.hosts {
        d.ok(&["tag", "busybox", "busybox:v2"]);
    }
    for i in 0..3 {
        let id = c.node_id(i);
        c.hosts[0].ok(&["node", "update", "--availability", "drain", &id]);
    }
    create_sleeper(
        &c,
        &[
            "--name",
            "web",
            "--replicas",
            "4",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "1",
            "--update-delay",
            "1s",
            "--update-monitor",
            "1s",
            "--stop-grace-period",
            "1s",
        ],
    );
    let on_workers = |c: &Cluster| c.containers(3, "web") + c.containers(4, "web");
    assert_eq!(on_workers(&c), 4);

    c.hosts[0].ok(&["service", "update", "-d", "--image", "busybox:v2", "web"]);
    let updated = |c: &Cluster, from: usize| {
        c.hosts[from]
            .ok(&["service", "ps", "-f", "desired-state=running", "web"])
            .lines()
            .filter(|l| l.contains("busybox:v2") && l.contains("Running"))
            .count()
    };
    // start-first, parallelism 1: 4 or 5 containers at every moment.
    let (mut lo, mut hi) = (usize::MAX, 0);
    let mut sample = |c: &Cluster| {
        let n = on_workers(c);
        lo = lo.min(n);
        hi = hi.max(n);
    };
    wait_until("one task updated", SETTLE, || {
        sample(&c);
        updated(&c, 0) >= 1
    });
    let leader = c.wait_leader(&[0, 1, 2], SETTLE);
    c.kill9(leader);
    let survivor = (leader + 1) % 3;
    wait_until(
        "the update completes under the new leader",
        Duration::from_secs(90),
        || {
            sample(&c);
            let out = c.hosts[survivor].shoal(&["service", "inspect", "web"]);
            let v: Value = match serde_json::from_str(&String::from_utf8_lossy(&out.stdout)) {
                Ok(v) => v,
                Err(_) => return false, // no leader yet
            };
            v[0]["update_status"]["state"] == "completed"
        },
    );
    assert_eq!(updated(&c, survivor), 4);
    assert!(
        lo >= 4 && hi <= 5,
        "start-first never undershoots, parallelism 1 never overshoots by more than one: {lo}..{hi}"
    );
}

#[test]
fn constraints_and_placement_preferences_are_honoured() {
    let c = ready_swarm(1, 2);
    let ids: Vec<String> = (0..3).map(|i| c.node_id(i)).collect();
    for (i, zone) in ["a", "a", "b"].iter().enumerate() {
        c.hosts[0].ok(&[
            "node",
            "update",
            "--label-add",
            &format!("zone={zone}"),
            &ids[i],
        ]);
    }
    // spread=node.labels.zone: half the tasks in zone b, which is one node.
    create_sleeper(
        &c,
        &[
            "--name",
            "spread",
            "--replicas",
            "4",
            "--placement-pref",
            "spread=node.labels.zone",
        ],
    );
    assert_eq!(c.containers(2, "spread"), 2);
    assert_eq!(c.containers(0, "spread") + c.containers(1, "spread"), 2);
    // A constraint keeps every task off the nodes that do not match.
    create_sleeper(
        &c,
        &[
            "--name",
            "onlya",
            "--replicas",
            "3",
            "--constraint",
            "node.labels.zone==a",
        ],
    );
    assert_eq!(c.containers(2, "onlya"), 0);
    assert_eq!(c.containers(0, "onlya") + c.containers(1, "onlya"), 3);
}

/// Tasks of `svc` that failed, as `svc ps` (with history) shows them.
fn failed(c: &Cluster, svc: &str) -> usize {
    c.hosts[0]
        .ok(&["service", "ps", svc])
        .lines()
        .filter(|l| l.contains("Failed"))
        .count()
}

#[test]
fn restart_policies_limit_the_attempts_on_real_hosts() {
    let c = ready_swarm(1, 1);
    // on-failure, 2 attempts: the first task and two restarts, then no more.
    c.hosts[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "crash",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "2",
        "--restart-delay",
        "1s",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    wait_until("three attempts failed", SETTLE, || failed(&c, "crash") == 3);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(failed(&c, "crash"), 3, "no fourth attempt");
    let ps = c.hosts[0].ok(&["service", "ps", "crash"]);
    assert!(ps.contains("non-zero exit (3)"), "{ps}");

    // condition none: one attempt only.
    c.hosts[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "once",
        "--restart-condition",
        "none",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_until("the task failed", SETTLE, || failed(&c, "once") == 1);
    std::thread::sleep(Duration::from_secs(3));
    let tasks = c.hosts[0].ok(&["service", "ps", "-q", "once"]);
    assert_eq!(tasks.lines().count(), 1, "not restarted: {tasks}");
}

#[test]
fn host_mode_ports_publish_on_each_node_and_a_taken_port_keeps_a_task_off() {
    let c = ready_swarm(1, 1);
    // Refused before anything is made: the routing mesh needs overlay networks.
    let (_, e) = c.hosts[0].fails(&["service", "create", "-p", "8080:80", "busybox"]);
    assert!(e.contains("routing mesh"), "{e}");
    // Three replicas publishing host port 8080, two nodes: the third cannot be placed, and
    // the command says why.
    let out = c.hosts[0].shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--publish",
        "mode=host,target=80,published=8080",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("host port this service publishes in use"),
        "{text}"
    );
    assert_eq!(running_on(&c, 0, "web").len(), 2);
    // Each node serves the port itself (reached from a container on the other node).
    let got = c.hosts[0].ok(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{}:8080/hostname", c.ips[1]),
    ]);
    assert!(!got.trim().is_empty(), "{got}");
    // Two replicas fit.
    c.hosts[0].ok(&["service", "scale", "web=2"]);
    assert_eq!(running_on(&c, 0, "web").len(), 2);
}
