//! The scheduler: which node runs each pending task.
//!
//! Decisions are made in batches from one snapshot of nodes and tasks. For each service the
//! filters that do not change while assigning (ready, active, constraints) run once per
//! node; the nodes that pass sit in a heap ordered by how many of the service's tasks they
//! already run, then by their total load, so each task costs O(log nodes). A spread
//! preference groups the nodes by the label's value and spreads over the groups first.
//! A task no node can take stays pending with the reason, counted per filter, so the user
//! reads "no suitable node (2 nodes lack label zone=b; 1 node is drained)" instead of a
//! bare "pending".

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use shoal_api::v1 as api;

use crate::objects::{Availability, Node, NodeState};

/// One placement constraint: `node.labels.zone==a`, `node.role!=manager`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    key: String,
    equal: bool,
    value: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let (key, equal, value) = if let Some((k, v)) = s.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, false, v)
        } else {
            return Err(format!(
                "invalid constraint {s:?}: use KEY==VALUE or KEY!=VALUE (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME, engine.labels.NAME)"
            ));
        };
        let key = key.trim().to_string();
        let known = matches!(
            key.as_str(),
            "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
        ) || key
            .strip_prefix("node.labels.")
            .is_some_and(|l| !l.is_empty())
            || key
                .strip_prefix("engine.labels.")
                .is_some_and(|l| !l.is_empty());
        if !known {
            return Err(format!(
                "invalid constraint key {key:?}: use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME or engine.labels.NAME"
            ));
        }
        Ok(Constraint {
            key,
            equal,
            value: value.trim().to_string(),
        })
    }

    pub fn holds(&self, n: &Node) -> bool {
        let actual = match self.key.as_str() {
            "node.id" => Some(n.id.as_str()),
            "node.hostname" => Some(n.hostname.as_str()),
            "node.role" => Some(n.role.as_str()),
            "node.platform.os" => Some(n.os.as_str()),
            "node.platform.arch" => Some(n.arch.as_str()),
            k => k
                .strip_prefix("node.labels.")
                .and_then(|l| n.labels.get(l))
                .map(String::as_str),
        };
        // docker: a missing label equals nothing, so != holds and == does not.
        match actual {
            Some(a) => (a == self.value) == self.equal,
            None => !self.equal,
        }
    }

    /// How a node that fails it is described ("lack label zone=b").
    fn failure(&self) -> String {
        if let Some(l) = self.key.strip_prefix("node.labels.") {
            if self.equal {
                return format!("lack label {l}={}", self.value);
            }
            return format!("have label {l}={}", self.value);
        }
        let op = if self.equal { "==" } else { "!=" };
        format!("do not satisfy {}{op}{}", self.key, self.value)
    }
}

/// The label a `spread=node.labels.NAME` preference spreads over.
pub fn spread_label(pref: &str) -> Result<String, String> {
    pref.strip_prefix("spread=")
        .and_then(|k| k.strip_prefix("node.labels."))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!("invalid placement preference {pref:?}: use spread=node.labels.NAME")
        })
}

/// Eligible nodes by (this service's tasks, all tasks, index), least loaded on top.
type NodeHeap = BinaryHeap<Reverse<(u64, u64, usize)>>;

/// What the scheduler decided for one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Assign(String),
    /// No node can take it; why, for the task's status message.
    Pending(String),
}

/// Tasks already placed, as the scheduler counts them: per node, in total and per service,
/// and the resources they reserve.
#[derive(Default)]
pub struct Load {
    nodes: HashMap<String, NodeLoad>,
}

#[derive(Default)]
struct NodeLoad {
    total: u64,
    per_service: HashMap<String, u64>,
    reserved_cpu: i64,
    reserved_mem: i64,
    /// Host ports its tasks publish: (protocol, port).
    ports: Vec<(String, u32)>,
}

/// The host ports a task spec publishes.
fn host_ports(spec: Option<&api::TaskSpec>) -> Vec<(String, u32)> {
    spec.map_or_else(Vec::new, |s| {
        s.ports
            .iter()
            .filter(|p| p.publish_mode == "host")
            .map(|p| (p.protocol.clone(), p.published_port))
            .collect()
    })
}

impl Load {
    /// A task that runs, or will, on its node.
    pub fn add(&mut self, t: &api::Task) {
        if t.node_id.is_empty() {
            return;
        }
        let (cpu, mem) = reservation(t.spec.as_ref());
        self.count(&t.node_id, &t.service_id, cpu, mem);
        let ports = host_ports(t.spec.as_ref());
        if !ports.is_empty() {
            self.nodes
                .get_mut(&t.node_id)
                .expect("counted")
                .ports
                .extend(ports);
        }
    }

    fn ports_taken(&self, node: &str, ports: &[(String, u32)]) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| ports.iter().any(|p| n.ports.contains(p)))
    }

    // (Lookups first: building keys for every task of a large swarm costs more than the
    // counting.)
    fn count(&mut self, node: &str, service: &str, cpu: i64, mem: i64) {
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.to_string(), NodeLoad::default());
        }
        let n = self.nodes.get_mut(node).expect("inserted");
        n.total += 1;
        n.reserved_cpu += cpu;
        n.reserved_mem += mem;
        match n.per_service.get_mut(service) {
            Some(c) => *c += 1,
            None => {
                n.per_service.insert(service.to_string(), 1);
            }
        }
    }

    fn of_service(&self, node: &str, service: &str) -> u64 {
        self.nodes
            .get(node)
            .and_then(|n| n.per_service.get(service))
            .copied()
            .unwrap_or(0)
    }

    fn node(&self, node: &str) -> (u64, i64, i64) {
        self.nodes
            .get(node)
            .map_or((0, 0, 0), |n| (n.total, n.reserved_cpu, n.reserved_mem))
    }
}

fn reservation(spec: Option<&api::TaskSpec>) -> (i64, i64) {
    spec.and_then(|s| s.resources.as_ref())
        .map_or((0, 0), |r| (r.reserve_nano_cpus, r.reserve_memory))
}

/// Place `pending` (tasks of one service, all with the same spec) on `nodes`, given what
/// already runs (`load`, updated with the placements made). One decision per task, in
/// order.
pub fn place(
    service_id: &str,
    spec: &api::TaskSpec,
    pending: usize,
    nodes: &[Node],
    load: &mut Load,
) -> Vec<Decision> {
    let placement = spec.placement.clone().unwrap_or_default();
    let constraints: Vec<Constraint> = placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    let spread = placement
        .preferences
        .first()
        .and_then(|p| spread_label(p).ok());
    let (cpu, mem) = reservation(Some(spec));
    let max_per_node = placement.max_replicas_per_node;
    let ports = host_ports(Some(spec));

    // The filters that do not change while placing, counted for the explanation.
    let mut excluded: BTreeMap<String, usize> = BTreeMap::new();
    let mut eligible: Vec<&Node> = Vec::new();
    for n in nodes {
        let why = if n.state != NodeState::Ready {
            Some("not ready".to_string())
        } else if n.availability == Availability::Drain {
            Some("drained".to_string())
        } else if n.availability == Availability::Pause {
            Some("paused".to_string())
        } else {
            constraints
                .iter()
                .find(|c| !c.holds(n))
                .map(Constraint::failure)
        };
        match why {
            Some(w) => *excluded.entry(w).or_default() += 1,
            None => eligible.push(n),
        }
    }

    // Groups (spread values; one group without a preference), each a heap of nodes by
    // (this service's tasks, all tasks, index).
    let mut groups: BTreeMap<String, NodeHeap> = BTreeMap::new();
    let mut group_load: BTreeMap<String, u64> = BTreeMap::new();
    for (i, n) in eligible.iter().enumerate() {
        let g = spread
            .as_ref()
            .map(|l| n.labels.get(l).cloned().unwrap_or_default())
            .unwrap_or_default();
        let mine = load.of_service(&n.id, service_id);
        let all = load.node(&n.id).0;
        groups
            .entry(g.clone())
            .or_default()
            .push(Reverse((mine, all, i)));
        *group_load.entry(g).or_default() += mine;
    }
    let mut group_heap: BinaryHeap<Reverse<(u64, String)>> = group_load
        .iter()
        .map(|(g, l)| Reverse((*l, g.clone())))
        .collect();

    let mut out = Vec::with_capacity(pending);
    // Nodes set aside during this batch, and why.
    let mut full: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..pending {
        let mut chosen = None;
        while let Some(Reverse((gl, g))) = group_heap.pop() {
            let heap = groups.get_mut(&g).expect("group");
            while let Some(Reverse((mine, all, i))) = heap.pop() {
                let n = eligible[i];
                if max_per_node > 0 && mine >= max_per_node {
                    *full
                        .entry("already run the most tasks of this service allowed per node")
                        .or_default() += 1;
                    continue;
                }
                if !ports.is_empty() && load.ports_taken(&n.id, &ports) {
                    *full
                        .entry("have a host port this service publishes in use")
                        .or_default() += 1;
                    continue;
                }
                let (_, used_cpu, used_mem) = load.node(&n.id);
                let (free_cpu, free_mem) = (n.nano_cpus - used_cpu, n.memory_bytes - used_mem);
                if cpu > 0 && free_cpu < cpu {
                    *full.entry("lack CPU for the reservation").or_default() += 1;
                    continue;
                }
                if mem > 0 && free_mem < mem {
                    *full.entry("lack memory for the reservation").or_default() += 1;
                    continue;
                }
                heap.push(Reverse((mine + 1, all + 1, i)));
                chosen = Some(i);
                break;
            }
            if let Some(i) = chosen {
                group_heap.push(Reverse((gl + 1, g)));
                let n = eligible[i];
                load.count(&n.id, service_id, cpu, mem);
                if !ports.is_empty() {
                    if let Some(l) = load.nodes.get_mut(&n.id) {
                        l.ports.extend(ports.iter().cloned());
                    }
                }
                break;
            }
            // The group is exhausted: it stays out of the heap.
        }
        match chosen {
            Some(i) => out.push(Decision::Assign(eligible[i].id.clone())),
            None => {
                let mut reasons: Vec<String> = excluded
                    .iter()
                    .map(|(why, n)| format!("{n} {} {why}", nodes_word(*n)))
                    .collect();
                reasons.extend(
                    full.iter()
                        .map(|(why, n)| format!("{n} {} {why}", nodes_word(*n))),
                );
                let detail = if nodes.is_empty() {
                    "the swarm has no nodes".to_string()
                } else {
                    reasons.join("; ")
                };
                out.push(Decision::Pending(format!("no suitable node ({detail})")));
            }
        }
    }
    out
}

fn nodes_word(n: usize) -> &'static str {
    if n == 1 {
        "node"
    } else {
        "nodes"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::NodeRole;

    fn node(id: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            raft_id: 1,
            hostname: format!("host-{id}"),
            role: NodeRole::Worker,
            availability: Availability::Active,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addr: String::new(),
            state: NodeState::Ready,
            message: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            engine_version: String::new(),
            os: "linux".into(),
            arch: "x86_64".into(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
            cert_root: String::new(),
        }
    }

    fn spec(constraints: &[&str], prefs: &[&str], max: u64) -> api::TaskSpec {
        api::TaskSpec {
            image: "busybox".into(),
            placement: Some(api::Placement {
                constraints: constraints.iter().map(|s| s.to_string()).collect(),
                preferences: prefs.iter().map(|s| s.to_string()).collect(),
                max_replicas_per_node: max,
            }),
            ..Default::default()
        }
    }

    fn assigned(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .map(|d| match d {
                Decision::Assign(n) => n.as_str(),
                Decision::Pending(_) => "-",
            })
            .collect()
    }

    #[test]
    fn spreads_a_service_over_nodes_then_by_load() {
        let nodes = vec![node("a", &[]), node("b", &[]), node("c", &[])];
        let mut load = Load::default();
        // c is busy with another service.
        for _ in 0..2 {
            load.add(&api::Task {
                node_id: "c".into(),
                service_id: "other".into(),
                ..Default::default()
            });
        }
        let d = place("s", &spec(&[], &[], 0), 4, &nodes, &mut load);
        let mut got = assigned(&d);
        got.sort();
        assert_eq!(got, ["a", "a", "b", "c"]);
    }

    #[test]
    fn constraints_and_limits_explain_what_stays_pending() {
        let mut nodes = vec![
            node("a", &[("zone", "a")]),
            node("b", &[("zone", "b")]),
            node("c", &[]),
            node("d", &[("zone", "b")]),
        ];
        nodes[3].availability = Availability::Drain;
        let mut load = Load::default();
        let d = place(
            "s",
            &spec(&["node.labels.zone==b"], &[], 1),
            2,
            &nodes,
            &mut load,
        );
        assert_eq!(d[0], Decision::Assign("b".into()));
        let Decision::Pending(why) = &d[1] else {
            panic!("{d:?}")
        };
        assert!(why.starts_with("no suitable node ("), "{why}");
        assert!(why.contains("2 nodes lack label zone=b"), "{why}");
        assert!(why.contains("1 node drained"), "{why}");
        assert!(why.contains("most tasks of this service"), "{why}");
        assert!(Constraint::parse("node.labels.zone=b").is_err());
        assert!(Constraint::parse("node.colour==red").is_err());
        let role = Constraint::parse("node.role!=manager").unwrap();
        assert!(role.holds(&nodes[0]));
    }

    #[test]
    fn a_spread_preference_balances_label_values_first() {
        let nodes = vec![
            node("a1", &[("zone", "a")]),
            node("a2", &[("zone", "a")]),
            node("a3", &[("zone", "a")]),
            node("b1", &[("zone", "b")]),
        ];
        let mut load = Load::default();
        let d = place(
            "s",
            &spec(&[], &["spread=node.labels.zone"], 0),
            4,
            &nodes,
            &mut load,
        );
        let got = assigned(&d);
        assert_eq!(
            got.iter().filter(|n| n.starts_with('b')).count(),
            2,
            "{got:?}"
        );
    }

    #[test]
    fn reservations_count_against_capacity() {
        let nodes = vec![node("a", &[])];
        let mut s = spec(&[], &[], 0);
        s.resources = Some(api::Resources {
            reserve_memory: 400 << 20,
            ..Default::default()
        });
        let mut load = Load::default();
        let d = place("s", &s, 3, &nodes, &mut load);
        assert_eq!(assigned(&d), ["a", "a", "-"]);
        let Decision::Pending(why) = &d[2] else {
            panic!()
        };
        assert!(why.contains("lack memory"), "{why}");
    }
}
