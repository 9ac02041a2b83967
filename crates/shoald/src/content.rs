//! The swarm's content store: swarm images' blobs on the managers, served to the nodes by
//! digest over the swarm port (mutual TLS).
//!
//! - A node publishes an image (`shoal image load`, `shoal image push NAME`): it sends the
//!   blobs a manager lacks, then asks it to record the image. That manager first copies the
//!   blobs to the other managers and records the image (names, digests, sizes: the Raft log
//!   never carries bytes) only once a quorum of managers hold every blob, so losing a
//!   minority of managers never loses an image a service may use.
//! - Every manager copies, in the background, the blobs of recorded images it lacks from
//!   the others (a manager that was down, or joined later).
//! - A node that lacks a task's image pulls it from the managers by digest: each blob is
//!   checked against its digest before it is stored, an interrupted transfer resumes at the
//!   same offset from another manager, and blobs the node has already are not fetched.
//! - Blobs no recorded image names are removed after a grace period (an upload whose image
//!   is not recorded yet is young); images without names that no service or task refers
//!   to are forgotten after the same period.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::v1 as api;
use shoal_api::v1::content_client::ContentClient;
use shoal_api::v1::content_server::{Content, ContentServer};
use shoal_image::ContentStore;
use shoal_manager::objects::SwarmImage;
use shoal_manager::service::{Service, Task};
use shoal_store::table::{create, delete, update};
use shoal_store::Replica;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::swarm::Creds;

/// Bytes per message of a blob transfer.
const CHUNK: usize = 1 << 20;
/// How long a transfer may go without a byte before the other side counts as gone.
const IDLE: Duration = Duration::from_secs(30);
/// How long unreferenced blobs and nameless images are kept.
const GC_GRACE: Duration = Duration::from_secs(30 * 60);

/// [`GC_GRACE`], or for tests `SHOAL_TEST_CONTENT_GC_GRACE` seconds.
pub(crate) fn gc_grace() -> Duration {
    std::env::var("SHOAL_TEST_CONTENT_GC_GRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GC_GRACE, Duration::from_secs)
}

/// A connection to the content service of the manager at `addr`.
pub(crate) async fn client(addr: &str, creds: &Creds) -> Result<ContentClient<Channel>, String> {
    let channel = shoal_manager::join::channel(addr, &creds.ca, &creds.cert, &creds.key)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ContentClient::new(channel)
        .max_decoding_message_size(4 * CHUNK)
        .max_encoding_message_size(4 * CHUNK))
}

/// The service every manager runs next to its replica.
pub(crate) struct ContentService {
    pub(crate) replica: Replica,
    pub(crate) store: Arc<ContentStore>,
    pub(crate) creds: Creds,
    /// This manager's own address (as the voters list it).
    pub(crate) me: String,
}

pub(crate) fn service(svc: Arc<ContentService>) -> ContentServer<ContentService> {
    ContentServer::from_arc(svc)
        .max_decoding_message_size(4 * CHUNK)
        .max_encoding_message_size(4 * CHUNK)
}

impl ContentService {
    /// Only nodes of the swarm (a verified certificate of a node not removed) may read or
    /// write content; the caller's node id.
    fn node<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let refused =
            || Status::unauthenticated("the swarm's content is served to swarm nodes only");
        let certs = req.peer_certs().ok_or_else(refused)?;
        let leaf = certs.first().ok_or_else(refused)?;
        let id = shoal_manager::identity(leaf)
            .map_err(|e| Status::unauthenticated(e.to_string()))?
            .node_id;
        let removed = self
            .replica
            .state()
            .get_obj::<shoal_manager::objects::RemovedNode>(&id)
            .map_err(crate::swarm::internal)?;
        if removed.is_some() {
            return Err(Status::permission_denied(format!(
                "node {id} was removed from the swarm"
            )));
        }
        Ok(id)
    }
}

fn content_status(e: shoal_image::Error) -> Status {
    match e {
        shoal_image::Error::Content(m) if m.starts_with("no blob") => Status::not_found(m),
        shoal_image::Error::Content(m) => Status::data_loss(m),
        shoal_image::Error::InvalidReference(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

fn joined(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("content task failed: {e}"))
}

/// A test hook: `SHOAL_TEST_CONTENT_RATE` (bytes per second) slows the blobs this manager
/// serves, so a test can stop it in the middle of a transfer.
fn test_rate() -> Option<u64> {
    std::env::var("SHOAL_TEST_CONTENT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn missing_blobs(
        &self,
        req: Request<api::MissingBlobsRequest>,
    ) -> Result<Response<api::MissingBlobsResponse>, Status> {
        self.node(&req)?;
        // A blob found here is about to be named by an image: young again, so garbage
        // collection spares it until the image is recorded.
        let digests = req
            .into_inner()
            .digests
            .into_iter()
            .filter(|d| !self.store.touch(d))
            .collect();
        Ok(Response::new(api::MissingBlobsResponse { digests }))
    }

    async fn put_blob(
        &self,
        req: Request<Streaming<api::BlobChunk>>,
    ) -> Result<Response<api::PutBlobResponse>, Status> {
        self.node(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an upload without a blob"))?;
        if self.store.touch(&first.digest) {
            return Ok(Response::new(api::PutBlobResponse {}));
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let store = self.store.clone();
        let (digest, size) = (first.digest.clone(), first.size);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = store.writer(&digest, size)?;
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk).map_err(|e| {
                    shoal_image::Error::Content(format!("blob {digest}: {e}; not stored"))
                })?;
            }
            // An upload cut short is shorter than announced: the commit refuses it.
            w.commit()
        });
        let mut failed = None;
        if tx.send(first.data).await.is_ok() {
            loop {
                let Ok(next) = tokio::time::timeout(IDLE, inbound.message()).await else {
                    failed = Some(Status::deadline_exceeded(format!(
                        "nothing of blob {} for {IDLE:?}",
                        first.digest
                    )));
                    break;
                };
                match next {
                    Ok(Some(c)) => {
                        if tx.send(c.data).await.is_err() {
                            break; // the writer failed: its error says why
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(joined)?;
        if let Some(e) = failed {
            return Err(e);
        }
        written.map_err(content_status)?;
        Ok(Response::new(api::PutBlobResponse {}))
    }

    type GetBlobStream = ReceiverStream<Result<api::BlobChunk, Status>>;

    async fn get_blob(
        &self,
        req: Request<api::GetBlobRequest>,
    ) -> Result<Response<Self::GetBlobStream>, Status> {
        self.node(&req)?;
        let r = req.into_inner();
        let store = self.store.clone();
        let digest = r.digest.clone();
        let (mut file, size) =
            tokio::task::spawn_blocking(move || store.open_at(&digest, r.offset))
                .await
                .map_err(joined)?
                .map_err(content_status)?;
        let (tx, rx) = mpsc::channel(4);
        let rate = test_rate();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut first = true;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "reading blob {}: {e}",
                            r.digest
                        ))));
                        break;
                    }
                };
                // The first message says the blob's whole size.
                let chunk = api::BlobChunk {
                    data: buf[..n].to_vec(),
                    size: if std::mem::take(&mut first) { size } else { 0 },
                    ..Default::default()
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    break;
                }
                if let Some(rate) = rate {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn put_image(
        &self,
        req: Request<api::PutImageRequest>,
    ) -> Result<Response<api::SwarmImage>, Status> {
        let by = self.node(&req)?;
        let wanted = req
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("no image"))?;
        let image = self.checked_image(wanted, by).await?;
        let (holders, managers) = self.spread(&image).await?;
        let mut recorded = record(&self.replica, image).await?;
        recorded.managers_with_content = holders;
        recorded.managers = managers;
        Ok(Response::new(recorded))
    }

    async fn list_images(
        &self,
        req: Request<api::ListSwarmImagesRequest>,
    ) -> Result<Response<api::ListSwarmImagesResponse>, Status> {
        self.node(&req)?;
        self.replica
            .read_barrier()
            .await
            .map_err(crate::swarm::store_status)?;
        let mut images: Vec<api::SwarmImage> = self
            .replica
            .state()
            .list_obj::<SwarmImage>()
            .map_err(crate::swarm::internal)?
            .into_iter()
            .map(|v| v.object.0)
            .collect();
        images.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at));
        Ok(Response::new(api::ListSwarmImagesResponse { images }))
    }

    async fn resolve_image(
        &self,
        req: Request<api::ResolveImageRequest>,
    ) -> Result<Response<api::SwarmImage>, Status> {
        self.node(&req)?;
        let reference = req.into_inner().reference;
        self.replica
            .read_barrier()
            .await
            .map_err(crate::swarm::store_status)?;
        find(&self.replica, &reference)?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no swarm image {reference}")))
    }
}

impl ContentService {
    /// The image a node asks to record, as this manager sees it: its blobs are here and are
    /// the ones its manifest names (the manifest, not the caller, says what the image is).
    async fn checked_image(
        &self,
        wanted: api::SwarmImage,
        by: String,
    ) -> Result<api::SwarmImage, Status> {
        let mut names = Vec::new();
        for n in &wanted.names {
            let r = shoal_image::reference::parse(n)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if r.digest.is_some() {
                return Err(Status::invalid_argument(format!(
                    "{n}: a swarm image's name is a tag, not a digest"
                )));
            }
            names.push(r.canonical());
        }
        names.sort();
        names.dedup();
        let store = self.store.clone();
        let digest = wanted.manifest_digest.clone();
        let manifest = tokio::task::spawn_blocking(move || store.read(&digest))
            .await
            .map_err(joined)?
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "the manifest {} is not on this manager: {e}",
                    wanted.manifest_digest
                ))
            })?;
        let (id, named) = shoal_image::manifest_blobs(&manifest)
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", wanted.manifest_digest)))?;
        let mut blobs = vec![api::SwarmBlob {
            digest: wanted.manifest_digest.clone(),
            size: manifest.len() as u64,
        }];
        for (digest, size) in named {
            if self.store.size(&digest) != Some(size) {
                return Err(Status::failed_precondition(format!(
                    "blob {digest} of {} is not on this manager: send it first",
                    wanted.manifest_digest
                )));
            }
            blobs.push(api::SwarmBlob { digest, size });
        }
        Ok(api::SwarmImage {
            manifest_digest: wanted.manifest_digest,
            id,
            names,
            blobs,
            size: wanted.size,
            created: wanted.created,
            pushed_at: crate::swarm::now(),
            pushed_by: by,
            ..Default::default()
        })
    }

    /// Copy the image's blobs to the other managers; (managers holding them all, managers).
    /// Fails, recording nothing, when fewer than a quorum hold them.
    async fn spread(&self, image: &api::SwarmImage) -> Result<(u32, u32), Status> {
        use futures::StreamExt;
        let voters = self.replica.voters();
        let quorum = voters.len() / 2 + 1;
        let peers: Vec<String> = voters
            .into_iter()
            .map(|(_, addr)| addr)
            .filter(|a| *a != self.me)
            .collect();
        let mut copies: futures::stream::FuturesUnordered<_> = peers
            .iter()
            .map(|p| {
                let (peer, creds, store, blobs) = (
                    p.clone(),
                    self.creds.clone(),
                    self.store.clone(),
                    image.blobs.clone(),
                );
                tokio::spawn(async move {
                    let r = copy_to(&peer, &creds, &store, &blobs).await;
                    (peer, r)
                })
            })
            .collect();
        let mut holders = 1;
        let mut why = Vec::new();
        // Once a quorum holds it, the others get a moment more; a slow or dead one copies
        // it later (its own background fill, or this copy still running).
        let mut enough_at = None;
        loop {
            let next = match enough_at {
                None => copies.next().await,
                Some(at) => match tokio::time::timeout_at(at, copies.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                None => break,
                Some(Ok((_, Ok(())))) => holders += 1,
                Some(Ok((peer, Err(e)))) => why.push(format!("{peer}: {e}")),
                Some(Err(e)) => why.push(format!("a copy failed: {e}")),
            }
            if holders >= quorum && enough_at.is_none() {
                enough_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
        }
        if holders < quorum {
            return Err(Status::unavailable(format!(
                "the image's content reached {holders} of {} managers; a quorum of {quorum} must hold it before it is a swarm image ({}); nothing was recorded",
                peers.len() + 1,
                why.join("; ")
            )));
        }
        if holders < peers.len() + 1 {
            tracing::info!(image = %image.manifest_digest, holders, failed = %why.join("; "), "swarm image on a quorum; the other managers copy it when they can");
        }
        Ok((holders as u32, (peers.len() + 1) as u32))
    }
}

/// Send the blobs of `blobs` the manager at `addr` lacks, from `store`.
async fn copy_to(
    addr: &str,
    creds: &Creds,
    store: &Arc<ContentStore>,
    blobs: &[api::SwarmBlob],
) -> Result<(), String> {
    let mut c = client(addr, creds).await?;
    let missing = c
        .missing_blobs(api::MissingBlobsRequest {
            digests: blobs.iter().map(|b| b.digest.clone()).collect(),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .digests;
    for b in blobs.iter().filter(|b| missing.contains(&b.digest)) {
        let s = store.clone();
        let digest = b.digest.clone();
        let (file, _) = tokio::task::spawn_blocking(move || s.open_at(&digest, 0))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        upload(&mut c, &b.digest, b.size, file, |_| {}).await?;
    }
    Ok(())
}

/// Send one blob, read from `file`, to a manager; `progress` hears the bytes sent so far.
pub(crate) async fn upload(
    c: &mut ContentClient<Channel>,
    digest: &str,
    size: u64,
    mut file: std::fs::File,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<api::BlobChunk>(4);
    let first = api::BlobChunk {
        digest: digest.to_string(),
        size,
        data: Vec::new(),
    };
    let reader = tokio::task::spawn_blocking(move || {
        if tx.blocking_send(first).is_err() {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            sent += n as u64;
            let chunk = api::BlobChunk {
                data: buf[..n].to_vec(),
                ..Default::default()
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(()); // the call ended: its status says why
            }
            progress(sent);
        }
    });
    let answer = c.put_blob(ReceiverStream::new(rx)).await;
    let read: std::io::Result<()> = reader.await.map_err(|e| e.to_string())?;
    read.map_err(|e| format!("reading blob {digest}: {e}"))?;
    answer.map_err(|s| format!("blob {digest}: {}", s.message()))?;
    Ok(())
}

/// Record `image` in the store: its names move to it from the images that had them.
async fn record(replica: &Replica, image: api::SwarmImage) -> Result<api::SwarmImage, Status> {
    let mut last = None;
    for _ in 0..5 {
        replica
            .read_barrier()
            .await
            .map_err(crate::swarm::store_status)?;
        let sm = replica.state();
        let mut ops = Vec::new();
        let mut moved = HashSet::new();
        for name in &image.names {
            for other in sm
                .find_obj::<SwarmImage>("name", name)
                .map_err(crate::swarm::internal)?
            {
                if other.object.0.manifest_digest == image.manifest_digest
                    || !moved.insert(other.object.0.manifest_digest.clone())
                {
                    continue;
                }
                let mut o = other.object.clone();
                o.0.names.retain(|n| !image.names.contains(n));
                if o.0.names.is_empty() {
                    o.0.untagged_at = crate::swarm::now();
                }
                ops.push(update(&o, other.version).map_err(crate::swarm::internal)?);
            }
        }
        let mut recorded = image.clone();
        let existing = sm
            .get_obj::<SwarmImage>(&image.manifest_digest)
            .map_err(crate::swarm::internal)?;
        match &existing {
            Some(e) => {
                let mut names: BTreeSet<String> = e.object.0.names.iter().cloned().collect();
                names.extend(image.names.iter().cloned());
                recorded.names = names.into_iter().collect();
                if recorded.names.is_empty() {
                    recorded.untagged_at = e.object.0.untagged_at.clone();
                }
                ops.push(
                    update(&SwarmImage(recorded.clone()), e.version)
                        .map_err(crate::swarm::internal)?,
                );
            }
            None => {
                if recorded.names.is_empty() {
                    recorded.untagged_at = crate::swarm::now();
                }
                ops.push(create(&SwarmImage(recorded.clone())).map_err(crate::swarm::internal)?);
            }
        }
        match replica.write(ops).await {
            Ok(_) => return Ok(recorded),
            Err(shoal_store::Error::Rejected(r)) => last = Some(r.to_string()),
            Err(e) => return Err(crate::swarm::store_status(e)),
        }
    }
    Err(Status::aborted(format!(
        "the swarm's images kept changing while recording this one: {}",
        last.unwrap_or_default()
    )))
}

/// A swarm image's reference pinned to its content: `repo@sha256:<manifest digest>`.
pub(crate) fn pinned(image: &api::SwarmImage) -> String {
    let repo = image
        .names
        .first()
        .and_then(|n| shoal_image::reference::parse(n).ok())
        .map_or_else(
            || "swarm-image".to_string(),
            |r| format!("{}/{}", r.domain, r.path),
        );
    format!("{repo}@{}", image.manifest_digest)
}

/// The swarm image `reference` names: a name (`busybox`, `busybox:v2`), a manifest digest
/// (`sha256:…`, `name@sha256:…`) or an image id (`sha256:…`, or a prefix of 12 or more).
pub(crate) fn find(replica: &Replica, reference: &str) -> Result<Option<api::SwarmImage>, Status> {
    let sm = replica.state();
    let by_digest = reference
        .rsplit_once('@')
        .map_or(reference, |(_, d)| d)
        .to_string();
    if by_digest.starts_with("sha256:") {
        if let Some(i) = sm
            .get_obj::<SwarmImage>(&by_digest)
            .map_err(crate::swarm::internal)?
        {
            return Ok(Some(i.object.0));
        }
        if let Some(i) = sm
            .find_obj::<SwarmImage>("id", &by_digest)
            .map_err(crate::swarm::internal)?
            .into_iter()
            .next()
        {
            return Ok(Some(i.object.0));
        }
        if reference.contains('@') {
            return Ok(None);
        }
    }
    if let Ok(r) = shoal_image::reference::parse(reference) {
        if r.digest.is_none() {
            if let Some(i) = sm
                .find_obj::<SwarmImage>("name", &r.canonical())
                .map_err(crate::swarm::internal)?
                .into_iter()
                .next()
            {
                return Ok(Some(i.object.0));
            }
        }
    }
    // An id prefix, as `docker image inspect 1a2b3c4d5e6f`.
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let found: Vec<_> = sm
            .list_obj::<SwarmImage>()
            .map_err(crate::swarm::internal)?
            .into_iter()
            .filter(|i| i.object.0.id.trim_start_matches("sha256:").starts_with(hex))
            .collect();
        if found.len() == 1 {
            return Ok(found.into_iter().next().map(|i| i.object.0));
        }
    }
    Ok(None)
}

/// Keep this manager's content complete and clean, until aborted: copy the blobs of
/// recorded images it lacks from the other managers; remove blobs no image names once
/// they are older than the grace period; on the leader, forget nameless images nothing
/// refers to after the same period.
pub(crate) async fn maintain(svc: Arc<ContentService>, grace: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last_gc = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if let Err(e) = fill(&svc).await {
            tracing::debug!(error = %e, "copying swarm images' blobs from the other managers");
        }
        if last_gc.elapsed() >= grace.min(Duration::from_secs(60)) {
            last_gc = tokio::time::Instant::now();
            if let Err(e) = collect(&svc, grace).await {
                tracing::warn!(error = %e, "swarm content garbage collection");
            }
        }
    }
}

/// Copy the blobs recorded images need and this manager lacks.
async fn fill(svc: &ContentService) -> Result<(), String> {
    let images = svc
        .replica
        .state()
        .list_obj::<SwarmImage>()
        .map_err(|e| e.to_string())?;
    let mut wanted: Vec<api::SwarmBlob> = Vec::new();
    let mut seen = HashSet::new();
    for i in &images {
        for b in &i.object.0.blobs {
            if !svc.store.contains(&b.digest) && seen.insert(b.digest.clone()) {
                wanted.push(b.clone());
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let peers: Vec<String> = svc
        .replica
        .voters()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| *a != svc.me)
        .collect();
    let source = Fetcher {
        managers: Arc::new(std::sync::RwLock::new(peers)),
        creds: svc.creds.clone(),
    };
    for b in wanted {
        let store = svc.store.clone();
        let reader = source.reader(b.digest.clone(), 0);
        let digest = b.digest.clone();
        let got = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut w = store.writer(&digest, b.size).map_err(|e| e.to_string())?;
            std::io::copy(&mut reader, &mut w).map_err(|e| e.to_string())?;
            w.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        match got {
            Ok(()) => {
                tracing::info!(blob = %b.digest, "copied a swarm image's blob from another manager")
            }
            Err(e) => {
                tracing::warn!(blob = %b.digest, error = %e, "cannot copy a swarm image's blob yet")
            }
        }
    }
    Ok(())
}

/// Garbage collection of the content store (every manager) and of nameless, unused images
/// (the leader).
async fn collect(svc: &ContentService, grace: Duration) -> Result<(), String> {
    let sm = svc.replica.state();
    let images = sm.list_obj::<SwarmImage>().map_err(|e| e.to_string())?;
    if svc.replica.is_leader() {
        let mut used: HashSet<String> = HashSet::new();
        let mut refer = |spec: Option<&api::TaskSpec>| {
            if let Some(t) = spec {
                used.insert(t.image_id.clone());
                if let Some((_, d)) = t.image_pinned.rsplit_once('@') {
                    used.insert(d.to_string());
                }
            }
        };
        for s in sm.list_obj::<Service>().map_err(|e| e.to_string())? {
            refer(s.object.spec.task.as_ref());
            refer(
                s.object
                    .previous_spec
                    .as_ref()
                    .and_then(|p| p.task.as_ref()),
            );
        }
        for t in sm.list_obj::<Task>().map_err(|e| e.to_string())? {
            refer(t.object.0.spec.as_ref());
        }
        let now = chrono::Utc::now();
        let mut ops = Vec::new();
        for i in &images {
            let img = &i.object.0;
            let old = chrono::DateTime::parse_from_rfc3339(&img.untagged_at)
                .map(|t| {
                    (now - t.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default()
                        >= grace
                })
                .unwrap_or(false);
            if img.names.is_empty()
                && old
                && !used.contains(&img.id)
                && !used.contains(&img.manifest_digest)
            {
                ops.push(delete::<SwarmImage>(&img.manifest_digest, Some(i.version)));
            }
        }
        if !ops.is_empty() {
            let n = ops.len();
            svc.replica.write(ops).await.map_err(|e| e.to_string())?;
            tracing::info!(
                images = n,
                "forgot swarm images without names that nothing uses"
            );
        }
    }
    // The blobs first, then what the images name: an image recorded meanwhile had its
    // blobs touched by its publication, so they are young.
    let store = svc.store.clone();
    let old: Vec<String> = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        Ok::<_, String>(
            store
                .list()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|b| now.duration_since(b.modified).unwrap_or_default() >= grace)
                .map(|b| b.digest)
                .collect(),
        )
    })
    .await
    .map_err(|e| e.to_string())??;
    let named: HashSet<String> = svc
        .replica
        .state()
        .list_obj::<SwarmImage>()
        .map_err(|e| e.to_string())?
        .into_iter()
        .flat_map(|i| i.object.0.blobs.into_iter().map(|b| b.digest))
        .collect();
    let store = svc.store.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for digest in old.iter().filter(|d| !named.contains(*d)) {
            store.remove(digest).map_err(|e| e.to_string())?;
            removed += 1;
        }
        Ok::<_, String>(removed)
    })
    .await
    .map_err(|e| e.to_string())??;
    if removed > 0 {
        tracing::info!(blobs = removed, "removed swarm content no image names");
    }
    Ok(())
}

/// Reads blobs from managers, each transfer resuming at its offset on the next manager when
/// one fails.
#[derive(Clone)]
pub(crate) struct Fetcher {
    /// The managers as this node knows them now (its agent refreshes the list from the
    /// managers' heartbeat answers).
    pub(crate) managers: Managers,
    pub(crate) creds: Creds,
}

/// A list of managers' addresses, shared and kept current.
pub(crate) type Managers = Arc<std::sync::RwLock<Vec<String>>>;

impl Fetcher {
    pub(crate) fn managers(&self) -> Vec<String> {
        self.managers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The blob `digest` from `offset`, as a blocking reader (for the image store's
    /// blocking pull); must be called inside the runtime.
    pub(crate) fn reader(&self, digest: String, offset: u64) -> Resuming {
        let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>(4);
        let me = self.clone();
        let task = tokio::spawn(async move { me.stream(digest, offset, tx).await });
        Resuming {
            rx,
            buf: Vec::new(),
            pos: 0,
            task,
        }
    }

    async fn stream(
        &self,
        digest: String,
        mut offset: u64,
        tx: mpsc::Sender<Result<Vec<u8>, String>>,
    ) {
        let mut why = Vec::new();
        let managers = self.managers();
        let n = managers.len();
        // The blob's size, from the first answer: a stream that ends short was cut off.
        let mut total = None;
        // Every manager twice without progress (one restarting comes back); progress
        // starts the count again.
        let (mut attempt, mut failures) = (0usize, 0usize);
        while failures < 2 * n {
            let addr = &managers[attempt % n];
            attempt += 1;
            if failures > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if offset > 0 {
                tracing::info!(blob = %digest, offset, manager = %addr, "resuming a blob transfer from another manager");
            } else {
                tracing::info!(blob = %digest, manager = %addr, "fetching a blob from a manager");
            }
            let mut c = match client(addr, &self.creds).await {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("{addr}: {e}"));
                    failures += 1;
                    continue;
                }
            };
            let mut s = match c
                .get_blob(api::GetBlobRequest {
                    digest: digest.clone(),
                    offset,
                })
                .await
            {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    why.push(format!("{addr}: {}", e.message()));
                    failures += 1;
                    continue;
                }
            };
            let start = offset;
            loop {
                // A manager that vanished without closing the connection: give up on it
                // after a while without a byte.
                match tokio::time::timeout(IDLE, s.message()).await {
                    Ok(Ok(Some(chunk))) => {
                        if chunk.size > 0 {
                            total = Some(chunk.size);
                        }
                        offset += chunk.data.len() as u64;
                        if tx.send(Ok(chunk.data)).await.is_err() {
                            return; // the reader is gone
                        }
                    }
                    Ok(Ok(None)) if total.is_none_or(|t| offset >= t) => return,
                    Ok(Ok(None)) => {
                        why.push(format!("{addr}: the transfer ended at byte {offset}"));
                        break;
                    }
                    Ok(Err(e)) => {
                        why.push(format!("{addr}: {} (at byte {offset})", e.message()));
                        break;
                    }
                    Err(_) => {
                        why.push(format!("{addr}: nothing for {IDLE:?} (at byte {offset})"));
                        break;
                    }
                }
            }
            if offset > start {
                failures = 0;
            } else {
                failures += 1;
            }
        }
        let _ = tx
            .send(Err(format!(
                "no manager could send blob {digest}: {}",
                why.join("; ")
            )))
            .await;
    }
}

/// A blob's bytes as they arrive from the managers.
pub(crate) struct Resuming {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resuming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Read for Resuming {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The managers' content store as a source of pulls.
pub(crate) struct SwarmSource {
    fetcher: Fetcher,
    runtime: tokio::runtime::Handle,
}

impl SwarmSource {
    pub(crate) fn new(fetcher: Fetcher) -> SwarmSource {
        SwarmSource {
            fetcher,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl shoal_image::Source for SwarmSource {
    fn describe(&self) -> String {
        "the swarm's managers".into()
    }

    fn manifest(
        &self,
        _repo: &str,
        reference: &str,
    ) -> shoal_image::Result<(Vec<u8>, String, String)> {
        // Pulls from the swarm name the manifest by digest (the managers resolved it).
        if !reference.starts_with("sha256:") {
            return Err(self.error(format!("{reference}: pull a swarm image by digest")));
        }
        let mut bytes = Vec::new();
        let _in = self.runtime.enter();
        self.fetcher
            .reader(reference.to_string(), 0)
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(e.to_string()))?;
        let actual = shoal_image::sha256_digest(&bytes);
        if actual != reference {
            return Err(self.error(format!(
                "manifest {reference} arrived with content that hashes to {actual}: damaged in transit or on a manager; nothing was stored"
            )));
        }
        Ok((bytes, String::new(), reference.to_string()))
    }

    fn blob(&self, _repo: &str, digest: &str) -> shoal_image::Result<Box<dyn Read + Send + '_>> {
        let _in = self.runtime.enter();
        Ok(Box::new(self.fetcher.reader(digest.to_string(), 0)))
    }

    fn error(&self, what: String) -> shoal_image::Error {
        shoal_image::Error::Content(format!("swarm content store: {what}"))
    }
}

/// The swarm image `reference` names, asked of the managers (None: not a swarm image).
pub(crate) async fn lookup(
    managers: &[String],
    creds: &Creds,
    reference: &str,
) -> Result<Option<api::SwarmImage>, String> {
    let request = api::ResolveImageRequest {
        reference: reference.to_string(),
    };
    ask(managers, creds, |mut c| {
        let request = request.clone();
        async move {
            match c.resolve_image(request).await {
                Ok(i) => Ok(Some(i.into_inner())),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                Err(s) => Err(s),
            }
        }
    })
    .await
}

/// The first answer of the managers, in order, to `call`; or why none answered.
async fn ask<T, F>(
    managers: &[String],
    creds: &Creds,
    call: impl Fn(ContentClient<Channel>) -> F,
) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, Status>>,
{
    let mut why = Vec::new();
    for addr in managers {
        match client(addr, creds).await {
            Ok(c) => match call(c).await {
                Ok(answer) => return Ok(answer),
                Err(s) => why.push(format!("{addr}: {}", s.message())),
            },
            Err(e) => why.push(format!("{addr}: {e}")),
        }
    }
    Err(format!("no manager answered: {}", why.join("; ")))
}

/// Make the local image `reference` a swarm image: send the blobs a manager lacks (telling
/// `progress` how each goes), then have it recorded. Managers are tried in order until one
/// takes the upload.
pub(crate) async fn publish(
    engine: &shoal_engine::Engine,
    managers: &[String],
    creds: &Creds,
    reference: &str,
    progress: mpsc::Sender<Result<api::PublishImageProgress, Status>>,
) -> Result<api::SwarmImage, Status> {
    let content = engine
        .image_content(reference)
        .await
        .map_err(|e| Status::not_found(e.to_string()))?;
    let mut why = Vec::new();
    for addr in managers {
        match publish_to(engine, addr, creds, &content, &progress).await {
            Ok(image) => return Ok(image),
            // The manager, not the image: the next one may take it.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                why.push(format!("{addr}: {}", s.message()));
            }
            Err(s) => return Err(s),
        }
    }
    Err(Status::unavailable(format!(
        "no manager took the image: {}",
        why.join("; ")
    )))
}

/// [`publish`] through the manager at `addr`.
async fn publish_to(
    engine: &shoal_engine::Engine,
    addr: &str,
    creds: &Creds,
    content: &shoal_image::ImageContent,
    progress: &mpsc::Sender<Result<api::PublishImageProgress, Status>>,
) -> Result<api::SwarmImage, Status> {
    let mut c = client(addr, creds).await.map_err(Status::unavailable)?;
    let missing = c
        .missing_blobs(api::MissingBlobsRequest {
            digests: content.blobs.iter().map(|(d, _)| d.clone()).collect(),
        })
        .await?
        .into_inner()
        .digests;
    // Layers first, each shown as docker shows them; then config and manifest (small,
    // not shown).
    let layers = content.blobs.len().saturating_sub(2);
    for (i, (digest, size)) in content
        .blobs
        .iter()
        .skip(2)
        .chain(content.blobs.iter().take(2))
        .enumerate()
    {
        let shown = i < layers;
        if !missing.contains(digest) {
            if !shown {
                continue;
            }
            let _ = progress
                .send(Ok(api::PublishImageProgress {
                    digest: digest.clone(),
                    done: *size,
                    total: *size,
                    existed: true,
                    image: None,
                }))
                .await;
            continue;
        }
        let file = engine
            .open_blob(digest)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (d, total, tx) = (digest.clone(), *size, progress.clone());
        upload(&mut c, digest, *size, file, move |done| {
            if !shown {
                return;
            }
            let _ = tx.try_send(Ok(api::PublishImageProgress {
                digest: d.clone(),
                done,
                total,
                existed: false,
                image: None,
            }));
        })
        .await
        .map_err(|e| Status::unavailable(format!("sending to the manager at {addr}: {e}")))?;
    }
    Ok(c.put_image(api::PutImageRequest {
        image: Some(api::SwarmImage {
            manifest_digest: content.manifest_digest.clone(),
            names: content.names.clone(),
            size: content.size,
            created: content.created.clone().unwrap_or_default(),
            ..Default::default()
        }),
    })
    .await?
    .into_inner())
}

/// The swarm's images, asked of the managers.
pub(crate) async fn list(
    managers: &[String],
    creds: &Creds,
) -> Result<Vec<api::SwarmImage>, Status> {
    ask(managers, creds, |mut c| async move {
        Ok(c.list_images(api::ListSwarmImagesRequest {})
            .await?
            .into_inner()
            .images)
    })
    .await
    .map_err(Status::unavailable)
}
