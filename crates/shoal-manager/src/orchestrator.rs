//! The leader's control loop for services: orchestrators decide which tasks should exist and
//! run (replicated: one per slot; global: one per eligible node), applying restart policies
//! and replacing tasks of nodes that went down; the scheduler places new tasks. Everything is
//! computed from one snapshot ([`plan`], a pure function) and written back as independent
//! per-task writes, so it is restart-safe: a new leader recomputes the same from the store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_api::v1 as api;
use shoal_store::table::{create, delete, update};
use shoal_store::{Object, Op, Replica, Versioned};

use crate::ids::derived_id;
use crate::objects::{Cluster, Node, NodeState};
use crate::scheduler::{place, Constraint, Decision, Load};
use crate::service::{is_terminal, mode, Service, Task};

/// docker's default restart delay.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// Makes a service's new task for a slot (or a node), after the tasks it follows.
type MakeTask<'a> = dyn Fn(u64, &str, &[&Versioned<Task>]) -> api::Task + 'a;

/// New tasks written in one request at most.
const CREATE_CHUNK: usize = 128;

/// What the loop writes: one change per task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Task),
    Update(Task, u64),
    Delete(String, u64),
    /// A service's update status (or, for an automatic rollback, its spec).
    Service(Box<Service>, u64),
}

impl Change {
    #[allow(clippy::result_large_err)] // the store's own error type
    fn op(&self) -> shoal_store::Result<Op> {
        match self {
            Change::Create(t) => create(t),
            Change::Update(t, v) => update(t, *v),
            Change::Delete(id, v) => Ok(delete::<Task>(id, Some(*v))),
            Change::Service(s, v) => update(s.as_ref(), *v),
        }
    }
}

/// The snapshot a plan is made from.
pub struct World<'a> {
    pub services: &'a [Versioned<Service>],
    pub tasks: &'a [Versioned<Task>],
    pub nodes: &'a [Versioned<Node>],
    pub now: chrono::DateTime<chrono::Utc>,
    /// Terminal tasks kept per slot (or per node, for global services).
    pub history: u64,
}

fn stamp(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn status(t: &api::Task) -> &str {
    t.status.as_ref().map_or("new", |s| s.state.as_str())
}

fn set_status(t: &mut api::Task, state: &str, message: &str, now: &str) {
    let s = t.status.get_or_insert_with(Default::default);
    s.state = state.into();
    s.message = message.into();
    s.timestamp = now.into();
    t.updated_at = now.into();
}

/// Everything the control loop should change, given `w`.
pub fn plan(w: &World<'_>) -> Vec<Change> {
    let now = stamp(w.now);
    let mut out = Vec::new();
    let nodes: HashMap<&str, &Node> = w
        .nodes
        .iter()
        .map(|n| (n.object.id.as_str(), &n.object))
        .collect();
    let services: HashMap<&str, &Versioned<Service>> = w
        .services
        .iter()
        .map(|s| (s.object.id.as_str(), s))
        .collect();
    let mut by_service: HashMap<&str, Vec<&Versioned<Task>>> = HashMap::new();
    for t in w.tasks {
        by_service
            .entry(t.object.0.service_id.as_str())
            .or_default()
            .push(t);
    }

    // Tasks of removed services: stop them; drop them once nothing runs.
    for (sid, tasks) in &by_service {
        if services.contains_key(sid) {
            continue;
        }
        for t in tasks {
            let st = status(&t.object.0);
            if t.object.0.node_id.is_empty() || is_terminal(st) {
                out.push(Change::Delete(t.object.0.id.clone(), t.version));
            } else if t.object.0.desired_state != "remove" {
                let mut n = t.object.clone();
                n.0.desired_state = "remove".into();
                n.0.updated_at = now.clone();
                out.push(Change::Update(n, t.version));
            }
        }
    }

    // Tasks whose node is gone or down: orphaned, so their slot is filled elsewhere now
    // (and so are those of a drained node, below; both are in `orphaned`).
    // A global service's task belongs to its node: it waits for a node that is only down
    // (there is nowhere else to run it, and its container is likely still running).
    let mut orphaned: HashMap<&str, bool> = HashMap::new();
    for t in w.tasks {
        let task = &t.object.0;
        let Some(svc) = services.get(task.service_id.as_str()) else {
            continue;
        };
        if task.node_id.is_empty() || is_terminal(status(task)) {
            continue;
        }
        let per_node = matches!(mode(&svc.object.spec), "global" | "global-job");
        let gone = match nodes.get(task.node_id.as_str()) {
            None => true,
            Some(n) => n.state == NodeState::Down && !per_node,
        };
        // A drained node's replicated tasks move: shut down there, replaced elsewhere now.
        let drained = !per_node
            && (task.desired_state == "running" || task.desired_state == "ready")
            && nodes
                .get(task.node_id.as_str())
                .is_some_and(|n| n.availability == crate::objects::Availability::Drain);
        if drained && !gone {
            let mut n = t.object.clone();
            n.0.desired_state = "shutdown".into();
            n.0.updated_at = now.clone();
            out.push(Change::Update(n, t.version));
            orphaned.insert(task.id.as_str(), true);
        }
        if gone {
            let mut n = t.object.clone();
            n.0.desired_state = "shutdown".into();
            set_status(
                &mut n.0,
                "orphaned",
                "the node is down: replaced elsewhere",
                &now,
            );
            out.push(Change::Update(n, t.version));
            orphaned.insert(task.id.as_str(), true);
        }
    }
    // A task counts while it is wanted (running, or ready to start once the task it
    // replaces has stopped) and not over.
    let live = |t: &api::Task| {
        (t.desired_state == "running" || t.desired_state == "ready")
            && !is_terminal(status(t))
            && !orphaned.contains_key(t.id.as_str())
    };

    let mut load = Load::default();
    for t in w.tasks {
        if live(&t.object.0) {
            load.add(&t.object.0);
        }
    }
    let ready_nodes: Vec<Node> = w.nodes.iter().map(|n| n.object.clone()).collect();

    for s in w.services {
        let svc = &s.object;
        let tasks = by_service.get(svc.id.as_str()).cloned().unwrap_or_default();
        let spec = svc.spec.task.clone().unwrap_or_default();
        let mut new_tasks: Vec<api::Task> = Vec::new();
        // A new task's id follows from what it replaces (see `derived_id`).
        let make = |slot: u64, node: &str, after: &[&Versioned<Task>]| api::Task {
            id: {
                let last = after
                    .iter()
                    .max_by_key(|t| t.created)
                    .map_or("", |t| t.object.0.id.as_str());
                derived_id(&[
                    &svc.id,
                    &svc.spec_version.to_string(),
                    &slot.to_string(),
                    node,
                    last,
                ])
            },
            service_id: svc.id.clone(),
            slot,
            node_id: node.to_string(),
            spec: Some(spec.clone()),
            spec_version: svc.spec_version,
            desired_state: "running".into(),
            status: Some(api::TaskStatus {
                state: "new".into(),
                message: "created".into(),
                timestamp: now.clone(),
                ..Default::default()
            }),
            created_at: now.clone(),
            updated_at: now.clone(),
            service_name: svc.spec.name.clone(),
        };
        match mode(&svc.spec) {
            "replicated" => {
                let mut slots: BTreeMap<u64, Vec<&Versioned<Task>>> = BTreeMap::new();
                for t in &tasks {
                    slots.entry(t.object.0.slot).or_default().push(t);
                }
                let wanted = svc.spec.replicas;
                for slot in 1..=wanted {
                    let in_slot = slots.get(&slot).cloned().unwrap_or_default();
                    if in_slot.iter().any(|t| live(&t.object.0)) {
                        continue;
                    }
                    // A node failure or a drain is no task failure: replaced at once.
                    let moved = in_slot
                        .iter()
                        .any(|t| orphaned.contains_key(t.object.0.id.as_str()));
                    if moved || restart_allowed(&spec, &in_slot, w.now) {
                        // The last one stays as history, shut down.
                        for t in in_slot
                            .iter()
                            .filter(|t| t.object.0.desired_state == "running")
                        {
                            if orphaned.contains_key(t.object.0.id.as_str()) {
                                continue;
                            }
                            let mut n = t.object.clone();
                            n.0.desired_state = "shutdown".into();
                            n.0.updated_at = now.clone();
                            out.push(Change::Update(n, t.version));
                        }
                        new_tasks.push(make(slot, "", &in_slot));
                    }
                }
                rolling_update(s, &slots, &live, w.now, &mut new_tasks, &mut out, &make);
                // Scale down: the highest slots go.
                for (slot, in_slot) in slots.range(wanted + 1..) {
                    let _ = slot;
                    for t in in_slot {
                        if t.object.0.desired_state == "running"
                            && !orphaned.contains_key(t.object.0.id.as_str())
                        {
                            let mut n = t.object.clone();
                            n.0.desired_state = if t.object.0.node_id.is_empty() {
                                "remove".into()
                            } else {
                                "shutdown".into()
                            };
                            n.0.updated_at = now.clone();
                            out.push(Change::Update(n, t.version));
                        }
                    }
                }
                out.extend(history(&slots, w.history));
            }
            "global" => {
                let constraints = constraints_of(&spec);
                let per_node = by_node(&tasks);
                for n in w.nodes {
                    let node = &n.object;
                    let eligible = eligible_for_global(node, &constraints);
                    let mine = per_node.get(node.id.as_str()).cloned().unwrap_or_default();
                    let running = mine.iter().any(|t| live(&t.object.0));
                    if eligible && !running && restart_allowed(&spec, &mine, w.now) {
                        let mut t = make(0, &node.id, &mine);
                        set_status(&mut t, "assigned", "assigned to its node", &now);
                        new_tasks.push(t);
                    }
                    // Drained, or its labels no longer match: the task goes. A node that
                    // is down or paused keeps what it runs.
                    if !keeps_global(node, &constraints) {
                        for t in mine.iter().filter(|t| live(&t.object.0)) {
                            let mut n = t.object.clone();
                            n.0.desired_state = "shutdown".into();
                            n.0.updated_at = now.clone();
                            out.push(Change::Update(n, t.version));
                        }
                    }
                }
                let by_node: BTreeMap<u64, Vec<&Versioned<Task>>> = per_node
                    .into_values()
                    .enumerate()
                    .map(|(i, v)| (i as u64, v))
                    .collect();
                out.extend(history(&by_node, w.history));
            }
            "replicated-job" => {
                // `replicas` completions in all, at most `max_concurrent` at once; a failed
                // task is retried per the restart policy, a completed one never re-run.
                let total = svc.spec.replicas;
                let concurrent = if svc.spec.max_concurrent == 0 {
                    total
                } else {
                    svc.spec.max_concurrent
                };
                let mut slots: BTreeMap<u64, Vec<&Versioned<Task>>> = BTreeMap::new();
                for t in &tasks {
                    slots.entry(t.object.0.slot).or_default().push(t);
                }
                let done = |slot: u64| {
                    slots.get(&slot).is_some_and(|ts| {
                        ts.iter().any(|t| {
                            t.object.0.spec_version == svc.spec_version
                                && status(&t.object.0) == "complete"
                        })
                    })
                };
                let mut running = (1..=total)
                    .filter(|s| {
                        slots
                            .get(s)
                            .is_some_and(|ts| ts.iter().any(|t| live(&t.object.0)))
                    })
                    .count() as u64;
                for slot in 1..=total {
                    if running >= concurrent {
                        break;
                    }
                    let in_slot = slots.get(&slot).cloned().unwrap_or_default();
                    if done(slot) || in_slot.iter().any(|t| live(&t.object.0)) {
                        continue;
                    }
                    if restart_allowed(&spec, &in_slot, w.now) {
                        new_tasks.push(make(slot, "", &in_slot));
                        running += 1;
                    }
                }
                out.extend(history(&slots, w.history));
            }
            "global-job" => {
                // One completion per eligible node (nodes that join later run it too).
                let constraints = constraints_of(&spec);
                let per_node = by_node(&tasks);
                for n in w.nodes {
                    let node = &n.object;
                    let eligible = eligible_for_global(node, &constraints);
                    let mine = per_node.get(node.id.as_str()).cloned().unwrap_or_default();
                    let finished = mine.iter().any(|t| status(&t.object.0) == "complete");
                    let running = mine.iter().any(|t| live(&t.object.0));
                    if eligible && !finished && !running && restart_allowed(&spec, &mine, w.now) {
                        let mut t = make(0, &node.id, &mine);
                        set_status(&mut t, "assigned", "assigned to its node", &now);
                        new_tasks.push(t);
                    }
                }
            }
            _ => {}
        }

        // Place the service's pending tasks: the new ones and any still waiting.
        let mut waiting: Vec<(Option<u64>, api::Task)> = tasks
            .iter()
            .filter(|t| live(&t.object.0) && t.object.0.node_id.is_empty())
            .map(|t| (Some(t.version), t.object.0.clone()))
            .collect();
        waiting.extend(new_tasks.into_iter().map(|t| (None, t)));
        let unplaced: Vec<usize> = waiting
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| t.node_id.is_empty())
            .map(|(i, _)| i)
            .collect();
        let decisions = place(&svc.id, &spec, unplaced.len(), &ready_nodes, &mut load);
        for (i, d) in unplaced.into_iter().zip(decisions) {
            let t = &mut waiting[i].1;
            match d {
                Decision::Assign(node) => {
                    t.node_id = node;
                    set_status(t, "assigned", "scheduled", &now);
                }
                Decision::Pending(why) => {
                    if status(t) == "pending" && t.status.as_ref().is_some_and(|s| s.message == why)
                    {
                        continue;
                    }
                    set_status(t, "pending", &why, &now);
                }
            }
        }
        for (version, t) in waiting {
            match version {
                Some(v) => {
                    // Only if something changed.
                    if let Some(old) = tasks.iter().find(|o| o.object.0.id == t.id) {
                        if old.object.0 != t {
                            out.push(Change::Update(Task(t), v));
                        }
                    }
                }
                None => out.push(Change::Create(Task(t))),
            }
        }
    }
    out
}

/// A task spec's placement constraints (validated when the spec was written).
fn constraints_of(spec: &api::TaskSpec) -> Vec<Constraint> {
    spec.placement
        .as_ref()
        .map(|p| {
            p.constraints
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A service's tasks by node.
fn by_node<'a>(tasks: &[&'a Versioned<Task>]) -> BTreeMap<&'a str, Vec<&'a Versioned<Task>>> {
    let mut per_node: BTreeMap<&str, Vec<&Versioned<Task>>> = BTreeMap::new();
    for t in tasks {
        per_node
            .entry(t.object.0.node_id.as_str())
            .or_default()
            .push(t);
    }
    per_node
}

/// Whether a global service (or job) runs on `node`.
fn eligible_for_global(node: &Node, constraints: &[Constraint]) -> bool {
    node.state == NodeState::Ready
        && node.availability == crate::objects::Availability::Active
        && constraints.iter().all(|c| c.holds(node))
}

/// Whether a global service's task already on `node` stays there.
fn keeps_global(node: &Node, constraints: &[Constraint]) -> bool {
    node.availability != crate::objects::Availability::Drain
        && constraints.iter().all(|c| c.holds(node))
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Roll a replicated service's slots whose live task runs an older spec: in batches of
/// `parallelism`, each batch once the previous one runs and `delay` has passed since (the
/// update completes once every new task has run for `monitor`); stop-first (the old task
/// stops as the new one is made) or start-first (the old one stops once the new one runs);
/// failures beyond `max_failure_ratio` pause, continue or roll back. All of it is read from
/// the store (task versions, statuses and times), so a new leader carries on where the last
/// one was.
#[allow(clippy::too_many_arguments)]
fn rolling_update(
    s: &Versioned<Service>,
    slots: &BTreeMap<u64, Vec<&Versioned<Task>>>,
    live: &dyn Fn(&api::Task) -> bool,
    now: chrono::DateTime<chrono::Utc>,
    new_tasks: &mut Vec<api::Task>,
    out: &mut Vec<Change>,
    make: &MakeTask<'_>,
) {
    let svc = &s.object;
    let cur = svc.spec_version;
    let stamp_now = stamp(now);
    let state = svc
        .update_status
        .as_ref()
        .map_or("", |u| u.state.as_str())
        .to_string();
    let rolling_back = state.starts_with("rollback");
    let active = state == "updating" || state == "rollback_started";
    let cfg = if rolling_back {
        svc.spec.rollback.clone()
    } else {
        svc.spec.update.clone()
    }
    .unwrap_or_default();
    let monitor = Duration::from_millis(if cfg.monitor_ms == 0 {
        5000
    } else {
        cfg.monitor_ms
    });
    let delay = Duration::from_millis(cfg.delay_ms);
    let parallelism = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        cfg.parallelism as usize
    };
    let start_first = cfg.order == "start-first";
    let started = svc
        .update_status
        .as_ref()
        .and_then(|u| parse_time(&u.started_at));

    let mut dirty = Vec::new();
    // New tasks not running yet; running but still within their monitor window.
    let mut in_progress = 0usize;
    let mut watching = 0usize;
    let mut last_running: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut failed: Vec<String> = Vec::new();
    for slot in 1..=svc.spec.replicas {
        let in_slot: &[&Versioned<Task>] = slots.get(&slot).map_or(&[], Vec::as_slice);
        for t in in_slot {
            let st = status(&t.object.0);
            let this_update = t.object.0.spec_version == cur
                && started
                    .is_none_or(|s| parse_time(&t.object.0.created_at).is_some_and(|c| c >= s));
            if this_update && (st == "failed" || st == "rejected") {
                failed.push(t.object.0.id.clone());
            }
        }
        let alive: Vec<&Versioned<Task>> = in_slot
            .iter()
            .copied()
            .filter(|t| live(&t.object.0))
            .collect();
        let old: Vec<&Versioned<Task>> = alive
            .iter()
            .copied()
            .filter(|t| t.object.0.spec_version != cur)
            .collect();
        let new = alive.iter().find(|t| t.object.0.spec_version == cur);
        match new {
            None if !old.is_empty() => dirty.push((slot, old)),
            None => {}
            Some(n) if n.object.0.desired_state == "ready" => {
                // Stop-first: the new task starts once the old one has stopped.
                let old_gone = in_slot
                    .iter()
                    .filter(|t| t.object.0.spec_version != cur)
                    .all(|t| is_terminal(status(&t.object.0)));
                if old_gone {
                    let mut t = n.object.clone();
                    t.0.desired_state = "running".into();
                    t.0.updated_at = stamp_now.clone();
                    out.push(Change::Update(t, n.version));
                }
                in_progress += 1;
            }
            Some(n) => {
                let running_since = (status(&n.object.0) == "running")
                    .then(|| {
                        n.object
                            .0
                            .status
                            .as_ref()
                            .and_then(|s| parse_time(&s.timestamp))
                    })
                    .flatten();
                if running_since.is_some() {
                    // Start-first: the new task runs, so the old one goes.
                    for o in &old {
                        let mut t = o.object.clone();
                        t.0.desired_state = "shutdown".into();
                        t.0.updated_at = stamp_now.clone();
                        out.push(Change::Update(t, o.version));
                    }
                }
                match running_since {
                    Some(r) => {
                        last_running = Some(last_running.map_or(r, |l| l.max(r)));
                        if r + chrono::Duration::from_std(monitor).unwrap_or_default() > now {
                            watching += 1;
                        }
                    }
                    None => in_progress += 1,
                }
            }
        }
    }
    if !active {
        return;
    }
    let set_status = |state: &str, message: String, done: bool| {
        let mut n = svc.clone();
        let u = n.update_status.get_or_insert_with(Default::default);
        u.state = state.into();
        u.message = message;
        if done {
            u.completed_at = stamp_now.clone();
        }
        n.updated_at = stamp_now.clone();
        Change::Service(Box::new(n), s.version)
    };
    let ratio = failed.len() as f64 / svc.spec.replicas.max(1) as f64;
    if !failed.is_empty() && ratio > cfg.max_failure_ratio && cfg.failure_action != "continue" {
        let task = &failed[0];
        if cfg.failure_action == "rollback" && !rolling_back && svc.previous_spec.is_some() {
            let mut n = svc.clone();
            let previous = n.previous_spec.take().expect("checked");
            n.previous_spec = Some(std::mem::replace(&mut n.spec, previous));
            n.spec_version += 1;
            n.update_status = Some(api::UpdateStatus {
                state: "rollback_started".into(),
                message: format!(
                    "update rolled back due to failure or early termination of task {task}"
                ),
                started_at: stamp_now.clone(),
                completed_at: String::new(),
            });
            n.updated_at = stamp_now.clone();
            out.push(Change::Service(Box::new(n), s.version));
        } else {
            let state = if rolling_back {
                "rollback_paused"
            } else {
                "paused"
            };
            let what = if rolling_back { "rollback" } else { "update" };
            out.push(set_status(
                state,
                format!("{what} paused due to failure or early termination of task {task}"),
                false,
            ));
        }
        return;
    }
    if dirty.is_empty() && in_progress == 0 && watching == 0 {
        let (state, message) = if rolling_back {
            ("rollback_completed", "rollback completed")
        } else {
            ("completed", "update completed")
        };
        out.push(set_status(state, message.into(), true));
        return;
    }
    // The next batch: once the last one runs, and `delay` after that (as docker, the
    // monitor window holds back only the end of the update, not the next batch).
    let waited = last_running
        .is_none_or(|l| now >= l + chrono::Duration::from_std(delay).unwrap_or_default());
    if in_progress > 0 || !waited {
        return;
    }
    for (slot, old) in dirty.into_iter().take(parallelism) {
        let mut t = make(slot, "", &old);
        if !start_first {
            for o in &old {
                let mut t = o.object.clone();
                t.0.desired_state = "shutdown".into();
                t.0.updated_at = stamp_now.clone();
                out.push(Change::Update(t, o.version));
            }
            // Placed now, started when the old one has stopped.
            t.desired_state = "ready".into();
        }
        new_tasks.push(t);
    }
}

/// Whether a slot (or a global service's node) whose tasks are all over gets a new one now:
/// the restart condition, the attempts within the window, and the delay since the last
/// ended.
fn restart_allowed(
    spec: &api::TaskSpec,
    tasks: &[&Versioned<Task>],
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(last) = tasks
        .iter()
        .filter(|t| t.object.0.desired_state == "running" || status(&t.object.0) != "shutdown")
        .max_by_key(|t| t.created)
    else {
        return true;
    };
    let policy = spec.restart.clone().unwrap_or_default();
    let st = status(&last.object.0);
    if st == "orphaned" {
        // A node failure is no task failure: replaced at once.
        return true;
    }
    if last.object.0.desired_state != "running" {
        // Shut down on purpose (scale, update): a new task when wanted again.
        return true;
    }
    match policy.condition.as_str() {
        "none" => return false,
        "on-failure" if !(st == "failed" || st == "rejected") => return false,
        _ => {}
    }
    let ended = last
        .object
        .0
        .status
        .as_ref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.timestamp).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    if policy.max_attempts > 0 {
        let window = Duration::from_millis(policy.window_ms);
        let attempts = tasks
            .iter()
            .filter(|t| is_terminal(status(&t.object.0)) && status(&t.object.0) != "orphaned")
            .filter(|t| {
                policy.window_ms == 0
                    || chrono::DateTime::parse_from_rfc3339(&t.object.0.created_at)
                        .ok()
                        .is_some_and(|c| {
                            now.signed_duration_since(c.with_timezone(&chrono::Utc))
                                .to_std()
                                .is_ok_and(|d| d <= window)
                        })
            })
            .count() as u64;
        // Each ended task but the first was a restart.
        if attempts > policy.max_attempts {
            return false;
        }
    }
    let delay = if policy.delay_ms == 0 && spec.restart.as_ref().is_none_or(|r| r.delay_ms == 0) {
        RESTART_DELAY
    } else {
        Duration::from_millis(policy.delay_ms)
    };
    ended.is_none_or(|e| {
        now.signed_duration_since(e)
            .to_std()
            .is_ok_and(|d| d >= delay)
    })
}

/// Terminal tasks beyond the history limit, oldest first, per slot.
fn history(slots: &BTreeMap<u64, Vec<&Versioned<Task>>>, limit: u64) -> Vec<Change> {
    let mut out = Vec::new();
    for tasks in slots.values() {
        let mut done: Vec<&&Versioned<Task>> = tasks
            .iter()
            .filter(|t| is_terminal(status(&t.object.0)) && t.object.0.desired_state != "running")
            .collect();
        if done.len() as u64 <= limit {
            continue;
        }
        done.sort_by_key(|t| t.created);
        for t in &done[..done.len() - limit as usize] {
            out.push(Change::Delete(t.object.0.id.clone(), t.version));
        }
    }
    out
}

/// While this manager leads: keep services true. Runs until aborted.
pub async fn run(replica: Replica) {
    let mut world: Option<Cache> = None;
    let mut watch = replica.state().watch();
    // How long the last plan took: as long again passes before the next, so that on a
    // large swarm a stream of status reports is planned in batches rather than one pass
    // each (at most half a core), while a small one reacts at once.
    let mut planning = Duration::ZERO;
    // Whether something changed that a plan must see, and when the last one ran: a stream of
    // reports that only say "running" changes no decision (unless a rolling update waits for
    // them), so it is not planned for; time-based decisions (restart delays) get a plan at
    // least once a second.
    let mut due = true;
    let mut last_plan = std::time::Instant::now();
    loop {
        // Wake on any committed change, or once a second (restart delays, node liveness).
        let mut changes = Vec::new();
        tokio::select! {
            c = watch.rx.recv() => changes.push(c),
            r = watch.resets.changed() => {
                if r.is_err() {
                    return;
                }
                world = None;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if planning > Duration::from_millis(1) {
            tokio::time::sleep(planning.min(Duration::from_secs(1))).await;
        }
        loop {
            match watch.rx.try_recv() {
                Ok(c) => changes.push(Ok(c)),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    changes.push(Err(tokio::sync::broadcast::error::RecvError::Lagged(n)))
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Closed) => return,
            }
        }
        let closed = changes
            .iter()
            .any(|c| matches!(c, Err(tokio::sync::broadcast::error::RecvError::Closed)));
        if closed {
            return; // the replica is gone
        }
        if !replica.is_leader() {
            // Only the leader plans: a follower keeps no copy up to date (it is read again
            // on election).
            world = None;
            continue;
        }
        for c in changes {
            match (c, world.as_mut()) {
                (Ok(c), Some(w)) => due |= w.apply(&c),
                (Ok(_), None) => {}
                // Missed changes: read everything again.
                (Err(tokio::sync::broadcast::error::RecvError::Lagged(_)), _) => world = None,
                (Err(tokio::sync::broadcast::error::RecvError::Closed), _) => return,
            }
        }
        if world.is_none() {
            // Subscribed before reading: a change in between is applied twice, harmlessly.
            due = true;
            match Cache::load(&replica) {
                Ok(w) => world = Some(w),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the services and tasks (retrying)");
                    continue;
                }
            }
        }
        // (On a swarm so large that a plan takes more than 100 ms, every ten plans' time.)
        if !due && last_plan.elapsed() < (planning * 10).max(Duration::from_secs(1)) {
            continue;
        }
        if let Some(w) = &world {
            last_plan = std::time::Instant::now();
            match reconcile(&replica, w).await {
                // A write that failed (another writer got there first) is planned again
                // from what the store now says.
                Ok((took, all_written)) => {
                    planning = took;
                    due = !all_written;
                }
                Err(e) => {
                    due = true;
                    tracing::debug!(error = %e, "service reconciliation (retrying)")
                }
            }
        }
    }
}

/// The leader's copy of services, tasks and nodes, kept current from the committed changes,
/// so a round of the loop reads no table (100,000 tasks take a while to read and decode).
struct Cache {
    services: Table<Service>,
    tasks: Table<Task>,
    nodes: Table<Node>,
}

/// Objects in a vector (what a plan reads) with their positions by id.
struct Table<T> {
    items: Vec<Versioned<T>>,
    at: HashMap<String, usize>,
    id: fn(&T) -> String,
}

impl<T: shoal_store::Object> Table<T> {
    fn new(items: Vec<Versioned<T>>, id: fn(&T) -> String) -> Self {
        let at = items
            .iter()
            .enumerate()
            .map(|(i, v)| (id(&v.object), i))
            .collect();
        Table { items, at, id }
    }

    /// Apply one event; the object as it was before, for an update.
    fn apply(&mut self, e: &shoal_store::Event, index: u64) -> Option<T> {
        match e.kind {
            shoal_store::EventKind::Deleted => {
                if let Some(i) = self.at.remove(&e.id) {
                    self.items.swap_remove(i);
                    // The last item moved into the hole.
                    if let Some(moved) = self.items.get(i) {
                        self.at.insert((self.id)(&moved.object), i);
                    }
                }
                None
            }
            _ => {
                let object = e.decode::<T>().ok()?;
                match self.at.get(&e.id) {
                    Some(&i) if self.items[i].version >= index => None,
                    Some(&i) => {
                        self.items[i].version = index;
                        Some(std::mem::replace(&mut self.items[i].object, object))
                    }
                    None => {
                        self.at.insert(e.id.clone(), self.items.len());
                        self.items.push(Versioned {
                            version: index,
                            created: index,
                            object,
                        });
                        None
                    }
                }
            }
        }
    }

    fn get(&self, id: &str) -> Option<&T> {
        self.at.get(id).map(|&i| &self.items[i].object)
    }
}

impl Cache {
    #[allow(clippy::result_large_err)]
    fn load(replica: &Replica) -> shoal_store::Result<Cache> {
        let sm = replica.state();
        Ok(Cache {
            services: Table::new(sm.list_obj::<Service>()?, |s| s.id.clone()),
            tasks: Table::new(sm.list_obj::<Task>()?, |t| t.0.id.clone()),
            nodes: Table::new(sm.list_obj::<Node>()?, |n| n.id.clone()),
        })
    }

    /// Apply a committed change; whether a plan must see it (see [`Cache::matters`]).
    fn apply(&mut self, c: &shoal_store::Change) -> bool {
        let mut due = false;
        for e in &c.events {
            match e.table.as_str() {
                Service::TABLE => {
                    self.services.apply(e, c.index);
                    due = true;
                }
                Task::TABLE => {
                    let before = self.tasks.apply(e, c.index);
                    due |= self.matters(e, before.as_ref());
                }
                Node::TABLE => {
                    self.nodes.apply(e, c.index);
                    due = true;
                }
                _ => {}
            }
        }
        due
    }

    /// Whether a task's change can change a decision: a removal, a task that ended, moved
    /// or is wanted otherwise, and any change of a service in a rolling update (its batches
    /// wait for new tasks to run). The orchestrator's own new tasks do not (it planned them);
    /// nor does a task's report that it runs, of a service not updating.
    fn matters(&self, e: &shoal_store::Event, before: Option<&Task>) -> bool {
        use shoal_store::EventKind;
        match e.kind {
            EventKind::Deleted => return true,
            EventKind::Created => return false,
            EventKind::Updated => {}
        }
        let (Some(before), Some(now)) = (before, self.tasks.get(&e.id)) else {
            return true;
        };
        let (b, n) = (&before.0, &now.0);
        if b.desired_state != n.desired_state
            || b.node_id != n.node_id
            || is_terminal(status(n))
            || b.spec_version != n.spec_version
        {
            return true;
        }
        self.services.get(&n.service_id).is_none_or(|s| {
            s.update_status
                .as_ref()
                .is_some_and(|u| matches!(u.state.as_str(), "updating" | "rollback_started"))
        })
    }
}

#[allow(clippy::result_large_err)]
/// One round: plan and write; how long the planning took, and whether every write went in.
async fn reconcile(replica: &Replica, w: &Cache) -> shoal_store::Result<(Duration, bool)> {
    if w.services.items.is_empty() && w.tasks.items.is_empty() {
        return Ok((Duration::ZERO, true));
    }
    let started = std::time::Instant::now();
    let history = replica
        .state()
        .get_obj::<Cluster>(Cluster::KEY)?
        .map_or(5, |c| c.object.task_history_limit);
    let changes = plan(&World {
        services: &w.services.items,
        tasks: &w.tasks.items,
        nodes: &w.nodes.items,
        now: chrono::Utc::now(),
        history,
    });
    let took = started.elapsed();
    // Independent writes: a conflict on one task (an agent's report) does not hold up the
    // rest; the next round sees the new state. The replica batches them into few entries.
    // New tasks cannot conflict: they go in chunks.
    let (new, other): (Vec<&Change>, Vec<&Change>) =
        changes.iter().partition(|c| matches!(c, Change::Create(_)));
    let mut requests: Vec<Vec<Op>> = new
        .chunks(CREATE_CHUNK)
        .map(|chunk| chunk.iter().filter_map(|c| c.op().ok()).collect())
        .collect();
    requests.extend(other.iter().filter_map(|c| c.op().ok()).map(|op| vec![op]));
    let writes = requests.into_iter().map(|ops| {
        let r = replica.clone();
        async move { r.write(ops).await }
    });
    let mut all_written = true;
    for res in futures::future::join_all(writes).await {
        if let Err(e) = res {
            all_written = false;
            tracing::debug!(error = %e, "task write");
        }
    }
    Ok((took, all_written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Availability, NodeRole};

    fn node(id: &str, state: NodeState) -> Versioned<Node> {
        Versioned {
            version: 1,
            created: 1,
            object: Node {
                id: id.into(),
                raft_id: 1,
                hostname: id.into(),
                role: NodeRole::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                addr: String::new(),
                state,
                message: String::new(),
                created_at: String::new(),
                updated_at: String::new(),
                engine_version: String::new(),
                os: "linux".into(),
                arch: "x86_64".into(),
                nano_cpus: 0,
                memory_bytes: 0,
                cert_root: String::new(),
            },
        }
    }

    fn service(mode: &str, replicas: u64) -> Versioned<Service> {
        Versioned {
            version: 1,
            created: 1,
            object: Service {
                id: "svc".into(),
                spec: api::ServiceSpec {
                    name: "web".into(),
                    mode: mode.into(),
                    replicas,
                    task: Some(api::TaskSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                previous_spec: None,
                spec_version: 1,
                created_at: String::new(),
                updated_at: String::new(),
                update_status: None,
            },
        }
    }

    /// Apply `changes` to `tasks` as the store would (versions bumped).
    fn apply(tasks: &mut Vec<Versioned<Task>>, changes: Vec<Change>, v: &mut u64) {
        for c in changes {
            *v += 1;
            match c {
                Change::Create(t) => tasks.push(Versioned {
                    version: *v,
                    created: *v,
                    object: t,
                }),
                Change::Update(t, _) => {
                    let slot = tasks.iter_mut().find(|x| x.object.0.id == t.0.id).unwrap();
                    slot.object = t;
                    slot.version = *v;
                }
                Change::Delete(id, _) => tasks.retain(|x| x.object.0.id != id),
                Change::Service(..) => {}
            }
        }
    }

    fn set(
        tasks: &mut [Versioned<Task>],
        id: &str,
        state: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let t = tasks.iter_mut().find(|x| x.object.0.id == id).unwrap();
        set_status(&mut t.object.0, state, "", &stamp(at));
    }

    fn running(tasks: &[Versioned<Task>]) -> Vec<&api::Task> {
        tasks
            .iter()
            .map(|t| &t.object.0)
            .filter(|t| t.desired_state == "running" && !is_terminal(status(t)))
            .collect()
    }

    #[test]
    fn replicated_services_keep_one_task_per_slot_and_heal() {
        let nodes = vec![
            node("a", NodeState::Ready),
            node("b", NodeState::Ready),
            node("c", NodeState::Ready),
        ];
        let services = vec![service("replicated", 3)];
        let mut tasks = Vec::new();
        let mut v = 10;
        let t0 = chrono::Utc::now();
        let world = |tasks: &[Versioned<Task>],
                     nodes: &[Versioned<Node>],
                     services: &[Versioned<Service>],
                     now| {
            plan(&World {
                services,
                tasks,
                nodes,
                now,
                history: 5,
            })
        };
        let c = world(&tasks, &nodes, &services, t0);
        apply(&mut tasks, c, &mut v);
        let mut placed: Vec<&str> = running(&tasks).iter().map(|t| t.node_id.as_str()).collect();
        placed.sort();
        assert_eq!(placed, ["a", "b", "c"], "spread over the nodes");
        let mut slots: Vec<u64> = tasks.iter().map(|t| t.object.0.slot).collect();
        slots.sort();
        assert_eq!(slots, [1, 2, 3]);
        // Stable: nothing more to do.
        assert!(world(&tasks, &nodes, &services, t0).is_empty());

        // A task fails: replaced only after the restart delay, in the same slot.
        let failed = tasks[0].object.0.id.clone();
        let slot = tasks[0].object.0.slot;
        set(&mut tasks, &failed, "failed", t0);
        assert!(world(&tasks, &nodes, &services, t0 + chrono::Duration::seconds(1)).is_empty());
        let c = world(&tasks, &nodes, &services, t0 + chrono::Duration::seconds(6));
        apply(&mut tasks, c, &mut v);
        assert_eq!(running(&tasks).len(), 3);
        assert_eq!(
            tasks.iter().filter(|t| t.object.0.slot == slot).count(),
            2,
            "history kept"
        );

        // A node goes down: its task is orphaned and replaced at once on another node.
        let mut nodes2 = nodes.clone();
        nodes2[1].object.state = NodeState::Down;
        let c = world(
            &tasks,
            &nodes2,
            &services,
            t0 + chrono::Duration::seconds(7),
        );
        apply(&mut tasks, c, &mut v);
        let live = running(&tasks);
        assert_eq!(live.len(), 3);
        assert!(live.iter().all(|t| t.node_id != "b"), "{live:?}");
        assert!(tasks.iter().any(|t| status(&t.object.0) == "orphaned"));

        // Scale down to 1: slots 2 and 3 shut down.
        let mut one = services.clone();
        one[0].object.spec.replicas = 1;
        let c = world(&tasks, &nodes2, &one, t0 + chrono::Duration::seconds(8));
        apply(&mut tasks, c, &mut v);
        let live: Vec<u64> = tasks
            .iter()
            .filter(|t| t.object.0.desired_state == "running" && !is_terminal(status(&t.object.0)))
            .map(|t| t.object.0.slot)
            .collect();
        assert_eq!(live, [1]);

        // The service is removed: running tasks are told to go, the rest deleted.
        let c = world(&tasks, &nodes2, &[], t0 + chrono::Duration::seconds(9));
        apply(&mut tasks, c, &mut v);
        assert!(tasks
            .iter()
            .all(|t| t.object.0.desired_state == "remove" && !is_terminal(status(&t.object.0))));
    }

    #[test]
    fn unplaceable_tasks_stay_pending_with_the_reason() {
        let nodes = vec![node("a", NodeState::Down)];
        let services = vec![service("replicated", 2)];
        let c = plan(&World {
            services: &services,
            tasks: &[],
            nodes: &nodes,
            now: chrono::Utc::now(),
            history: 5,
        });
        assert_eq!(c.len(), 2);
        for ch in &c {
            let Change::Create(t) = ch else {
                panic!("{ch:?}")
            };
            let s = t.0.status.as_ref().unwrap();
            assert_eq!(s.state, "pending");
            assert!(s.message.contains("1 node not ready"), "{}", s.message);
        }
    }

    #[test]
    fn restart_condition_none_and_max_attempts_stop_replacements() {
        let nodes = vec![node("a", NodeState::Ready)];
        let mut services = vec![service("replicated", 1)];
        services[0].object.spec.task.as_mut().unwrap().restart = Some(api::TaskRestartPolicy {
            condition: "on-failure".into(),
            delay_ms: 1,
            max_attempts: 2,
            window_ms: 0,
        });
        let mut tasks = Vec::new();
        let mut v = 1;
        let t0 = chrono::Utc::now();
        let mut at = t0;
        for round in 0..4 {
            let c = plan(&World {
                services: &services,
                tasks: &tasks,
                nodes: &nodes,
                now: at,
                history: 10,
            });
            apply(&mut tasks, c, &mut v);
            let live: Vec<String> = running(&tasks).iter().map(|t| t.id.clone()).collect();
            if round < 3 {
                assert_eq!(live.len(), 1, "round {round}");
                set(&mut tasks, &live[0], "failed", at);
            } else {
                assert!(live.is_empty(), "two restarts, then no more");
            }
            at += chrono::Duration::seconds(1);
        }
        // A task that completes is not restarted under on-failure.
        let mut tasks = Vec::new();
        let c = plan(&World {
            services: &services,
            tasks: &tasks,
            nodes: &nodes,
            now: t0,
            history: 10,
        });
        apply(&mut tasks, c, &mut v);
        let id = tasks[0].object.0.id.clone();
        set(&mut tasks, &id, "complete", t0);
        assert!(plan(&World {
            services: &services,
            tasks: &tasks,
            nodes: &nodes,
            now: t0 + chrono::Duration::seconds(10),
            history: 10
        })
        .is_empty());
    }

    #[test]
    fn global_services_run_one_task_per_eligible_node() {
        let mut nodes = vec![node("a", NodeState::Ready), node("b", NodeState::Ready)];
        let services = vec![service("global", 0)];
        let mut tasks = Vec::new();
        let mut v = 1;
        let now = chrono::Utc::now();
        let step = |tasks: &[Versioned<Task>], nodes: &[Versioned<Node>]| {
            plan(&World {
                services: &services,
                tasks,
                nodes,
                now,
                history: 5,
            })
        };
        let on = |tasks: &[Versioned<Task>]| {
            let mut on: Vec<String> = running(tasks).iter().map(|t| t.node_id.clone()).collect();
            on.sort();
            on
        };
        let c = step(&tasks, &nodes);
        apply(&mut tasks, c, &mut v);
        assert_eq!(on(&tasks), ["a", "b"]);
        // A node joins: it gets one; a node is drained: its task is shut down.
        nodes.push(node("c", NodeState::Ready));
        nodes[0].object.availability = Availability::Drain;
        let c = step(&tasks, &nodes);
        apply(&mut tasks, c, &mut v);
        assert_eq!(on(&tasks), ["b", "c"]);
        // A node that is down or paused keeps its task (nowhere else to run it; it comes
        // back with its container) and gets no second one.
        nodes[1].object.state = NodeState::Down;
        nodes[2].object.availability = Availability::Pause;
        for _ in 0..2 {
            let c = step(&tasks, &nodes);
            assert!(c.is_empty(), "{c:?}");
        }
        // A node that is removed: its task is orphaned.
        nodes.remove(1);
        let c = step(&tasks, &nodes);
        apply(&mut tasks, c, &mut v);
        assert_eq!(on(&tasks), ["c"]);
    }

    #[test]
    fn a_plan_made_twice_from_the_same_state_names_the_same_new_tasks() {
        // (A write that timed out may still commit: the second plan's creates are then
        // refused as existing instead of doubling the tasks.)
        let nodes = vec![node("a", NodeState::Ready)];
        let services = vec![service("replicated", 3)];
        let w = World {
            services: &services,
            tasks: &[],
            nodes: &nodes,
            now: chrono::Utc::now(),
            history: 5,
        };
        let created = |changes: Vec<Change>| -> Vec<String> {
            changes
                .into_iter()
                .filter_map(|c| match c {
                    Change::Create(t) => Some(t.0.id),
                    _ => None,
                })
                .collect()
        };
        let first = created(plan(&w));
        assert_eq!(first.len(), 3);
        assert_eq!(first, created(plan(&w)));
    }

    #[test]
    fn a_drained_nodes_replicated_tasks_move_at_once() {
        let mut nodes = vec![node("a", NodeState::Ready), node("b", NodeState::Ready)];
        let mut services = vec![service("replicated", 2)];
        let mut tasks = Vec::new();
        let mut v = 1;
        let now = chrono::Utc::now();
        settle(&mut services, &mut tasks, &nodes, now, &mut v, None);
        let mut on: Vec<&str> = running(&tasks).iter().map(|t| t.node_id.as_str()).collect();
        on.sort();
        assert_eq!(on, ["a", "b"]);
        // No restart delay: a drain is no task failure.
        nodes[0].object.availability = Availability::Drain;
        settle(&mut services, &mut tasks, &nodes, now, &mut v, None);
        let on: Vec<&str> = running(&tasks).iter().map(|t| t.node_id.as_str()).collect();
        assert_eq!(on, ["b", "b"]);
    }

    /// Run the plan to a fixed point at `now`, with every assigned task reported running
    /// at once (as agents would).
    fn settle(
        services: &mut Vec<Versioned<Service>>,
        tasks: &mut Vec<Versioned<Task>>,
        nodes: &[Versioned<Node>],
        now: chrono::DateTime<chrono::Utc>,
        v: &mut u64,
        fail_version: Option<u64>,
    ) {
        for _ in 0..20 {
            let mut changes = plan(&World {
                services,
                tasks,
                nodes,
                now,
                history: 10,
            });
            let svc_changes: Vec<Change> = changes
                .iter()
                .filter(|c| matches!(c, Change::Service(..)))
                .cloned()
                .collect();
            changes.retain(|c| !matches!(c, Change::Service(..)));
            for c in svc_changes {
                if let Change::Service(s, _) = c {
                    *v += 1;
                    services[0] = Versioned {
                        version: *v,
                        created: 1,
                        object: *s,
                    };
                }
            }
            let mut moved = !changes.is_empty();
            apply(tasks, changes, v);
            for t in tasks.iter_mut() {
                let st = status(&t.object.0).to_string();
                if t.object.0.desired_state == "running" && st == "assigned" {
                    let state = if Some(t.object.0.spec_version) == fail_version {
                        "failed"
                    } else {
                        "running"
                    };
                    set_status(&mut t.object.0, state, "", &stamp(now));
                    moved = true;
                }
                let stays =
                    t.object.0.desired_state == "running" || t.object.0.desired_state == "ready";
                if !stays && !is_terminal(&st) {
                    set_status(&mut t.object.0, "shutdown", "", &stamp(now));
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn versions_running(tasks: &[Versioned<Task>]) -> Vec<u64> {
        let mut v: Vec<u64> = running(tasks).iter().map(|t| t.spec_version).collect();
        v.sort();
        v
    }

    #[test]
    fn rolling_updates_go_in_batches_and_pause_or_roll_back_on_failure() {
        let nodes = vec![node("a", NodeState::Ready), node("b", NodeState::Ready)];
        let mut services = vec![service("replicated", 3)];
        services[0].object.spec.update = Some(api::UpdateConfig {
            parallelism: 1,
            monitor_ms: 2000,
            delay_ms: 1000,
            ..Default::default()
        });
        let mut tasks = Vec::new();
        let mut v = 1;
        let t0 = chrono::Utc::now();
        settle(&mut services, &mut tasks, &nodes, t0, &mut v, None);
        assert_eq!(versions_running(&tasks), [1, 1, 1]);

        // A new spec: one slot at a time, the next `delay` after the last one runs; the
        // update completes once the last one has run for the monitor time.
        let bump = |services: &mut Vec<Versioned<Service>>,
                    image: &str,
                    at: chrono::DateTime<chrono::Utc>| {
            let s = &mut services[0].object;
            s.previous_spec = Some(s.spec.clone());
            s.spec.task.as_mut().unwrap().image = image.into();
            s.spec_version += 1;
            s.update_status = Some(api::UpdateStatus {
                state: "updating".into(),
                started_at: stamp(at),
                ..Default::default()
            });
        };
        bump(&mut services, "busybox:2", t0);
        settle(&mut services, &mut tasks, &nodes, t0, &mut v, None);
        assert_eq!(
            versions_running(&tasks),
            [1, 1, 2],
            "stop-first, parallelism 1"
        );
        let later = |s: i64| t0 + chrono::Duration::milliseconds(s);
        settle(&mut services, &mut tasks, &nodes, later(500), &mut v, None);
        assert_eq!(versions_running(&tasks), [1, 1, 2], "the delay");
        settle(&mut services, &mut tasks, &nodes, later(1100), &mut v, None);
        assert_eq!(versions_running(&tasks), [1, 2, 2]);
        settle(&mut services, &mut tasks, &nodes, later(2200), &mut v, None);
        assert_eq!(versions_running(&tasks), [2, 2, 2]);
        let state = |services: &[Versioned<Service>]| {
            services[0].object.update_status.clone().unwrap().state
        };
        settle(&mut services, &mut tasks, &nodes, later(3300), &mut v, None);
        assert_eq!(state(&services), "updating", "the last one is monitored");
        settle(&mut services, &mut tasks, &nodes, later(4300), &mut v, None);
        assert_eq!(state(&services), "completed");

        // A spec whose tasks fail: paused after the first failure (ratio 0).
        bump(&mut services, "busybox:broken", later(5000));
        settle(
            &mut services,
            &mut tasks,
            &nodes,
            later(5000),
            &mut v,
            Some(3),
        );
        let u = services[0].object.update_status.clone().unwrap();
        assert_eq!(u.state, "paused", "{u:?}");
        assert!(u.message.contains("failure or early termination"), "{u:?}");
        assert_eq!(
            running(&tasks).len(),
            2,
            "the other slots keep the old spec"
        );

        // With failure action rollback, the previous spec comes back everywhere.
        services[0]
            .object
            .spec
            .update
            .as_mut()
            .unwrap()
            .failure_action = "rollback".into();
        services[0].object.update_status.as_mut().unwrap().state = "updating".into();
        services[0].object.spec.rollback = Some(api::UpdateConfig {
            parallelism: 0,
            monitor_ms: 1,
            ..Default::default()
        });
        settle(
            &mut services,
            &mut tasks,
            &nodes,
            later(5100),
            &mut v,
            Some(3),
        );
        assert_eq!(state(&services), "rollback_started");
        assert_eq!(
            services[0].object.spec.task.as_ref().unwrap().image,
            "busybox:2"
        );
        // (The rollback follows the rollback config of the spec it goes back to, as
        // SwarmKit does: here the default 5 s monitor.)
        settle(
            &mut services,
            &mut tasks,
            &nodes,
            later(10500),
            &mut v,
            Some(3),
        );
        settle(
            &mut services,
            &mut tasks,
            &nodes,
            later(16000),
            &mut v,
            Some(3),
        );
        assert_eq!(
            services[0].object.update_status.as_ref().unwrap().state,
            "rollback_completed"
        );
        assert_eq!(versions_running(&tasks), [4, 4, 4]);
        assert!(running(&tasks)
            .iter()
            .all(|t| t.spec.as_ref().unwrap().image == "busybox:2"));
    }

    #[test]
    fn start_first_starts_the_new_task_before_stopping_the_old() {
        let nodes = vec![node("a", NodeState::Ready)];
        let mut services = vec![service("replicated", 1)];
        services[0].object.spec.update = Some(api::UpdateConfig {
            order: "start-first".into(),
            monitor_ms: 1,
            ..Default::default()
        });
        let mut tasks = Vec::new();
        let mut v = 1;
        let t0 = chrono::Utc::now();
        settle(&mut services, &mut tasks, &nodes, t0, &mut v, None);
        let s = &mut services[0].object;
        s.spec.task.as_mut().unwrap().image = "busybox:2".into();
        s.spec_version = 2;
        s.update_status = Some(api::UpdateStatus {
            state: "updating".into(),
            started_at: stamp(t0),
            ..Default::default()
        });
        // One plan round: the new task is made and the old one still wanted running.
        let c = plan(&World {
            services: &services,
            tasks: &tasks,
            nodes: &nodes,
            now: t0,
            history: 10,
        });
        apply(&mut tasks, c, &mut v);
        assert_eq!(running(&tasks).len(), 2, "both, briefly");
        settle(
            &mut services,
            &mut tasks,
            &nodes,
            t0 + chrono::Duration::seconds(1),
            &mut v,
            None,
        );
        assert_eq!(versions_running(&tasks), [2]);
    }

    #[test]
    fn replicated_jobs_run_to_their_completions_a_few_at_a_time() {
        let nodes = vec![node("a", NodeState::Ready), node("b", NodeState::Ready)];
        let mut services = vec![service("replicated-job", 3)];
        services[0].object.spec.max_concurrent = 2;
        let mut tasks = Vec::new();
        let mut v = 1;
        let now = chrono::Utc::now();
        let round = |tasks: &mut Vec<Versioned<Task>>, v: &mut u64| {
            let c = plan(&World {
                services: &services,
                tasks,
                nodes: &nodes,
                now,
                history: 5,
            });
            apply(tasks, c, v);
        };
        round(&mut tasks, &mut v);
        assert_eq!(running(&tasks).len(), 2, "two at once");
        let first = running(&tasks)[0].id.clone();
        set(&mut tasks, &first, "complete", now);
        round(&mut tasks, &mut v);
        assert_eq!(
            running(&tasks).len(),
            2,
            "the third starts when one completes"
        );
        let ids: Vec<String> = running(&tasks).iter().map(|t| t.id.clone()).collect();
        for id in ids {
            set(&mut tasks, &id, "complete", now);
        }
        round(&mut tasks, &mut v);
        assert!(running(&tasks).is_empty());
        assert_eq!(tasks.len(), 3, "three completions, nothing re-run");
    }
}
