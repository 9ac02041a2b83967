//! `swarm init`, join tokens, `node ls`/`inspect`, `swarm inspect` on one real daemon (in its
//! own network namespace, so port 2377 is its own), and the swarm surviving a restart.

use std::os::unix::fs::PermissionsExt;

use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{wait_until, Daemon};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_makes_a_one_manager_swarm_that_survives_a_restart() {
    let mut d = Daemon::start();
    // Not in a swarm yet.
    let (_, e) = d.fails(&["node", "ls"]);
    assert!(e.contains("not a swarm manager"), "{e}");
    // No default route in the test host: the address must be given.
    let (_, e) = d.fails(&["swarm", "init"]);
    assert!(e.contains("--advertise-addr"), "{e}");
    let (_, e) = d.fails(&["swarm", "init", "--advertise-addr", "eth9"]);
    assert!(e.contains("use an IP address"), "{e}");
    let (_, e) = d.fails(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--cert-expiry",
        "5x",
    ]);
    assert!(e.contains("--cert-expiry"), "{e}");
    assert!(
        !d.data_root().join("swarm").exists(),
        "refused inits leave nothing"
    );

    let out = d.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert!(out.contains("is now a manager"), "{out}");
    assert!(out.contains("shoal swarm join --token SWMTKN-1-"), "{out}");
    assert!(out.contains("127.0.0.1:2377"), "{out}");
    let (_, e) = d.fails(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert!(e.contains("already part of a swarm"), "{e}");

    let ls = d.ok(&["node", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 2, "{ls}");
    assert!(lines[0].contains("MANAGER STATUS"), "{ls}");
    assert!(lines[1].contains(" * "), "the node asked is marked: {ls}");
    assert!(
        lines[1].contains("Ready") && lines[1].contains("Active") && lines[1].contains("Leader"),
        "{ls}"
    );
    let id = d.ok(&["node", "ls", "-q"]).trim().to_string();
    assert_eq!(id.len(), 25, "{id}");
    let node: Value = serde_json::from_str(&d.ok(&["node", "inspect", "self"])).unwrap();
    assert_eq!(node[0]["ID"], id.as_str());
    assert_eq!(node[0]["Spec"]["Role"], "manager");
    assert_eq!(node[0]["ManagerStatus"]["Leader"], true);
    assert!(d
        .ok(&["node", "inspect", "--pretty", &id[..5]])
        .contains("Leader"));
    let (_, e) = d.fails(&["node", "inspect", "nosuchnode"]);
    assert!(e.contains("no such node"), "{e}");

    // Tokens: worker and manager differ, -q prints only the token, rotation replaces one.
    let worker = d
        .ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let manager = d
        .ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    assert!(worker.starts_with("SWMTKN-1-") && manager.starts_with("SWMTKN-1-"));
    assert_ne!(worker, manager);
    assert_eq!(worker[..60], manager[..60], "same CA fingerprint");
    let rotated = d.ok(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        rotated.contains("Successfully rotated worker join token"),
        "{rotated}"
    );
    let worker2 = d
        .ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert_ne!(worker, worker2);
    assert_eq!(
        manager,
        d.ok(&["swarm", "join-token", "-q", "manager"]).trim()
    );
    let (_, e) = d.fails(&["swarm", "join-token", "admin"]);
    assert!(e.contains("worker or manager"), "{e}");

    let swarm: Value = serde_json::from_str(&d.ok(&["swarm", "inspect"])).unwrap();
    assert_eq!(swarm[0]["Raft"]["State"], "leader");
    assert_eq!(swarm[0]["Raft"]["Leader"], id.as_str());
    assert_eq!(
        swarm[0]["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        5_000_000_000u64
    );

    // Keys and the store (which holds the CA key) are root's alone.
    let dir = d.data_root().join("swarm");
    assert_eq!(mode(&dir.join("certs/node.key")), 0o600);
    assert_eq!(mode(&dir.join("certs")), 0o700);
    assert_eq!(mode(&dir.join("raft")), 0o700);

    // Availability and labels.
    d.ok(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "--label-add",
        "ssd=",
        &id,
    ]);
    let node: Value = serde_json::from_str(&d.ok(&["node", "inspect", "self"])).unwrap();
    assert_eq!(node[0]["Spec"]["Availability"], "drain");
    assert_eq!(node[0]["Spec"]["Labels"]["zone"], "a");
    assert!(d.ok(&["node", "ls"]).contains("Drain"));
    d.ok(&[
        "node",
        "update",
        "--label-rm",
        "ssd",
        "--availability",
        "active",
        "self",
    ]);
    let node: Value = serde_json::from_str(&d.ok(&["node", "inspect", "self"])).unwrap();
    assert!(node[0]["Spec"]["Labels"].get("ssd").is_none());
    let (_, e) = d.fails(&["node", "update", "--label-rm", "nope", "self"]);
    assert!(e.contains("not set"), "{e}");
    let (_, e) = d.fails(&["node", "update", "--availability", "sleepy", "self"]);
    assert!(e.contains("active, pause or drain"), "{e}");
    let (_, e) = d.fails(&["node", "update", "self"]);
    assert!(e.contains("nothing to update"), "{e}");

    // Settings, and the root certificate.
    assert_eq!(
        d.ok(&[
            "swarm",
            "update",
            "--dispatcher-heartbeat",
            "2s",
            "--task-history-limit",
            "10"
        ])
        .trim(),
        "Swarm updated."
    );
    let swarm: Value = serde_json::from_str(&d.ok(&["swarm", "inspect"])).unwrap();
    assert_eq!(
        swarm[0]["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        2_000_000_000u64
    );
    assert_eq!(
        swarm[0]["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        10
    );
    let (_, e) = d.fails(&["swarm", "update", "--cert-expiry", "10m"]);
    assert!(e.contains("at least 1h"), "{e}");
    let (_, e) = d.fails(&["swarm", "update"]);
    assert!(e.contains("nothing to update"), "{e}");
    let ca = d.ok(&["swarm", "ca"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    // A rotation on a one-node swarm: the node renews from the new root, then the old one
    // is dropped; the command waits for that and prints the new root.
    let rotated = d.ok(&["swarm", "ca", "--rotate", "-q"]);
    assert!(rotated.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(rotated, ca);
    assert_eq!(d.ok(&["swarm", "ca"]), rotated);
    // Tokens pin the new root; their secrets stay.
    let worker3 = d
        .ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert_ne!(worker3[..60], worker2[..60]);
    assert_eq!(worker3[61..], worker2[61..]);

    let info = d.ok(&["info"]);
    assert!(info.contains(" Swarm: active"), "{info}");
    assert!(info.contains(&format!("NodeID: {id}")), "{info}");
    assert!(info.contains("State: leader"), "{info}");

    // A restart brings the same swarm back.
    d.restart();
    let ls2 = d.ok(&["node", "ls", "-q"]);
    assert_eq!(ls2.trim(), id);
    assert_eq!(
        worker3,
        d.ok(&["swarm", "join-token", "-q", "worker"]).trim()
    );

    // Leaving as the only manager needs --force, and then the node is in no swarm.
    let (_, e) = d.fails(&["swarm", "leave"]);
    assert!(e.contains("only manager") && e.contains("--force"), "{e}");
    assert_eq!(
        d.ok(&["swarm", "leave", "--force"]).trim(),
        "Node left the swarm."
    );
    assert!(!dir.exists(), "its swarm state is gone");
    assert!(d.ok(&["info"]).contains(" Swarm: inactive"));
    let (_, e) = d.fails(&["swarm", "leave"]);
    assert!(e.contains("not part of a swarm"), "{e}");
    // And it can start a new one (the port was released).
    d.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert_ne!(d.ok(&["node", "ls", "-q"]).trim(), id);
}

#[test]
fn workers_and_managers_join_by_token_over_a_lan() {
    let d1 = Daemon::start();
    let mut d2 = Daemon::start();
    let d3 = Daemon::start();
    let ips = shoal_testkit::lan(&[&d1.netns(), &d2.netns(), &d3.netns()]);
    d1.ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &ips[0],
        "--dispatcher-heartbeat",
        "1s",
    ]);
    let worker = d1
        .ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let manager = d1
        .ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let leader = format!("{}:2377", ips[0]);

    // Bad tokens are refused and leave the node as it was.
    let (_, e) = d2.fails(&["swarm", "join", "--token", "SWMTKN-1-bad", &leader]);
    assert!(e.contains("invalid join token"), "{e}");
    let rotated = worker.replace(&worker[worker.len() - 25..], "0123456789abcdefghijklmno");
    let (_, e) = d2.fails(&["swarm", "join", "--token", &rotated, &leader]);
    assert!(e.contains("invalid join token"), "{e}");
    let (_, e) = d2.fails(&["swarm", "join", "--token", &worker, "198.51.100.9:2377"]);
    assert!(e.contains("cannot reach the manager"), "{e}");
    assert!(
        !d2.data_root().join("swarm").exists(),
        "no half-joined state"
    );

    let out = d2.ok(&["swarm", "join", "--token", &worker, &leader]);
    assert_eq!(out.trim(), "This node joined a swarm as a worker.");
    let (_, e) = d2.fails(&["swarm", "join", "--token", &worker, &leader]);
    assert!(e.contains("already part of a swarm"), "{e}");
    let (_, e) = d2.fails(&["node", "ls"]);
    assert!(e.contains("worker nodes cannot"), "{e}");

    let out = d3.ok(&["swarm", "join", "--token", &manager, &leader]);
    assert_eq!(out.trim(), "This node joined a swarm as a manager.");

    // Both managers see three nodes with their roles and addresses; the new manager is
    // reachable in Raft.
    for d in [&d1, &d3] {
        let ls = d.ok(&["node", "ls"]);
        assert_eq!(ls.lines().count(), 4, "{ls}");
        assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
        assert_eq!(ls.matches("Reachable").count(), 1, "{ls}");
    }
    let nodes: Vec<Value> = d3
        .ok(&["node", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let addrs: Vec<&str> = nodes
        .iter()
        .map(|n| n["Status"]["Addr"].as_str().unwrap())
        .collect();
    for ip in &ips {
        assert!(
            addrs.iter().any(|a| a.starts_with(ip.as_str())),
            "{addrs:?}"
        );
    }
    let swarm: Value = serde_json::from_str(&d3.ok(&["swarm", "inspect"])).unwrap();
    assert_eq!(swarm[0]["Raft"]["Managers"].as_array().unwrap().len(), 2);

    let worker_id = nodes
        .iter()
        .find(|n| n["Spec"]["Role"] == "worker")
        .map(|n| n["ID"].as_str().unwrap().to_string())
        .unwrap();
    let state_of = |d: &Daemon, id: &str| -> String {
        let v: Value = serde_json::from_str(&d.ok(&["node", "inspect", id])).unwrap();
        v[0]["Status"]["State"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // Heartbeats: every node is ready; a dead agent is down within three periods and ready
    // again when it comes back.
    wait_until("all nodes ready", Duration::from_secs(10), || {
        d1.ok(&["node", "ls"]).matches("Ready").count() == 3
    });
    d2.kill9();
    let killed = std::time::Instant::now();
    wait_until("the killed worker is down", Duration::from_secs(10), || {
        state_of(&d1, &worker_id) == "down"
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "down only after the grace: {took:?}"
    );
    d2.restart();
    wait_until("the worker is ready again", Duration::from_secs(10), || {
        state_of(&d3, &worker_id) == "ready"
    });

    // A worker leaves without --force; once it is down a manager removes it from the list
    // (docker refuses to remove a ready node without --force).
    assert_eq!(d2.ok(&["swarm", "leave"]).trim(), "Node left the swarm.");
    assert!(d2.ok(&["info"]).contains(" Swarm: inactive"));
    let (_, e) = d3.fails(&["node", "rm", &worker_id]);
    assert!(e.contains("not down"), "{e}");
    wait_until(
        "the departed worker is down",
        Duration::from_secs(10),
        || state_of(&d1, &worker_id) == "down",
    );
    assert_eq!(d3.ok(&["node", "rm", &worker_id]).trim(), worker_id);
    assert_eq!(d1.ok(&["node", "ls", "-q"]).lines().count(), 2);
    let manager_id = d3.ok(&["node", "inspect", "self"]);
    let manager_id: Value = serde_json::from_str(&manager_id).unwrap();
    let (_, e) = d1.fails(&["node", "rm", manager_id[0]["ID"].as_str().unwrap()]);
    assert!(e.contains("demote it"), "{e}");
    let (_, e) = d1.fails(&["node", "rm", "self"]);
    assert!(e.contains("cannot remove itself"), "{e}");
    let (_, e) = d1.fails(&["node", "rm", "nosuchnode"]);
    assert!(e.contains("no such node"), "{e}");
}

/// The index of the daemon whose swarm inspect says it leads.
fn leader_of(ds: &[&Daemon]) -> Option<usize> {
    ds.iter().position(|d| {
        d.shoal(&["swarm", "inspect"])
            .status
            .success()
            .then(|| String::from_utf8_lossy(&d.shoal(&["swarm", "inspect"]).stdout).into_owned())
            .is_some_and(|s| s.contains("\"State\": \"leader\""))
    })
}

#[test]
fn a_leader_cut_off_from_the_majority_commits_nothing_and_serves_no_stale_reads() {
    let d1 = Daemon::start();
    let d2 = Daemon::start();
    let d3 = Daemon::start();
    let ds = [&d1, &d2, &d3];
    let ips = shoal_testkit::lan(&[&d1.netns(), &d2.netns(), &d3.netns()]);
    d1.ok(&["swarm", "init", "--advertise-addr", &ips[0]]);
    let token = d1
        .ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let first = format!("{}:2377", ips[0]);
    d2.ok(&["swarm", "join", "--token", &token, &first]);
    d3.ok(&["swarm", "join", "--token", &token, &first]);
    let old = leader_of(&ds).expect("a leader");

    // Cut the leader off: its namespace drops everything from and to the LAN (the other two
    // still reach each other, also through the bridge if it lives there).
    let cut = |verb: &str| {
        let script = if verb == "add" {
            "add table inet cut\nadd chain inet cut in { type filter hook input priority -10; }\nadd chain inet cut out { type filter hook output priority -10; }\nadd rule inet cut in ip saddr 198.51.100.0/24 drop\nadd rule inet cut out ip daddr 198.51.100.0/24 drop\n".to_string()
        } else {
            "delete table inet cut\n".to_string()
        };
        let mut child = ds[old]
            .host_cmd("nft", &["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft {verb}");
    };
    cut("add");

    // The majority elects a new leader and commits.
    let others: Vec<&Daemon> = ds
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, d)| *d)
        .collect();
    wait_until(
        "the majority elects a leader",
        Duration::from_secs(10),
        || leader_of(&others).is_some(),
    );
    others[0].ok(&["node", "update", "--label-add", "side=majority", "self"]);

    // The cut-off manager commits nothing and refuses reads instead of answering stale.
    let (_, e) = ds[old].fails(&["node", "update", "--label-add", "side=minority", "self"]);
    assert!(e.contains("quorum") || e.contains("no leader"), "{e}");
    let (_, e) = ds[old].fails(&["node", "ls"]);
    assert!(
        e.contains("no quorum") && e.contains("refuses to read"),
        "{e}"
    );

    // Healed: it follows the new leader and sees the majority's write, not its own.
    cut("delete");
    wait_until("the old leader follows", Duration::from_secs(10), || {
        ds[old].shoal(&["node", "ls"]).status.success()
    });
    let ls = ds[old].ok(&["node", "ls", "--format", "json"]);
    assert!(ls.contains("\"side\":\"majority\""), "{ls}");
    assert!(!ls.contains("minority"), "{ls}");
    assert_ne!(leader_of(&ds), Some(old));
}
