//! Published ports: docker's `-p` syntax, and choosing free host ports.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol> {
        match s {
            "" | "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(Error::InvalidArgument(format!(
                "invalid protocol {other:?}: use tcp or udp"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p` mapping; `host_port` 0 means "choose one".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

fn port(s: &str, what: &str, spec: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::InvalidArgument(format!(
            "invalid {what} {s:?} in -p {spec:?}: use a number from 1 to 65535"
        ))),
    }
}

/// `-p [ip:][hostPort:]containerPort[/tcp|udp]`, also ranges `8000-8002:80-82`.
pub fn parse(spec: &str) -> Result<Vec<PortSpec>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, other)) => {
            return Err(Error::InvalidArgument(format!(
                "invalid protocol {other:?} in -p {spec:?}: use tcp or udp"
            )))
        }
        None => (spec, Protocol::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, container) = match parts[..] {
        [c] => (None, "", c),
        [h, c] => (None, h, c),
        [ip, h, c] => (Some(ip), h, c),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "invalid -p {spec:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]"
            )))
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
            Error::InvalidArgument(format!("invalid host address {ip:?} in -p {spec:?}"))
        })?),
    };
    let range = |s: &str, what: &str| -> Result<(u16, u16)> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a, what, spec)?, port(b, what, spec)?);
                if b < a {
                    return Err(Error::InvalidArgument(format!(
                        "invalid {what} range {s:?} in -p {spec:?}"
                    )));
                }
                Ok((a, b))
            }
            None => {
                let p = port(s, what, spec)?;
                Ok((p, p))
            }
        }
    };
    let (c0, c1) = range(container, "container port")?;
    let (h0, h1) = if host.is_empty() {
        (0, 0)
    } else {
        range(host, "host port")?
    };
    if h0 != 0 && (h1 - h0) != (c1 - c0) {
        return Err(Error::InvalidArgument(format!(
            "invalid -p {spec:?}: the host and container port ranges differ in size"
        )));
    }
    Ok((0..=(c1 - c0))
        .map(|i| PortSpec {
            host_ip,
            host_port: if h0 == 0 { 0 } else { h0 + i },
            container_port: c0 + i,
            protocol: proto,
        })
        .collect())
}

/// Host ports in use per protocol (by published mappings, and anything else the caller knows).
#[derive(Debug, Default, Clone)]
pub struct PortMap {
    used: BTreeSet<(Protocol, u16)>,
}

/// Where random host ports come from (the kernel's default ephemeral range).
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

impl PortMap {
    pub fn mark(&mut self, proto: Protocol, port: u16) {
        self.used.insert((proto, port));
    }

    pub fn release(&mut self, proto: Protocol, port: u16) {
        self.used.remove(&(proto, port));
    }

    /// Reserve `port`, or a free one from the ephemeral range when it is 0. `bindable` says
    /// whether the host could bind the port (nothing else listening on it).
    pub fn reserve(
        &mut self,
        proto: Protocol,
        port: u16,
        mut bindable: impl FnMut(u16) -> bool,
    ) -> Result<u16> {
        if port != 0 {
            if self.used.contains(&(proto, port)) || !bindable(port) {
                return Err(Error::Conflict(format!(
                    "port {port}/{} is already allocated on this host: publish on another port",
                    proto.as_str()
                )));
            }
            self.used.insert((proto, port));
            return Ok(port);
        }
        for p in EPHEMERAL {
            if !self.used.contains(&(proto, p)) && bindable(p) {
                self.used.insert((proto, p));
                return Ok(p);
            }
        }
        Err(Error::Exhausted(format!(
            "no free {} port left in {EPHEMERAL:?}",
            proto.as_str()
        )))
    }
}

/// Hold `port` on the host (all addresses, or `ip`): a bound socket that never listens, so
/// no other program can take the port while a container publishes it (the kernel refuses
/// their bind), yet every packet for it is DNATed before it could reach this socket.
pub fn hold(proto: Protocol, ip: Option<Ipv4Addr>, port: u16) -> Result<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let ty = match proto {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    };
    let addr = std::net::SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let fail = |e: nix::errno::Errno| {
        let why = if e == nix::errno::Errno::EADDRINUSE {
            "another program or container already uses it".to_string()
        } else if e == nix::errno::Errno::EADDRNOTAVAIL {
            "that address is not on this host".to_string()
        } else {
            e.desc().to_string()
        };
        Error::Conflict(format!("cannot publish {addr}/{}: {why}", proto.as_str()))
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).map_err(fail)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_syntax() {
        let p = parse("8080:80").unwrap();
        assert_eq!(
            p,
            vec![PortSpec {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
        let p = parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (p[0].host_ip, p[0].protocol),
            (Some(Ipv4Addr::LOCALHOST), Protocol::Udp)
        );
        assert_eq!(parse("80").unwrap()[0].host_port, 0, "random host port");
        assert_eq!(parse("127.0.0.1::80").unwrap()[0].host_port, 0);
        let r = parse("8000-8002:80-82").unwrap();
        assert_eq!(
            r.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            vec![(8000, 80), (8001, 81), (8002, 82)]
        );
        for bad in [
            "",
            "x",
            "0:80",
            "70000",
            "80/sctp",
            "1.2.3:80:80",
            "8000-8001:80-83",
            "90-80",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn reserves_ports() {
        let mut m = PortMap::default();
        assert_eq!(m.reserve(Protocol::Tcp, 8080, |_| true).unwrap(), 8080);
        let e = m
            .reserve(Protocol::Tcp, 8080, |_| true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already allocated"), "{e}");
        assert_eq!(
            m.reserve(Protocol::Udp, 8080, |_| true).unwrap(),
            8080,
            "udp is separate"
        );
        assert!(
            m.reserve(Protocol::Tcp, 9090, |_| false).is_err(),
            "the host has it"
        );
        let first = m.reserve(Protocol::Tcp, 0, |p| p != 32768).unwrap();
        assert_eq!(first, 32769);
        m.release(Protocol::Tcp, 8080);
        assert_eq!(m.reserve(Protocol::Tcp, 8080, |_| true).unwrap(), 8080);
    }
}
