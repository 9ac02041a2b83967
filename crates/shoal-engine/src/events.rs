//! The engine's event stream (docker events): every lifecycle change is published once, kept
//! in a bounded history for `--since`, and fanned out to subscribers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use shoal_api::v1::Event;
use tokio::sync::broadcast;

use crate::Engine;

/// Events kept for `events --since`.
const HISTORY: usize = 2048;

pub(crate) struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl EventBus {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        EventBus {
            tx,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }

    fn publish(&self, ev: Event) {
        {
            let mut h = self.history.lock().expect("event history lock");
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }
}

/// A subscription: past events first (from `since`), then live ones.
pub struct EventStream {
    pub past: Vec<Event>,
    pub live: broadcast::Receiver<Event>,
}

impl Engine {
    /// Publish a container event with the container's name and image as attributes.
    pub(crate) fn emit(&self, action: &str, id: &str, extra: &[(&str, String)]) {
        let (name, image) = self
            .lookup(id)
            .map(|e| {
                let c = e.snapshot();
                (c.name, c.image)
            })
            .unwrap_or_default();
        let mut attributes: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        attributes.insert("name".into(), name);
        attributes.insert("image".into(), image);
        self.emit_raw("container", action, id, attributes);
    }

    pub(crate) fn emit_raw(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        self.inner.events.publish(Event {
            r#type: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes,
            time: crate::now(),
        });
    }

    /// Events at or after `since` (RFC 3339), then live ones.
    pub fn events(&self, since: Option<&str>) -> EventStream {
        // Subscribe before copying the history so nothing falls between the two.
        let live = self.inner.events.tx.subscribe();
        let past = match since {
            Some(s) => {
                let h = self
                    .inner
                    .events
                    .history
                    .lock()
                    .expect("event history lock");
                h.iter().filter(|e| e.time.as_str() >= s).cloned().collect()
            }
            None => Vec::new(),
        };
        EventStream { past, live }
    }
}
