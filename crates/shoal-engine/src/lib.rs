//! The node engine: containers on one host.
//!
//! Containers are records (the `shoal.v1.Container` protobuf message) persisted as JSON under
//! `<data-root>/containers/<id>/`. A running container is supervised by its own
//! `shoal-shim` process, which holds its stdio, writes its json log and collects its exit
//! status; the engine only watches the shim (a pidfd) and finalizes the record when it exits.
//! That is what lets containers outlive a daemon restart: on `open`, records of running
//! containers are re-attached to their shims, or finalized from the exit file the shim left.
//!
//! Lifecycle operations on one container are serialized by a per-container async lock; state
//! changes are published on a watch channel that `wait`, `attach` and `stop` await.

mod attach;
mod config;
mod create;
mod error;
mod events;
mod exec;
mod health;
mod images;
mod lifecycle;
mod logs;
mod mounts;
pub mod names;
mod network;
mod ops;
mod prune;
mod restart;
mod rootfs;
mod security;
mod shim;
mod spec;
mod user;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_api::v1::{Container, ContainerState, ContainerSummary};
use shoal_api::ContainerStatus;
use shoal_image::ImageStore;
use tokio::sync::watch;

pub use attach::{AttachEvent, AttachInput, AttachOptions, Attached};
pub use config::EngineConfig;
pub use create::CreateRequest;
pub use error::{start_failure_code, Error, Result};
pub use events::EventStream;
pub use exec::ExecOptions;
pub use logs::{LogLine, LogOptions};
pub use ops::{StatsSample, UpdateRequest};
pub use prune::DfRow;

use crate::error::IoContext;

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EngineConfig,
    images: Arc<ImageStore>,
    runtime: shoal_runtime::Runtime,
    registry: Mutex<Registry>,
    events: events::EventBus,
    net: network::NetCtx,
    /// Set once the daemon has taken over what survived it and cleared the network leftovers
    /// of what did not; restarts wait for it, so a new container's interfaces are never
    /// mistaken for leftovers.
    recovered: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<Entry>>,
    /// name → id
    names: HashMap<String, String>,
}

/// One container in memory.
struct Entry {
    id: String,
    /// Serializes lifecycle operations (start, stop, remove) on this container.
    op: tokio::sync::Mutex<()>,
    record: Mutex<Container>,
    /// Latest state, for waiters.
    state: watch::Sender<ContainerState>,
    /// Restart back-off: the delay used before the last restart.
    backoff: Mutex<Option<std::time::Duration>>,
}

impl Entry {
    fn snapshot(&self) -> Container {
        self.record.lock().expect("record lock").clone()
    }

    fn status(&self) -> ContainerStatus {
        self.record.lock().expect("record lock").status()
    }
}

impl Engine {
    /// Open (or create) the engine's directories, load container records, and re-attach to
    /// containers that kept running while the daemon was down.
    pub async fn open(cfg: EngineConfig) -> Result<Engine> {
        for d in [
            cfg.containers_dir(),
            cfg.runtime_root(),
            cfg.exec_root.join("c"),
            cfg.netns_dir(),
        ] {
            // Container root filesystems (setuid binaries, device nodes of images) and shim
            // sockets are for root only.
            std::fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .ctx(|| format!("restrict {}", d.display()))?;
        }
        write_init_binary(&cfg.init_binary())?;
        let image_root = cfg.image_root();
        let images = tokio::task::spawn_blocking(move || ImageStore::open(&image_root))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let net = network::NetCtx::new(&cfg.nft_table)?;
        let engine = Engine {
            inner: Arc::new(Inner {
                runtime: shoal_runtime::Runtime::new(cfg.runtime_root()),
                cfg,
                images: Arc::new(images),
                registry: Mutex::new(Registry::default()),
                events: events::EventBus::new(),
                net,
                recovered: watch::channel(false).0,
            }),
        };
        engine.net_init().await?;
        engine.load_records().await?;
        engine.spawn_forward_watch();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    async fn load_records(&self) -> Result<()> {
        let dir = self.inner.cfg.containers_dir();
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let path = entry
                .ctx(|| "read containers dir".into())?
                .path()
                .join("container.json");
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<Container>(&data) {
                Ok(c) => records.push(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable container record")
                }
            }
        }
        // First take over what still runs (a container found dead becomes exited here)...
        let mut entries = Vec::new();
        for c in records {
            let entry = self.register(c)?;
            if matches!(
                entry.status(),
                ContainerStatus::Running | ContainerStatus::Paused
            ) {
                self.net_restore(&entry.snapshot()).await;
                self.reattach(&entry).await;
            }
            entries.push(entry);
        }
        // ...then clear the network leftovers of the dead before anything starts again (a
        // restart found due above waits for this) and makes new interfaces that would look
        // just like leftovers...
        self.net_reconcile().await;
        // ...and only then restart and remove.
        self.inner.recovered.send_replace(true);
        for entry in entries {
            match entry.status() {
                // The daemon stopped during a restart delay: restart it now.
                ContainerStatus::Restarting => {
                    self.schedule_restart(entry.clone(), std::time::Duration::ZERO)
                }
                ContainerStatus::Exited => self.restart_on_daemon_start(&entry),
                ContainerStatus::Removing => {
                    let _ = self.remove(&entry.id, true, false).await;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn register(&self, c: Container) -> Result<Arc<Entry>> {
        let mut reg = self.inner.registry.lock().expect("registry lock");
        if let Some(other) = reg.names.get(&c.name) {
            return Err(Error::Conflict(format!(
                "container name {:?} is already in use by container {}: remove or rename that container, or pick another name",
                c.name, other
            )));
        }
        let (tx, _) = watch::channel(c.state.clone().unwrap_or_default());
        let entry = Arc::new(Entry {
            id: c.id.clone(),
            op: tokio::sync::Mutex::new(()),
            record: Mutex::new(c.clone()),
            state: tx,
            backoff: Mutex::new(None),
        });
        reg.names.insert(c.name.clone(), c.id.clone());
        reg.by_id.insert(c.id.clone(), entry.clone());
        Ok(entry)
    }

    fn unregister(&self, id: &str) {
        let mut reg = self.inner.registry.lock().expect("registry lock");
        if let Some(e) = reg.by_id.remove(id) {
            let name = e.snapshot().name;
            reg.names.remove(&name);
        }
    }

    /// A container by full id, name, or unique id prefix.
    fn lookup(&self, reference: &str) -> Result<Arc<Entry>> {
        let reg = self.inner.registry.lock().expect("registry lock");
        let r = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(e) = reg.by_id.get(r) {
            return Ok(e.clone());
        }
        if let Some(id) = reg.names.get(r) {
            return Ok(reg.by_id[id].clone());
        }
        let matches: Vec<&Arc<Entry>> = if r.is_empty() {
            Vec::new()
        } else {
            reg.by_id
                .iter()
                .filter(|(id, _)| id.starts_with(r))
                .map(|(_, e)| e)
                .collect()
        };
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(Error::NotFound(format!("no such container: {reference}"))),
            n => Err(Error::InvalidArgument(format!(
                "{n} containers match the id prefix {reference:?}: use more characters"
            ))),
        }
    }

    /// Update a container's record, persist it and publish its state.
    fn update(&self, entry: &Entry, f: impl FnOnce(&mut Container)) -> Result<Container> {
        let snapshot = {
            let mut rec = entry.record.lock().expect("record lock");
            f(&mut rec);
            rec.clone()
        };
        // Publish even if saving fails: waiters must see what really happened; the error
        // still reaches the caller.
        entry
            .state
            .send_replace(snapshot.state.clone().unwrap_or_default());
        self.persist(&snapshot)?;
        Ok(snapshot)
    }

    fn persist(&self, c: &Container) -> Result<()> {
        let dir = self.inner.cfg.container_dir(&c.id);
        let tmp = dir.join(".container.json.tmp");
        let data = serde_json::to_vec_pretty(c).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("container.json")).ctx(|| format!("save container {}", c.id))
    }

    pub fn inspect(&self, reference: &str) -> Result<Container> {
        Ok(self.lookup(reference)?.snapshot())
    }

    /// Containers, newest first; only running ones unless `all`.
    pub fn list(&self, all: bool) -> Vec<ContainerSummary> {
        let entries: Vec<Arc<Entry>> = self
            .inner
            .registry
            .lock()
            .expect("registry lock")
            .by_id
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ContainerSummary> = entries
            .iter()
            .map(|e| e.snapshot())
            .filter(|c| {
                all || matches!(
                    c.status(),
                    ContainerStatus::Running
                        | ContainerStatus::Paused
                        | ContainerStatus::Restarting
                )
            })
            .map(|c| ContainerSummary {
                command: std::iter::once(c.path.clone())
                    .chain(c.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" "),
                id: c.id,
                name: c.name,
                image: c.image,
                created: c.created,
                state: c.state,
                labels: c.config.map(|c| c.labels).unwrap_or_default(),
                ports: c.ports,
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created));
        out
    }

    /// Ids of containers using an image (any state).
    fn containers_using(&self, image_id: &str) -> Vec<String> {
        let reg = self.inner.registry.lock().expect("registry lock");
        reg.by_id
            .values()
            .filter(|e| e.snapshot().image_id == image_id)
            .map(|e| e.id.clone())
            .collect()
    }
}

/// Put the embedded shoal-init where `--init` containers bind-mount it from (read-only,
/// replaced atomically when this build's differs).
fn write_init_binary(path: &std::path::Path) -> Result<()> {
    let bytes = shoal_runtime::dmz::INIT_BINARY;
    if std::fs::read(path).is_ok_and(|cur| cur == bytes) {
        return Ok(());
    }
    let dir = path.parent().expect("init path has a directory");
    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(".shoal-init.tmp");
    std::fs::write(&tmp, bytes).ctx(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o555))
        .ctx(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("install {}", path.display()))
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
