//! Swarms of 1, 3, 5 and 7 managers form; they survive a killed or frozen leader and a
//! restart of every manager with their state intact.

use std::time::Duration;

use shoal_chaos_tests::{wait_until, Cluster};

const ELECTION: Duration = Duration::from_secs(15);

/// How many nodes `node ls` on host `i` shows in `state` ("Ready", "Down").
fn count(c: &Cluster, i: usize, word: &str) -> usize {
    c.hosts[i].ok(&["node", "ls"]).matches(word).count()
}

#[test]
fn one_manager_and_two_workers_form_and_drain_is_shown() {
    let c = Cluster::swarm(1, 2, "1s");
    wait_until("three nodes ready", Duration::from_secs(10), || {
        count(&c, 0, "Ready") == 3
    });
    let ls = c.hosts[0].ok(&["node", "ls"]);
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    let (_, e) = c.hosts[1].fails(&["node", "ls"]);
    assert!(e.contains("worker nodes cannot"), "{e}");

    // A drained node keeps its session (it is still ready) and says so.
    let w = c.node_id(2);
    c.hosts[0].ok(&["node", "update", "--availability", "drain", &w]);
    assert_eq!(c.node(0, &w)["Spec"]["Availability"], "drain");
    assert!(c.hosts[0].ok(&["node", "ls"]).contains("Drain"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.node(0, &w)["Status"]["State"], "ready");
}

#[test]
fn three_managers_form_and_replace_a_killed_leader() {
    let mut c = Cluster::swarm(3, 0, "1s");
    let all = [0, 1, 2];
    let old = c.wait_leader(&all, ELECTION);
    for i in all {
        let ls = c.hosts[i].ok(&["node", "ls"]);
        assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
        assert_eq!(ls.matches("Reachable").count(), 2, "{ls}");
    }
    c.kill9(old);
    let rest: Vec<usize> = all.into_iter().filter(|i| *i != old).collect();
    let new = c.wait_leader(&rest, ELECTION);
    c.hosts[new].ok(&["node", "update", "--label-add", "after=kill", "self"]);
    // The old leader comes back as a follower and catches up.
    c.start(old);
    wait_until("the old leader follows", ELECTION, || {
        c.inspect(old)
            .is_some_and(|v| v["Raft"]["State"] == "follower")
    });
    wait_until("it sees the new write", ELECTION, || {
        c.hosts[old]
            .shoal(&["node", "ls", "--format", "json"])
            .stdout
            .windows(11)
            .any(|w| w == b"after\":\"kil")
    });
}

#[test]
fn five_managers_survive_a_frozen_leader() {
    let c = Cluster::swarm(5, 0, "1s");
    let all = [0, 1, 2, 3, 4];
    let old = c.wait_leader(&all, ELECTION);
    assert_eq!(
        c.inspect(old).unwrap()["Raft"]["Managers"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // A hung leader (its sockets open, nothing answering) is replaced.
    c.freeze(old);
    let rest: Vec<usize> = all.into_iter().filter(|i| *i != old).collect();
    let new = c.wait_leader(&rest, ELECTION);
    c.hosts[new].ok(&["node", "update", "--label-add", "frozen=leader", "self"]);
    c.thaw(old);
    wait_until("the thawed leader steps down", ELECTION, || {
        c.inspect(old)
            .is_some_and(|v| v["Raft"]["State"] == "follower")
    });
    assert_ne!(c.leader(), Some(old));
    assert!(c.hosts[old]
        .ok(&["node", "ls", "--format", "json"])
        .contains("\"frozen\":\"leader\""));
}

#[test]
fn seven_managers_form_and_keep_a_quorum_with_three_down() {
    let mut c = Cluster::swarm(7, 0, "1s");
    let all: Vec<usize> = (0..7).collect();
    let leader = c.wait_leader(&all, ELECTION);
    let down: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| *i != leader)
        .take(3)
        .collect();
    for &i in &down {
        c.kill9(i);
    }
    // Four of seven is a majority: writes still commit.
    let up: Vec<usize> = all.iter().copied().filter(|i| !down.contains(i)).collect();
    let now = c.wait_leader(&up, ELECTION);
    c.hosts[now].ok(&["node", "update", "--label-add", "seven=four", "self"]);
    wait_until(
        "the killed managers are unreachable",
        Duration::from_secs(15),
        || {
            c.hosts[now]
                .ok(&["node", "ls"])
                .matches("Unreachable")
                .count()
                == 3
        },
    );
}

#[test]
fn restarting_every_manager_keeps_the_state() {
    let mut c = Cluster::swarm(3, 1, "1s");
    let worker = c.node_id(3);
    c.hosts[0].ok(&["node", "update", "--label-add", "zone=a", &worker]);
    c.hosts[1].ok(&["swarm", "update", "--task-history-limit", "7"]);
    let before = c.hosts[0].ok(&["node", "ls", "-q"]);
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    c.wait_leader(&[0, 1, 2], ELECTION);
    for i in 0..3 {
        wait_until("the manager answers", ELECTION, || {
            c.hosts[i].shoal(&["node", "ls"]).status.success()
        });
        let now = c.hosts[i].ok(&["node", "ls", "-q"]);
        let mut a: Vec<&str> = now.lines().collect();
        let mut b: Vec<&str> = before.lines().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(c.node(i, &worker)["Spec"]["Labels"]["zone"], "a");
        let swarm = c.inspect(i).unwrap();
        assert_eq!(
            swarm["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
            7
        );
    }
    wait_until("every node is ready again", Duration::from_secs(15), || {
        count(&c, 0, "Ready") == 4
    });
}
