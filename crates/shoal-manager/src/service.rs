//! Services and their tasks in the store. The specs are the API's own messages
//! (`shoal.v1.ServiceSpec`, `TaskSpec`, `Task`), kept as JSON, so what a user sends and what
//! the managers keep are one definition.
//!
//! A task's spec, desired state and observed status are separate: the orchestrators set
//! what should be (desired state), the scheduler where (node), the node's agent reports
//! what is (status). Status only moves forward through [`STATES`].

use serde::{Deserialize, Serialize};
use shoal_api::v1 as api;
use shoal_store::table::{index, unique_index};
use shoal_store::{IndexKey, Object};

/// A service: its spec, the one before the last update (what a rollback goes back to), and
/// a counter bumped on every spec change (tasks carry the one they were made from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub spec: api::ServiceSpec,
    #[serde(default)]
    pub previous_spec: Option<api::ServiceSpec>,
    pub spec_version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub update_status: Option<api::UpdateStatus>,
}

impl Object for Service {
    const TABLE: &'static str = "services";
    fn id(&self) -> &str {
        &self.id
    }
    fn indexes(&self) -> Vec<IndexKey> {
        vec![unique_index("name", &self.spec.name)]
    }
}

/// A task, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Task(pub api::Task);

impl Object for Task {
    const TABLE: &'static str = "tasks";
    fn id(&self) -> &str {
        &self.0.id
    }
    fn indexes(&self) -> Vec<IndexKey> {
        let mut ix = vec![index("service", &self.0.service_id)];
        if !self.0.node_id.is_empty() {
            ix.push(index("node", &self.0.node_id));
        }
        ix
    }
}

/// Task states in the order a task goes through them; a status never moves back.
pub const STATES: [&str; 13] = [
    "new",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
];

/// A state's place in [`STATES`] (unknown states sort first).
pub fn rank(state: &str) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

/// Whether the task is over: nothing runs or will run for it.
pub fn is_terminal(state: &str) -> bool {
    rank(state) >= rank("complete")
}

/// The service's mode, with docker's default.
pub fn mode(spec: &api::ServiceSpec) -> &str {
    if spec.mode.is_empty() {
        "replicated"
    } else {
        &spec.mode
    }
}

/// Check a spec a user sent: the one-line reason it is refused, if it is.
pub fn validate(spec: &api::ServiceSpec) -> Result<(), String> {
    let name = &spec.name;
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid_name {
        return Err(format!(
            "invalid service name {name:?}: use up to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ));
    }
    match mode(spec) {
        "replicated" | "global" | "replicated-job" | "global-job" => {}
        other => {
            return Err(format!(
                "invalid mode {other:?}: use replicated, global, replicated-job or global-job"
            ))
        }
    }
    if mode(spec).starts_with("global") && spec.replicas != 0 {
        return Err("--replicas applies to replicated services only".into());
    }
    let task = spec.task.as_ref().ok_or("the service has no task spec")?;
    if task.image.is_empty() {
        return Err("an image is required".into());
    }
    let mut seen = std::collections::HashSet::new();
    for p in &task.ports {
        if p.publish_mode != "host" {
            return Err(format!(
                "publish mode {:?}: only host mode is supported (the routing mesh comes with overlay networks): use --publish mode=host,target=PORT,published=PORT",
                p.publish_mode
            ));
        }
        if !matches!(p.protocol.as_str(), "tcp" | "udp") {
            return Err(format!("protocol {:?}: use tcp or udp", p.protocol));
        }
        for (what, port) in [("target", p.target_port), ("published", p.published_port)] {
            if port == 0 || port > 65535 {
                return Err(format!("{what} port {port}: use 1-65535"));
            }
        }
        if !seen.insert((p.protocol.as_str(), p.published_port)) {
            return Err(format!(
                "host port {}/{} is published twice",
                p.published_port, p.protocol
            ));
        }
    }
    if let Some(p) = &task.placement {
        for c in &p.constraints {
            crate::scheduler::Constraint::parse(c)?;
        }
        for pref in &p.preferences {
            crate::scheduler::spread_label(pref)?;
        }
    }
    if let Some(r) = &task.restart {
        match r.condition.as_str() {
            "" | "any" | "on-failure" | "none" => {}
            other => {
                return Err(format!(
                    "invalid restart condition {other:?}: use none, on-failure or any"
                ))
            }
        }
    }
    for (what, u) in [("update", &spec.update), ("rollback", &spec.rollback)] {
        if let Some(u) = u {
            match u.failure_action.as_str() {
                "" | "pause" | "continue" | "rollback" => {}
                other => {
                    return Err(format!(
                        "invalid --{what}-failure-action {other:?}: use pause, continue or rollback"
                    ))
                }
            }
            match u.order.as_str() {
                "" | "stop-first" | "start-first" => {}
                other => {
                    return Err(format!(
                        "invalid --{what}-order {other:?}: use stop-first or start-first"
                    ))
                }
            }
            if !(0.0..=1.0).contains(&u.max_failure_ratio) {
                return Err(format!(
                    "invalid --{what}-max-failure-ratio {}: use a number from 0 to 1",
                    u.max_failure_ratio
                ));
            }
        }
    }
    Ok(())
}
