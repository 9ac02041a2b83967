//! Task logs, gathered from the nodes that have them.
//!
//! Workers listen on no port, so logs travel over the agents' own connections, as in
//! SwarmKit: every agent keeps a `LogSubscriptions` stream open with the manager it has its
//! assignments from, and answers a subscription with a `PublishLogs` stream of its tasks'
//! lines. Each manager's [`LogBroker`] serves the agents connected to it; [`gather`] asks the
//! local broker and every other manager's, so `svc logs` works from any manager and needs no
//! leader (logs stay readable while the swarm has no quorum). Nodes that no manager serves
//! are named, instead of their lines silently missing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use shoal_api::v1::{LogEvent, LogSubscription, PublishLogsMessage};
use tokio::sync::mpsc;

/// Why a publish was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The subscriber went away (or never asked this node): stop sending.
    Gone,
}

#[derive(Default)]
pub struct LogBroker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Connected agents: node id -> (connection number, where its subscriptions go).
    agents: HashMap<String, (u64, mpsc::UnboundedSender<LogSubscription>)>,
    subs: HashMap<String, Sub>,
    next_conn: u64,
}

struct Sub {
    spec: LogSubscription,
    tx: mpsc::Sender<LogEvent>,
    /// Nodes asked that have not finished.
    pending: HashSet<String>,
}

/// A live subscription: its events, and cancellation when dropped.
pub struct Subscription {
    pub events: mpsc::Receiver<LogEvent>,
    id: String,
    broker: Arc<LogBroker>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.cancel(&self.id);
    }
}

/// An agent's registration; dropping it says the agent went away.
pub struct Listener {
    pub subscriptions: mpsc::UnboundedReceiver<LogSubscription>,
    node_id: String,
    conn: u64,
    broker: Arc<LogBroker>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.broker.agent_gone(&self.node_id, self.conn);
    }
}

fn done(node_id: &str, error: &str) -> LogEvent {
    LogEvent {
        node_id: node_id.to_string(),
        done: true,
        error: error.to_string(),
        ..Default::default()
    }
}

impl LogBroker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An agent connects: the subscriptions it should serve from now on (following ones
    /// already running included, so a node that connects late joins them).
    pub fn listen(self: &Arc<Self>, node_id: &str) -> Listener {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next_conn += 1;
        let conn = inner.next_conn;
        for sub in inner.subs.values_mut().filter(|s| s.spec.follow) {
            if sub.pending.insert(node_id.to_string()) {
                let _ = sub.tx.try_send(LogEvent {
                    serving: vec![node_id.to_string()],
                    ..Default::default()
                });
            }
            let _ = tx.send(sub.spec.clone());
        }
        inner.agents.insert(node_id.to_string(), (conn, tx));
        Listener {
            subscriptions: rx,
            node_id: node_id.to_string(),
            conn,
            broker: self.clone(),
        }
    }

    fn agent_gone(&self, node_id: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.agents.get(node_id).is_some_and(|(c, _)| *c == conn) {
            inner.agents.remove(node_id);
        } else {
            return; // it reconnected meanwhile
        }
        let mut finished = Vec::new();
        for (id, sub) in &mut inner.subs {
            if sub.pending.remove(node_id) {
                let _ = sub
                    .tx
                    .try_send(done(node_id, "the node's agent disconnected"));
                if sub.pending.is_empty() && !sub.spec.follow {
                    finished.push(id.clone());
                }
            }
        }
        for id in finished {
            inner.subs.remove(&id);
        }
    }

    /// Ask every connected agent for `spec`'s lines. The first event names the nodes asked;
    /// the events end when all of them are done (never, when following, until dropped).
    pub fn subscribe(self: &Arc<Self>, spec: LogSubscription) -> Subscription {
        let (tx, rx) = mpsc::channel(256);
        let mut inner = self.lock();
        let nodes: Vec<String> = inner.agents.keys().cloned().collect();
        let _ = tx.try_send(LogEvent {
            serving: nodes.clone(),
            ..Default::default()
        });
        for (_, agent) in inner.agents.values() {
            let _ = agent.send(spec.clone());
        }
        let keep = spec.follow || !nodes.is_empty();
        if keep {
            inner.subs.insert(
                spec.id.clone(),
                Sub {
                    spec: spec.clone(),
                    tx,
                    pending: nodes.into_iter().collect(),
                },
            );
        }
        Subscription {
            events: rx,
            id: spec.id,
            broker: self.clone(),
        }
    }

    fn cancel(&self, id: &str) {
        let mut inner = self.lock();
        let Some(sub) = inner.subs.remove(id) else {
            return;
        };
        let cancel = LogSubscription {
            id: id.to_string(),
            cancel: true,
            ..Default::default()
        };
        for node in &sub.pending {
            if let Some((_, agent)) = inner.agents.get(node) {
                let _ = agent.send(cancel.clone());
            }
        }
    }

    /// Lines (or the end) from `node_id` for a subscription it was asked.
    pub async fn publish(
        &self,
        node_id: &str,
        msg: PublishLogsMessage,
    ) -> Result<(), PublishError> {
        let tx = {
            let inner = self.lock();
            let sub = inner
                .subs
                .get(&msg.subscription_id)
                .ok_or(PublishError::Gone)?;
            if !sub.pending.contains(node_id) {
                return Err(PublishError::Gone);
            }
            sub.tx.clone()
        };
        if !msg.records.is_empty() {
            let lines = LogEvent {
                node_id: node_id.to_string(),
                records: msg.records,
                ..Default::default()
            };
            // Waiting here slows the agent to the subscriber's pace.
            tx.send(lines).await.map_err(|_| PublishError::Gone)?;
        }
        if msg.close {
            let _ = tx.send(done(node_id, "")).await;
            let mut inner = self.lock();
            if let Some(sub) = inner.subs.get_mut(&msg.subscription_id) {
                sub.pending.remove(node_id);
                if sub.pending.is_empty() && !sub.spec.follow {
                    inner.subs.remove(&msg.subscription_id);
                }
            }
        }
        Ok(())
    }
}

/// A source of log events: this manager's broker or another manager.
pub type Source =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogEvent, String>> + Send + 'static>>;

/// Merge the events of `sources` (each starts with the nodes it serves) into one stream, and
/// add a notice for each node of `expected` that no source serves. `names` gives hostnames
/// for the notices. The stream ends when every source has.
pub fn gather(
    sources: Vec<(String, Source)>,
    expected: HashSet<String>,
    names: HashMap<String, String>,
) -> mpsc::Receiver<Gathered> {
    use futures::StreamExt;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let total = sources.len();
        let mut merged = futures::stream::select_all(sources.into_iter().map(|(who, s)| {
            let end = who.clone();
            // Each source's end is marked, so the nodes it never served can be told.
            s.map(move |e| (who.clone(), Some(e)))
                .chain(futures::stream::once(async move { (end, None) }))
                .boxed()
        }));
        let mut answered: HashSet<String> = HashSet::new();
        let mut served: HashSet<String> = HashSet::new();
        let mut told = false;
        let mut ended = 0usize;
        while let Some((who, item)) = merged.next().await {
            answered.insert(who.clone());
            let out = match item {
                None => {
                    ended += 1;
                    None
                }
                Some(Err(e)) => Some(Gathered::Notice(format!(
                    "manager {who}: {e}; the logs of nodes connected to it are missing"
                ))),
                Some(Ok(ev)) => {
                    served.extend(ev.serving.iter().cloned());
                    if !ev.records.is_empty() {
                        Some(Gathered::Lines(ev.node_id, ev.records))
                    } else if ev.done && !ev.error.is_empty() {
                        let name = names.get(&ev.node_id).unwrap_or(&ev.node_id);
                        Some(Gathered::Notice(format!(
                            "node {name}: {}; its logs may be incomplete",
                            ev.error
                        )))
                    } else {
                        None
                    }
                }
            };
            if let Some(o) = out {
                if tx.send(o).await.is_err() {
                    return;
                }
            }
            if !told && answered.len() == total {
                told = true;
                let mut missing: Vec<&String> = expected.difference(&served).collect();
                missing.sort();
                for node in missing {
                    let name = names.get(node).unwrap_or(node);
                    let why = format!(
                        "node {name} is not connected to any manager: the logs of its tasks are missing"
                    );
                    if tx.send(Gathered::Notice(why)).await.is_err() {
                        return;
                    }
                }
            }
            if ended == total {
                return;
            }
        }
    });
    rx
}

/// What [`gather`] yields.
#[derive(Debug, PartialEq)]
pub enum Gathered {
    /// Lines from a node.
    Lines(String, Vec<shoal_api::v1::LogRecord>),
    /// Something the user should know, in one line.
    Notice(String),
}

/// This manager's broker as a [`Source`].
pub fn local_source(sub: Subscription) -> Source {
    Box::pin(futures::stream::unfold(sub, |mut sub| async move {
        let e = sub.events.recv().await?;
        Some((Ok(e), sub))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::LogRecord;

    fn line(task: &str, text: &str) -> LogRecord {
        LogRecord {
            task_id: task.into(),
            stream: "stdout".into(),
            line: format!("{text}\n").into_bytes(),
            time: String::new(),
        }
    }

    fn spec(id: &str, follow: bool) -> LogSubscription {
        LogSubscription {
            id: id.into(),
            service_id: "svc".into(),
            follow,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_subscription_reaches_connected_agents_and_ends_when_they_are_done() {
        let broker = Arc::new(LogBroker::default());
        let mut a = broker.listen("a");
        let mut b = broker.listen("b");
        let mut sub = broker.subscribe(spec("s1", false));
        let first = sub.events.recv().await.unwrap();
        let mut serving = first.serving.clone();
        serving.sort();
        assert_eq!(serving, ["a", "b"]);
        assert_eq!(a.subscriptions.recv().await.unwrap().id, "s1");
        assert_eq!(b.subscriptions.recv().await.unwrap().id, "s1");

        let msg = PublishLogsMessage {
            subscription_id: "s1".into(),
            records: vec![line("t1", "hello")],
            close: true,
        };
        broker.publish("a", msg.clone()).await.unwrap();
        // A node that was not asked, or a subscription that does not exist: refused.
        assert_eq!(
            broker.publish("c", msg.clone()).await,
            Err(PublishError::Gone)
        );
        let ev = sub.events.recv().await.unwrap();
        assert_eq!(ev.node_id, "a");
        assert_eq!(ev.records.len(), 1);
        assert!(sub.events.recv().await.unwrap().done);
        // b's agent goes away: its part ends with the reason, and so does the subscription.
        drop(b);
        let ev = sub.events.recv().await.unwrap();
        assert!(ev.done && ev.error.contains("disconnected"), "{ev:?}");
        assert!(sub.events.recv().await.is_none());
    }

    #[tokio::test]
    async fn following_reaches_late_agents_and_cancelling_tells_them() {
        let broker = Arc::new(LogBroker::default());
        let sub = broker.subscribe(spec("f", true));
        let mut late = broker.listen("late");
        assert_eq!(late.subscriptions.recv().await.unwrap().id, "f");
        drop(sub);
        let c = late.subscriptions.recv().await.unwrap();
        assert!(c.cancel && c.id == "f");
        let msg = PublishLogsMessage {
            subscription_id: "f".into(),
            ..Default::default()
        };
        assert_eq!(broker.publish("late", msg).await, Err(PublishError::Gone));
    }

    #[tokio::test]
    async fn gathering_names_the_nodes_nobody_serves() {
        let broker = Arc::new(LogBroker::default());
        let _a = broker.listen("a");
        let local = local_source(broker.subscribe(spec("g", false)));
        let down: Source = Box::pin(futures::stream::once(async {
            Err("connection refused".to_string())
        }));
        let expected: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let names = HashMap::from([("b".to_string(), "host-b".to_string())]);
        let mut out = gather(
            vec![("m1".into(), local), ("m2".into(), down)],
            expected,
            names,
        );
        broker
            .publish(
                "a",
                PublishLogsMessage {
                    subscription_id: "g".into(),
                    records: vec![line("t", "x")],
                    close: true,
                },
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(g) = out.recv().await {
            got.push(g);
        }
        assert!(got.contains(&Gathered::Lines("a".into(), vec![line("t", "x")])));
        assert!(got
            .iter()
            .any(|g| matches!(g, Gathered::Notice(n) if n.contains("m2"))));
        assert!(got.iter().any(|g| matches!(g,
            Gathered::Notice(n) if n.contains("host-b is not connected"))));
    }
}
