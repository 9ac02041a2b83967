//! Image commands: load, save, ls, inspect, rm, tag.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::v1::{
    DataChunk, ImageRef, ListImagesRequest, RemoveImageRequest, SaveImageRequest, TagImageRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ListArgs as LsArgs;
use crate::client::{connect, err};
use crate::format::{ago, human_size, short_id, table};
use crate::inspect;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Load images from a tar archive (docker save or OCI layout) or stdin.
    Load(LoadArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry, or to the swarm (a name without a registry).
    Push(PushArgs),
    /// Save images to a docker-compatible tar archive.
    Save(SaveArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show images as JSON.
    Inspect(InspectArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Give an image another name.
    Tag(TagArgs),
}

#[derive(Args)]
pub struct LoadArgs {
    /// Archive to read (default: stdin).
    #[arg(short = 'i', long = "input")]
    input: Option<String>,
    /// Print only the loaded names.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// On a swarm node, keep the images on this node: do not make them swarm images.
    #[arg(long = "local")]
    local: bool,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Output format: json (the only one; the default).
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Remove even if tagged several times or used by a container.
    #[arg(short = 'f', long = "force")]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub async fn dispatch(host: &str, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Load(a) => load(host, a).await,
        ImageCommand::Pull(a) => pull(host, a).await,
        ImageCommand::Push(a) => push(host, a).await,
        ImageCommand::Save(a) => save(host, a).await,
        ImageCommand::Ls(a) => ls(host, a).await,
        ImageCommand::Inspect(a) => inspect(host, a).await,
        ImageCommand::Rm(a) => rm(host, a).await,
        ImageCommand::Tag(a) => tag(host, a).await,
    }
}

pub async fn load(host: &str, args: LoadArgs) -> Result<i32> {
    let mut reader: Box<dyn Read + Send> = match &args.input {
        Some(path) => Box::new(std::fs::File::open(path).with_context(|| format!("open {path}"))?),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal: use -i FILE or pipe an archive in");
            }
            Box::new(std::io::stdin())
        }
    };
    let mut client = connect(host).await?;
    let (tx, rx) = mpsc::channel::<DataChunk>(8);
    let reading = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if tx
                .blocking_send(DataChunk {
                    data: buf[..n].to_vec(),
                })
                .is_err()
            {
                return Ok(());
            }
        }
    });
    let resp = client.load_image(ReceiverStream::new(rx)).await;
    let read = reading
        .join()
        .map_err(|_| anyhow::anyhow!("reading the archive failed"))?;
    let resp = resp.map_err(err)?.into_inner();
    read.context("read the archive")?;
    for img in &resp.images {
        if img.names.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for n in &img.names {
            if args.quiet {
                println!("{n}");
            } else {
                println!("Loaded image: {n}");
            }
        }
    }
    // On a swarm node the images become swarm images: every node can run them.
    if args.local || !in_swarm(host).await? {
        return Ok(0);
    }
    for img in resp.images {
        let reference = img.names.first().cloned().unwrap_or(img.id.clone());
        let published = publish(host, &reference, true)
            .await
            .with_context(|| format!("loaded {reference} on this node, but it is not a swarm image (load it again, or use --local to keep it here)"))?;
        if !args.quiet {
            println!(
                "Published to the swarm: {reference} ({}, on {} of {} managers)",
                short_blob(&published.manifest_digest),
                published.managers_with_content,
                published.managers
            );
        }
    }
    Ok(0)
}

/// Whether the local daemon is part of a swarm.
async fn in_swarm(host: &str) -> Result<bool> {
    let info = crate::client::connect_swarm(host)
        .await?
        .inspect(shoal_api::v1::SwarmInspectRequest {})
        .await
        .map_err(err)?
        .into_inner();
    Ok(info.local_node_state == "active")
}

/// Whether `name` names its registry (`host[:port]/…`, `localhost/…`), docker's rule: a
/// first component with a dot or a port, or `localhost`.
fn names_registry(name: &str) -> bool {
    name.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// Make the local image `reference` a swarm image, showing each blob as it goes unless
/// `quiet`.
async fn publish(host: &str, reference: &str, quiet: bool) -> Result<shoal_api::v1::SwarmImage> {
    let mut stream = crate::client::connect_swarm(host)
        .await?
        .publish_image(shoal_api::v1::PublishImageRequest {
            reference: reference.to_string(),
        })
        .await
        .map_err(err)?
        .into_inner();
    let tty = !quiet && std::io::stdout().is_terminal();
    let mut bars = Bars::new("Pushing", "Pushed");
    let mut told = std::collections::HashSet::new();
    while let Some(msg) = stream.message().await.map_err(err)? {
        if let Some(image) = msg.image {
            return Ok(image);
        }
        if tty {
            if msg.existed {
                bars.existed(&msg.digest, msg.total, "Layer already exists");
            } else {
                bars.update(&msg.digest, msg.done, msg.total);
            }
            bars.draw()?;
            continue;
        }
        if quiet || msg.done < msg.total || !told.insert(msg.digest.clone()) {
            continue;
        }
        let what = if msg.existed {
            "Layer already exists"
        } else {
            "Pushed"
        };
        println!("{}: {what}", short_blob(&msg.digest));
    }
    bail!("the daemon ended the publication without an answer: see its log")
}

pub async fn save(host: &str, args: SaveArgs) -> Result<i32> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("create {path}"))?)
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal: use -o FILE or redirect stdout");
            }
            Box::new(std::io::stdout())
        }
    };
    let mut client = connect(host).await?;
    let result = async {
        let mut stream = client
            .save_image(SaveImageRequest {
                refs: args.images.clone(),
            })
            .await
            .map_err(err)?
            .into_inner();
        while let Some(chunk) = stream.message().await.map_err(err)? {
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        if let Some(path) = &args.output {
            let _ = std::fs::remove_file(path);
        }
    }
    result.map(|()| 0)
}

/// `image ls`. On a swarm node a SCOPE column says which images are swarm images (every node
/// can run them) and which only this node has; swarm images not here are listed too.
pub async fn ls(host: &str, args: LsArgs) -> Result<i32> {
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use table or json"),
    };
    let mut client = connect(host).await?;
    let local = client
        .list_images(ListImagesRequest {})
        .await
        .map_err(err)?
        .into_inner()
        .images;
    let swarm = if in_swarm(host).await? {
        let listed = crate::client::connect_swarm(host)
            .await?
            .list_swarm_images(shoal_api::v1::ListSwarmImagesRequest {})
            .await;
        match listed {
            Ok(r) => Some(r.into_inner().images),
            Err(s) => {
                eprintln!("shoal: the swarm's images are not listed: {}", s.message());
                None
            }
        }
    } else {
        None
    };
    // (id, names, created, size, scope)
    let mut images: Vec<(String, Vec<String>, String, u64, &str)> = Vec::new();
    let swarm_ids: std::collections::HashSet<&str> =
        swarm.iter().flatten().map(|i| i.id.as_str()).collect();
    for i in &local {
        let scope = if swarm_ids.contains(i.id.as_str()) {
            "swarm"
        } else {
            "local"
        };
        images.push((
            i.id.clone(),
            i.repo_tags.clone(),
            i.created.clone(),
            i.size,
            scope,
        ));
    }
    for i in swarm.iter().flatten() {
        if local.iter().any(|l| l.id == i.id) {
            continue;
        }
        let names = i
            .names
            .iter()
            .map(|n| shoal_image::reference::familiar_name(n))
            .collect();
        images.push((i.id.clone(), names, i.created.clone(), i.size, "swarm"));
    }
    images.sort_by(|a, b| b.2.cmp(&a.2));
    let mut rows = Vec::new();
    for (id, tags, created, size, scope) in &images {
        let id = if args.no_trunc {
            id.clone()
        } else {
            short_id(id)
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            if json {
                let mut doc = json!({"ID": id, "Repository": repo, "Tag": tag, "CreatedAt": created, "CreatedSince": ago(created), "Size": human_size(*size)});
                if swarm.is_some() {
                    doc["Scope"] = json!(scope);
                }
                println!("{doc}");
            } else {
                let mut row = vec![repo, tag, id.clone(), ago(created), human_size(*size)];
                if swarm.is_some() {
                    row.push(scope.to_string());
                }
                rows.push(row);
            }
        }
    }
    if !args.quiet && !json {
        let mut header = vec!["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
        if swarm.is_some() {
            header.push("SCOPE");
        }
        print!("{}", table(&header, &rows));
    }
    Ok(0)
}

pub async fn inspect(host: &str, args: InspectArgs) -> Result<i32> {
    crate::format::json_only(args.format.as_deref())?;
    let mut client = connect(host).await?;
    let mut docs = Vec::new();
    let mut failed = false;
    for r in &args.images {
        match client
            .inspect_image(ImageRef {
                reference: r.clone(),
            })
            .await
        {
            Ok(i) => docs.push(inspect::image(&i.into_inner())),
            Err(s) => {
                eprintln!("shoal: {}", s.message());
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&docs)?);
    Ok(i32::from(failed))
}

pub async fn rm(host: &str, args: RmArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    let mut failed = false;
    for r in &args.images {
        match client
            .remove_image(RemoveImageRequest {
                reference: r.clone(),
                force: args.force,
            })
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                for u in resp.untagged {
                    println!("Untagged: {u}");
                }
                for d in resp.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(s) => {
                eprintln!("shoal: {}", s.message());
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

pub async fn tag(host: &str, args: TagArgs) -> Result<i32> {
    let mut client = connect(host).await?;
    client
        .tag_image(TagImageRequest {
            source: args.source,
            target: args.target,
        })
        .await
        .map_err(err)?;
    Ok(0)
}

#[derive(Args)]
pub struct PullArgs {
    /// Print only the image's name.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// NAME[:TAG|@DIGEST], e.g. registry.example:5000/team/app:v2
    image: String,
}

/// `image` parsed, with the credentials `shoal login` stored for its registry (empty when
/// none).
fn with_credentials(image: &str) -> Result<(shoal_image::Reference, String, String)> {
    let reference = shoal_image::reference::parse(image).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (username, password) = crate::auth::credentials_for(&reference.domain)?.unwrap_or_default();
    Ok((reference, username, password))
}

/// `shoal pull`: the daemon pulls from the registry (with the credentials `shoal login`
/// stored for it); one line per layer as it completes, or live bars on a terminal.
pub async fn pull(host: &str, args: PullArgs) -> Result<i32> {
    let (reference, username, password) = with_credentials(&args.image)?;
    let mut client = connect(host).await?;
    let mut stream = client
        .pull_image(shoal_api::v1::PullImageRequest {
            reference: args.image.clone(),
            username,
            password,
        })
        .await
        .map_err(err)?
        .into_inner();
    let tty = std::io::stdout().is_terminal() && !args.quiet;
    if !args.quiet {
        let what = reference
            .tag
            .clone()
            .or(reference.digest.clone())
            .unwrap_or_default();
        // docker's words: the repository's path, without its registry.
        let path = reference
            .path
            .strip_prefix("library/")
            .filter(|_| reference.domain == "docker.io")
            .unwrap_or(&reference.path);
        println!("{what}: Pulling from {path}");
    }
    let mut bars = Bars::new("Downloading", "Pull complete");
    let mut image = None;
    while let Some(msg) = stream.message().await.map_err(err)? {
        if let Some(i) = msg.image {
            image = Some(i);
            break;
        }
        if msg.existed {
            if !args.quiet && !tty {
                println!("{}: Already exists", short_blob(&msg.digest));
            }
            bars.existed(&msg.digest, msg.total, "Already exists");
            continue;
        }
        let finished_now = bars.update(&msg.digest, msg.done, msg.total);
        if tty {
            bars.draw()?;
        } else if finished_now && !args.quiet {
            println!("{}: Download complete", short_blob(&msg.digest));
        }
    }
    let Some(image) = image else {
        bail!("the daemon ended the pull without an answer: see its log");
    };
    let name = image
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| args.image.clone());
    if args.quiet {
        println!("{name}");
    } else {
        println!("Image ID: {}", image.id);
        println!("Status: Downloaded image for {name}");
        println!("{name}");
    }
    Ok(0)
}

fn short_blob(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// `a1b2c3d4e5f6: Downloading [=====>     ]  1.2MB/5.0MB`, docker's layer line.
/// Live per-layer bars on a terminal, redrawn in place as docker draws them.
struct Bars {
    /// Layers in the order first heard of: digest, bytes so far, size, and what a layer
    /// the other side had already says instead ("Already exists").
    layers: Vec<(String, u64, u64, Option<&'static str>)>,
    drawn: usize,
    /// What a layer in progress and a finished one say ("Downloading", "Pull complete").
    doing: &'static str,
    done: &'static str,
}

impl Bars {
    fn new(doing: &'static str, done: &'static str) -> Bars {
        Bars {
            layers: Vec::new(),
            drawn: 0,
            doing,
            done,
        }
    }

    /// Record `digest`'s progress; true when it has just finished.
    fn update(&mut self, digest: &str, done: u64, total: u64) -> bool {
        let at = match self.layers.iter().position(|(d, ..)| d == digest) {
            Some(at) => at,
            None => {
                self.layers.push((digest.to_string(), 0, total, None));
                self.layers.len() - 1
            }
        };
        let finished_now = self.layers[at].1 < self.layers[at].2 && done >= total;
        self.layers[at].1 = done;
        finished_now
    }

    /// A layer the other side had already.
    fn existed(&mut self, digest: &str, total: u64, note: &'static str) {
        self.update(digest, total, total);
        if let Some(l) = self.layers.iter_mut().find(|(d, ..)| d == digest) {
            l.3 = Some(note);
        }
    }

    /// Redraw every line: up over what was drawn, then the table again.
    fn draw(&mut self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        for (d, done, total, note) in &self.layers {
            let line = match note {
                Some(note) => format!("{}: {note}", short_blob(d)),
                None => self.line(d, *done, *total),
            };
            writeln!(out, "\x1b[2K{line}")?;
        }
        self.drawn = self.layers.len();
        out.flush()
    }

    fn line(&self, digest: &str, done: u64, total: u64) -> String {
        if total > 0 && done >= total {
            return format!("{}: {}", short_blob(digest), self.done);
        }
        let width = 40u64;
        let filled = (done * width).checked_div(total).unwrap_or(0);
        let bar: String = (0..width)
            .map(|i| match i.cmp(&filled) {
                std::cmp::Ordering::Less => '=',
                std::cmp::Ordering::Equal => '>',
                std::cmp::Ordering::Greater => ' ',
            })
            .collect();
        format!(
            "{}: {} [{bar}] {}/{}",
            short_blob(digest),
            self.doing,
            human_size(done),
            human_size(total)
        )
    }
}

#[derive(Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short = 'p', long = "password")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// HOST[:PORT] of the registry (default docker.io).
    server: Option<String>,
}

/// `shoal login`: the daemon checks the credentials against the registry; they are then
/// stored for this user (0600) and sent with each pull from that registry.
pub async fn login(host: &str, args: LoginArgs) -> Result<i32> {
    let server = crate::auth::server(args.server.as_deref());
    let username = match args.username {
        Some(u) => u,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("give the user name with -u (stdin is not a terminal)");
            }
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_owned()
        }
    };
    let password = if args.password_stdin {
        if args.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        bail!("give the password with --password-stdin (or -p)");
    };
    if username.is_empty() || password.is_empty() {
        bail!("login needs a user name and a password");
    }
    let mut client = connect(host).await?;
    client
        .login(shoal_api::v1::LoginRequest {
            server: server.clone(),
            username: username.clone(),
            password: password.clone(),
        })
        .await
        .map_err(err)?;
    crate::auth::store(&server, &username, &password)?;
    println!("Login Succeeded");
    Ok(0)
}

#[derive(Args)]
pub struct LogoutArgs {
    /// HOST[:PORT] of the registry (default docker.io).
    server: Option<String>,
}

pub async fn logout(args: LogoutArgs) -> Result<i32> {
    let server = crate::auth::server(args.server.as_deref());
    if crate::auth::remove(&server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(0)
}

#[derive(Args)]
pub struct PushArgs {
    /// Print only the pushed manifest's digest.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// HOST[:PORT]/REPO[:TAG] for a registry (tag the image with `shoal tag` first), or a
    /// name without a registry for the swarm's content store
    image: String,
}

/// `shoal push`: the daemon sends the blobs the repository lacks, then the manifest. An
/// image whose name names no registry goes to the swarm's content store (on a swarm node).
pub async fn push(host: &str, args: PushArgs) -> Result<i32> {
    if !names_registry(&args.image) {
        if !in_swarm(host).await? {
            bail!(
                "{}: name a registry (HOST[:PORT]/REPO[:TAG], tag it with \"shoal tag\" first), or join a swarm to push it to the swarm",
                args.image
            );
        }
        if !args.quiet {
            println!(
                "The push refers to the swarm's content store [{}]",
                args.image
            );
        }
        let image = publish(host, &args.image, args.quiet).await?;
        if args.quiet {
            println!("{}", image.manifest_digest);
        } else {
            let size = image.blobs.first().map_or(0, |b| b.size);
            println!(
                "{}: digest: {} size: {size} (on {} of {} managers)",
                args.image, image.manifest_digest, image.managers_with_content, image.managers
            );
        }
        return Ok(0);
    }
    let (reference, username, password) = with_credentials(&args.image)?;
    let mut client = connect(host).await?;
    let mut stream = client
        .push_image(shoal_api::v1::PushImageRequest {
            reference: args.image.clone(),
            username,
            password,
        })
        .await
        .map_err(err)?
        .into_inner();
    if !args.quiet {
        println!(
            "The push refers to repository [{}/{}]",
            reference.domain, reference.path
        );
    }
    while let Some(msg) = stream.message().await.map_err(err)? {
        if !msg.manifest_digest.is_empty() {
            if args.quiet {
                println!("{}", msg.manifest_digest);
            } else {
                println!(
                    "{}: digest: {} size: {}",
                    msg.tag, msg.manifest_digest, msg.manifest_size
                );
            }
            return Ok(0);
        }
        if !args.quiet {
            let what = if msg.existed {
                "Layer already exists".to_owned()
            } else if !msg.mounted_from.is_empty() {
                format!("Mounted from {}", msg.mounted_from)
            } else {
                "Pushed".to_owned()
            };
            println!("{}: {what}", short_blob(&msg.digest));
        }
    }
    bail!("the daemon ended the push without an answer: see its log")
}
