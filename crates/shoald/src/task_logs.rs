//! The agent's side of `svc logs`: serve the log subscriptions of the manager this node has
//! its assignments from, with the lines of this node's task containers.
//!
//! Each subscription gets its own `PublishLogs` stream. Without `follow` it sends what the
//! matching containers have logged (the last `tail` lines of each) and closes; with
//! `follow` it keeps sending, and picks up the service's new containers (replacements, a
//! scale up) as they appear, until the manager cancels it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shoal_api::v1 as api;
use shoal_engine::{Engine, LogOptions};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::executor::{NodeCaClient, TASK_LABEL};

const SERVICE_LABEL: &str = "com.docker.swarm.service.id";
/// Lines sent in one message at most.
const BATCH: usize = 128;

/// Serve subscriptions from `client`'s manager until its stream ends.
pub async fn listen(mut client: NodeCaClient, engine: Engine) {
    let mut stream = match client
        .log_subscriptions(api::LogSubscriptionsRequest {})
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => {
            tracing::debug!(error = %e.message(), "log subscriptions refused");
            return;
        }
    };
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(Ok(sub)) = stream.next().await {
        running.retain(|_, h| !h.is_finished());
        if sub.cancel {
            if let Some(h) = running.remove(&sub.id) {
                h.abort();
            }
            continue;
        }
        if running.contains_key(&sub.id) {
            continue;
        }
        let task = tokio::spawn(publish(client.clone(), engine.clone(), sub.clone()));
        running.insert(sub.id, task);
    }
    for h in running.into_values() {
        h.abort();
    }
}

/// This node's containers the subscription asks for: container id -> task id.
fn matching(engine: &Engine, sub: &api::LogSubscription) -> Vec<(String, String)> {
    engine
        .list(true)
        .into_iter()
        .filter(|c| c.labels.get(SERVICE_LABEL) == Some(&sub.service_id))
        .filter_map(|c| {
            let task = c.labels.get(TASK_LABEL)?.clone();
            (sub.task_ids.is_empty() || sub.task_ids.contains(&task)).then_some((c.id, task))
        })
        .collect()
}

async fn publish(mut client: NodeCaClient, engine: Engine, sub: api::LogSubscription) {
    let (out, rx) = mpsc::channel::<api::PublishLogsMessage>(8);
    let call = tokio::spawn(async move {
        client
            .publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let (lines_tx, mut lines) = mpsc::channel::<api::LogRecord>(1024);
    let mut reading: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    // Following: a sender stays here so new containers can join; otherwise the lines end
    // when every container's reader has.
    let mut keep = Some(lines_tx);
    loop {
        if first || sub.follow {
            if let Some(tx) = keep.as_ref() {
                for (container, task) in matching(&engine, &sub) {
                    if !reading.insert(container.clone()) {
                        continue;
                    }
                    // The tail applies to what was there when asked; a container that
                    // starts later is shown from its first line.
                    let tail = if first { sub.tail } else { None };
                    let opts = LogOptions {
                        follow: sub.follow,
                        tail,
                    };
                    match engine.logs(&container, opts).await {
                        Ok(mut rx) => {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                while let Some(l) = rx.recv().await {
                                    let r = api::LogRecord {
                                        task_id: task.clone(),
                                        stream: l.stream,
                                        line: l.line,
                                        time: l.time,
                                    };
                                    if tx.send(r).await.is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                        Err(e) => tracing::debug!(container, error = %e, "task logs"),
                    }
                }
            }
            if first && !sub.follow {
                keep = None;
            }
            first = false;
        }
        let got = tokio::select! {
            l = lines.recv() => l,
            _ = rescan.tick(), if sub.follow => continue,
        };
        let Some(l) = got else { break };
        let mut records = vec![l];
        while records.len() < BATCH {
            match lines.try_recv() {
                Ok(l) => records.push(l),
                Err(_) => break,
            }
        }
        let msg = api::PublishLogsMessage {
            subscription_id: sub.id.clone(),
            records,
            close: false,
        };
        if out.send(msg).await.is_err() {
            return; // the manager ended the call: nobody is listening
        }
    }
    let _ = out
        .send(api::PublishLogsMessage {
            subscription_id: sub.id.clone(),
            records: Vec::new(),
            close: true,
        })
        .await;
    drop(out);
    if let Ok(Err(e)) = call.await {
        tracing::debug!(error = %e.message(), "publishing logs");
    }
}
