//! Network namespaces for tests: running code inside one, and a "remote host" wired to a
//! daemon's namespace by a veth pair.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::unique_name;

/// Run `f` on a thread inside the network namespace at `ns` (a pinned file or
/// `/proc/<pid>/ns/net`).
pub fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    shoal_net::netns::run_in(ns, move || Ok(f())).expect("enter the network namespace")
}

/// Another machine on the daemon host's LAN: its own namespace, linked to the daemon's by a
/// veth pair; the daemon's side is 192.0.2.1/24 (the host's "public" address), the
/// remote's 192.0.2.2/24. Removed on drop.
pub struct Remote {
    pub ns: PathBuf,
    pub host_ip: &'static str,
    pub ip: &'static str,
}

fn ip_in(ns: &Path, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Remote {
    /// Wire a new namespace (pinned under `dir`) to the namespace `host_ns`.
    pub fn new(dir: &Path, host_ns: &Path) -> Remote {
        let ns = dir.join(unique_name("remote"));
        shoal_net::netns::create(&ns).expect("create the remote namespace");
        let link = unique_name("vr");
        let link = &link[..link.len().min(15)];
        let peer = format!("{}p", &link[..link.len().min(14)]);
        ip_in(
            host_ns,
            &[
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &ns.display().to_string(),
            ],
        );
        ip_in(host_ns, &["addr", "add", "192.0.2.1/24", "dev", link]);
        ip_in(host_ns, &["link", "set", link, "up"]);
        ip_in(&ns, &["addr", "add", "192.0.2.2/24", "dev", &peer]);
        ip_in(&ns, &["link", "set", &peer, "up"]);
        ip_in(&ns, &["link", "set", "lo", "up"]);
        Remote {
            ns,
            host_ip: "192.0.2.1",
            ip: "192.0.2.2",
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Its end of the veth pair goes with the namespace, and the other end with it.
        let _ = shoal_net::netns::remove(&self.ns);
    }
}

/// Put the daemons' namespaces on one LAN: a bridge in the first daemon's namespace, the
/// others wired to it by veth pairs, addresses 198.51.100.1, .2, … in order. Returns the
/// addresses. Everything goes with the daemons' namespaces.
pub fn lan(namespaces: &[&Path]) -> Vec<String> {
    let hub = namespaces[0];
    ip_in(hub, &["link", "add", "lan0", "type", "bridge"]);
    ip_in(hub, &["addr", "add", "198.51.100.1/24", "dev", "lan0"]);
    ip_in(hub, &["link", "set", "lan0", "up"]);
    let mut ips = vec!["198.51.100.1".to_string()];
    for (i, ns) in namespaces.iter().enumerate().skip(1) {
        let ip = format!("198.51.100.{}", i + 1);
        let port = format!("lanp{i}");
        ip_in(
            hub,
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "lan0",
                "netns",
                &ns.display().to_string(),
            ],
        );
        ip_in(hub, &["link", "set", &port, "master", "lan0"]);
        ip_in(hub, &["link", "set", &port, "up"]);
        ip_in(ns, &["addr", "add", &format!("{ip}/24"), "dev", "lan0"]);
        ip_in(ns, &["link", "set", "lan0", "up"]);
        ips.push(ip);
    }
    ips
}
