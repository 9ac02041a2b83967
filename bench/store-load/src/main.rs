//! Write load for `bench/store.sh`: `--writers` concurrent writers, each writing one new key
//! (256-byte value) after another for `--seconds`, against shoal's store (the leader's
//! `Propose`, mutual TLS, as a manager certificate) or etcd (`Put`, TLS with a client
//! certificate). Both run over gRPC on HTTP/2 with the same connection count and the same
//! writer loop, so the server is what differs. Prints one JSON line: writes/s, p50, p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use shoal_api::v1::raft_transport_client::RaftTransportClient;
use shoal_api::v1::RaftPayload;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Shoal,
    Etcd,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// The leader: ip:port.
    #[arg(long)]
    addr: String,
    /// Directory with ca.pem, node.pem and node.key (a manager's, for shoal; a client's, for etcd).
    #[arg(long)]
    certs: std::path::PathBuf,
    #[arg(long)]
    writers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Writers per connection (HTTP/2 multiplexes them).
    #[arg(long, default_value_t = 16)]
    per_conn: usize,
}

#[derive(Clone)]
enum Conn {
    Shoal(RaftTransportClient<Channel>),
    Etcd(etcd_client::KvClient),
}

const VALUE_LEN: usize = 256;

impl Conn {
    async fn put(&mut self, key: &str, value: &str) -> Result<()> {
        match self {
            Conn::Shoal(c) => {
                let req = shoal_store::Request {
                    ops: vec![shoal_store::Op::Create {
                        table: "bench".into(),
                        id: key.into(),
                        data: serde_json::value::to_raw_value(value)?,
                        indexes: vec![],
                    }],
                };
                let reply = c
                    .propose(RaftPayload {
                        data: serde_json::to_vec(&req)?,
                    })
                    .await?
                    .into_inner();
                match serde_json::from_slice(&reply.data)? {
                    shoal_store::ProposeReply::Done(shoal_store::Response::Applied { .. }) => {
                        Ok(())
                    }
                    other => bail!("write not applied: {other:?}"),
                }
            }
            Conn::Etcd(c) => {
                c.put(key, value, None).await?;
                Ok(())
            }
        }
    }
}

async fn connect(args: &Args) -> Result<Conn> {
    let read = |f: &str| {
        std::fs::read_to_string(args.certs.join(f))
            .with_context(|| format!("read {}", args.certs.join(f).display()))
    };
    let (ca, cert, key) = (read("ca.pem")?, read("node.pem")?, read("node.key")?);
    match args.target {
        Target::Shoal => {
            let ch = Endpoint::from_shared(format!("https://{}", args.addr))?
                .tcp_nodelay(true)
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&ca))
                        .identity(Identity::from_pem(&cert, &key))
                        .domain_name(shoal_store::MANAGER_NAME),
                )?
                .connect()
                .await
                .with_context(|| format!("connect to {}", args.addr))?;
            Ok(Conn::Shoal(RaftTransportClient::new(ch)))
        }
        Target::Etcd => {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&ca))
                .identity(etcd_client::Identity::from_pem(&cert, &key));
            let opts = etcd_client::ConnectOptions::new().with_tls(tls);
            let c = etcd_client::Client::connect([format!("https://{}", args.addr)], Some(opts))
                .await
                .with_context(|| format!("connect to {}", args.addr))?;
            Ok(Conn::Etcd(c.kv_client()))
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let conns = args.writers.div_ceil(args.per_conn.max(1));
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(connect(&args).await?);
    }
    let value: String = "v".repeat(VALUE_LEN);
    // A short warm-up on one writer: connections up, leader settled.
    let mut warm = pool[0].clone();
    for i in 0..20 {
        warm.put(&format!("warm-{}-{i}", std::process::id()), &value)
            .await?;
    }
    let run = format!("{}-{}", std::process::id(), args.writers);
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let mut c = pool[w % conns].clone();
        let (value, run, errors) = (value.clone(), run.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                match c.put(&format!("k-{run}-{w}-{n}"), &value).await {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "writers": args.writers,
            "writes": lat.len(),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "writes_per_sec": (lat.len() as f64 / took).round(),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
    Ok(())
}
