//! shoald: the shoal daemon. One per host (or per network namespace in tests): it owns the
//! node's containers and images and serves the engine API on a unix socket for the `shoal`
//! CLI. Containers run under their own supervisors, so stopping or crashing shoald does not
//! stop them; the next shoald re-attaches.

mod api;
mod content;
mod executor;
mod hollow;
mod services;
mod swarm;
mod task_logs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use shoal_engine::{Engine, EngineConfig};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

// glibc's allocator spent a quarter of a busy manager's time consolidating freed chunks
// (bench/scale.sh); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "shoald", version, about = "The shoal daemon")]
struct Args {
    /// Persistent state (images, containers).
    #[arg(long = "data-root", default_value = "/var/lib/shoal")]
    data_root: PathBuf,
    /// Runtime state (supervisors, runtime state, bundles).
    #[arg(long = "exec-root", default_value = "/run/shoal")]
    exec_root: PathBuf,
    /// Unix socket for the API.
    #[arg(long, default_value = "/run/shoal/shoald.sock")]
    socket: PathBuf,
    /// Parent cgroup of all containers.
    #[arg(long = "cgroup-parent", default_value = "shoal")]
    cgroup_parent: String,
    /// error, warn, info, debug or trace.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// OCI runtime binary (default: shoal-runc next to shoald, else in $PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Container supervisor binary (default: shoal-shim next to shoald, else in $PATH).
    #[arg(long, hide = true)]
    shim: Option<PathBuf>,
    /// The Linux bridge of the default `bridge` network.
    #[arg(long, default_value = "shoal0")]
    bridge: String,
    /// The nftables table (family ip) this daemon owns.
    #[arg(long = "nft-table", default_value = "shoal", hide = true)]
    nft_table: String,
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP (loopback ones always
    /// may). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// CA certificates of registries: DIR/HOST[:PORT]/*.crt (docker's /etc/docker/certs.d).
    #[arg(long = "registry-certs-dir", default_value = "/etc/shoal/certs.d")]
    registry_certs_dir: PathBuf,
    /// Hollow-node mode, for scale benchmarks: join N nodes that run nothing (tasks are
    /// reported running) to the swarm at --join with --join-token; no engine, no socket.
    #[arg(long = "hollow-nodes", value_name = "N", requires_all = ["join", "join_token"])]
    hollow_nodes: Option<usize>,
    /// Hollow-node mode: managers to join (MANAGER:PORT), spread over the nodes.
    #[arg(long = "join", value_name = "MANAGER:PORT")]
    join: Vec<String>,
    /// Hollow-node mode: a worker join token.
    #[arg(long = "join-token", value_name = "TOKEN")]
    join_token: Option<String>,
    /// Hollow-node mode: hostname prefix.
    #[arg(long = "hollow-prefix", default_value = "hollow")]
    hollow_prefix: String,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = init_logging(&args.log_level) {
        eprintln!("shoald: {e:#}");
        std::process::exit(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoald: start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Some(n) = args.hollow_nodes {
        let token = args.join_token.clone().unwrap_or_default();
        let run = hollow::run(n, token, args.join.clone(), args.hollow_prefix.clone());
        if let Err(e) = rt.block_on(run) {
            eprintln!("shoald: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = rt.block_on(serve(args)) {
        tracing::error!("{e:#}");
        eprintln!("shoald: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(level: &str) -> Result<()> {
    let filter = match level {
        "error" | "warn" | "info" | "debug" | "trace" => {
            tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,tower=warn,hyper=warn"))
        }
        other => bail!("--log-level {other:?}: use error, warn, info, debug or trace"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

async fn serve(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("shoald must run as root (it creates namespaces, cgroups and mounts)");
    }
    for (flag, dir) in [
        ("--data-root", &args.data_root),
        ("--exec-root", &args.exec_root),
    ] {
        if !dir.is_absolute() {
            bail!("{flag} {} must be an absolute path", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {flag} {}", dir.display()))?;
    }
    // The supervisor sockets live in <exec-root>/c/<16 chars>/: keep them under 108 bytes.
    if args.exec_root.as_os_str().len() > 70 {
        bail!(
            "--exec-root {} is too long for unix socket paths (max 70 bytes)",
            args.exec_root.display()
        );
    }
    if args.bridge.is_empty() || args.bridge.len() > 15 || args.bridge.contains(['/', ' ', ':']) {
        bail!(
            "--bridge {:?}: use an interface name of 1 to 15 characters",
            args.bridge
        );
    }
    if args.nft_table.is_empty()
        || !args
            .nft_table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!(
            "--nft-table {:?}: use letters, digits, '_' and '-'",
            args.nft_table
        );
    }
    let _lock = lock_data_root(&args.data_root)?;
    let cfg = EngineConfig {
        data_root: args.data_root.clone(),
        exec_root: args.exec_root.clone(),
        cgroup_parent: args.cgroup_parent.clone(),
        runtime: args
            .runtime
            .clone()
            .unwrap_or_else(|| EngineConfig::find_binary("shoal-runc")),
        shim: args
            .shim
            .clone()
            .unwrap_or_else(|| EngineConfig::find_binary("shoal-shim")),
        bridge_name: args.bridge.clone(),
        nft_table: args.nft_table.clone(),
        registries: shoal_image::RegistryOptions {
            insecure: args.insecure_registry.clone(),
            certs_dir: Some(args.registry_certs_dir.clone()),
            credentials: Default::default(),
            upload_chunk: 0,
        },
    };
    for (what, path) in [("runtime", &cfg.runtime), ("shim", &cfg.shim)] {
        if !path.is_file() {
            bail!(
                "{what} binary {} not found: install it next to shoald or pass --{what}",
                path.display()
            );
        }
    }
    let engine = Engine::open(cfg).await.context("open the engine")?;
    let swarm = swarm::SwarmApi::open(&args.data_root, engine.clone())
        .await
        .context("rejoin the swarm")?;
    let listener = bind_socket(&args.socket)?;
    tracing::info!(socket = %args.socket.display(), data_root = %args.data_root.display(), "shoald ready");

    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down (containers keep running)");
    };
    tonic::transport::Server::builder()
        .add_service(api::service(engine.clone()))
        .add_service(services::service(swarm.clone(), engine))
        .add_service(swarm.service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serve the API")?;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

/// One daemon per data root: an flock held for the daemon's lifetime.
fn lock_data_root(data_root: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = data_root.join("shoald.pid");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        bail!(
            "another shoald (pid {}) is using --data-root {}: stop it or pick another data root",
            pid.trim(),
            data_root.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        // A live daemon would have made lock_data_root fail unless it uses another data root.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use by another daemon: pass a different --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}
