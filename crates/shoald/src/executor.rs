//! The agent's executor: runs this node's tasks as containers through the engine.
//!
//! It holds an `Assignments` stream from a manager (moving on to the next manager when one
//! fails) and reconciles the node to it — on every new set and once a second, to notice
//! containers that exited: a task wanted running gets a container (labelled with docker's
//! `com.docker.swarm.*` labels, so after a daemon restart the container is found again
//! rather than started twice), a task wanted shut down has its container stopped, a task
//! wanted removed (or no longer assigned) has it removed. What it sees is reported in
//! batches with `UpdateTaskStatus`; statuses only move forward, so re-sending is harmless.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use shoal_api::v1 as api;
use shoal_api::ContainerStatus;
use shoal_engine::Engine;
use tokio_stream::StreamExt;

use crate::content::Fetcher;

pub(crate) type NodeCaClient = api::node_ca_client::NodeCaClient<tonic::transport::Channel>;

pub(crate) const TASK_LABEL: &str = "com.docker.swarm.task.id";

pub struct Executor {
    pub node_id: String,
    /// The managers as the agent knows them now (refreshed from its heartbeats' answers).
    pub known: crate::content::Managers,
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub engine: Engine,
}

fn now() -> String {
    crate::swarm::now()
}

fn status(state: &str, message: &str) -> api::TaskStatus {
    api::TaskStatus {
        state: state.into(),
        message: message.into(),
        timestamp: now(),
        ..Default::default()
    }
}

/// Run until aborted.
pub async fn run(ex: Executor) {
    let mut next = 0usize;
    // What this node last reported per task, to send only changes.
    let mut reported: HashMap<String, api::TaskStatus> = HashMap::new();
    let content = Fetcher {
        managers: ex.known.clone(),
        creds: crate::swarm::Creds {
            ca: ex.ca.clone(),
            cert: ex.cert.clone(),
            key: ex.key.clone(),
        },
    };
    loop {
        // The managers as the agent knows them now: ones that joined after this node are
        // in it, so a session survives the loss of the managers it first knew.
        let managers = content.managers();
        if managers.is_empty() {
            return;
        }
        let addr = managers[next % managers.len()].clone();
        next += 1;
        let mut client = match shoal_manager::join::client(&addr, &ex.ca, &ex.cert, &ex.key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(node_id = %ex.node_id, manager = %addr, error = %e, "assignments: cannot connect");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut stream = match client.assignments(api::AssignmentsRequest {}).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(manager = %addr, error = %e.message(), "assignments refused");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // A new session: the manager may have missed reports.
        reported.clear();
        // Log subscriptions come from the same manager, for as long as the session lasts.
        let logs = AbortOnDrop(tokio::spawn(crate::task_logs::listen(
            client.clone(),
            ex.engine.clone(),
        )));
        // Nothing is reconciled before the session's first task set: an empty list would
        // mean "remove every task's container".
        let mut tasks: Option<BTreeMap<String, api::Task>> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(m)) => apply(&mut tasks, m),
                    Some(Err(e)) => {
                        tracing::debug!(manager = %addr, error = %e.message(), "assignments stream ended");
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => {}
                // An image fetch or a stop ended: report it, go on.
                _ = WAKE.notified() => {}
            }
            let Some(tasks) = &tasks else { continue };
            let tasks: Vec<api::Task> = tasks.values().cloned().collect();
            let updates = reconcile(&ex.engine, &content, &tasks, &mut reported).await;
            if !updates.is_empty() {
                report(&mut client, updates).await;
            }
        }
        drop(logs);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's task set after `m`: the whole set, or changes to the one known.
fn apply(tasks: &mut Option<BTreeMap<String, api::Task>>, m: api::AssignmentsMessage) {
    let set = match tasks {
        Some(set) if m.incremental => set,
        _ => tasks.insert(BTreeMap::new()),
    };
    if !m.incremental {
        set.clear();
    }
    for id in &m.removed {
        set.remove(id);
    }
    for t in m.tasks {
        set.insert(t.id.clone(), t);
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn report(client: &mut NodeCaClient, updates: Vec<api::TaskStatusUpdate>) {
    match client
        .update_task_status(api::UpdateTaskStatusRequest { updates })
        .await
    {
        Ok(r) => {
            for why in r.into_inner().refused {
                tracing::debug!(why = %why, "task status refused");
            }
        }
        Err(e) => tracing::debug!(error = %e.message(), "task status not delivered"),
    }
}

/// Bring the node's containers in line with `tasks`; the status changes to report.
async fn reconcile(
    engine: &Engine,
    content: &Fetcher,
    tasks: &[api::Task],
    reported: &mut HashMap<String, api::TaskStatus>,
) -> Vec<api::TaskStatusUpdate> {
    let mut updates = Vec::new();
    let mut say =
        |t: &api::Task, st: api::TaskStatus, reported: &mut HashMap<String, api::TaskStatus>| {
            let same = reported.get(&t.id).is_some_and(|r| {
                r.state == st.state && r.err == st.err && r.container_id == st.container_id
            });
            if !same {
                reported.insert(t.id.clone(), st.clone());
                updates.push(api::TaskStatusUpdate {
                    task_id: t.id.clone(),
                    status: Some(st),
                });
            }
        };
    // Our containers, by task.
    let containers: HashMap<String, api::ContainerSummary> = engine
        .list(true)
        .into_iter()
        .filter_map(|c| c.labels.get(TASK_LABEL).cloned().map(|t| (t, c)))
        .collect();
    let assigned: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut to_start: Vec<&api::Task> = Vec::new();
    let mut to_stop: Vec<(&api::Task, api::TaskStatus, Option<&api::ContainerSummary>)> =
        Vec::new();

    for t in tasks {
        // The later of the managers' copy and what this agent reported: the managers do
        // not send a task back for a change of status only (the agent made it).
        let mut current = t.status.clone().unwrap_or_default();
        if let Some(r) = reported.get(&t.id) {
            if shoal_manager::service::rank(&r.state) > shoal_manager::service::rank(&current.state)
            {
                current = r.clone();
            }
        }
        let container = containers.get(&t.id);
        match t.desired_state.as_str() {
            // Placed, to start once the task it replaces has stopped.
            "ready" => {}
            "running" => match container {
                None if shoal_manager::service::is_terminal(&current.state) => {}
                None if current.state == "running" || current.state == "starting" => {
                    // Reported running, but the container is gone (removed behind our back,
                    // or lost with the host): the task failed.
                    let mut st = status("failed", "the task's container is gone");
                    st.err = "container vanished".into();
                    say(t, st, reported);
                }
                // Started together below.
                None => to_start.push(t),
                Some(c) => {
                    let state = c.state.clone().unwrap_or_default();
                    // No health state yet, but a check configured: not healthy yet.
                    let health = match state.health.as_ref() {
                        Some(h) => Some(h.status.clone()),
                        None if has_healthcheck(engine, &c.id) => Some("starting".to_string()),
                        None => None,
                    };
                    let health = health.as_deref();
                    let st = match state.status() {
                        // With a health check, a task runs once healthy (as docker's
                        // executor); an unhealthy one fails and its container stops.
                        ContainerStatus::Running if health == Some("starting") => {
                            let mut s = status("starting", "waiting for the health check");
                            s.container_id = c.id.clone();
                            s
                        }
                        ContainerStatus::Running if health == Some("unhealthy") => {
                            let mut s = status("failed", "unhealthy container");
                            s.err = "task: unhealthy container".into();
                            s.container_id = c.id.clone();
                            let _ = engine.stop(&c.id, Some(1)).await;
                            s
                        }
                        ContainerStatus::Running => {
                            let mut s = status("running", "started");
                            s.container_id = c.id.clone();
                            s
                        }
                        ContainerStatus::Exited | ContainerStatus::Dead => {
                            let code = state.exit_code;
                            let mut s = if code == 0 {
                                status("complete", "finished")
                            } else {
                                status("failed", "task: non-zero exit")
                            };
                            s.exit_code = i64::from(code);
                            s.container_id = c.id.clone();
                            if code != 0 {
                                s.err = if state.oom_killed {
                                    format!("task: non-zero exit ({code}): out of memory")
                                } else if !state.error.is_empty() {
                                    state.error.clone()
                                } else {
                                    format!("task: non-zero exit ({code})")
                                };
                            }
                            s
                        }
                        _ => continue,
                    };
                    // Keep the timestamp of the first report of this state.
                    if reported.get(&t.id).is_some_and(|r| r.state == st.state) {
                        continue;
                    }
                    say(t, st, reported);
                }
            },
            // Stopped together below.
            _ => to_stop.push((t, current, container)),
        }
    }
    // Tasks to shut down stop at once and in the background: a stop may wait out a grace
    // period, and the node's other tasks (new ones, other stops) do not wait for it.
    for (t, _, container) in &to_stop {
        let Some(c) = container else { continue };
        let running = c
            .state
            .as_ref()
            .is_some_and(|s| s.status() == ContainerStatus::Running);
        if !running && t.desired_state != "remove" {
            continue;
        }
        if !STOPPING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.id.clone())
        {
            continue; // under way
        }
        let grace = t.spec.as_ref().map_or(10, |s| {
            if s.stop_grace_period_ms == 0 {
                10
            } else {
                (s.stop_grace_period_ms / 1000).max(1) as i32
            }
        });
        let (engine, task, id, remove) = (
            engine.clone(),
            t.id.clone(),
            c.id.clone(),
            t.desired_state == "remove",
        );
        tokio::spawn(async move {
            if running {
                if let Err(e) = engine.stop(&id, Some(grace)).await {
                    tracing::debug!(task = %task, error = %e, "stopping a task's container");
                }
            }
            if remove {
                let _ = engine.remove(&id, true, false).await;
            }
            STOPPING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task);
            WAKE.notify_one();
        });
    }
    for (t, current, container) in to_stop {
        let stopping = STOPPING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&t.id);
        if !stopping && !shoal_manager::service::is_terminal(&current.state) {
            let mut st = status("shutdown", "shut down");
            if let Some(c) = container {
                st.container_id = c.id.clone();
            }
            say(t, st, reported);
        }
    }
    // New tasks start at once, not one after the other (a scale up puts many on a node).
    let started =
        futures::future::join_all(to_start.iter().map(|t| start(engine, content, t))).await;
    for (t, st) in to_start.into_iter().zip(started) {
        say(t, st, reported);
    }
    // Containers of tasks this node no longer has: gone.
    for (task, c) in &containers {
        if !assigned.contains(task.as_str()) {
            let _ = engine.remove(&c.id, true, false).await;
        }
    }
    updates
}

/// The credentials `--with-registry-auth` put in a task spec (base64 of "user:password").
pub(crate) fn registry_credentials(auth: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Image fetches in progress or failed, by what is fetched: tasks starting together with
/// the same image wait for one fetch, and learn how it ended.
static FETCHES: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Fetch>>> =
    std::sync::LazyLock::new(Default::default);
/// Told when a fetch or a stop ends, so what waits on it goes on at once.
static WAKE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);
/// Tasks whose containers are being stopped (or removed) in the background.
static STOPPING: std::sync::LazyLock<std::sync::Mutex<HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

enum Fetch {
    Running,
    /// Why, and when: every task that waited on it hears why; a later one tries again.
    Failed(String, std::time::Instant),
}

/// Where a task's missing image comes from: the swarm's content store when the managers
/// have it (by the manifest digest they pinned), else its registry. Runs in the background;
/// `Ok(false)` while it does (the task is preparing), `Ok(true)` once the image is here,
/// `Err` with the reason when it could not be fetched.
fn fetch(engine: &Engine, content: &Fetcher, spec: &api::TaskSpec) -> Result<bool, String> {
    // Unresolved by the managers (they could not reach its registry): by name, as docker's
    // nodes do then.
    let source = if spec.image_pinned.is_empty() {
        spec.image.clone()
    } else {
        spec.image_pinned.clone()
    };
    let mut fetches = FETCHES.lock().unwrap_or_else(|e| e.into_inner());
    // Failures are told for a few seconds, then forgotten (a later task tries again).
    fetches.retain(
        |_, f| !matches!(f, Fetch::Failed(_, at) if at.elapsed() > Duration::from_secs(60)),
    );
    match fetches.remove(&source) {
        Some(Fetch::Running) => {
            fetches.insert(source, Fetch::Running);
            return Ok(false);
        }
        Some(Fetch::Failed(why, at)) if at.elapsed() < Duration::from_secs(5) => {
            fetches.insert(source, Fetch::Failed(why.clone(), at));
            return Err(why);
        }
        _ => {}
    }
    fetches.insert(source.clone(), Fetch::Running);
    drop(fetches);
    let (engine, content, spec) = (engine.clone(), content.clone(), spec.clone());
    tokio::spawn(async move {
        let wanted = if spec.image_id.is_empty() {
            &source
        } else {
            &spec.image_id
        };
        let outcome = if engine.image(wanted).await.is_ok() {
            Ok(()) // here meanwhile
        } else {
            match fetch_now(&engine, &content, &spec, &source).await {
                // What came must be what the task runs (the managers pinned an id: a node
                // of another platform may get another image for the same name).
                Ok(()) if engine.image(wanted).await.is_err() => Err(format!(
                    "fetched {source}, but it is not image {wanted} that the service runs (another platform?)"
                )),
                other => other,
            }
        };
        let mut fetches = FETCHES.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                fetches.remove(&source);
            }
            Err(why) => {
                tracing::warn!(image = %source, error = %why, "cannot fetch a task's image");
                fetches.insert(source, Fetch::Failed(why, std::time::Instant::now()));
            }
        }
        drop(fetches);
        WAKE.notify_one();
    });
    Ok(false)
}

async fn fetch_now(
    engine: &Engine,
    content: &Fetcher,
    spec: &api::TaskSpec,
    source: &str,
) -> Result<(), String> {
    let swarm = crate::content::lookup(&content.managers(), &content.creds, source).await;
    match swarm {
        Ok(Some(image)) => {
            let reference = crate::content::pinned(&image);
            let from = std::sync::Arc::new(crate::content::SwarmSource::new(content.clone()));
            engine
                .pull_from(from, &reference, |_| {})
                .await
                .map_err(|e| {
                    format!(
                        "image {} ({}) is a swarm image, but fetching it from the managers failed: {e}",
                        spec.image, image.manifest_digest
                    )
                })?;
            // Its names, as on the node it was published from.
            for name in &image.names {
                let _ = engine.tag_image(&image.id, name).await;
            }
            Ok(())
        }
        found => {
            let asked = match found {
                Err(e) => format!(" (the swarm's content store could not be asked: {e})"),
                _ => String::new(),
            };
            engine
                .pull_image(source, registry_credentials(&spec.registry_auth), |_| {})
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "image {} is not on this node, not a swarm image{asked}, and pulling {source} failed: {e} (publish it to the swarm with \"shoal image push {}\" or \"shoal image load\" on any node)",
                        spec.image, spec.image
                    )
                })
        }
    }
}

/// Prepare, create and start a task's container; the status to report.
async fn start(engine: &Engine, content: &Fetcher, t: &api::Task) -> api::TaskStatus {
    let spec = t.spec.clone().unwrap_or_default();
    let image = if spec.image_id.is_empty() {
        spec.image.clone()
    } else {
        spec.image_id.clone()
    };
    if engine.image(&image).await.is_err() {
        match fetch(engine, content, &spec) {
            Ok(true) => {}
            Ok(false) => return status("preparing", "fetching the image"),
            Err(why) => {
                let mut st = status("rejected", "preparing");
                st.err = why;
                return st;
            }
        }
    }
    let resources = spec.resources.unwrap_or_default();
    let mut labels = spec.container_labels.clone();
    labels.insert("com.docker.swarm.service.id".into(), t.service_id.clone());
    labels.insert(
        "com.docker.swarm.service.name".into(),
        t.service_name.clone(),
    );
    labels.insert(TASK_LABEL.into(), t.id.clone());
    labels.insert("com.docker.swarm.task.slot".into(), t.slot.to_string());
    labels.insert("com.docker.swarm.node.id".into(), t.node_id.clone());
    let name = if t.slot > 0 {
        format!("{}.{}.{}", t.service_name, t.slot, t.id)
    } else {
        format!("{}.{}.{}", t.service_name, t.node_id, t.id)
    };
    labels.insert("com.docker.swarm.task.name".into(), name.clone());
    let req = shoal_engine::CreateRequest {
        name,
        config: api::ContainerConfig {
            hostname: spec.hostname.clone(),
            user: spec.user.clone(),
            env: spec.env.clone(),
            cmd: (!spec.args.is_empty()).then(|| api::StringList {
                values: spec.args.clone(),
            }),
            entrypoint: (!spec.entrypoint.is_empty()).then(|| api::StringList {
                values: spec.entrypoint.clone(),
            }),
            image: image.clone(),
            working_dir: spec.workdir.clone(),
            labels,
            stop_signal: spec.stop_signal.clone(),
            healthcheck: spec.healthcheck.clone(),
            ..Default::default()
        },
        host_config: api::HostConfig {
            memory: resources.limit_memory,
            nano_cpus: resources.limit_nano_cpus,
            pids_limit: resources.limit_pids,
            mounts: spec.mounts.clone(),
            port_bindings: spec
                .ports
                .iter()
                .map(|p| api::PortBinding {
                    container_port: p.target_port,
                    protocol: p.protocol.clone(),
                    host_ip: String::new(),
                    host_port: p.published_port,
                })
                .collect(),
            ..Default::default()
        },
        ip: String::new(),
        aliases: Vec::new(),
    };
    let (id, _warnings) = match engine.create(req).await {
        Ok(r) => r,
        Err(e) => {
            let mut st = status("rejected", "creating the container");
            st.err = e.to_string();
            return st;
        }
    };
    if let Err(e) = engine.start(&id).await {
        let mut st = status("failed", "starting the container");
        st.err = e.to_string();
        st.container_id = id;
        return st;
    }
    // With a health check the next pass reports it running once healthy.
    let mut st = if has_healthcheck(engine, &id) {
        status("starting", "waiting for the health check")
    } else {
        status("running", "started")
    };
    st.container_id = id;
    st
}

/// Whether the container has a health check in effect (its own or its image's).
fn has_healthcheck(engine: &Engine, id: &str) -> bool {
    engine
        .inspect(id)
        .ok()
        .and_then(|c| c.resolved_healthcheck)
        .is_some_and(|h| !h.test.is_empty() && h.test[0] != "NONE")
}
