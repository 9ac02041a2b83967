//! The engine API over gRPC: thin translation between protobuf messages and engine calls.
//! Engine errors map to gRPC codes here and nowhere else.

use std::io::{Read, Write};
use std::pin::Pin;

use shoal_api::v1::engine_server::{Engine as EngineApi, EngineServer};
use shoal_api::v1::{
    attach_input, attach_output, exec_input, exec_output, AttachInput, AttachOutput,
    ConnectNetworkRequest, Container, ContainerRef, ContainerStats, CreateContainerRequest,
    CreateContainerResponse, CreateNetworkRequest, CreateVolumeRequest, DataChunk, DfResponse,
    DisconnectNetworkRequest, Empty, Event, EventsRequest, ExecInput, ExecOutput, Image, ImageRef,
    KillContainerRequest, ListContainersRequest, ListContainersResponse, ListImagesRequest,
    ListImagesResponse, ListNetworksResponse, ListVolumesResponse, LoadImageResponse, LoadedImage,
    LogEntry, LoginRequest, LogsRequest, Network, NetworkDetail, NetworkRef, PruneImagesRequest,
    PruneRequest, PruneResponse, PullImageProgress, PullImageRequest, PushImageProgress,
    PushImageRequest, RemoveContainerRequest, RemoveImageRequest, RemoveImageResponse,
    RemoveVolumeRequest, RenameContainerRequest, SaveImageRequest, StatsRequest, StatsResponse,
    StopContainerRequest, TagImageRequest, TopProcess, TopRequest, TopResponse,
    UpdateContainerRequest, UpdateContainerResponse, VersionRequest, VersionResponse, Volume,
    VolumeRef, WaitResponse,
};
use shoal_engine::{
    AttachEvent, AttachOptions, CreateRequest, Engine, Error, ExecOptions, LogOptions,
    UpdateRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub fn service(engine: Engine) -> EngineServer<Api> {
    EngineServer::new(Api { engine }).max_decoding_message_size(16 << 20)
}

pub struct Api {
    engine: Engine,
}

fn status(e: Error) -> Status {
    match e {
        Error::NotFound(m) => Status::not_found(m),
        Error::Conflict(m) => Status::failed_precondition(m),
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::StartFailed { message, exit_code } => {
            Status::with_details(tonic::Code::Aborted, message, exit_code.to_string().into())
        }
        Error::Image(e) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A long call's answer as a stream: `work` runs in the background with a sender for its
/// progress (best effort: a slow client misses some), and its outcome is the last message.
pub(crate) fn progress_stream<T, F, Fut>(work: F) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let work = work(tx.clone());
    tokio::spawn(async move {
        let end = work.await;
        let _ = tx.send(end).await;
    });
    ReceiverStream::new(rx)
}

fn image_message(i: shoal_image::Image) -> Image {
    use shoal_api::v1::{HealthCheck, ImageConfig, StringList};
    let c = i.config;
    Image {
        id: i.id,
        repo_tags: i
            .names
            .iter()
            .map(|n| shoal_image::reference::familiar_name(n))
            .collect(),
        repo_digests: Vec::new(),
        created: i.created.unwrap_or_default(),
        size: i.size,
        config: Some(ImageConfig {
            env: c.env,
            cmd: c.cmd.map(|values| StringList { values }),
            entrypoint: c.entrypoint.map(|values| StringList { values }),
            working_dir: c.working_dir,
            user: c.user,
            stop_signal: c.stop_signal.unwrap_or_default(),
            exposed_ports: c.exposed_ports,
            volumes: c.volumes,
            labels: c.labels.into_iter().collect(),
            healthcheck: c.healthcheck.map(|h| HealthCheck {
                test: h.test,
                interval_ns: h.interval as i64,
                timeout_ns: h.timeout as i64,
                start_period_ns: h.start_period as i64,
                retries: h.retries as i32,
            }),
        }),
        layers: i.diff_ids,
        architecture: i.architecture,
        os: i.os,
    }
}

/// Bytes arriving on an async channel, read by blocking code.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Blocking writes turned into 256 KiB chunks on an async channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<DataChunk, Status>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = DataChunk {
            data: std::mem::take(&mut self.buf),
        };
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[tonic::async_trait]
impl EngineApi for Api {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let cgroup = match shoal_runtime::cgroups::detect() {
            Ok(shoal_runtime::cgroups::Version::V1) => "1",
            Ok(shoal_runtime::cgroups::Version::V2) => "2",
            Err(_) => "unknown",
        };
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "v1".into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cgroup_version: cgroup.into(),
            data_root: self.engine.config().data_root.display().to_string(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let (id, warnings) = self
            .engine
            .create(CreateRequest {
                name: r.name,
                config: r.config.unwrap_or_default(),
                host_config: r.host_config.unwrap_or_default(),
                ip: r.ip,
                aliases: r.aliases,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(CreateContainerResponse { id, warnings }))
    }

    #[tracing::instrument(skip_all)]
    async fn start_container(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        self.engine
            .start(&req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    type AttachStream = BoxStream<AttachOutput>;

    #[tracing::instrument(skip_all)]
    async fn attach(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .and_then(|m| m.input)
            .ok_or_else(|| {
                Status::invalid_argument("attach: the first message must name the container")
            })?;
        let attach_input::Input::Start(start) = first else {
            return Err(Status::invalid_argument(
                "attach: the first message must name the container",
            ));
        };
        let opts = AttachOptions {
            stdin: start.stdin,
            start: start.start,
            size: start.size.map(|s| (s.rows as u16, s.cols as u16)),
        };
        let attached = self.engine.attach(&start.id, opts).await.map_err(status)?;
        let input = attached.input;
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let ev = match msg.input {
                    Some(attach_input::Input::Stdin(d)) => shoal_engine::AttachInput::Stdin(d),
                    Some(attach_input::Input::CloseStdin(true)) => {
                        shoal_engine::AttachInput::CloseStdin
                    }
                    Some(attach_input::Input::Resize(s)) => {
                        shoal_engine::AttachInput::Resize(s.rows as u16, s.cols as u16)
                    }
                    _ => continue,
                };
                if input.send(ev).await.is_err() {
                    break;
                }
            }
        });
        let out = ReceiverStream::new(attached.events).map(|ev| {
            Ok(AttachOutput {
                output: Some(match ev {
                    AttachEvent::Stdout(d) => attach_output::Output::Stdout(d),
                    AttachEvent::Stderr(d) => attach_output::Output::Stderr(d),
                    AttachEvent::Exit { code, error } => {
                        attach_output::Output::Exit(WaitResponse {
                            exit_code: code,
                            error,
                        })
                    }
                }),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    #[tracing::instrument(skip_all)]
    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine.stop(&r.id, r.timeout).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all)]
    async fn restart_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .restart(&r.id, r.timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all)]
    async fn kill_container(
        &self,
        req: Request<KillContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine.kill(&r.id, &r.signal).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .remove(&r.id, r.force, r.volumes)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let r = req.into_inner();
        let containers = self.engine.list(r.all);
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn inspect_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<Container>, Status> {
        self.engine
            .inspect(&req.into_inner().id)
            .map(Response::new)
            .map_err(status)
    }

    type ContainerLogsStream = BoxStream<LogEntry>;

    async fn container_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let r = req.into_inner();
        let rx = self
            .engine
            .logs(
                &r.id,
                LogOptions {
                    follow: r.follow,
                    tail: r.tail,
                },
            )
            .await
            .map_err(status)?;
        let out = ReceiverStream::new(rx).map(|l| {
            Ok(LogEntry {
                stream: l.stream,
                line: l.line,
                time: l.time,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn wait_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<WaitResponse>, Status> {
        let (exit_code, error) = self
            .engine
            .wait(&req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(WaitResponse { exit_code, error }))
    }

    #[tracing::instrument(skip_all)]
    async fn load_image(
        &self,
        req: Request<Streaming<DataChunk>>,
    ) -> Result<Response<LoadImageResponse>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = inbound.message().await? {
                if tx.send(chunk.data).await.is_err() {
                    break;
                }
            }
            Ok::<(), Status>(())
        });
        let loaded = self
            .engine
            .load_images(ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            })
            .await;
        let fed = feeder.await.map_err(|e| Status::internal(e.to_string()))?;
        let loaded = loaded.map_err(status)?;
        fed?;
        Ok(Response::new(LoadImageResponse {
            images: loaded
                .into_iter()
                .map(|l| LoadedImage {
                    id: l.id,
                    names: l
                        .names
                        .iter()
                        .map(|n| shoal_image::reference::familiar_name(n))
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        if req.server.is_empty() || req.username.is_empty() {
            return Err(Status::invalid_argument(
                "login needs a registry, a user name and a password",
            ));
        }
        self.engine
            .registry_login(&req.server, &req.username, &req.password)
            .await
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    type PushImageStream = BoxStream<PushImageProgress>;

    #[tracing::instrument(skip_all)]
    async fn push_image(
        &self,
        req: Request<PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        let req = req.into_inner();
        shoal_image::reference::parse(&req.reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A missing image is a clean error, not a broken stream.
        self.engine.image(&req.reference).await.map_err(status)?;
        let credentials = (!req.username.is_empty()).then_some((req.username, req.password));
        let engine = self.engine.clone();
        let stream = progress_stream(|tx| async move {
            let progress = move |p: shoal_image::PushProgress| {
                let _ = tx.try_send(Ok(PushImageProgress {
                    digest: p.digest,
                    existed: p.existed,
                    mounted_from: p.mounted_from.unwrap_or_default(),
                    ..Default::default()
                }));
            };
            let p = engine
                .push_image(&req.reference, credentials, progress)
                .await
                .map_err(status)?;
            Ok(PushImageProgress {
                tag: p.tag,
                manifest_digest: p.digest,
                manifest_size: p.size,
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type PullImageStream = BoxStream<PullImageProgress>;

    #[tracing::instrument(skip_all)]
    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        let req = req.into_inner();
        shoal_image::reference::parse(&req.reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let credentials = (!req.username.is_empty()).then_some((req.username, req.password));
        let engine = self.engine.clone();
        let stream = progress_stream(|tx| async move {
            let progress = move |p: shoal_image::PullProgress| {
                let _ = tx.try_send(Ok(PullImageProgress {
                    digest: p.digest,
                    done: p.done,
                    total: p.total,
                    image: None,
                    existed: p.existed,
                }));
            };
            let l = engine
                .pull_image(&req.reference, credentials, progress)
                .await
                .map_err(status)?;
            Ok(PullImageProgress {
                image: Some(LoadedImage {
                    id: l.id,
                    names: l
                        .names
                        .iter()
                        .map(|n| shoal_image::reference::familiar_name(n))
                        .collect(),
                }),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type SaveImageStream = BoxStream<DataChunk>;

    #[tracing::instrument(skip_all)]
    async fn save_image(
        &self,
        req: Request<SaveImageRequest>,
    ) -> Result<Response<Self::SaveImageStream>, Status> {
        let refs = req.into_inner().refs;
        if refs.is_empty() {
            return Err(Status::invalid_argument("save needs at least one image"));
        }
        // Resolve first so that an unknown image is a clean error, not a broken stream.
        for r in &refs {
            self.engine.image(r).await.map_err(status)?;
        }
        let (tx, rx) = mpsc::channel(8);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let writer = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            if let Err(e) = engine.save_images(refs, writer).await {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_images(
        &self,
        _: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let images = self.engine.images().await.map_err(status)?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(image_message).collect(),
        }))
    }

    async fn inspect_image(&self, req: Request<ImageRef>) -> Result<Response<Image>, Status> {
        let i = self
            .engine
            .image(&req.into_inner().reference)
            .await
            .map_err(status)?;
        Ok(Response::new(image_message(i)))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let r = req.into_inner();
        let removed = self
            .engine
            .remove_image(&r.reference, r.force)
            .await
            .map_err(status)?;
        let mut resp = RemoveImageResponse::default();
        for x in removed {
            match x {
                shoal_image::Removed::Untagged(n) => resp
                    .untagged
                    .push(shoal_image::reference::familiar_name(&n)),
                shoal_image::Removed::Deleted(id) => resp.deleted.push(id),
            }
        }
        Ok(Response::new(resp))
    }

    async fn tag_image(&self, req: Request<TagImageRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .tag_image(&r.source, &r.target)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn pause_container(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        self.engine
            .pause(&req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn unpause_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<Empty>, Status> {
        self.engine
            .unpause(&req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn rename_container(
        &self,
        req: Request<RenameContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine.rename(&r.id, &r.new_name).map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all)]
    async fn update_container(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let r = req.into_inner();
        let warnings = self
            .engine
            .update_container(
                &r.id,
                UpdateRequest {
                    memory: r.memory,
                    nano_cpus: r.nano_cpus,
                    pids_limit: r.pids_limit,
                    restart_policy: r.restart_policy,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateContainerResponse { warnings }))
    }

    type ExecStream = BoxStream<ExecOutput>;

    #[tracing::instrument(skip_all)]
    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .and_then(|m| m.input)
            .ok_or_else(|| {
                Status::invalid_argument("exec: the first message must name the container")
            })?;
        let exec_input::Input::Start(start) = first else {
            return Err(Status::invalid_argument(
                "exec: the first message must name the container",
            ));
        };
        let opts = ExecOptions {
            cmd: start.cmd,
            env: start.env,
            user: start.user,
            working_dir: start.working_dir,
            tty: start.tty,
            stdin: start.stdin,
            detach: start.detach,
            privileged: start.privileged,
            size: start.size.map(|s| (s.rows as u16, s.cols as u16)),
        };
        let session = self.engine.exec(&start.id, opts).await.map_err(status)?;
        let input = session.input;
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let ev = match msg.input {
                    Some(exec_input::Input::Stdin(d)) => shoal_engine::AttachInput::Stdin(d),
                    Some(exec_input::Input::CloseStdin(true)) => {
                        shoal_engine::AttachInput::CloseStdin
                    }
                    Some(exec_input::Input::Resize(s)) => {
                        shoal_engine::AttachInput::Resize(s.rows as u16, s.cols as u16)
                    }
                    _ => continue,
                };
                if input.send(ev).await.is_err() {
                    break;
                }
            }
        });
        let out = ReceiverStream::new(session.events).map(|ev| {
            Ok(ExecOutput {
                output: Some(match ev {
                    AttachEvent::Stdout(d) => exec_output::Output::Stdout(d),
                    AttachEvent::Stderr(d) => exec_output::Output::Stderr(d),
                    AttachEvent::Exit { code, error } => exec_output::Output::Exit(WaitResponse {
                        exit_code: code,
                        error,
                    }),
                }),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn top(&self, req: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let r = req.into_inner();
        let (titles, rows) = self.engine.top(&r.id, &r.ps_args).await.map_err(status)?;
        Ok(Response::new(TopResponse {
            titles,
            processes: rows
                .into_iter()
                .map(|fields| TopProcess { fields })
                .collect(),
        }))
    }

    type StatsStream = BoxStream<StatsResponse>;

    async fn stats(
        &self,
        req: Request<StatsRequest>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        let r = req.into_inner();
        // Resolve names now so a wrong one is an error, not an empty stream.
        let first = self.engine.stats_sample(&r.ids).await.map_err(status)?;
        let engine = self.engine.clone();
        let (tx, rx) = mpsc::channel(4);
        let host_memory = host_memory();
        tokio::spawn(async move {
            let mut prev = first;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(if r.stream {
                    1000
                } else {
                    500
                }))
                .await;
                let ids = if r.ids.is_empty() {
                    Vec::new()
                } else {
                    r.ids.clone()
                };
                let Ok(now) = engine.stats_sample(&ids).await else {
                    return;
                };
                let stats = now
                    .iter()
                    .map(|s| {
                        let cpu = prev
                            .iter()
                            .find(|p| p.id == s.id)
                            .map_or(0.0, |p| s.cpu_percent(p));
                        ContainerStats {
                            id: s.id.clone(),
                            name: s.name.clone(),
                            cpu_percent: cpu,
                            memory_usage: s.memory_usage,
                            memory_limit: s.memory_limit.unwrap_or(0),
                            pids: s.pids,
                            net_rx: s.net_rx,
                            net_tx: s.net_tx,
                            block_read: s.block_read,
                            block_write: s.block_write,
                            host_memory,
                        }
                    })
                    .collect();
                if tx.send(Ok(StatsResponse { stats })).await.is_err() || !r.stream {
                    return;
                }
                prev = now;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn prune_containers(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let filters = flatten_filters(&req.into_inner().filters);
        let (deleted, space_reclaimed) = self
            .engine
            .prune_containers(&filters)
            .await
            .map_err(status)?;
        Ok(Response::new(PruneResponse {
            deleted,
            space_reclaimed,
        }))
    }

    async fn prune_images(
        &self,
        req: Request<PruneImagesRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let (deleted, space_reclaimed) = self
            .engine
            .prune_images(req.into_inner().all)
            .await
            .map_err(status)?;
        Ok(Response::new(PruneResponse {
            deleted,
            space_reclaimed,
        }))
    }

    async fn system_df(&self, _: Request<Empty>) -> Result<Response<DfResponse>, Status> {
        let rows = self.engine.df().await.map_err(status)?;
        Ok(Response::new(DfResponse {
            rows: rows
                .into_iter()
                .map(|r| shoal_api::v1::DfRow {
                    kind: r.kind.into(),
                    total: r.total,
                    active: r.active,
                    size: r.size,
                    reclaimable: r.reclaimable,
                })
                .collect(),
        }))
    }

    type EventsStream = BoxStream<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let filters = flatten_filters(&r.filters);
        // Event times are RFC 3339 UTC with nanoseconds and compare as text; bring the
        // bounds to that form first (a client may send any offset or precision).
        let since = event_time("since", &r.since)?;
        let until = event_time("until", &r.until)?;
        let mut sub = self
            .engine
            .events((!since.is_empty()).then_some(since.as_str()));
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let keep =
                |e: &Event| event_matches(e, &filters) && (until.is_empty() || e.time <= until);
            // The live subscription started before the history was copied: an event
            // published in between is in both; send it once.
            let sent: std::collections::HashSet<(String, String, String)> = sub
                .past
                .iter()
                .map(|e| (e.time.clone(), e.id.clone(), e.action.clone()))
                .collect();
            let seen_before =
                |e: &Event| sent.contains(&(e.time.clone(), e.id.clone(), e.action.clone()));
            for e in sub.past.drain(..) {
                if keep(&e) && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let deadline = chrono::DateTime::parse_from_rfc3339(&until).ok();
            loop {
                let wait = deadline.map(|d| {
                    (d.with_timezone(&chrono::Utc) - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default()
                });
                let next = match wait {
                    Some(w) => match tokio::time::timeout(w, sub.live.recv()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    },
                    None => sub.live.recv().await,
                };
                match next {
                    Ok(e) => {
                        if keep(&e) && !seen_before(&e) && tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let r = req.into_inner();
        let v = self
            .engine
            .create_volume(&r.name, &r.driver, r.labels, r.options)
            .map_err(status)?;
        Ok(Response::new(v))
    }

    async fn list_volumes(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        Ok(Response::new(ListVolumesResponse {
            volumes: self.engine.volumes().map_err(status)?,
        }))
    }

    async fn inspect_volume(&self, req: Request<VolumeRef>) -> Result<Response<Volume>, Status> {
        self.engine
            .inspect_volume(&req.into_inner().name)
            .map(Response::new)
            .map_err(status)
    }

    async fn remove_volume(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .remove_volume(&r.name, r.force)
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn prune_volumes(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let filters = flatten_filters(&req.into_inner().filters);
        let (deleted, space_reclaimed) = self.engine.prune_volumes(&filters).map_err(status)?;
        Ok(Response::new(PruneResponse {
            deleted,
            space_reclaimed,
        }))
    }

    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let n = self
            .engine
            .create_network(req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(n))
    }

    async fn list_networks(
        &self,
        _req: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        Ok(Response::new(ListNetworksResponse {
            networks: self.engine.list_networks().await,
        }))
    }

    async fn inspect_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<NetworkDetail>, Status> {
        let d = self
            .engine
            .inspect_network(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(d))
    }

    async fn remove_network(&self, req: Request<NetworkRef>) -> Result<Response<Empty>, Status> {
        self.engine
            .remove_network(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn prune_networks(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let filters = flatten_filters(&req.into_inner().filters);
        let deleted = self.engine.prune_networks(&filters).await.map_err(status)?;
        Ok(Response::new(PruneResponse {
            deleted,
            space_reclaimed: 0,
        }))
    }

    async fn connect_network(
        &self,
        req: Request<ConnectNetworkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .connect_network(&r.network, &r.container, &r.ip, &r.aliases)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn disconnect_network(
        &self,
        req: Request<DisconnectNetworkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.engine
            .disconnect_network(&r.network, &r.container, r.force)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }
}

/// An events bound as the engine's event times are written, or "" when not given.
fn event_time(what: &str, t: &str) -> Result<String, Status> {
    if t.is_empty() {
        return Ok(String::new());
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
        .map_err(|e| Status::invalid_argument(format!("invalid {what} time {t:?}: {e}")))
}

fn flatten_filters(
    f: &std::collections::HashMap<String, shoal_api::v1::StringList>,
) -> Vec<(String, String)> {
    f.iter()
        .flat_map(|(k, vs)| vs.values.iter().map(move |v| (k.clone(), v.clone())))
        .collect()
}

/// docker events filters: each key must match one of its values.
fn event_matches(e: &Event, filters: &[(String, String)]) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.dedup();
    keys.iter().all(|key| {
        filters
            .iter()
            .filter(|(k, _)| k == key)
            .any(|(_, v)| match *key {
                "type" => e.r#type == *v,
                "event" => e.action == *v || e.action.starts_with(&format!("{v}:")),
                "container" => {
                    e.r#type == "container"
                        && (e.id.starts_with(v.as_str()) || e.attributes.get("name") == Some(v))
                }
                "image" => e.attributes.get("image") == Some(v),
                "volume" => e.r#type == "volume" && e.id == *v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.attributes.get(lk).is_some_and(|x| x == lv),
                    None => e.attributes.contains_key(v.as_str()),
                },
                _ => true,
            })
    })
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| {
                    v.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb * 1024)
}
