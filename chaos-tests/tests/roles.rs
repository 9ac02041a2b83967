//! Roles come from the managers: promote and demote move nodes in and out of the Raft
//! voters (their certificates follow by themselves), the last manager and a quorum cannot be
//! demoted away, and `--force-new-cluster` brings back a swarm that lost its quorum.

use std::time::Duration;

use shoal_chaos_tests::{wait_until, Cluster};

const SETTLE: Duration = Duration::from_secs(20);

fn is_manager(c: &Cluster, i: usize) -> bool {
    c.hosts[i].shoal(&["node", "ls"]).status.success()
}

fn managers_seen_by(c: &Cluster, i: usize) -> usize {
    c.inspect(i)
        .and_then(|v| v["Raft"]["Managers"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn promote_and_demote_follow_the_managers_word() {
    let mut c = Cluster::swarm(1, 2, "1s");
    let ids: Vec<String> = (0..3).map(|i| c.node_id(i)).collect();
    wait_until("all ready", SETTLE, || {
        c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == 3
    });

    // The only manager cannot be demoted, even with --force.
    let (_, e) = c.hosts[0].fails(&["node", "demote", "--force", &ids[0]]);
    assert!(e.contains("last manager"), "{e}");

    // Promotion: the worker gets a manager certificate at its next heartbeat, starts a
    // replica and becomes a voter.
    let out = c.hosts[0].ok(&["node", "promote", &ids[1]]);
    assert_eq!(
        out.trim(),
        format!("Node {} promoted to a manager in the swarm.", ids[1])
    );
    wait_until("host 1 manages", SETTLE, || {
        is_manager(&c, 1) && managers_seen_by(&c, 0) == 2
    });
    c.hosts[0].ok(&["node", "promote", &ids[2]]);
    wait_until("host 2 manages", SETTLE, || {
        is_manager(&c, 2) && managers_seen_by(&c, 0) == 3
    });
    let ls = c.hosts[2].ok(&["node", "ls"]);
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert_eq!(ls.matches("Reachable").count(), 2, "{ls}");
    // The new managers hold the store: a write on one is read on another.
    c.hosts[1].ok(&["node", "update", "--label-add", "via=promoted", &ids[0]]);
    wait_until("the write replicates", SETTLE, || {
        c.node(2, &ids[0])["Spec"]["Labels"]["via"] == "promoted"
    });

    // Three managers, one of them down: demoting a live one would leave one live manager
    // of two, short of a quorum: refused without --force. Demoting the dead one is fine,
    // and it learns it is a worker when it comes back.
    let leader = c.wait_leader(&[0, 1, 2], SETTLE);
    let dead = if leader == 2 { 1 } else { 2 };
    let live = 3 - leader - dead;
    c.kill9(dead);
    wait_until("the killed manager is down", SETTLE, || {
        c.node(leader, &ids[dead])["Status"]["State"] == "down"
    });
    let (_, e) = c.hosts[leader].fails(&["node", "demote", &ids[live]]);
    assert!(e.contains("quorum") && e.contains("--force"), "{e}");
    let out = c.hosts[leader].ok(&["node", "demote", &ids[dead]]);
    assert_eq!(
        out.trim(),
        format!("Manager {} demoted in the swarm.", ids[dead])
    );
    assert_eq!(managers_seen_by(&c, leader), 2);
    c.start(dead);
    wait_until("the demoted manager comes back as a worker", SETTLE, || {
        c.hosts[dead].ok(&["info"]).contains("Is Manager: false")
    });
    wait_until("its replica is gone", SETTLE, || {
        !c.hosts[dead].data_root().join("swarm/raft").exists()
    });
    wait_until("and it is ready", SETTLE, || {
        c.node(leader, &ids[dead])["Status"]["State"] == "ready"
    });

    // A live demotion: out of the voters, then a worker certificate; its store is deleted.
    c.hosts[leader].ok(&["node", "demote", &ids[live]]);
    wait_until("the live manager is a worker", SETTLE, || {
        !is_manager(&c, live) && managers_seen_by(&c, leader) == 1
    });
    wait_until("its replica is gone", SETTLE, || {
        !c.hosts[live].data_root().join("swarm/raft").exists()
    });
    assert_eq!(c.node(leader, &ids[live])["Spec"]["Role"], "worker");

    // A demoted manager that leaves and rejoins with a worker token is a worker.
    c.hosts[live].ok(&["swarm", "leave"]);
    let worker = c.token("worker");
    let out = c.hosts[live].ok(&["swarm", "join", "--token", &worker, &c.addr(leader)]);
    assert_eq!(out.trim(), "This node joined a swarm as a worker.");
}

#[test]
fn force_new_cluster_recovers_a_swarm_that_lost_its_quorum() {
    let mut c = Cluster::swarm(3, 1, "1s");
    let worker = c.node_id(3);
    let lost: Vec<String> = [1, 2].iter().map(|&i| c.node_id(i)).collect();
    c.hosts[0].ok(&["node", "update", "--label-add", "kept=yes", &worker]);
    c.kill9(1);
    c.kill9(2);
    // No quorum: host 0 refuses to write and to read, and says why.
    wait_until("host 0 knows it has no quorum", SETTLE, || {
        !c.hosts[0].shoal(&["node", "ls"]).status.success()
    });
    let (_, e) = c.hosts[0].fails(&["node", "update", "--label-add", "x=y", &worker]);
    assert!(e.contains("quorum") || e.contains("no leader"), "{e}");

    // Not on a worker, not on a node in no swarm.
    let (_, e) = c.hosts[3].fails(&["swarm", "init", "--force-new-cluster"]);
    assert!(e.contains("worker"), "{e}");

    let out = c.hosts[0].ok(&["swarm", "init", "--force-new-cluster"]);
    assert!(out.contains("is now a manager"), "{out}");
    // One manager, everything it knew kept; the lost managers are workers in its store.
    assert_eq!(managers_seen_by(&c, 0), 1);
    assert_eq!(c.node(0, &worker)["Spec"]["Labels"]["kept"], "yes");
    for id in &lost {
        assert_eq!(c.node(0, id)["Spec"]["Role"], "worker");
    }
    c.hosts[0].ok(&["node", "update", "--label-add", "after=force", &worker]);
    wait_until("the worker is ready", SETTLE, || {
        c.node(0, &worker)["Status"]["State"] == "ready"
    });

    // The lost managers come back (one at a time: together they would still be a majority
    // of the old voters) and turn into workers by themselves.
    for i in [1, 2] {
        c.start(i);
        wait_until("a lost manager comes back as a worker", SETTLE, || {
            c.hosts[i].ok(&["info"]).contains("Is Manager: false")
        });
    }
    assert_eq!(managers_seen_by(&c, 0), 1);
    // And the swarm grows managers again the normal way.
    let id1 = c.node_id(1);
    c.hosts[0].ok(&["node", "promote", &id1]);
    wait_until("two managers again", SETTLE, || {
        is_manager(&c, 1) && managers_seen_by(&c, 0) == 2
    });
}
