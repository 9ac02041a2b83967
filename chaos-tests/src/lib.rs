//! Real multi-host swarms on one machine, for tests that break them.
//!
//! A [`Cluster`] is N hosts: each a network namespace with its own address on a shared test
//! LAN (198.51.100.0/24 on a bridge), running its own `shoald` with its own data root, exec
//! root, socket and cgroup parent. The test drives each host with the real CLI and breaks
//! it the ways real hosts break: kill -9, clean stop, SIGSTOP/SIGCONT (a hung host), a cut
//! link between two hosts (nftables drop in both), or its LAN link down. Everything goes
//! when the cluster is dropped, also when the test failed.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
pub use shoal_testkit::{wait_until, Daemon};

/// The swarm port every host listens on.
pub const PORT: u16 = 2377;

pub struct Cluster {
    pub hosts: Vec<Daemon>,
    pub ips: Vec<String>,
    /// Cut links, to report in a failure and to heal.
    cuts: Vec<(usize, usize)>,
}

/// The rows of a `service ps` table as (node hostname, desired state, current state).
pub fn task_rows(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // ID NAME IMAGE NODE DESIRED CURRENT…
            (cols.len() > 5).then(|| {
                (
                    cols[3].to_string(),
                    cols[4].to_string(),
                    cols[5].to_string(),
                )
            })
        })
        .collect()
}

impl Cluster {
    /// `n` hosts on one LAN, no swarm yet.
    pub fn hosts(n: usize) -> Cluster {
        Cluster::hosts_with_env(n, &[])
    }

    /// [`Cluster::hosts`] whose daemons run with `env` (test hooks).
    pub fn hosts_with_env(n: usize, env: &[(&str, &str)]) -> Cluster {
        let hosts: Vec<Daemon> = (0..n).map(|_| Daemon::start_with_env(env)).collect();
        let ns: Vec<std::path::PathBuf> = hosts.iter().map(Daemon::netns).collect();
        let refs: Vec<&std::path::Path> = ns.iter().map(|p| p.as_path()).collect();
        let ips = shoal_testkit::lan(&refs);
        Cluster {
            hosts,
            ips,
            cuts: Vec::new(),
        }
    }

    /// A swarm: host 0 inits it (heartbeat `heartbeat`), hosts 1..managers join as managers,
    /// the rest as workers.
    pub fn swarm(managers: usize, workers: usize, heartbeat: &str) -> Cluster {
        Cluster::swarm_with_env(managers, workers, heartbeat, &[])
    }

    /// [`Cluster::swarm`] whose daemons run with `env` (test hooks).
    pub fn swarm_with_env(
        managers: usize,
        workers: usize,
        heartbeat: &str,
        env: &[(&str, &str)],
    ) -> Cluster {
        let c = Cluster::hosts_with_env(managers + workers, env);
        c.hosts[0].ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            &c.ips[0],
            "--dispatcher-heartbeat",
            heartbeat,
        ]);
        let manager = c.token("manager");
        let worker = c.token("worker");
        for i in 1..managers + workers {
            let token = if i < managers { &manager } else { &worker };
            // Any manager takes joins; spread them.
            let via = c.addr(i % managers.min(i));
            c.hosts[i].ok(&["swarm", "join", "--token", token, &via]);
        }
        c
    }

    /// Running containers of service `svc` on host `i`.
    pub fn containers(&self, i: usize, svc: &str) -> usize {
        self.hosts[i]
            .ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={svc}"),
            ])
            .lines()
            .count()
    }

    /// One more host on the LAN (not in the swarm); its index.
    pub fn add_host(&mut self) -> usize {
        let d = Daemon::start();
        let i = self.hosts.len();
        let ip = format!("198.51.100.{}", i + 1);
        let port = format!("lanp{i}");
        let ns = d.netns().display().to_string();
        let run = |host: &Daemon, args: &[&str]| {
            let ok = host
                .host_cmd("ip", args)
                .status()
                .expect("run ip")
                .success();
            assert!(ok, "ip {args:?}");
        };
        run(
            &self.hosts[0],
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "lan0", "netns", &ns,
            ],
        );
        run(&self.hosts[0], &["link", "set", &port, "master", "lan0"]);
        run(&self.hosts[0], &["link", "set", &port, "up"]);
        run(&d, &["addr", "add", &format!("{ip}/24"), "dev", "lan0"]);
        run(&d, &["link", "set", "lan0", "up"]);
        self.hosts.push(d);
        self.ips.push(ip);
        i
    }

    /// The swarm address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{PORT}", self.ips[i])
    }

    /// A join token from whichever manager answers.
    pub fn token(&self, role: &str) -> String {
        self.any_manager()
            .ok(&["swarm", "join-token", "-q", role])
            .trim()
            .to_string()
    }

    /// A running host that answers as a manager.
    pub fn any_manager(&self) -> &Daemon {
        self.hosts
            .iter()
            .find(|d| d.is_running() && d.shoal(&["node", "ls", "-q"]).status.success())
            .expect("a manager that answers")
    }

    /// `swarm inspect` of host `i`, if it answers as a manager.
    pub fn inspect(&self, i: usize) -> Option<Value> {
        if !self.hosts[i].is_running() {
            return None;
        }
        let out = self.hosts[i].shoal(&["swarm", "inspect"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .map(|mut v| v[0].take())
    }

    /// The host that says it leads, among `among`.
    pub fn leader_among(&self, among: &[usize]) -> Option<usize> {
        among.iter().copied().find(|&i| {
            self.inspect(i)
                .is_some_and(|v| v["Raft"]["State"] == "leader")
        })
    }

    /// The host that leads, among all running hosts.
    pub fn leader(&self) -> Option<usize> {
        let all: Vec<usize> = (0..self.hosts.len()).collect();
        self.leader_among(&all)
    }

    /// Wait for a leader among `among` and return it.
    pub fn wait_leader(&self, among: &[usize], within: Duration) -> usize {
        let mut found = None;
        wait_until("a leader is elected", within, || {
            found = self.leader_among(among);
            found.is_some()
        });
        found.expect("a leader")
    }

    /// The node id of host `i` (asked of the host itself, which must be running).
    pub fn node_id(&self, i: usize) -> String {
        let info = self.hosts[i].ok(&["info"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("NodeID: "))
            .expect("the host is in a swarm")
            .to_string()
    }

    /// `node inspect <id>` from host `from`.
    pub fn node(&self, from: usize, id: &str) -> Value {
        let out = self.hosts[from].ok(&["node", "inspect", id]);
        let mut v: Value = serde_json::from_str(&out).expect("node inspect json");
        v[0].take()
    }

    pub fn kill9(&mut self, i: usize) {
        self.hosts[i].kill9();
    }

    pub fn stop(&mut self, i: usize) {
        self.hosts[i].stop();
    }

    pub fn start(&mut self, i: usize) {
        self.hosts[i].start_again();
    }

    /// Freeze host `i`'s daemon (a hung host: its sockets stay open, nothing answers).
    pub fn freeze(&self, i: usize) {
        self.hosts[i].signal(libc::SIGSTOP);
    }

    pub fn thaw(&self, i: usize) {
        self.hosts[i].signal(libc::SIGCONT);
    }

    /// Drop all traffic between hosts `a` and `b` (both directions, in both hosts).
    pub fn cut(&mut self, a: usize, b: usize) {
        self.nft(a, &cut_script(a, b, &self.ips[b]));
        self.nft(b, &cut_script(b, a, &self.ips[a]));
        self.cuts.push((a, b));
    }

    /// Undo [`Cluster::cut`].
    pub fn heal(&mut self, a: usize, b: usize) {
        self.nft(a, &format!("delete table inet chaos_{a}_{b}\n"));
        self.nft(b, &format!("delete table inet chaos_{b}_{a}\n"));
        self.cuts.retain(|c| *c != (a, b));
    }

    /// Cut host `i` off from every other host.
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.hosts.len() {
            if j != i {
                self.cut(i, j);
            }
        }
    }

    /// Undo [`Cluster::isolate`].
    pub fn rejoin(&mut self, i: usize) {
        for j in 0..self.hosts.len() {
            if j != i {
                self.heal(i, j);
            }
        }
    }

    /// Host `i`'s LAN link down or up.
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let ok = self.hosts[i]
            .host_cmd("ip", &["link", "set", "lan0", state])
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip link set lan0 {state} on host {i}");
    }

    fn nft(&self, i: usize, script: &str) {
        let mut child = self.hosts[i]
            .host_cmd("nft", &["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(script.as_bytes())
            .expect("write the nft script");
        assert!(
            child.wait().expect("wait for nft").success(),
            "nft on host {i}: {script}"
        );
    }
}

fn cut_script(me: usize, other: usize, ip: &str) -> String {
    format!(
        "add table inet chaos_{me}_{other}\n\
         add chain inet chaos_{me}_{other} in {{ type filter hook input priority -10; }}\n\
         add chain inet chaos_{me}_{other} out {{ type filter hook output priority -10; }}\n\
         add rule inet chaos_{me}_{other} in ip saddr {ip} drop\n\
         add rule inet chaos_{me}_{other} out ip daddr {ip} drop\n"
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.cuts.is_empty() && std::thread::panicking() {
            eprintln!("cut links at failure: {:?}", self.cuts);
        }
        // Thaw frozen daemons so they can be stopped; the tables go with the namespaces.
        for d in &self.hosts {
            d.signal(libc::SIGCONT);
        }
    }
}
