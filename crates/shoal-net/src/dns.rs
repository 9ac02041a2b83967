//! The embedded DNS server: one per node, listening on the gateway address of every
//! user-defined network. Containers on a network resolve each other's names and aliases
//! there; every other question is forwarded to the host's resolvers (or the container's
//! `--dns` servers) with a deadline, so a dead upstream gives SERVFAIL, never a hang.
//!
//! Names are scoped by network: a query that arrives on network A's address only sees the
//! names of A. Answers carry a TTL of 0 and the table changes the moment a container starts
//! or stops, so nobody caches a stale address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::{Error, Result};
use crate::resolvconf::ResolvConf;

/// How long a forwarded question may take, all upstreams together.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(2);

/// The node's DNS server. Cheap to clone.
#[derive(Clone, Default)]
pub struct Dns {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    table: RwLock<Table>,
    /// Running servers by network id.
    servers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Table {
    /// network id → name (lower case, no trailing dot) → addresses.
    names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// network id → address → its first name (for PTR).
    reverse: HashMap<String, HashMap<Ipv4Addr, String>>,
    /// What a container asking from this address may see, by its address.
    clients: HashMap<Ipv4Addr, Client>,
}

#[derive(Default, Clone)]
struct Client {
    /// The user networks it is on: it resolves names on all of them.
    networks: Vec<String>,
    /// Its own upstreams (`--dns`); empty means the host's resolvers.
    upstreams: Vec<IpAddr>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Dns {
    pub fn new() -> Dns {
        Dns::default()
    }

    /// Answer for `network` on `addr`:53 (UDP and TCP). Replaces a server already running for
    /// that network.
    pub async fn serve(&self, network: &str, addr: Ipv4Addr) -> Result<()> {
        let sa = SocketAddr::from((addr, 53));
        let udp = bind_udp(sa)?;
        let tcp = tokio::net::TcpSocket::new_v4()
            .and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(sa)?;
                s.listen(64)
            })
            .map_err(|e| Error::Io {
                context: format!("listen for DNS on {sa}/tcp"),
                source: e,
            })?;
        let mut server = Server::new(Handler {
            network: network.to_string(),
            inner: self.inner.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        let task = tokio::spawn(async move {
            if let Err(e) = server.block_until_done().await {
                tracing::warn!(error = %e, "DNS server stopped");
            }
        });
        if let Some(old) = self
            .inner
            .servers
            .lock()
            .expect("dns lock")
            .insert(network.to_string(), task)
        {
            old.abort();
        }
        Ok(())
    }

    /// Stop answering for a network and forget its names.
    pub fn stop(&self, network: &str) {
        if let Some(t) = self.inner.servers.lock().expect("dns lock").remove(network) {
            t.abort();
        }
        let mut t = self.inner.table.write().expect("dns lock");
        t.names.remove(network);
        t.reverse.remove(network);
    }

    pub fn is_serving(&self, network: &str) -> bool {
        self.inner
            .servers
            .lock()
            .expect("dns lock")
            .contains_key(network)
    }

    /// Names of a container on a network (its name first: that is what PTR answers).
    pub fn add(&self, network: &str, names: &[String], ip: Ipv4Addr) {
        let mut t = self.inner.table.write().expect("dns lock");
        let map = t.names.entry(network.to_string()).or_default();
        for n in names.iter().filter(|n| !n.is_empty()) {
            let ips = map.entry(key(n)).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if let Some(first) = names.first() {
            t.reverse
                .entry(network.to_string())
                .or_default()
                .insert(ip, key(first));
        }
    }

    /// Forget an address on a network (all its names).
    pub fn remove(&self, network: &str, ip: Ipv4Addr) {
        let mut t = self.inner.table.write().expect("dns lock");
        if let Some(map) = t.names.get_mut(network) {
            map.retain(|_, ips| {
                ips.retain(|i| *i != ip);
                !ips.is_empty()
            });
        }
        if let Some(r) = t.reverse.get_mut(network) {
            r.remove(&ip);
        }
    }

    /// What the container at `client` sees: names on all its user `networks`, and its own
    /// upstream servers (`--dns`; empty means the host's). Both empty forgets the client.
    pub fn set_client(&self, client: Ipv4Addr, networks: Vec<String>, upstreams: Vec<IpAddr>) {
        let mut t = self.inner.table.write().expect("dns lock");
        if networks.is_empty() && upstreams.is_empty() {
            t.clients.remove(&client);
        } else {
            t.clients.insert(
                client,
                Client {
                    networks,
                    upstreams,
                },
            );
        }
    }

    /// The addresses `name` has on `network` (what a container there would be answered).
    pub fn lookup(&self, network: &str, name: &str) -> Vec<Ipv4Addr> {
        self.inner
            .table
            .read()
            .expect("dns lock")
            .names
            .get(network)
            .and_then(|m| m.get(&key(name)))
            .cloned()
            .unwrap_or_default()
    }
}

/// A UDP socket with SO_REUSEADDR, so a resolver already bound to the wildcard address
/// (dnsmasq and the like do the same) does not keep us off the gateway address.
fn bind_udp(sa: SocketAddr) -> Result<UdpSocket> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let io = |e: nix::errno::Errno| Error::Io {
        context: format!("listen for DNS on {sa}/udp"),
        source: e.into(),
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io)?;
    let SocketAddr::V4(v4) = sa else {
        return Err(Error::InvalidArgument(format!("{sa} is not IPv4")));
    };
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).map_err(io)?;
    // SAFETY: `fd` is a bound, non-blocking UDP socket we own; ownership moves to std.
    let std_sock = unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
    UdpSocket::from_std(std_sock).map_err(|e| Error::Io {
        context: format!("listen for DNS on {sa}/udp"),
        source: e,
    })
}

struct Handler {
    network: String,
    inner: Arc<Inner>,
}

enum Local {
    /// Ours, with these records (possibly none: NOERROR without answers).
    Answer(Vec<Record>),
    NotOurs,
}

impl Handler {
    fn local(&self, src: IpAddr, qname: &str, qtype: RecordType) -> Local {
        let t = self.inner.table.read().expect("dns lock");
        let Ok(name) = Name::from_ascii(qname) else {
            return Local::NotOurs;
        };
        let own = std::slice::from_ref(&self.network);
        let scopes: &[String] = match src {
            IpAddr::V4(ip) => t
                .clients
                .get(&ip)
                .map(|c| c.networks.as_slice())
                .filter(|n| !n.is_empty())
                .unwrap_or(own),
            IpAddr::V6(_) => own,
        };
        if let Some(ip) = ptr_address(qname) {
            let found = scopes
                .iter()
                .find_map(|n| t.reverse.get(n).and_then(|r| r.get(&ip)));
            return match found {
                Some(n) if qtype == RecordType::PTR => match Name::from_ascii(format!("{n}.")) {
                    Ok(target) => {
                        Local::Answer(vec![Record::from_rdata(name, 0, RData::PTR(PTR(target)))])
                    }
                    Err(_) => Local::NotOurs,
                },
                Some(_) => Local::Answer(Vec::new()),
                None => Local::NotOurs,
            };
        }
        let k = key(qname);
        let mut ips: Vec<Ipv4Addr> = Vec::new();
        let mut known = false;
        for n in scopes {
            if let Some(found) = t.names.get(n).and_then(|m| m.get(&k)) {
                known = true;
                ips.extend(
                    found
                        .iter()
                        .filter(|i| !ips.contains(i))
                        .collect::<Vec<_>>(),
                );
            }
        }
        match known.then_some(ips) {
            Some(ips) if qtype == RecordType::A => Local::Answer(
                ips.iter()
                    .map(|ip| Record::from_rdata(name.clone(), 0, RData::A(A(*ip))))
                    .collect(),
            ),
            // AAAA and the rest: the name exists, with nothing of that type.
            Some(_) => Local::Answer(Vec::new()),
            None => Local::NotOurs,
        }
    }

    fn upstreams_for(&self, client: IpAddr) -> Vec<SocketAddr> {
        let own = match client {
            IpAddr::V4(c) => self
                .inner
                .table
                .read()
                .expect("dns lock")
                .clients
                .get(&c)
                .map(|c| c.upstreams.clone())
                .filter(|u| !u.is_empty()),
            IpAddr::V6(_) => None,
        };
        let servers = own.unwrap_or_else(|| ResolvConf::host().nameservers);
        servers
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn ptr_address(qname: &str) -> Option<Ipv4Addr> {
    let rest = key(qname);
    let rest = rest.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = rest
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// Ask the upstreams in turn with the client's own bytes (same id, flags and EDNS), within
/// one deadline for all of them; a truncated UDP answer is asked again over TCP.
async fn forward(raw: &[u8], id: u16, upstreams: &[SocketAddr]) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
    for up in upstreams {
        let attempt = async {
            let sock = UdpSocket::bind("0.0.0.0:0").await.ok()?;
            sock.connect(up).await.ok()?;
            sock.send(raw).await.ok()?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => break Some(m),
                    // Someone else's datagram: keep waiting.
                    _ => continue,
                }
            }
        };
        let answer = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return None,
            Ok(None) => continue,
            Ok(Some(m)) => m,
        };
        if !answer.metadata.truncation {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, forward_tcp(raw, *up)).await {
            Ok(Some(m)) => return Some(m),
            Ok(None) => return Some(answer),
            Err(_) => return None,
        }
    }
    None
}

async fn forward_tcp(raw: &[u8], up: SocketAddr) -> Option<Message> {
    let mut s = TcpStream::connect(up).await.ok()?;
    let len = u16::try_from(raw.len()).ok()?;
    s.write_all(&len.to_be_bytes()).await.ok()?;
    s.write_all(raw).await.ok()?;
    let mut lb = [0u8; 2];
    s.read_exact(&mut lb).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(lb).into()];
    s.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let r = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response
                .send_response(r)
                .await
                .unwrap_or_else(|_| failed(request));
        };
        let qname = info.query.name().to_string();
        let qtype = info.query.query_type();
        if let Local::Answer(records) = self.local(request.src().ip(), &qname, qtype) {
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.recursion_available = true;
            meta.authoritative = true;
            let r = builder.build(meta, records.iter(), [], [], []);
            return response
                .send_response(r)
                .await
                .unwrap_or_else(|_| failed(request));
        }
        let upstreams = self.upstreams_for(request.src().ip());
        match forward(request.as_slice(), request.metadata.id, &upstreams).await {
            Some(up) => {
                let mut meta = up.metadata;
                meta.recursion_available = true;
                let mut builder = builder;
                if let Some(edns) = up.edns.as_ref() {
                    builder.edns(edns);
                }
                let r = builder.build(
                    meta,
                    up.answers.iter(),
                    up.authorities.iter(),
                    [],
                    up.additionals.iter(),
                );
                response
                    .send_response(r)
                    .await
                    .unwrap_or_else(|_| failed(request))
            }
            None => {
                let r = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                response
                    .send_response(r)
                    .await
                    .unwrap_or_else(|_| failed(request))
            }
        }
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    hickory_proto::op::Header {
        metadata,
        counts: Default::default(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names() {
        assert_eq!(
            ptr_address("2.0.18.172.in-addr.arpa."),
            Some(Ipv4Addr::new(172, 18, 0, 2))
        );
        assert_eq!(ptr_address("web."), None);
        assert_eq!(ptr_address("1.2.3.in-addr.arpa"), None);
    }

    #[test]
    fn table_follows_containers() {
        let d = Dns::new();
        d.add(
            "n1",
            &["web".into(), "Alias".into()],
            Ipv4Addr::new(10, 0, 0, 2),
        );
        d.add(
            "n1",
            &["w2".into(), "alias".into()],
            Ipv4Addr::new(10, 0, 0, 3),
        );
        assert_eq!(d.lookup("n1", "WEB."), vec![Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(d.lookup("n1", "alias").len(), 2, "shared alias: both");
        assert!(d.lookup("n2", "web").is_empty(), "scoped by network");
        d.remove("n1", Ipv4Addr::new(10, 0, 0, 2));
        assert!(d.lookup("n1", "web").is_empty());
        assert_eq!(d.lookup("n1", "alias"), vec![Ipv4Addr::new(10, 0, 0, 3)]);
    }
}
