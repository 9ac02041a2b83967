//! The engine API over gRPC: thin translation between protobuf messages and engine calls.
//! Engine errors map to gRPC codes here and nowhere else.

use std::io::{Read, Write};
use std::pin::Pin;

use shoal_api::v1::engine_server::{Engine as EngineApi, EngineServer};
use shoal_api::v1::{
    attach_input, attach_output, AttachInput, AttachOutput, Container, ContainerRef,
    CreateContainerRequest, CreateContainerResponse, DataChunk, Empty, Image, ImageRef,
    KillContainerRequest, ListContainersRequest, ListContainersResponse, ListImagesRequest,
    ListImagesResponse, LoadImageResponse, LoadedImage, LogEntry, LogsRequest,
    RemoveContainerRequest, RemoveImageRequest, RemoveImageResponse, SaveImageRequest,
    StopContainerRequest, TagImageRequest, VersionRequest, VersionResponse, WaitResponse,
};
use shoal_engine::{AttachEvent, AttachOptions, CreateRequest, Engine, Error, LogOptions};
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

fn image_message(i: shoal_image::Image) -> Image {
    use shoal_api::v1::{HealthConfig, ImageConfig, StringList};
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
            healthcheck: c.healthcheck.map(|h| HealthConfig {
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
        self.engine.remove(&r.id, r.force).await.map_err(status)?;
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
}
