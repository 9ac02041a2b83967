//! resolv.conf: the host's, and the one each container gets.

use std::net::IpAddr;

/// The parts of a resolv.conf that matter to containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// docker's fallback when the host has no usable resolver for a container.
pub const FALLBACK: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(std::net::Ipv4Addr::new(8, 8, 4, 4)),
];

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A scoped IPv6 address (fe80::1%eth0) is of no use in a container.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        rc.nameservers.push(ip);
                    }
                }
                // The last search/domain line wins, as in glibc.
                Some("search") | Some("domain") => {
                    rc.search = words.map(str::to_string).collect();
                }
                Some("options") => rc.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        rc
    }

    /// The host's /etc/resolv.conf (empty when unreadable).
    pub fn host() -> ResolvConf {
        ResolvConf::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    }

    /// What a container outside the embedded DNS can use: the host's resolvers without
    /// loopback ones (they would be the container's own loopback); systemd-resolved's real
    /// upstreams when the host only has its stub; docker's public fallback when nothing is
    /// left.
    pub fn for_container(host: &ResolvConf) -> ResolvConf {
        let usable = |rc: &ResolvConf| -> Vec<IpAddr> {
            rc.nameservers
                .iter()
                .copied()
                .filter(|ip| !ip.is_loopback())
                .collect()
        };
        let mut out = host.clone();
        out.nameservers = usable(host);
        if out.nameservers.is_empty() {
            let resolved = ResolvConf::parse(
                &std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default(),
            );
            out.nameservers = usable(&resolved);
        }
        if out.nameservers.is_empty() {
            out.nameservers = FALLBACK.to_vec();
        }
        out
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for ns in &self.nameservers {
            s.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_filters() {
        let host = ResolvConf::parse(
            "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.1 # lan\nsearch a.example b.example\noptions edns0 trust-ad\n",
        );
        assert_eq!(host.nameservers.len(), 2);
        assert_eq!(host.search, vec!["a.example", "b.example"]);
        let c = ResolvConf::for_container(&host);
        assert_eq!(c.nameservers, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.render(),
            "nameserver 10.0.0.1\nsearch a.example b.example\noptions edns0 trust-ad\n"
        );
    }
}
