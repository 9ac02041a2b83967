//! Networks on one node: the predefined `bridge`, `host` and `none`, user-defined bridge
//! networks, and each container's place on them.
//!
//! A network is a record (`shoal.v1.Network`, JSON under `<data-root>/networks/`) plus, for
//! the bridge driver, a Linux bridge carrying the gateway address. A running container on
//! bridge networks has a network namespace pinned at `<exec-root>/netns/<id>`, made and
//! configured before its first process runs: one veth pair per network (eth0, eth1, … in
//! the container), addresses from the network's IPAM, a default route through the first
//! network that has a way out. Published ports are host ports held open by the daemon (so
//! nothing else can take them) and DNATed by shoal's nftables table to the container.
//!
//! All address, port and rule changes are serialized by one lock; the nftables table is
//! rebuilt from that state whenever ports or networks change, which also makes a daemon
//! restart a reconciliation: rules left by a crash go, live containers' rules come back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use shoal_api::v1::{
    Container, CreateNetworkRequest, Endpoint, Network, NetworkDetail, NetworkMember, PortBinding,
};
use shoal_api::ContainerStatus;
use shoal_net::dns::Dns;
use shoal_net::ipam::{self, Subnet};
use shoal_net::link::{self, Interface, Netlink};
use shoal_net::nft::{BridgeNet, Firewall, ForwardHook, PortForward, Ruleset};
use shoal_net::ports::{PortMap, Protocol};
use shoal_net::resolvconf::ResolvConf;

use crate::error::{Error, IoContext, Result};
use crate::lifecycle::is_running;
use crate::{Engine, Entry};

pub(crate) const BRIDGE: &str = "bridge";
pub(crate) const HOST: &str = "host";
pub(crate) const NONE: &str = "none";
/// Host ends of our veth pairs start with this.
const VETH_PREFIX: &str = "vsh";
/// Bridges of user-defined networks start with this.
const BRIDGE_PREFIX: &str = "shoal-";
/// docker's option naming a network's bridge.
const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// The engine's networking: kernel handles and the state they are driven from.
pub(crate) struct NetCtx {
    nl: Netlink,
    fw: Firewall,
    dns: Dns,
    state: tokio::sync::Mutex<NetState>,
}

#[derive(Default)]
struct NetState {
    /// By network id.
    nets: BTreeMap<String, NetEntry>,
    ports: PortMap,
    /// Host ports held open per container, released when it stops.
    held: HashMap<String, Vec<(Protocol, u16, OwnedFd)>>,
    /// DNAT rules per container.
    forwards: BTreeMap<String, Vec<PortForward>>,
    /// Where our forward accepts went last time (for `info`).
    hook: Option<ForwardHook>,
}

struct NetEntry {
    net: Network,
    /// The bridge driver's address space.
    subnet: Option<Subnet>,
}

/// How a container's network is set up, for the spec and its /etc files.
pub(crate) struct NetUp {
    pub netns: NetNs,
    pub hosts: String,
    pub resolv_conf: String,
    /// `container:<x>` shares x's hostname.
    pub hostname: Option<String>,
}

pub(crate) enum NetNs {
    /// The host's namespace.
    Host,
    /// A new namespace made by the runtime (`none`).
    New,
    /// Join the namespace at this path.
    Join(PathBuf),
}

impl NetCtx {
    pub(crate) fn new(table: &str) -> Result<NetCtx> {
        Ok(NetCtx {
            nl: Netlink::connect()?,
            fw: Firewall::new(table),
            dns: Dns::new(),
            state: tokio::sync::Mutex::new(NetState::default()),
        })
    }
}

impl From<shoal_net::Error> for Error {
    fn from(e: shoal_net::Error) -> Error {
        use shoal_net::Error as N;
        match e {
            N::InvalidArgument(m) => Error::InvalidArgument(m),
            N::Conflict(m) | N::Exhausted(m) => Error::Conflict(m),
            N::NotFound(m) => Error::NotFound(m),
            N::Io { context, source } => Error::Io { context, source },
            other => Error::Internal(other.to_string()),
        }
    }
}

fn is_bridge(n: &Network) -> bool {
    n.driver == "bridge"
}

/// A user network: one that has names in DNS, aliases and `--ip`.
fn is_user(n: &Network) -> bool {
    !n.predefined
}

fn validate_network_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::InvalidArgument(format!(
                        "invalid network name {name:?}: use up to 64 characters [a-zA-Z0-9_.-], starting with a letter or digit"
        )));
    }
    Ok(())
}

/// The host end of a container's veth on a network: stable for the pair, 13 characters.
fn veth_name(container: &str, network: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (container, network).hash(&mut h);
    format!("{VETH_PREFIX}{:010x}", h.finish() & 0xff_ffff_ffff)
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| Error::InvalidArgument(format!("invalid {what} {s:?}: use an IPv4 address")))
}

fn parse_net(s: &str, what: &str) -> Result<Ipv4Net> {
    s.parse().map_err(|_| {
        Error::InvalidArgument(format!(
            "invalid {what} {s:?}: use an IPv4 CIDR such as 10.1.0.0/24"
        ))
    })
}

fn subnet_of(n: &Network) -> Result<Option<Subnet>> {
    if !is_bridge(n) {
        return Ok(None);
    }
    let net = parse_net(&n.subnet, "subnet")?;
    let gw = (!n.gateway.is_empty())
        .then(|| parse_ip(&n.gateway, "gateway"))
        .transpose()?;
    let range = (!n.ip_range.is_empty())
        .then(|| parse_net(&n.ip_range, "ip range"))
        .transpose()?;
    Ok(Some(Subnet::new(net, gw, range)?))
}

impl Engine {
    fn net(&self) -> &NetCtx {
        &self.inner.net
    }

    /// Load the network records, create the predefined ones on first start, and bring every
    /// bridge (and its DNS server) up. Called once by `open`, before containers are loaded.
    pub(crate) async fn net_init(&self) -> Result<()> {
        let dir = self.inner.cfg.networks_dir();
        std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let mut nets = Vec::new();
        for e in std::fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let p = e.ctx(|| "read networks dir".into())?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&p)
                .ok()
                .and_then(|d| serde_json::from_slice::<Network>(&d).ok())
            {
                Some(n) => nets.push(n),
                None => tracing::warn!(path = %p.display(), "skipping unreadable network record"),
            }
        }
        if shoal_net::nft::legacy_iptables_active() {
            tracing::warn!(
                "iptables-legacy filters this host: shoal cannot add its accept rules to that FORWARD chain; if its policy is DROP, accept shoal's bridges there (iptables -I FORWARD -i shoal0 -j ACCEPT; iptables -I FORWARD -o shoal0 -j ACCEPT)"
            );
        }
        let mut st = self.net().state.lock().await;
        for n in nets {
            let subnet = subnet_of(&n)?;
            st.nets.insert(n.id.clone(), NetEntry { net: n, subnet });
        }
        for (name, driver) in [(HOST, "host"), (NONE, "null")] {
            if !st.nets.values().any(|e| e.net.name == name) {
                let n = Network {
                    id: crate::names::new_id(),
                    name: name.into(),
                    driver: driver.into(),
                    predefined: true,
                    created: crate::now(),
                    ..Default::default()
                };
                self.save_network(&n)?;
                st.nets.insert(
                    n.id.clone(),
                    NetEntry {
                        net: n,
                        subnet: None,
                    },
                );
            }
        }
        if !st.nets.values().any(|e| e.net.name == BRIDGE) {
            let used = self.used_subnets(&st).await?;
            let net = ipam::pick_subnet(&ipam::default_pools(), &used)?;
            let n = Network {
                id: crate::names::new_id(),
                name: BRIDGE.into(),
                driver: "bridge".into(),
                subnet: net.to_string(),
                gateway: Subnet::new(net, None, None)?.gateway.to_string(),
                bridge: self.inner.cfg.bridge_name.clone(),
                predefined: true,
                created: crate::now(),
                ..Default::default()
            };
            self.save_network(&n)?;
            let subnet = subnet_of(&n)?;
            st.nets.insert(n.id.clone(), NetEntry { net: n, subnet });
        }
        let bridges: Vec<Network> = st
            .nets
            .values()
            .filter(|e| is_bridge(&e.net))
            .map(|e| e.net.clone())
            .collect();
        drop(st);
        for n in &bridges {
            if let Err(e) = self.bridge_up(n).await {
                tracing::error!(network = %n.name, error = %e, "bringing the network's bridge up failed");
            }
        }
        Ok(())
    }

    /// Subnets a new network must not overlap: the host's and our networks'.
    async fn used_subnets(&self, st: &NetState) -> Result<Vec<Ipv4Net>> {
        let mut used = self.net().nl.used_subnets().await?;
        used.extend(
            st.nets
                .values()
                .filter_map(|e| e.subnet.as_ref().map(|s| s.net)),
        );
        Ok(used)
    }

    /// The bridge with its gateway address, localnet routing (127.0.0.1 to published ports)
    /// and, on user networks, the DNS server.
    async fn bridge_up(&self, n: &Network) -> Result<()> {
        let sub = subnet_of(n)?.ok_or_else(|| Error::Internal("not a bridge".into()))?;
        let gw = Ipv4Net::new(sub.gateway, sub.net.prefix_len())
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.net().nl.ensure_bridge(&n.bridge, gw).await?;
        link::set_iface_sysctl(&n.bridge, "route_localnet", "1")?;
        if is_user(n) && !self.net().dns.is_serving(&n.id) {
            if let Err(e) = self.net().dns.serve(&n.id, sub.gateway).await {
                tracing::warn!(network = %n.name, error = %e,
                    "the embedded DNS server cannot listen on the network's gateway: containers there will use the host's resolvers and cannot resolve each other by name");
            }
        }
        Ok(())
    }

    fn save_network(&self, n: &Network) -> Result<()> {
        let dir = self.inner.cfg.networks_dir();
        let tmp = dir.join(format!(".{}.tmp", n.id));
        let data = serde_json::to_vec_pretty(n).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(format!("{}.json", n.id)))
            .ctx(|| format!("save network {}", n.name))
    }

    /// A network by full id, name, or unique id prefix.
    fn find_network(st: &NetState, reference: &str) -> Result<Network> {
        if let Some(e) = st.nets.get(reference) {
            return Ok(e.net.clone());
        }
        if let Some(e) = st.nets.values().find(|e| e.net.name == reference) {
            return Ok(e.net.clone());
        }
        let m: Vec<&NetEntry> = if reference.is_empty() {
            Vec::new()
        } else {
            st.nets
                .values()
                .filter(|e| e.net.id.starts_with(reference))
                .collect()
        };
        match m.len() {
            1 => Ok(m[0].net.clone()),
            0 => Err(Error::NotFound(format!(
                "network {reference} not found: see `shoal network ls`"
            ))),
            n => Err(Error::InvalidArgument(format!(
                "{n} networks match the id prefix {reference:?}: use more characters"
            ))),
        }
    }

    /// The network a `--network` value names (bridge mode included), for `create`.
    pub(crate) async fn resolve_network(&self, reference: &str) -> Result<Network> {
        let st = self.net().state.lock().await;
        Self::find_network(&st, reference)
    }

    pub async fn create_network(&self, req: CreateNetworkRequest) -> Result<Network> {
        validate_network_name(&req.name)?;
        let driver = if req.driver.is_empty() {
            "bridge"
        } else {
            req.driver.as_str()
        };
        if driver != "bridge" {
            return Err(Error::InvalidArgument(format!(
                "network driver {driver:?} is not supported on a single node: use bridge (overlay networks come with swarm mode)"
            )));
        }
        for k in req.options.keys() {
            if k != OPT_BRIDGE_NAME {
                return Err(Error::InvalidArgument(format!(
                    "unknown network option {k:?}: the bridge driver knows {OPT_BRIDGE_NAME}"
                )));
            }
        }
        let mut st = self.net().state.lock().await;
        if st.nets.values().any(|e| e.net.name == req.name) {
            return Err(Error::Conflict(format!(
                "network with name {} already exists: pick another name or remove it first",
                req.name
            )));
        }
        if req.subnet.is_empty() && (!req.gateway.is_empty() || !req.ip_range.is_empty()) {
            return Err(Error::InvalidArgument(
                "--gateway and --ip-range need a --subnet".into(),
            ));
        }
        let net = if req.subnet.is_empty() {
            let used = self.used_subnets(&st).await?;
            ipam::pick_subnet(&ipam::default_pools(), &used)?
        } else {
            let net = parse_net(&req.subnet, "subnet")?;
            if let Some(other) = st.nets.values().find(|e| {
                e.subnet
                    .as_ref()
                    .is_some_and(|s| ipam::overlaps(&s.net, &net))
            }) {
                return Err(Error::Conflict(format!(
                    "subnet {net} overlaps network {} ({}): pick another --subnet",
                    other.net.name, other.net.subnet
                )));
            }
            net
        };
        let id = crate::names::new_id();
        let bridge = match req.options.get(OPT_BRIDGE_NAME) {
            Some(b) => {
                if b.is_empty() || b.len() > link::MAX_IFNAME {
                    return Err(Error::InvalidArgument(format!(
                        "invalid bridge name {b:?}: use 1 to {} characters",
                        link::MAX_IFNAME
                    )));
                }
                if st.nets.values().any(|e| &e.net.bridge == b) {
                    return Err(Error::Conflict(format!(
                        "bridge {b} is already used by another network"
                    )));
                }
                b.clone()
            }
            None => format!("{BRIDGE_PREFIX}{}", &id[..9]),
        };
        let mut n = Network {
            id: id.clone(),
            name: req.name.clone(),
            driver: "bridge".into(),
            subnet: net.to_string(),
            gateway: req.gateway.clone(),
            ip_range: req.ip_range.clone(),
            internal: req.internal,
            labels: req.labels.clone(),
            created: crate::now(),
            bridge,
            predefined: false,
            options: req.options.clone(),
        };
        let subnet = subnet_of(&n)?;
        n.gateway = subnet
            .as_ref()
            .map(|s| s.gateway.to_string())
            .unwrap_or_default();
        self.save_network(&n)?;
        if let Err(e) = self.bridge_up(&n).await {
            let _ = self.net().nl.delete(&n.bridge).await;
            let _ = std::fs::remove_file(self.inner.cfg.networks_dir().join(format!("{id}.json")));
            self.net().dns.stop(&id);
            return Err(e);
        }
        st.nets.insert(
            id.clone(),
            NetEntry {
                net: n.clone(),
                subnet,
            },
        );
        self.apply_rules(&mut st).await;
        drop(st);
        self.emit_network("create", &n);
        tracing::info!(network = %n.name, subnet = %n.subnet, "created network");
        Ok(n)
    }

    pub async fn list_networks(&self) -> Vec<Network> {
        let st = self.net().state.lock().await;
        let mut v: Vec<Network> = st.nets.values().map(|e| e.net.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub async fn inspect_network(&self, reference: &str) -> Result<NetworkDetail> {
        let net = self.resolve_network(reference).await?;
        let mut containers: Vec<NetworkMember> = self
            .all_records()
            .into_iter()
            .filter_map(|c| {
                let ep = c.networks.values().find(|e| e.network_id == net.id)?;
                (!ep.ip_address.is_empty() || net.driver != "bridge").then(|| NetworkMember {
                    container_id: c.id.clone(),
                    name: c.name.clone(),
                    ip_address: ep.ip_address.clone(),
                    prefix_len: ep.prefix_len,
                    mac_address: ep.mac_address.clone(),
                })
            })
            .collect();
        if net.name == HOST || net.name == NONE {
            containers = self
                .all_records()
                .into_iter()
                .filter(|c| {
                    is_running(c.status())
                        && c.host_config
                            .as_ref()
                            .is_some_and(|h| h.network_mode == net.name)
                })
                .map(|c| NetworkMember {
                    container_id: c.id,
                    name: c.name,
                    ..Default::default()
                })
                .collect();
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(NetworkDetail {
            network: Some(net),
            containers,
        })
    }

    /// Running containers attached to a network.
    fn running_on(&self, network_id: &str) -> Vec<Container> {
        self.all_records()
            .into_iter()
            .filter(|c| {
                is_running(c.status()) && c.networks.values().any(|e| e.network_id == network_id)
            })
            .collect()
    }

    pub async fn remove_network(&self, reference: &str) -> Result<()> {
        let mut st = self.net().state.lock().await;
        let n = Self::find_network(&st, reference)?;
        if n.predefined {
            return Err(Error::Conflict(format!(
                "{} is a predefined network and cannot be removed",
                n.name
            )));
        }
        let users = self.running_on(&n.id);
        if !users.is_empty() {
            let names: Vec<String> = users.into_iter().map(|c| c.name).collect();
            return Err(Error::Conflict(format!(
                "network {} is in use by running container(s) {}: stop them or `shoal network disconnect` them first",
                n.name,
                names.join(", ")
            )));
        }
        self.net().dns.stop(&n.id);
        self.net().nl.delete(&n.bridge).await?;
        st.nets.remove(&n.id);
        let path = self.inner.cfg.networks_dir().join(format!("{}.json", n.id));
        std::fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
        self.apply_rules(&mut st).await;
        drop(st);
        self.emit_network("destroy", &n);
        tracing::info!(network = %n.name, "removed network");
        Ok(())
    }

    /// Remove user networks no running container uses; names of the removed ones.
    pub async fn prune_networks(&self, filters: &[(String, String)]) -> Result<Vec<String>> {
        let candidates: Vec<Network> = self
            .list_networks()
            .await
            .into_iter()
            .filter(|n| {
                !n.predefined && crate::prune::matches_filters(&n.labels, &n.created, filters)
            })
            .collect();
        let mut removed = Vec::new();
        for n in candidates {
            if self.running_on(&n.id).is_empty() && self.remove_network(&n.id).await.is_ok() {
                removed.push(n.name);
            }
        }
        Ok(removed)
    }

    fn emit_network(&self, action: &str, n: &Network) {
        let attrs = [
            ("name".to_string(), n.name.clone()),
            ("type".to_string(), n.driver.clone()),
        ]
        .into_iter()
        .collect();
        self.emit_raw("network", action, &n.id, attrs);
    }

    /// Every container record (any state).
    fn all_records(&self) -> Vec<Container> {
        let reg = self.inner.registry.lock().expect("registry lock");
        reg.by_id.values().map(|e| e.snapshot()).collect()
    }

    /// The endpoint a new container gets for its `--network` (none for host/none/container:).
    pub(crate) async fn initial_endpoints(
        &self,
        mode: &str,
        ip: &str,
        aliases: &[String],
    ) -> Result<(String, HashMap<String, Endpoint>)> {
        let mode = match mode {
            "" | "default" => BRIDGE,
            m => m,
        };
        if mode.starts_with("container:") || mode == HOST || mode == NONE {
            if !ip.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "--ip needs a user-defined network, not --network {mode}"
                )));
            }
            if !aliases.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "--network-alias needs a user-defined network, not --network {mode}"
                )));
            }
            return Ok((mode.to_string(), HashMap::new()));
        }
        let n = self.resolve_network(mode).await?;
        if !is_bridge(&n) {
            return Ok((n.name, HashMap::new()));
        }
        let ep = self.endpoint_for(&n, ip, aliases)?;
        Ok((n.name.clone(), HashMap::from([(n.name, ep)])))
    }

    fn endpoint_for(&self, n: &Network, ip: &str, aliases: &[String]) -> Result<Endpoint> {
        if !is_user(n) && !ip.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--ip is only supported on user-defined networks, not on {}: `shoal network create` one",
                n.name
            )));
        }
        if !is_user(n) && !aliases.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "network aliases are only supported on user-defined networks, not on {}",
                n.name
            )));
        }
        if !ip.is_empty() {
            let addr = parse_ip(ip, "--ip")?;
            let sub = subnet_of(n)?.expect("bridge network");
            if !sub.net.contains(&addr) {
                return Err(Error::InvalidArgument(format!(
                    "address {addr} is not in network {}'s subnet {}",
                    n.name, sub.net
                )));
            }
        }
        for a in aliases {
            crate::names::validate_name(a).map_err(|_| {
                Error::InvalidArgument(format!(
                    "invalid network alias {a:?}: use letters, digits, '_', '.' and '-'"
                ))
            })?;
        }
        Ok(Endpoint {
            network_id: n.id.clone(),
            network_name: n.name.clone(),
            aliases: aliases.to_vec(),
            requested_ip: ip.to_string(),
            ..Default::default()
        })
    }

    /// Set a starting container's network up; on error nothing is left behind.
    pub(crate) async fn net_up(&self, entry: &Arc<Entry>, c: &Container) -> Result<NetUp> {
        let host = c.host_config.clone().unwrap_or_default();
        let mode = host.network_mode.as_str();
        let hostname = c
            .config
            .as_ref()
            .map(|x| x.hostname.clone())
            .unwrap_or_default();
        let extra = extra_hosts(&host.extra_hosts, None)?;
        if mode == HOST {
            let hosts = std::fs::read_to_string("/etc/hosts")
                .unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".into());
            return Ok(NetUp {
                netns: NetNs::Host,
                hosts: hosts + &extra,
                resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                hostname: None,
            });
        }
        if let Some(other) = mode.strip_prefix("container:") {
            return self.join_container(c, other);
        }
        if mode == NONE {
            return Ok(NetUp {
                netns: NetNs::New,
                hosts: base_hosts() + &extra + &format!("127.0.1.1\t{hostname}\n"),
                resolv_conf: resolv_for(&host, None),
                hostname: None,
            });
        }
        if c.networks.is_empty() {
            return Err(Error::NotFound(format!(
                "container {} is on no network: connect it with `shoal network connect`",
                c.name
            )));
        }
        let ns_path = self.inner.cfg.netns_path(&c.id);
        let made = self.attach_all(entry, c, &ns_path).await;
        let (gateway, ifaces) = match made {
            Ok(x) => x,
            Err(e) => {
                self.net_down(entry).await;
                return Err(e);
            }
        };
        let c = entry.snapshot();
        let primary = ordered_endpoints(&c).into_iter().next().map(|(_, e)| e);
        let mut hosts = base_hosts();
        hosts += &extra_hosts(&host.extra_hosts, gateway)?;
        if let Some(ep) = &primary {
            hosts += &format!("{}\t{}\n", ep.ip_address, hostname);
        }
        // Embedded DNS when the first network is a user network with a server.
        let dns_at = primary.as_ref().and_then(|ep| {
            let user = !ep.network_name.is_empty()
                && ep.network_name != BRIDGE
                && self.net().dns.is_serving(&ep.network_id);
            user.then(|| ep.gateway.parse::<Ipv4Addr>().ok()).flatten()
        });
        drop(ifaces);
        Ok(NetUp {
            netns: NetNs::Join(ns_path),
            hosts,
            resolv_conf: resolv_for(&host, dns_at),
            hostname: None,
        })
    }

    /// `--network container:<x>`: x's namespace, hosts and resolv.conf.
    fn join_container(&self, c: &Container, other: &str) -> Result<NetUp> {
        let target = self.lookup(other).map_err(|_| {
            Error::NotFound(format!(
                "cannot join the network of container {other}: no such container"
            ))
        })?;
        let t = target.snapshot();
        if t.id == c.id {
            return Err(Error::InvalidArgument(
                "a container cannot join its own network namespace".into(),
            ));
        }
        if t.status() != ContainerStatus::Running {
            return Err(Error::Conflict(format!(
                "cannot join the network of container {}: it is not running (start it first)",
                t.name
            )));
        }
        let pinned = self.inner.cfg.netns_path(&t.id);
        let ns = if shoal_net::netns::is_pinned(&pinned) {
            pinned
        } else {
            let th = t
                .host_config
                .as_ref()
                .map(|h| h.network_mode.as_str())
                .unwrap_or("");
            if th == HOST {
                return Ok(NetUp {
                    netns: NetNs::Host,
                    hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
                    resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                    hostname: None,
                });
            }
            let pid = t.state.as_ref().map(|s| s.pid).unwrap_or(0);
            PathBuf::from(format!("/proc/{pid}/ns/net"))
        };
        let etc = crate::rootfs::RootfsDirs::new(&self.inner.cfg.container_dir(&t.id)).etc;
        Ok(NetUp {
            netns: NetNs::Join(ns),
            hosts: std::fs::read_to_string(etc.join("hosts")).unwrap_or_else(|_| base_hosts()),
            resolv_conf: std::fs::read_to_string(etc.join("resolv.conf")).unwrap_or_default(),
            hostname: std::fs::read_to_string(etc.join("hostname"))
                .ok()
                .map(|h| h.trim().to_string()),
        })
    }

    /// Pin the namespace and attach every endpoint; the gateway of the default route.
    async fn attach_all(
        &self,
        entry: &Arc<Entry>,
        c: &Container,
        ns_path: &std::path::Path,
    ) -> Result<(Option<Ipv4Addr>, Vec<Interface>)> {
        let p = ns_path.to_path_buf();
        tokio::task::spawn_blocking(move || shoal_net::netns::create(&p))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let mut ifaces = Vec::new();
        let mut gateway = None;
        let mut attached: Vec<(String, Endpoint)> = Vec::new();
        let ns_file =
            std::fs::File::open(ns_path).ctx(|| "open the container's namespace".into())?;
        for (i, (name, ep)) in ordered_endpoints(c).into_iter().enumerate() {
            let iface = format!("eth{i}");
            let (ep, internal) = self.attach_one(c, &name, ep, &iface, &ns_file).await?;
            if gateway.is_none() && !internal {
                gateway = ep.gateway.parse().ok();
            }
            ifaces.push(Interface {
                name: iface,
                addr: Ipv4Net::new(parse_ip(&ep.ip_address, "address")?, ep.prefix_len as u8)
                    .map_err(|e| Error::Internal(e.to_string()))?,
            });
            // Record it at once so a failure later tears it down.
            let saved = ep.clone();
            let key = name.clone();
            self.update(entry, move |r| {
                r.networks.insert(key, saved);
            })?;
            attached.push((name, ep));
        }
        let p = ns_path.to_path_buf();
        let cfg_ifaces = ifaces.clone();
        tokio::task::spawn_blocking(move || link::configure(&p, cfg_ifaces, gateway))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if gateway.is_some() {
            link::enable_ip_forward()?;
        }
        self.publish(entry, c, &attached, gateway.is_some()).await?;
        self.register_names(c, &attached);
        Ok((gateway, ifaces))
    }

    /// Allocate an address on one network and plug a veth into the namespace.
    async fn attach_one(
        &self,
        c: &Container,
        name: &str,
        mut ep: Endpoint,
        iface: &str,
        ns: &std::fs::File,
    ) -> Result<(Endpoint, bool)> {
        let (net, ip, prefix, bridge) = {
            let mut st = self.net().state.lock().await;
            let e = st.nets.get_mut(&ep.network_id).ok_or_else(|| {
                Error::NotFound(format!(
                    "network {name} of container {} no longer exists: `shoal network disconnect {name} {}` and connect it to another one",
                    c.name, c.name
                ))
            })?;
            let sub = e
                .subnet
                .as_mut()
                .ok_or_else(|| Error::Internal(format!("network {name} has no address space")))?;
            let ip = if ep.requested_ip.is_empty() {
                sub.allocate()?
            } else {
                sub.claim(parse_ip(&ep.requested_ip, "--ip")?)?
            };
            (
                e.net.clone(),
                ip,
                sub.net.prefix_len(),
                e.net.bridge.clone(),
            )
        };
        let host_if = veth_name(&c.id, &net.id);
        let plugged = async {
            let idx = self.net().nl.index(&bridge).await?.ok_or_else(|| {
                Error::Internal(format!("the bridge {bridge} of network {name} is missing"))
            })?;
            // A veth left by a crash would block the name.
            self.net().nl.delete(&host_if).await?;
            self.net()
                .nl
                .add_veth(&host_if, idx, ns, iface, link::mac_for(ip))
                .await?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = plugged {
            self.release_ip(&net.id, ip).await;
            return Err(e);
        }
        ep.network_name = net.name.clone();
        ep.ip_address = ip.to_string();
        ep.prefix_len = prefix.into();
        ep.gateway = subnet_of(&net)?
            .map(|s| s.gateway.to_string())
            .unwrap_or_default();
        ep.mac_address = link::format_mac(link::mac_for(ip));
        ep.host_interface = host_if;
        ep.interface = iface.to_string();
        Ok((ep, net.internal))
    }

    async fn release_ip(&self, network_id: &str, ip: Ipv4Addr) {
        let mut st = self.net().state.lock().await;
        if let Some(sub) = st.nets.get_mut(network_id).and_then(|e| e.subnet.as_mut()) {
            sub.release(ip);
        }
    }

    /// Names in DNS: the container's name, its aliases and short id, on every user network
    /// it is on; and which networks its questions may see.
    fn register_names(&self, c: &Container, attached: &[(String, Endpoint)]) {
        let dns = &self.net().dns;
        let host = c.host_config.clone().unwrap_or_default();
        let upstreams: Vec<IpAddr> = host.dns.iter().filter_map(|d| d.parse().ok()).collect();
        let user_nets: Vec<String> = attached
            .iter()
            .filter(|(n, _)| n != BRIDGE)
            .map(|(_, e)| e.network_id.clone())
            .collect();
        for (n, ep) in attached {
            let Ok(ip) = ep.ip_address.parse::<Ipv4Addr>() else {
                continue;
            };
            dns.set_client(ip, user_nets.clone(), upstreams.clone());
            if n == BRIDGE {
                continue;
            }
            let mut names = vec![c.name.clone()];
            names.extend(ep.aliases.iter().cloned());
            names.push(c.id[..12].to_string());
            dns.add(&ep.network_id, &names, ip);
        }
    }

    /// Hold the container's host ports and DNAT them to it.
    async fn publish(
        &self,
        entry: &Arc<Entry>,
        c: &Container,
        attached: &[(String, Endpoint)],
        has_route: bool,
    ) -> Result<()> {
        let wanted = wanted_ports(c)?;
        if wanted.is_empty() {
            return Ok(());
        }
        if !has_route {
            return Err(Error::InvalidArgument(format!(
                "container {} publishes ports but is only on internal networks: connect it to a network with a way out",
                c.name
            )));
        }
        // The address of the network with the default route.
        let target = attached
            .iter()
            .map(|(_, e)| e)
            .find(|e| !e.gateway.is_empty())
            .and_then(|e| e.ip_address.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| Error::Internal("no address to publish to".into()))?;
        let mut st = self.net().state.lock().await;
        let mut held = Vec::new();
        let mut forwards = Vec::new();
        let mut bound = Vec::new();
        for b in &wanted {
            let proto = Protocol::parse(&b.protocol)?;
            let host_ip = if b.host_ip.is_empty() {
                None
            } else {
                Some(parse_ip(&b.host_ip, "host address")?)
            };
            let mut fd = None;
            let got =
                st.ports
                    .reserve(proto, b.host_port as u16, |p| match shoal_net::ports::hold(
                        proto, host_ip, p,
                    ) {
                        Ok(f) => {
                            fd = Some(f);
                            true
                        }
                        Err(_) => false,
                    });
            let port = match got {
                Ok(p) => p,
                Err(e) => {
                    for (proto, port, _) in held.drain(..) {
                        st.ports.release(proto, port);
                    }
                    return Err(e.into());
                }
            };
            held.push((proto, port, fd.expect("held when reserved")));
            forwards.push(PortForward {
                proto,
                host_ip,
                host_port: port,
                ip: target,
                port: b.container_port as u16,
            });
            bound.push(PortBinding {
                host_port: port.into(),
                ..b.clone()
            });
        }
        st.held.insert(c.id.clone(), held);
        st.forwards.insert(c.id.clone(), forwards);
        self.apply_rules(&mut st).await;
        drop(st);
        self.update(entry, |r| r.ports = bound)?;
        Ok(())
    }

    /// Rebuild the nftables table from the state (logged, not returned: networking of
    /// running containers must not fail because of a transient nft error).
    async fn apply_rules(&self, st: &mut NetState) {
        let rs = Ruleset {
            networks: st
                .nets
                .values()
                .filter_map(|e| {
                    let sub = e.subnet.as_ref()?;
                    Some(BridgeNet {
                        bridge: e.net.bridge.clone(),
                        subnet: sub.net,
                        gateway: sub.gateway,
                        internal: e.net.internal,
                    })
                })
                .collect(),
            ports: st.forwards.values().flatten().cloned().collect(),
        };
        let bridges: Vec<String> = rs.networks.iter().map(|n| n.bridge.clone()).collect();
        let fw = self.net().fw.clone();
        let res = tokio::task::spawn_blocking(move || {
            fw.apply(&rs)?;
            shoal_net::nft::sync_forward_accepts(&bridges)
        })
        .await;
        match res {
            Ok(Ok(hook)) => st.hook = Some(hook),
            Ok(Err(e)) => tracing::error!(error = %e, "updating nftables failed"),
            Err(e) => tracing::error!(error = %e, "updating nftables failed"),
        }
    }

    /// Undo `net_up` for a container that stopped (or failed to start). Idempotent.
    pub(crate) async fn net_down(&self, entry: &Arc<Entry>) {
        let c = entry.snapshot();
        let dns = &self.net().dns;
        let mut st = self.net().state.lock().await;
        for ep in c.networks.values() {
            if let Ok(ip) = ep.ip_address.parse::<Ipv4Addr>() {
                dns.remove(&ep.network_id, ip);
                dns.set_client(ip, Vec::new(), Vec::new());
                if let Some(sub) = st
                    .nets
                    .get_mut(&ep.network_id)
                    .and_then(|e| e.subnet.as_mut())
                {
                    sub.release(ip);
                }
            }
        }
        if let Some(held) = st.held.remove(&c.id) {
            for (proto, port, _fd) in held {
                st.ports.release(proto, port);
            }
        }
        if st.forwards.remove(&c.id).is_some() {
            self.apply_rules(&mut st).await;
        }
        drop(st);
        for ep in c.networks.values() {
            if !ep.host_interface.is_empty() {
                if let Err(e) = self.net().nl.delete(&ep.host_interface).await {
                    tracing::warn!(container_id = %c.id, error = %e, "deleting a veth failed");
                }
            }
        }
        let ns = self.inner.cfg.netns_path(&c.id);
        let _ = tokio::task::spawn_blocking(move || shoal_net::netns::remove(&ns)).await;
        let _ = self.update(entry, |r| {
            for ep in r.networks.values_mut() {
                clear_runtime(ep);
            }
            r.ports.clear();
        });
    }

    /// After a daemon restart: take back what a still-running container holds.
    pub(crate) async fn net_restore(&self, c: &Container) {
        let mut st = self.net().state.lock().await;
        for ep in c.networks.values() {
            if let Ok(ip) = ep.ip_address.parse::<Ipv4Addr>() {
                if let Some(sub) = st
                    .nets
                    .get_mut(&ep.network_id)
                    .and_then(|e| e.subnet.as_mut())
                {
                    sub.mark(ip);
                }
            }
        }
        let target = c
            .networks
            .values()
            .find(|e| !e.gateway.is_empty() && !e.ip_address.is_empty())
            .and_then(|e| e.ip_address.parse::<Ipv4Addr>().ok());
        let mut held = Vec::new();
        let mut forwards = Vec::new();
        for b in &c.ports {
            let (Ok(proto), Some(ip)) = (Protocol::parse(&b.protocol), target) else {
                continue;
            };
            let host_ip = b.host_ip.parse::<Ipv4Addr>().ok();
            let port = b.host_port as u16;
            st.ports.mark(proto, port);
            match shoal_net::ports::hold(proto, host_ip, port) {
                Ok(fd) => held.push((proto, port, fd)),
                Err(e) => {
                    tracing::warn!(container_id = %c.id, port, error = %e, "cannot hold a published port again")
                }
            }
            forwards.push(PortForward {
                proto,
                host_ip,
                host_port: port,
                ip,
                port: b.container_port as u16,
            });
        }
        st.held.insert(c.id.clone(), held);
        if !forwards.is_empty() {
            st.forwards.insert(c.id.clone(), forwards);
        }
        drop(st);
        let attached: Vec<(String, Endpoint)> = c
            .networks
            .iter()
            .filter(|(_, e)| !e.ip_address.is_empty())
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        self.register_names(c, &attached);
    }

    /// After loading containers: rules for exactly the live ones, and no veth or namespace
    /// of a container that is gone.
    pub(crate) async fn net_reconcile(&self) {
        let records = self.all_records();
        let live: HashSet<String> = records
            .iter()
            .filter(|c| is_running(c.status()))
            .flat_map(|c| c.networks.values().map(|e| e.host_interface.clone()))
            .collect();
        match self.net().nl.links_named(VETH_PREFIX).await {
            Ok(links) => {
                for l in links.into_iter().filter(|l| !live.contains(l)) {
                    tracing::info!(link = %l, "removing a stale veth");
                    let _ = self.net().nl.delete(&l).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing links failed"),
        }
        let running: HashSet<String> = records
            .iter()
            .filter(|c| is_running(c.status()))
            .map(|c| c.id.clone())
            .collect();
        for p in shoal_net::netns::list(&self.inner.cfg.netns_dir()) {
            let id = p.file_name().map(|f| f.to_string_lossy().into_owned());
            if id.is_some_and(|id| !running.contains(&id)) {
                let _ = shoal_net::netns::remove(&p);
            }
        }
        let mut st = self.net().state.lock().await;
        self.apply_rules(&mut st).await;
    }

    /// Keep our accept rules in iptables' FORWARD path, e.g. after docker started and set
    /// its FORWARD policy to DROP.
    pub(crate) fn spawn_forward_watch(&self) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
            tick.tick().await;
            loop {
                tick.tick().await;
                let bridges: Vec<String> = {
                    let st = engine.net().state.lock().await;
                    st.nets
                        .values()
                        .filter(|e| is_bridge(&e.net))
                        .map(|e| e.net.bridge.clone())
                        .collect()
                };
                let r = tokio::task::spawn_blocking(move || {
                    shoal_net::nft::sync_forward_accepts(&bridges)
                })
                .await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "keeping forward accept rules failed");
                }
            }
        });
    }

    /// `network connect`: a running container gets the interface now, a stopped one at start.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        ip: &str,
        aliases: &[String],
    ) -> Result<()> {
        let entry = self.lookup(container)?;
        let _op = entry.op.lock().await;
        let c = entry.snapshot();
        let n = self.resolve_network(network).await?;
        let mode = c
            .host_config
            .as_ref()
            .map(|h| h.network_mode.clone())
            .unwrap_or_default();
        if mode == HOST || mode == NONE || mode.starts_with("container:") || !is_bridge(&n) {
            return Err(Error::Conflict(format!(
                "container {} uses --network {mode}: it cannot be connected to {}",
                c.name, n.name
            )));
        }
        if c.networks.values().any(|e| e.network_id == n.id) {
            return Err(Error::Conflict(format!(
                "container {} is already connected to network {}",
                c.name, n.name
            )));
        }
        let ep = self.endpoint_for(&n, ip, aliases)?;
        if !is_running(c.status()) {
            self.update(&entry, |r| {
                r.networks.insert(n.name.clone(), ep);
            })?;
            self.emit_network("connect", &n);
            return Ok(());
        }
        let used: HashSet<String> = c.networks.values().map(|e| e.interface.clone()).collect();
        let iface = (0..)
            .map(|i| format!("eth{i}"))
            .find(|i| !used.contains(i))
            .expect("a free interface name");
        let ns_path = self.inner.cfg.netns_path(&c.id);
        let ns_file =
            std::fs::File::open(&ns_path).ctx(|| "open the container's namespace".into())?;
        let (ep, internal) = self.attach_one(&c, &n.name, ep, &iface, &ns_file).await?;
        let had_route = c
            .networks
            .values()
            .any(|e| !e.ip_address.is_empty() && !self.is_internal_sync(&e.network_id));
        let gw = (!internal && !had_route)
            .then(|| ep.gateway.parse().ok())
            .flatten();
        let addr = Ipv4Net::new(parse_ip(&ep.ip_address, "address")?, ep.prefix_len as u8)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let p = ns_path.clone();
        let ifc = vec![Interface {
            name: iface.clone(),
            addr,
        }];
        let configured = tokio::task::spawn_blocking(move || link::configure(&p, ifc, gw))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Err(e) = configured {
            let _ = self.net().nl.delete(&ep.host_interface).await;
            self.release_ip(&n.id, addr.addr()).await;
            return Err(e.into());
        }
        if !internal {
            link::enable_ip_forward()?;
        }
        let c = self.update(&entry, |r| {
            r.networks.insert(n.name.clone(), ep);
        })?;
        let attached: Vec<(String, Endpoint)> = c
            .networks
            .iter()
            .filter(|(_, e)| !e.ip_address.is_empty())
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        self.register_names(&c, &attached);
        self.emit_network("connect", &n);
        Ok(())
    }

    fn is_internal_sync(&self, network_id: &str) -> bool {
        self.net()
            .state
            .try_lock()
            .ok()
            .and_then(|st| st.nets.get(network_id).map(|e| e.net.internal))
            .unwrap_or(false)
    }

    /// `network disconnect`.
    pub async fn disconnect_network(
        &self,
        network: &str,
        container: &str,
        force: bool,
    ) -> Result<()> {
        let entry = self.lookup(container)?;
        let _op = entry.op.lock().await;
        let c = entry.snapshot();
        // A removed network is still disconnectable by name.
        let key = match self.resolve_network(network).await {
            Ok(n) => c
                .networks
                .iter()
                .find(|(_, e)| e.network_id == n.id)
                .map(|(k, _)| k.clone()),
            Err(_) => c
                .networks
                .contains_key(network)
                .then(|| network.to_string()),
        };
        let Some(key) = key else {
            if force {
                return Ok(());
            }
            return Err(Error::NotFound(format!(
                "container {} is not connected to network {network}",
                c.name
            )));
        };
        let ep = c.networks[&key].clone();
        if is_running(c.status()) && !ep.interface.is_empty() {
            let ns_path = self.inner.cfg.netns_path(&c.id);
            let iface = ep.interface.clone();
            let r = tokio::task::spawn_blocking(move || link::delete_in(&ns_path, &iface))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            if let Err(e) = r {
                tracing::warn!(error = %e, "deleting the container's interface failed");
            }
            let _ = self.net().nl.delete(&ep.host_interface).await;
            if let Ok(ip) = ep.ip_address.parse::<Ipv4Addr>() {
                self.net().dns.remove(&ep.network_id, ip);
                self.net().dns.set_client(ip, Vec::new(), Vec::new());
                self.release_ip(&ep.network_id, ip).await;
            }
        }
        self.update(&entry, |r| {
            r.networks.remove(&key);
        })?;
        if let Ok(n) = self.resolve_network(&ep.network_id).await {
            self.emit_network("disconnect", &n);
        }
        Ok(())
    }
}

/// Endpoints in interface order: the `--network` one first, then by name.
fn ordered_endpoints(c: &Container) -> Vec<(String, Endpoint)> {
    let primary = c
        .host_config
        .as_ref()
        .map(|h| h.network_mode.clone())
        .unwrap_or_default();
    let mut v: Vec<(String, Endpoint)> = c
        .networks
        .iter()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    v.sort_by(|a, b| {
        let pa = a.0 != primary && a.1.network_id != primary;
        let pb = b.0 != primary && b.1.network_id != primary;
        (pa, &a.0).cmp(&(pb, &b.0))
    });
    v
}

fn clear_runtime(ep: &mut Endpoint) {
    ep.ip_address.clear();
    ep.prefix_len = 0;
    ep.gateway.clear();
    ep.mac_address.clear();
    ep.host_interface.clear();
    ep.interface.clear();
}

/// -p bindings plus, with -P, every exposed port on a random host port.
fn wanted_ports(c: &Container) -> Result<Vec<PortBinding>> {
    let host = c.host_config.clone().unwrap_or_default();
    let mut out: Vec<PortBinding> = host.port_bindings.clone();
    if host.publish_all_ports {
        for e in &c.exposed_ports {
            let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            let Ok(port) = port.parse::<u32>() else {
                continue;
            };
            if !out
                .iter()
                .any(|b| b.container_port == port && b.protocol == proto)
            {
                out.push(PortBinding {
                    container_port: port,
                    protocol: proto.to_string(),
                    host_ip: String::new(),
                    host_port: 0,
                });
            }
        }
    }
    Ok(out)
}

fn base_hosts() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
     ff02::2\tip6-allrouters\n"
        .to_string()
}

/// `--add-host name:ip` lines; `host-gateway` is the container's gateway (the host).
fn extra_hosts(entries: &[String], gateway: Option<Ipv4Addr>) -> Result<String> {
    let mut out = String::new();
    for e in entries {
        let Some((name, ip)) = e.split_once(':') else {
            return Err(Error::InvalidArgument(format!(
                "invalid --add-host {e:?}: use name:ip"
            )));
        };
        let ip = if ip == "host-gateway" {
            match gateway {
                Some(g) => g.to_string(),
                // Decided at start; no gateway (none, internal) keeps the name unresolved.
                None => continue,
            }
        } else {
            ip.to_string()
        };
        out += &format!("{ip}\t{name}\n");
    }
    Ok(out)
}

/// resolv.conf: the embedded DNS server when there is one for the container (with
/// `ndots:0` so single names are asked as they are), else `--dns` or the host's resolvers.
fn resolv_for(host: &shoal_api::v1::HostConfig, embedded: Option<Ipv4Addr>) -> String {
    let hostrc = ResolvConf::host();
    let mut rc = match embedded {
        Some(ip) => ResolvConf {
            nameservers: vec![IpAddr::V4(ip)],
            ..hostrc.clone()
        },
        None if !host.dns.is_empty() => ResolvConf {
            nameservers: host.dns.iter().filter_map(|d| d.parse().ok()).collect(),
            ..hostrc.clone()
        },
        None => ResolvConf::for_container(&hostrc),
    };
    if !host.dns_search.is_empty() {
        rc.search = host.dns_search.clone();
    }
    if !host.dns_options.is_empty() {
        rc.options = host.dns_options.clone();
    }
    if embedded.is_some() && !rc.options.iter().any(|o| o.starts_with("ndots:")) {
        rc.options.push("ndots:0".into());
    }
    rc.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        let a = veth_name("c1", "n1");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with(VETH_PREFIX));
        assert_eq!(a, veth_name("c1", "n1"));
        assert_ne!(a, veth_name("c1", "n2"));
    }

    #[test]
    fn add_host_lines() {
        let s = extra_hosts(
            &["db:10.0.0.9".into(), "gw:host-gateway".into()],
            Some(Ipv4Addr::new(172, 18, 0, 1)),
        )
        .unwrap();
        assert_eq!(s, "10.0.0.9\tdb\n172.18.0.1\tgw\n");
        assert!(extra_hosts(&["nocolon".into()], None).is_err());
    }

    #[test]
    fn network_names() {
        assert!(validate_network_name("front-end_1.x").is_ok());
        for bad in ["", "-x", "a b", "x/y"] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
    }
}
