//! How many tasks of each service run, kept in step with the store (a [`View`]): `service ls`
//! on a swarm of 100,000 tasks reads a few counters, not every task.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::value::RawValue;
use shoal_store::{Change, EventKind, Object, StateMachine, StorageError, View};

use crate::service::Task;

/// Per service: tasks running (desired and observed), and tasks desired running.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub running: u64,
    pub desired: u64,
}

/// What a task adds to its service's count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counted {
    service: String,
    count: Count,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, Counted>,
    services: HashMap<String, Count>,
}

#[derive(Default)]
pub struct TaskCounts {
    inner: Mutex<Inner>,
}

/// The fields of a task counted here (the rest of its JSON is skipped, not decoded).
#[derive(Deserialize)]
struct Brief {
    service_id: String,
    #[serde(default)]
    desired_state: String,
    #[serde(default)]
    status: Option<BriefStatus>,
}

#[derive(Deserialize)]
struct BriefStatus {
    #[serde(default)]
    state: String,
}

fn counted(data: &RawValue) -> Option<Counted> {
    let t: Brief = serde_json::from_str(data.get()).ok()?;
    let desired = t.desired_state == "running";
    let running = desired && t.status.is_some_and(|s| s.state == "running");
    Some(Counted {
        service: t.service_id,
        count: Count {
            running: u64::from(running),
            desired: u64::from(desired),
        },
    })
}

impl Inner {
    fn set(&mut self, id: &str, now: Option<Counted>) {
        if let Some(old) = self.tasks.remove(id) {
            if let Some(c) = self.services.get_mut(&old.service) {
                c.running -= old.count.running;
                c.desired -= old.count.desired;
                if *c == Count::default() {
                    self.services.remove(&old.service);
                }
            }
        }
        if let Some(new) = now {
            let c = self.services.entry(new.service.clone()).or_default();
            c.running += new.count.running;
            c.desired += new.count.desired;
            self.tasks.insert(id.to_string(), new);
        }
    }
}

impl TaskCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts of service `id` (zero when it has no task).
    pub fn of(&self, service_id: &str) -> Count {
        self.lock()
            .services
            .get(service_id)
            .copied()
            .unwrap_or_default()
    }
}

impl View for TaskCounts {
    fn load(&self, sm: &StateMachine) -> Result<(), StorageError> {
        let mut inner = Inner::default();
        for (id, stored) in sm.list(Task::TABLE)? {
            let c = counted(&stored.data);
            inner.set(&id, c);
        }
        *self.lock() = inner;
        Ok(())
    }

    fn apply(&self, change: &Change) {
        let mut inner = self.lock();
        for e in change.events.iter().filter(|e| e.table == Task::TABLE) {
            let now = match e.kind {
                EventKind::Deleted => None,
                _ => counted(&e.data),
            };
            inner.set(&e.id, now);
        }
    }
}
