//! Hollow nodes, for scale benchmarks: `shoald --hollow-nodes N --join-token T --join ADDR…`
//! joins N nodes to a swarm from one process. Each is a real node to the managers (its own
//! certificate, heartbeats, an assignments session over mutual TLS, status reports), but its
//! executor starts nothing: a task wanted running is reported running, a task wanted shut
//! down is reported shut down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use shoal_api::v1 as api;
use shoal_manager::join::{self, Joined};
use tokio_stream::StreamExt;

use crate::executor::NodeCaClient;

/// Joins in flight at once (each is a certificate signed and a Raft write on the managers).
const JOINING: usize = 32;

pub async fn run(nodes: usize, token: String, managers: Vec<String>, prefix: String) -> Result<()> {
    anyhow::ensure!(
        !managers.is_empty(),
        "hollow nodes need --join MANAGER:PORT"
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(JOINING));
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel::<()>(nodes.max(1));
    let mut all = Vec::new();
    for i in 0..nodes {
        let (gate, token, joined_tx) = (gate.clone(), token.clone(), joined_tx.clone());
        let manager = managers[i % managers.len()].clone();
        let hostname = format!("{prefix}-{i:05}");
        all.push(tokio::spawn(async move {
            let joined = {
                let _permit = gate.acquire().await.expect("never closed");
                join_retrying(&token, &manager, &hostname, i).await
            };
            let _ = joined_tx.send(()).await;
            node(joined, manager).await;
        }));
    }
    drop(joined_tx);
    let mut count = 0;
    while joined_rx.recv().await.is_some() {
        count += 1;
        if count % 100 == 0 || count == nodes {
            tracing::info!(joined = count, of = nodes, "hollow nodes joined");
        }
    }
    futures::future::join_all(all).await;
    Ok(())
}

async fn join_retrying(token: &str, manager: &str, hostname: &str, i: usize) -> Joined {
    // A distinct (unused) address per node: 127.1.0.0/16.
    let advertise = format!("127.1.{}.{}:2377", (i / 250) % 250, i % 250 + 1);
    loop {
        let req = join::Request {
            token: token.to_string(),
            manager_addr: manager.to_string(),
            advertise_addr: advertise.clone(),
            hostname: hostname.to_string(),
            os: "linux".into(),
            arch: std::env::consts::ARCH.into(),
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
            engine_version: format!("shoal {} (hollow)", env!("CARGO_PKG_VERSION")),
            availability: "active".into(),
        };
        match join::request_certificate(&req).await {
            Ok(j) => return j,
            Err(e) => {
                tracing::warn!(node = hostname, error = %e, "hollow node: join failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn connect(j: &Joined, manager: &str) -> NodeCaClient {
    loop {
        match join::client(manager, &j.ca_pem, &j.cert_pem, &j.key_pem).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::debug!(error = %e, "hollow node: connect");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One hollow node: heartbeats, and its assignments answered as if run.
async fn node(j: Joined, manager: String) {
    let client = connect(&j, &manager).await;
    let mut hb = client.clone();
    tokio::spawn(async move {
        let mut period = Duration::from_secs(5);
        loop {
            if let Ok(r) = hb.heartbeat(api::HeartbeatRequest::default()).await {
                period = Duration::from_millis(r.into_inner().period_ms.max(100));
            }
            tokio::time::sleep(period).await;
        }
    });
    loop {
        let mut c = client.clone();
        let mut stream = match c.assignments(api::AssignmentsRequest {}).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(node_id = %j.node_id, error = %e.message(), "hollow node: assignments");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(Ok(m)) = stream.next().await {
            let updates: Vec<api::TaskStatusUpdate> = m
                .tasks
                .iter()
                .filter_map(|t| {
                    let state = t.status.as_ref().map_or("new", |s| s.state.as_str());
                    let over = shoal_manager::service::is_terminal(state);
                    let report = match t.desired_state.as_str() {
                        "running" if state != "running" && !over => "running",
                        "shutdown" | "remove" if !over => "shutdown",
                        _ => return None,
                    };
                    Some(api::TaskStatusUpdate {
                        task_id: t.id.clone(),
                        status: Some(api::TaskStatus {
                            state: report.into(),
                            message: "hollow".into(),
                            timestamp: chrono::Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                            ..Default::default()
                        }),
                    })
                })
                .collect();
            if updates.is_empty() {
                continue;
            }
            if let Err(e) = c
                .update_task_status(api::UpdateTaskStatusRequest { updates })
                .await
                .context("report")
            {
                tracing::debug!(error = %e, "hollow node: status");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
