//! IPv4 address management: choosing a network's subnet from a pool without colliding with
//! subnets already in use on the host, and handing out addresses inside a subnet (or a
//! narrower `--ip-range`), never the network, gateway or broadcast address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// Where default networks come from, as docker's default address pools: the 172.17–31/16
/// range first, then /20s of 192.168.0.0/16.
pub fn default_pools() -> Vec<(Ipv4Net, u8)> {
    vec![
        ("172.17.0.0/16".parse().expect("valid"), 16),
        ("172.18.0.0/15".parse().expect("valid"), 16),
        ("172.20.0.0/14".parse().expect("valid"), 16),
        ("172.24.0.0/13".parse().expect("valid"), 16),
        ("192.168.0.0/16".parse().expect("valid"), 20),
    ]
}

/// The first subnet of the pools that overlaps none of `used` (the host's routes and
/// addresses, other networks' subnets). A clear error when all are taken.
pub fn pick_subnet(pools: &[(Ipv4Net, u8)], used: &[Ipv4Net]) -> Result<Ipv4Net> {
    for (pool, prefix) in pools {
        let Ok(candidates) = pool.subnets(*prefix) else {
            continue;
        };
        for c in candidates {
            if !used.iter().any(|u| overlaps(&c, u)) {
                return Ok(c);
            }
        }
    }
    Err(Error::Exhausted(
        "all predefined address pools overlap subnets in use: give the network a --subnet".into(),
    ))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A network's address space and what is allocated in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where dynamic addresses come from (the whole subnet unless --ip-range).
    pub range: Ipv4Net,
    allocated: BTreeSet<Ipv4Addr>,
}

impl Subnet {
    /// Validate a network's subnet, gateway (default: first host) and range (default: all).
    pub fn new(net: Ipv4Net, gateway: Option<Ipv4Addr>, range: Option<Ipv4Net>) -> Result<Subnet> {
        if net.prefix_len() > 30 {
            return Err(Error::InvalidArgument(format!(
                "subnet {net} is too small: use at most /30"
            )));
        }
        if net.network() != net.addr() {
            return Err(Error::InvalidArgument(format!(
                "invalid subnet {net}: did you mean {}?",
                net.trunc()
            )));
        }
        let gateway = gateway.unwrap_or_else(|| next(net.network()));
        if !usable(&net, gateway) {
            return Err(Error::InvalidArgument(format!(
                "gateway {gateway} is not a usable address of subnet {net}"
            )));
        }
        let range = range.unwrap_or(net);
        if !net.contains(&range) {
            return Err(Error::InvalidArgument(format!(
                "ip range {range} is not inside subnet {net}"
            )));
        }
        Ok(Subnet {
            net,
            gateway,
            range,
            allocated: BTreeSet::new(),
        })
    }

    /// Record an address as in use (restoring state).
    pub fn mark(&mut self, ip: Ipv4Addr) {
        self.allocated.insert(ip);
    }

    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.allocated.contains(&ip)
    }

    /// A specific address (`--ip`): inside the subnet, usable, free.
    pub fn claim(&mut self, ip: Ipv4Addr) -> Result<Ipv4Addr> {
        if !usable(&self.net, ip) || ip == self.gateway {
            return Err(Error::InvalidArgument(format!(
                "address {ip} is not a usable address of subnet {} (gateway {})",
                self.net, self.gateway
            )));
        }
        if !self.allocated.insert(ip) {
            return Err(Error::Conflict(format!(
                "address {ip} is already in use on this network"
            )));
        }
        Ok(ip)
    }

    /// The lowest free address of the range.
    pub fn allocate(&mut self) -> Result<Ipv4Addr> {
        let found = self.range.hosts().find(|ip| {
            usable(&self.net, *ip) && *ip != self.gateway && !self.allocated.contains(ip)
        });
        match found {
            Some(ip) => {
                self.allocated.insert(ip);
                Ok(ip)
            }
            None => Err(Error::Exhausted(format!(
                "no free address left in {} ({} in use): use a larger --subnet or --ip-range",
                self.range,
                self.allocated.len()
            ))),
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.allocated.remove(&ip);
    }

    pub fn in_use(&self) -> usize {
        self.allocated.len()
    }
}

fn next(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(1))
}

/// Inside `net` and neither its network nor its broadcast address.
fn usable(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn picks_a_free_subnet() {
        let pools = default_pools();
        assert_eq!(pick_subnet(&pools, &[]).unwrap(), n("172.17.0.0/16"));
        // a running docker has 172.17.0.0/16; a VPN route covers 172.18.5.0/24
        let used = [n("172.17.0.0/16"), n("172.18.5.0/24")];
        assert_eq!(pick_subnet(&pools, &used).unwrap(), n("172.19.0.0/16"));
        // a wide route swallowing all 172.16/12 pushes us to 192.168
        assert_eq!(
            pick_subnet(&pools, &[n("172.16.0.0/12")]).unwrap(),
            n("192.168.0.0/20")
        );
        let all = [n("172.16.0.0/12"), n("192.168.0.0/16")];
        assert!(pick_subnet(&pools, &all)
            .unwrap_err()
            .to_string()
            .contains("--subnet"));
    }

    #[test]
    fn allocates_skipping_network_gateway_and_broadcast() {
        let mut s = Subnet::new(n("10.1.0.0/29"), None, None).unwrap();
        assert_eq!(s.gateway, Ipv4Addr::new(10, 1, 0, 1));
        let got: Vec<Ipv4Addr> = (0..5).map(|_| s.allocate().unwrap()).collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 1, 0, 6)));
        let err = s.allocate().unwrap_err().to_string();
        assert!(err.contains("no free address left"), "{err}");
        s.release(Ipv4Addr::new(10, 1, 0, 4));
        assert_eq!(s.allocate().unwrap(), Ipv4Addr::new(10, 1, 0, 4));
    }

    #[test]
    fn claims_and_ranges() {
        let mut s = Subnet::new(
            n("10.2.0.0/24"),
            Some("10.2.0.254".parse().unwrap()),
            Some(n("10.2.0.128/25")),
        )
        .unwrap();
        assert_eq!(s.allocate().unwrap(), Ipv4Addr::new(10, 2, 0, 129));
        assert_eq!(
            s.claim("10.2.0.5".parse().unwrap()).unwrap(),
            Ipv4Addr::new(10, 2, 0, 5)
        );
        assert!(s.claim("10.2.0.5".parse().unwrap()).is_err(), "taken");
        assert!(s.claim("10.2.0.254".parse().unwrap()).is_err(), "gateway");
        assert!(s.claim("10.3.0.5".parse().unwrap()).is_err(), "outside");
        assert!(s.claim("10.2.0.255".parse().unwrap()).is_err(), "broadcast");
        assert!(Subnet::new(n("10.2.0.1/24"), None, None)
            .unwrap_err()
            .to_string()
            .contains("10.2.0.0/24"));
        assert!(Subnet::new(n("10.2.0.0/24"), Some("10.9.0.1".parse().unwrap()), None).is_err());
        assert!(Subnet::new(n("10.2.0.0/24"), None, Some(n("10.3.0.0/25"))).is_err());
    }
}
