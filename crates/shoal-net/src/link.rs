//! Links, addresses and routes over rtnetlink: the bridge of a network, the veth pair of an
//! endpoint, and the addresses and routes inside a container's namespace.
//!
//! A netlink socket belongs to the namespace of the thread that opened it. [`Netlink`] is the
//! daemon's socket in the host namespace; work inside a container's namespace goes through
//! [`configure`], which opens a socket of its own on a thread that entered that namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{Error, IoContext, Result};

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// The daemon's netlink connection to the host namespace. Cheap to clone.
#[derive(Clone)]
pub struct Netlink {
    h: Handle,
}

/// One interface of a container: its name in the namespace and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addr: Ipv4Net,
}

impl Netlink {
    /// Open the connection; its driver runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, h, _) = rtnetlink::new_connection().ctx(|| "open a netlink socket".into())?;
        tokio::spawn(conn);
        Ok(Netlink { h })
    }

    /// The index of the link called `name`, if there is one.
    pub async fn index(&self, name: &str) -> Result<Option<u32>> {
        index_of(&self.h, name).await
    }

    /// Make sure the bridge `name` exists, carries `gateway` (the network's first address and
    /// prefix) and is up. Idempotent: a daemon restart finds it as it left it.
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Net) -> Result<u32> {
        check_name(name)?;
        let idx = match self.index(name).await? {
            Some(i) => i,
            None => {
                let made = self
                    .h
                    .link()
                    .add(LinkBridge::new(name).up().build())
                    .execute()
                    .await;
                match made {
                    Ok(()) => {}
                    Err(e) if code(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(nl(e, format!("create bridge {name}"))),
                }
                self.index(name).await?.ok_or_else(|| Error::Netlink {
                    context: format!("create bridge {name}"),
                    message: "the bridge disappeared right after it was created".into(),
                })?
            }
        };
        let has = self.addresses(idx).await?.contains(&gateway);
        if !has {
            let added = self
                .h
                .address()
                .add(idx, IpAddr::V4(gateway.addr()), gateway.prefix_len())
                .execute()
                .await;
            match added {
                Ok(()) => {}
                Err(e) if code(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(e, format!("give bridge {name} the address {gateway}"))),
            }
        }
        // A fixed MAC: otherwise the bridge takes the lowest MAC of its ports and changes it
        // as containers come and go, and every neighbour's ARP entry for the gateway goes
        // stale for seconds.
        self.h
            .link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .address(mac_for(gateway.addr()).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| nl(e, format!("bring bridge {name} up")))?;
        Ok(idx)
    }

    /// The IPv4 addresses on a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        let mut out = Vec::new();
        let mut dump = self
            .h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = dump
            .try_next()
            .await
            .map_err(|e| nl(e, "list addresses".into()))?
        {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if let Ok(n) = Ipv4Net::new(*ip, m.header.prefix_len) {
                        out.push(n);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete a link (deleting one end of a veth pair deletes both). Missing is fine.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let Some(idx) = self.index(name).await? else {
            return Ok(());
        };
        match self.h.link().del(idx).execute().await {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(nl(e, format!("delete link {name}"))),
        }
    }

    /// Names of the links whose name starts with `prefix`.
    pub async fn links_named(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dump = self.h.link().get().execute();
        while let Some(m) = dump
            .try_next()
            .await
            .map_err(|e| nl(e, "list links".into()))?
        {
            for a in &m.attributes {
                if let LinkAttribute::IfName(n) = a {
                    if n.starts_with(prefix) {
                        out.push(n.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// A veth pair: `host` on the host, enslaved to the bridge and up; its peer created
    /// directly in the namespace `ns` as `peer`, with the MAC address `mac` (still down).
    pub async fn add_veth(
        &self,
        host: &str,
        bridge: u32,
        ns: &File,
        peer: &str,
        mac: [u8; 6],
    ) -> Result<()> {
        check_name(host)?;
        check_name(peer)?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .controller(bridge)
            .up()
            .build();
        self.h
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl(e, format!("create veth pair {host}")))?;
        // Hairpin: with br_netfilter, a container reaching its own published port (or, later,
        // its own service VIP) through the host gets its DNATed packet bridged back out of
        // the port it came in on; the bridge drops that unless the port allows it.
        let idx = self.index(host).await?.ok_or_else(|| Error::Netlink {
            context: format!("create veth pair {host}"),
            message: "the veth disappeared right after it was created".into(),
        })?;
        let msg = LinkUnspec::new_with_index(idx)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true,
            )]))
            .build();
        // Port options only change through RTM_NEWLINK (RTM_SETLINK ignores them).
        self.h
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| nl(e, format!("set hairpin mode on {host}")))
    }

    /// IPv4 subnets the host already uses (its routes and addresses), which a new network must
    /// not overlap. The default route does not count.
    pub async fn used_subnets(&self) -> Result<Vec<Ipv4Net>> {
        let mut out = Vec::new();
        let mut routes = self
            .h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(|e| nl(e, "list routes".into()))?
        {
            if r.header.table != RouteHeader::RT_TABLE_MAIN
                || r.header.kind != RouteType::Unicast
                || r.header.destination_prefix_length == 0
            {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = a {
                    if let Ok(n) = Ipv4Net::new(*ip, r.header.destination_prefix_length) {
                        out.push(n.trunc());
                    }
                }
            }
        }
        let mut addrs = self.h.address().get().execute();
        while let Some(m) = addrs
            .try_next()
            .await
            .map_err(|e| nl(e, "list addresses".into()))?
        {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if !ip.is_loopback() {
                        if let Ok(n) = Ipv4Net::new(*ip, m.header.prefix_len) {
                            out.push(n.trunc());
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Inside the namespace pinned at `ns`: bring `lo` and the interfaces up with their
/// addresses, and route through `gateway` by default when one is given. Blocking: call it
/// from `spawn_blocking`.
pub fn configure(ns: &Path, ifaces: Vec<Interface>, gateway: Option<Ipv4Addr>) -> Result<()> {
    with_netlink_in(ns, move |h| async move {
        set_up(&h, "lo").await?;
        for i in &ifaces {
            let idx = index_of(&h, &i.name).await?.ok_or_else(|| Error::Netlink {
                context: format!("configure {}", i.name),
                message: "no such interface in the container".into(),
            })?;
            match h
                .address()
                .add(idx, IpAddr::V4(i.addr.addr()), i.addr.prefix_len())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if code(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(e, format!("address {} on {}", i.addr, i.name))),
            }
            set_up(&h, &i.name).await?;
        }
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
            match h.route().add(route).execute().await {
                Ok(()) => {}
                Err(e) if code(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(e, format!("default route via {gw}"))),
            }
        }
        Ok(())
    })
}

/// Bring `lo` up in the namespace pinned at `ns` (a container without interfaces).
pub fn loopback_only(ns: &Path) -> Result<()> {
    configure(ns, Vec::new(), None)
}

/// Delete the interface `name` inside the namespace pinned at `ns` (its veth peer on the host
/// goes with it). Missing is fine. Blocking.
pub fn delete_in(ns: &Path, name: &str) -> Result<()> {
    let name = name.to_string();
    with_netlink_in(ns, move |h| async move {
        let Some(idx) = index_of(&h, &name).await? else {
            return Ok(());
        };
        match h.link().del(idx).execute().await {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(nl(e, format!("delete {name}"))),
        }
    })
}

/// Run `f` with a netlink handle talking to the namespace pinned at `ns`, on a thread of its
/// own that entered it. Blocking.
fn with_netlink_in<F, Fut>(ns: &Path, f: F) -> Result<()>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    crate::netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "start a netlink runtime".into())?;
        rt.block_on(async move {
            // The socket must be opened here, after setns, to talk to this namespace.
            let (conn, h, _) =
                rtnetlink::new_connection().ctx(|| "open a netlink socket".into())?;
            tokio::spawn(conn);
            f(h).await
        })
    })
}

/// docker's MAC scheme: 02:42 and the four bytes of the address, so a reused address keeps
/// its MAC and neighbours' ARP caches stay right.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Set an IPv4 sysctl of an interface (in the caller's namespace).
pub fn set_iface_sysctl(iface: &str, key: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
    std::fs::write(&p, value).ctx(|| format!("set {p}"))
}

/// Turn IPv4 forwarding on (never off: other software may rely on it).
pub fn enable_ip_forward() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(p, "1").ctx(|| format!("enable IP forwarding ({p})"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', ':']) {
        return Err(Error::InvalidArgument(format!(
            "invalid interface name {name:?}: use 1 to {MAX_IFNAME} characters without '/', ':' or spaces"
        )));
    }
    Ok(())
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if code(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(e, format!("look up link {name}"))),
    }
}

async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let idx = index_of(h, name).await?.ok_or_else(|| Error::Netlink {
        context: format!("bring {name} up"),
        message: "no such interface".into(),
    })?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| nl(e, format!("bring {name} up")))
}

/// The errno of a kernel refusal (positive), if it is one.
fn code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn nl(e: rtnetlink::Error, context: String) -> Error {
    let message = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    Error::Netlink { context, message }
}
