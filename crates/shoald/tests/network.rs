//! Single-host networking: the default bridge, user networks with DNS and isolation,
//! none/host/container: modes, published ports from the host, from a remote host and from
//! other containers, docker's FORWARD DROP policy, and reconciliation after a daemon crash.
//! Every daemon runs in its own network namespace (the testkit's), which stands in for the
//! host; a `Remote` is another machine on the host's LAN.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{in_netns, wait_until, Daemon, Remote};

fn ip_on(d: &Daemon, container: &str, network: &str) -> String {
    d.inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Run a shell line in a running container; (succeeded, stdout+stderr).
fn exec(d: &Daemon, container: &str, script: &str) -> (bool, String) {
    let out = d.shoal(&["exec", container, "sh", "-c", script]);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A detached busybox httpd answering `body` on port 80.
fn web(d: &Daemon, name: &str, extra: &[&str], body: &str) {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    d.ok(&args);
}

/// wget from a network namespace (the daemon's "host" or a remote), via busybox.
fn wget_in(ns: &Path, url: &str) -> (bool, String) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "timeout", "5", "busybox", "wget", "-qO-", url])
        .output()
        .expect("run wget");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn container_netns(d: &Daemon, name: &str) -> PathBuf {
    let pid = d.inspect(name)["State"]["Pid"].as_i64().expect("pid");
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// A UDP echo server on `port` inside a namespace, answering until `count` datagrams came.
fn udp_echo(ns: &Path, port: u16, count: usize) -> std::thread::JoinHandle<()> {
    let ns = ns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp echo");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            for _ in 0..count {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    return;
                };
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from);
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("udp echo server up");
    h
}

/// Send one datagram from a namespace and wait for the answer.
fn udp_ask(ns: &Path, to: &str, msg: &str) -> Option<String> {
    let (to, msg) = (to.to_string(), msg.to_string());
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.send_to(msg.as_bytes(), &to).ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

fn links(d: &Daemon) -> Vec<String> {
    let (_, out) = d.host_run("ip", &["-o", "link", "show"]);
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

fn ruleset(d: &Daemon) -> String {
    d.host_run("nft", &["list", "ruleset"]).1
}

#[test]
fn default_bridge_gives_an_address_a_route_and_a_way_out() {
    let d = Daemon::with_busybox();
    let remote = Remote::new(&d.root, &d.netns());
    let out = d.ok(&[
        "run",
        "--rm",
        "--name",
        "b1",
        "busybox",
        "sh",
        "-c",
        &format!(
            "ip -o -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf; ping -c1 -W3 {}",
            remote.ip
        ),
    ]);
    let net: Value = serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).unwrap();
    let subnet = net[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let gw = net[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        net[0]["Options"]["com.docker.network.bridge.name"],
        "shoal0"
    );
    let prefix = subnet
        .rsplit_once('.')
        .unwrap()
        .0
        .rsplit_once('.')
        .unwrap()
        .0;
    assert!(
        out.contains(&format!("inet {prefix}.")),
        "address from {subnet}: {out}"
    );
    assert!(out.contains(&format!("default via {gw} dev eth0")), "{out}");
    assert!(
        out.contains("1 packets received"),
        "the container reaches a remote host through outbound NAT: {out}"
    );
    let resolv: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert!(!resolv.is_empty(), "{out}");
    assert!(
        resolv.iter().all(|l| !l.contains("127.")),
        "no loopback resolver on the default bridge: {out}"
    );
    assert!(
        !links(&d).iter().any(|l| l.starts_with("vsh")),
        "the veth went with the container: {:?}",
        links(&d)
    );
    assert_eq!(
        d.host_run("cat", &["/proc/sys/net/ipv4/ip_forward"])
            .1
            .trim(),
        "1",
        "forwarding was turned on for the bridge"
    );
}

#[test]
fn subnets_avoid_the_hosts_networks() {
    let d = Daemon::start();
    let (_, pre) = d.host_run("ip", &["-o", "-4", "addr", "show", "shoal0"]);
    assert!(
        pre.contains("inet 172.17.0.1/16"),
        "the default bridge: {pre}"
    );
    // A user network must skip the default bridge's subnet and anything routed on the host.
    for args in [
        &["link", "add", "lan0", "type", "bridge"][..],
        &["addr", "add", "172.18.5.1/24", "dev", "lan0"],
        &["link", "set", "lan0", "up"],
    ] {
        let (ok, out) = d.host_run("ip", args);
        assert!(ok, "ip {args:?}: {out}");
    }
    d.ok(&["network", "create", "n1"]);
    let n: Value = serde_json::from_str(&d.ok(&["network", "inspect", "n1"])).unwrap();
    let subnet = n[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !subnet.starts_with("172.17.") && !subnet.starts_with("172.18."),
        "{subnet} must not overlap 172.17/16 (default bridge) or 172.18.5/24 (the host)"
    );
    let (code, err) = d.fails(&["network", "create", "--subnet", &subnet, "n2"]);
    assert_eq!(code, 1);
    assert!(err.contains("overlaps network n1"), "{err}");
    let (_, err) = d.fails(&["network", "create", "--subnet", "10.1.0.5/24", "n3"]);
    assert!(err.contains("did you mean 10.1.0.0/24"), "{err}");
    let (_, err) = d.fails(&["network", "create", "n1"]);
    assert!(err.contains("already exists"), "{err}");
    let (_, err) = d.fails(&["network", "rm", "bridge"]);
    assert!(err.contains("predefined"), "{err}");
    assert!(
        !d.ok(&["network", "ls"]).contains("n2"),
        "a refused network leaves nothing behind"
    );
}

#[test]
fn user_networks_resolve_names_and_stay_apart() {
    let d = Daemon::with_busybox();
    d.ok(&["network", "create", "--subnet", "10.77.0.0/24", "front"]);
    d.ok(&["network", "create", "back"]);
    web(
        &d,
        "api",
        &["--network", "front", "--network-alias", "svc"],
        "api-here",
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "busybox",
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "back",
        "busybox",
        "sleep",
        "300",
    ]);
    let api_ip = ip_on(&d, "api", "front");
    assert!(api_ip.starts_with("10.77.0."), "{api_ip}");

    // By name and by alias, immediately.
    wait_until("api answers by name", Duration::from_secs(10), || {
        exec(&d, "client", "timeout 3 wget -qO- http://api/")
            .1
            .contains("api-here")
    });
    let (ok, out) = exec(
        &d,
        "client",
        "nslookup svc; timeout 3 wget -qO- http://svc/",
    );
    assert!(
        ok && out.contains(&api_ip) && out.contains("api-here"),
        "{out}"
    );
    let (_, resolv) = exec(&d, "client", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.77.0.1"), "{resolv}");
    assert!(resolv.contains("ndots:0"), "{resolv}");

    // Another network can neither resolve nor reach it.
    let (ok, out) = exec(&d, "other", "nslookup api");
    assert!(!ok || !out.contains(&api_ip), "{out}");
    let (ok, out) = exec(
        &d,
        "other",
        &format!("timeout 3 wget -qO- http://{api_ip}/"),
    );
    assert!(!ok, "networks are isolated: {out}");

    // inspect lists the members with their addresses.
    let n: Value = serde_json::from_str(&d.ok(&["network", "inspect", "front"])).unwrap();
    let members: Vec<String> = n[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            format!(
                "{} {}",
                c["Name"].as_str().unwrap(),
                c["IPv4Address"].as_str().unwrap()
            )
        })
        .collect();
    assert!(members.contains(&format!("api {api_ip}/24")), "{members:?}");
    assert_eq!(members.len(), 2, "{members:?}");

    // connect puts `other` on front too: now it resolves and reaches api; disconnect undoes it.
    d.ok(&["network", "connect", "--alias", "o2", "front", "other"]);
    let (ok, out) = exec(
        &d,
        "other",
        "timeout 3 wget -qO- http://api/; ip -o -4 addr",
    );
    assert!(ok && out.contains("api-here"), "{out}");
    assert!(out.contains("eth1"), "a second interface: {out}");
    let (ok, out) = exec(&d, "client", "nslookup o2");
    assert!(ok, "the alias given at connect resolves: {out}");
    d.ok(&["network", "disconnect", "front", "other"]);
    let (ok, out) = exec(&d, "other", "ip -o link show eth1");
    assert!(!ok, "the interface is gone: {out}");

    // A network in use cannot go; once empty, it can.
    let (_, err) = d.fails(&["network", "rm", "front"]);
    assert!(err.contains("in use by running container(s)"), "{err}");
    assert!(err.contains("api") && err.contains("client"), "{err}");

    // Stopping the container takes its name out of DNS at once.
    d.ok(&["stop", "-t", "0", "api"]);
    let (ok, out) = exec(&d, "client", "nslookup api");
    assert!(
        !ok || !out.contains(&api_ip),
        "a stopped container's name is gone: {out}"
    );
    d.ok(&["rm", "-f", "client", "api"]);
    d.ok(&["network", "rm", "front"]);
    assert!(!d.ok(&["network", "ls"]).contains("front"));
    d.ok(&["rm", "-f", "other"]);
    let pruned = d.ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("back"), "{pruned}");
}

#[test]
fn dns_forwards_other_names_and_never_hangs() {
    let d = Daemon::with_busybox();
    d.ok(&["network", "create", "nn"]);
    // An upstream that answers (our own echo won't do DNS): point --dns at a silent address.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "cc",
        "--network",
        "nn",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "busybox",
        "sleep",
        "300",
    ]);
    let (_, resolv) = exec(&d, "cc", "cat /etc/resolv.conf");
    assert!(resolv.contains("search corp.example"), "{resolv}");
    let started = std::time::Instant::now();
    let (ok, out) = exec(&d, "cc", "nslookup example.org");
    let took = started.elapsed();
    assert!(!ok, "an unreachable upstream fails: {out}");
    assert!(
        took < Duration::from_secs(12),
        "the answer (SERVFAIL) comes within the forwarding deadline, took {took:?}"
    );
    // Our own names still answer while upstreams are dead.
    let (ok, out) = exec(&d, "cc", "nslookup cc.");
    assert!(ok, "{out}");
}

#[test]
fn internal_networks_have_no_way_out() {
    let d = Daemon::with_busybox();
    let remote = Remote::new(&d.root, &d.netns());
    d.ok(&["network", "create", "--internal", "vault"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "v1",
        "--network",
        "vault",
        "busybox",
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "v2",
        "--network",
        "vault",
        "busybox",
        "sleep",
        "300",
    ]);
    let (_, routes) = exec(&d, "v1", "ip route");
    assert!(!routes.contains("default"), "{routes}");
    let (ok, _) = exec(&d, "v1", &format!("ping -c1 -W2 {}", remote.ip));
    assert!(!ok, "no route out of an internal network");
    let (ok, out) = exec(&d, "v1", "ping -c1 -W2 v2");
    assert!(ok, "members still reach each other: {out}");
    let (_, err) = d.fails(&[
        "run",
        "--rm",
        "--network",
        "vault",
        "-p",
        "8081:80",
        "busybox",
        "true",
    ]);
    assert!(err.contains("only on internal networks"), "{err}");
}

#[test]
fn none_host_and_container_modes() {
    let d = Daemon::with_busybox();
    let none = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate",
    ]);
    assert_eq!(none, "lo\nunknown\n", "none: only loopback, and it is up");

    let mut host_links = links(&d);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    let mut seen: Vec<String> = out.lines().map(str::to_string).collect();
    seen.sort();
    host_links.sort();
    assert_eq!(seen, host_links, "host: the host's interfaces");
    let hostname = d.ok(&["run", "--rm", "--network", "host", "busybox", "hostname"]);
    assert_eq!(
        hostname.trim(),
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "host network keeps the host name"
    );

    // container:<name> shares the other's interfaces, address, hosts and resolv.conf.
    web(&d, "main", &[], "shared");
    let ip = ip_on(&d, "main", "bridge");
    wait_until("main serves", Duration::from_secs(10), || {
        exec(&d, "main", "timeout 3 wget -qO- http://127.0.0.1/")
            .1
            .contains("shared")
    });
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "container:main",
        "busybox",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; timeout 3 wget -qO- http://127.0.0.1/; cat /etc/hostname",
    ]);
    assert!(out.contains(&ip), "{out}");
    assert!(out.contains("shared"), "the other's localhost: {out}");
    assert!(out.contains(
        &d.inspect("main")["Config"]["Hostname"]
            .as_str()
            .unwrap()
            .to_string()
    ));
    let (_, err) = d.fails(&[
        "run",
        "--rm",
        "--network",
        "container:main",
        "-p",
        "9000:80",
        "busybox",
        "true",
    ]);
    assert!(err.contains("conflicting options"), "{err}");
    d.ok(&["stop", "-t", "0", "main"]);
    let (_, err) = d.fails(&[
        "run",
        "--rm",
        "--network",
        "container:main",
        "busybox",
        "true",
    ]);
    assert!(err.contains("not running"), "{err}");
    let (_, err) = d.fails(&["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert!(err.contains("network nope not found"), "{err}");
    let (_, err) = d.fails(&["run", "--rm", "--ip", "172.30.0.9", "busybox", "true"]);
    assert!(err.contains("user-defined"), "{err}");
}

#[test]
fn published_ports_reach_the_container_from_everywhere() {
    let d = Daemon::with_busybox();
    let remote = Remote::new(&d.root, &d.netns());
    web(
        &d,
        "web",
        &["-p", "8080:80", "-p", "5353:53/udp", "--expose", "9999"],
        "hello-web",
    );
    let url = |host: &str| format!("http://{host}:8080/");
    wait_until(
        "the published port answers on 127.0.0.1",
        Duration::from_secs(10),
        || {
            wget_in(&d.netns(), &url("127.0.0.1"))
                .1
                .contains("hello-web")
        },
    );
    for (from, ns, host) in [
        ("the host, its own address", d.netns(), remote.host_ip),
        ("a remote host", remote.ns.clone(), remote.host_ip),
    ] {
        let (ok, out) = wget_in(&ns, &url(host));
        assert!(ok && out.contains("hello-web"), "from {from}: {out}");
    }
    // Another container, through the host's address; and the container itself (hairpin).
    d.ok(&["run", "-d", "--name", "peer", "busybox", "sleep", "300"]);
    let (ok, out) = exec(
        &d,
        "peer",
        &format!("timeout 3 wget -qO- {}", url(remote.host_ip)),
    );
    assert!(
        ok && out.contains("hello-web"),
        "from another container: {out}"
    );
    let (ok, out) = exec(
        &d,
        "web",
        &format!("timeout 3 wget -qO- {}", url(remote.host_ip)),
    );
    assert!(ok && out.contains("hello-web"), "hairpin to itself: {out}");

    // UDP, from the host and from the remote.
    let echo = udp_echo(&container_netns(&d, "web"), 53, 2);
    assert_eq!(
        udp_ask(&d.netns(), "127.0.0.1:5353", "a").as_deref(),
        Some("echo:a")
    );
    assert_eq!(
        udp_ask(&remote.ns, &format!("{}:5353", remote.host_ip), "b").as_deref(),
        Some("echo:b")
    );
    echo.join().unwrap();

    let ports = d.ok(&["port", "web"]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(ports.contains("53/udp -> 0.0.0.0:5353"), "{ports}");
    assert_eq!(d.ok(&["port", "web", "80"]).trim(), "0.0.0.0:8080");
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let ins = d.inspect("web");
    assert_eq!(
        ins["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(ins["NetworkSettings"]["Ports"]["9999/tcp"], Value::Null);

    // Conflicts are refused with the reason, and nothing is left half-made.
    let (_, err) = d.fails(&[
        "run", "-d", "--name", "dup", "-p", "8080:80", "busybox", "sleep", "30",
    ]);
    assert!(err.contains("8080") && err.contains("already"), "{err}");
    assert_eq!(d.inspect("dup")["State"]["Running"], false);
    assert!(
        d.inspect("dup")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // A port a host program holds.
    let holder = d
        .host_cmd("busybox", &["nc", "-l", "-p", "8090"])
        .spawn()
        .unwrap();
    let mut holder = scopeguard(holder);
    std::thread::sleep(Duration::from_millis(300));
    let (_, err) = d.fails(&[
        "run", "-d", "--name", "dup2", "-p", "8090:80", "busybox", "sleep", "30",
    ]);
    assert!(err.contains("8090"), "{err}");
    let _ = holder.0.kill();

    // Stopped: the port is free again and the rule is gone.
    d.ok(&["stop", "-t", "0", "web"]);
    let (ok, _) = wget_in(&d.netns(), &url("127.0.0.1"));
    assert!(!ok);
    assert!(!ruleset(&d).contains("dport 8080"), "{}", ruleset(&d));
    d.ok(&["start", "dup"]);
    assert_eq!(d.ok(&["port", "dup", "80"]).trim(), "0.0.0.0:8080");
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

#[test]
fn random_and_all_exposed_ports() {
    let d = Daemon::with_busybox();
    web(&d, "r1", &["-p", "80", "-p", "127.0.0.1::80"], "random");
    let ports = d.ok(&["port", "r1"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    let any = lines.iter().find(|l| l.contains("0.0.0.0:")).unwrap();
    let host_port: u16 = any.rsplit(':').next().unwrap().parse().unwrap();
    assert!((32768..=60999).contains(&host_port), "{ports}");
    assert!(lines.iter().any(|l| l.contains("127.0.0.1:")), "{ports}");
    wait_until("the random port answers", Duration::from_secs(10), || {
        wget_in(&d.netns(), &format!("http://127.0.0.1:{host_port}/"))
            .1
            .contains("random")
    });
    web(
        &d,
        "r2",
        &["-P", "--expose", "80", "--expose", "7000-7001/udp"],
        "all",
    );
    let ports = d.ok(&["port", "r2"]);
    assert_eq!(ports.lines().count(), 3, "{ports}");
    assert!(ports.contains("7001/udp -> 0.0.0.0:"), "{ports}");
    let (_, err) = d.fails(&["run", "--rm", "-p", "70000:80", "busybox", "true"]);
    assert!(err.contains("65535"), "{err}");
    let (_, err) = d.fails(&["run", "--rm", "-p", "80/sctp", "busybox", "true"]);
    assert!(err.contains("tcp or udp"), "{err}");
}

#[test]
fn works_beside_dockers_forward_drop_policy() {
    let mut d = Daemon::with_busybox();
    let remote = Remote::new(&d.root, &d.netns());
    // What docker leaves on a host: FORWARD policy DROP, a DOCKER-USER chain jumped to first.
    for args in [
        &["-N", "DOCKER-USER"][..],
        &["-A", "DOCKER-USER", "-j", "RETURN"],
        &["-I", "FORWARD", "-j", "DOCKER-USER"],
        &["-P", "FORWARD", "DROP"],
    ] {
        let (ok, out) = d.host_run("iptables", args);
        assert!(ok, "iptables {args:?}: {out}");
    }
    // shoald (re)starts on such a host.
    d.restart();
    d.ok(&["network", "create", "app"]);
    web(
        &d,
        "ww",
        &["--network", "app", "-p", "8088:80"],
        "through-drop",
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "cl",
        "--network",
        "app",
        "busybox",
        "sleep",
        "300",
    ]);
    wait_until(
        "c reaches w across the bridge",
        Duration::from_secs(10),
        || {
            exec(&d, "cl", "timeout 3 wget -qO- http://ww/")
                .1
                .contains("through-drop")
        },
    );
    let (ok, out) = wget_in(&remote.ns, &format!("http://{}:8088/", remote.host_ip));
    assert!(
        ok && out.contains("through-drop"),
        "published port from a remote: {out}"
    );
    let (ok, out) = exec(&d, "cl", &format!("ping -c1 -W2 {}", remote.ip));
    assert!(ok, "outbound from the network: {out}");
    // iptables still works on the chain, and shows our rules plainly.
    let (ok, rules) = d.host_run("iptables", &["-S", "DOCKER-USER"]);
    assert!(ok, "{rules}");
    assert!(
        rules.contains("-j ACCEPT") && rules.contains("shoal"),
        "{rules}"
    );
    let (ok, out) = d.host_run("iptables", &["-L", "-n"]);
    assert!(ok, "{out}");
    // The network goes: so do its accept rules.
    d.ok(&["rm", "-f", "ww", "cl"]);
    d.ok(&["network", "rm", "app"]);
    let (_, rules) = d.host_run("iptables", &["-S", "DOCKER-USER"]);
    let app_bridges = rules.lines().filter(|l| l.contains("shoal-")).count();
    assert_eq!(app_bridges, 0, "{rules}");
}

#[test]
fn crash_restart_reconciles_rules() {
    let mut d = Daemon::with_busybox();
    web(&d, "live", &["-p", "8181:80"], "still-here");
    d.ok(&[
        "run", "-d", "--name", "brief", "-p", "8282:80", "busybox", "sleep", "2",
    ]);
    let brief_veth = d.inspect("brief")["NetworkSettings"]["Networks"]["bridge"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!brief_veth.is_empty());
    d.kill9();
    // While shoald is down: one container exits, and someone leaves junk in our table.
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out) = d.host_run(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "shoal",
            "publish",
            "tcp",
            "dport",
            "9999",
            "dnat",
            "to",
            "10.9.9.9:80",
        ],
    );
    assert!(ok, "{out}");
    d.restart();
    let rules = ruleset(&d);
    assert!(
        rules.contains("dport 8181"),
        "live container's rule restored: {rules}"
    );
    assert!(
        !rules.contains("dport 8282"),
        "exited container's rule gone: {rules}"
    );
    assert!(!rules.contains("dport 9999"), "stale rule gone: {rules}");
    wait_until(
        "the live port still answers",
        Duration::from_secs(10),
        || {
            wget_in(&d.netns(), "http://127.0.0.1:8181/")
                .1
                .contains("still-here")
        },
    );
    let vs: Vec<String> = links(&d)
        .into_iter()
        .filter(|l| l.starts_with("vsh"))
        .collect();
    assert_eq!(
        vs.len(),
        1,
        "only the live container's veth remains: {vs:?}"
    );
    // The port is still held: a second container cannot take it.
    let (_, err) = d.fails(&["run", "-d", "-p", "8181:80", "busybox", "sleep", "5"]);
    assert!(err.contains("8181"), "{err}");
    // And the exited container starts again with its port.
    d.ok(&["start", "brief"]);
    assert_eq!(d.ok(&["port", "brief", "80"]).trim(), "0.0.0.0:8282");
}

#[test]
fn bad_network_input_is_refused_clearly() {
    let d = Daemon::with_busybox();
    for (args, want) in [
        (
            &["network", "create", "-d", "overlay", "x1"][..],
            "not supported",
        ),
        (&["network", "create", "a b"], "invalid network name"),
        (
            &["network", "create", "--subnet", "nope", "x2"],
            "invalid subnet",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.5.0.0/24",
                "--gateway",
                "10.6.0.1",
                "x3",
            ],
            "not a usable address",
        ),
        (
            &["network", "create", "--gateway", "10.6.0.1", "x4"],
            "need a --subnet",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.5.0.0/24",
                "--ip-range",
                "10.7.0.0/25",
                "x5",
            ],
            "not inside subnet",
        ),
        (
            &["network", "create", "-o", "foo=bar", "x6"],
            "unknown network option",
        ),
        (&["network", "rm", "nothere"], "not found"),
        (
            &["network", "connect", "nothere", "nobody"],
            "no such container",
        ),
        (
            &["run", "--rm", "--dns", "x.y", "busybox", "true"],
            "invalid --dns",
        ),
        (
            &["run", "--rm", "--add-host", "nocolon", "busybox", "true"],
            "--add-host",
        ),
    ] {
        let (code, err) = d.fails(args);
        assert_ne!(code, 0);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let ls = d.ok(&["network", "ls"]);
    assert_eq!(
        ls.lines().count(),
        4,
        "only the header and bridge/host/none: {ls}"
    );
    // --ip: inside the subnet, free.
    d.ok(&["network", "create", "--subnet", "10.5.0.0/24", "fixed"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "f1",
        "--network",
        "fixed",
        "--ip",
        "10.5.0.50",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(ip_on(&d, "f1", "fixed"), "10.5.0.50");
    let (_, err) = d.fails(&[
        "run",
        "-d",
        "--network",
        "fixed",
        "--ip",
        "10.5.0.50",
        "busybox",
        "sleep",
        "3",
    ]);
    assert!(err.contains("already in use"), "{err}");
    let (_, err) = d.fails(&[
        "run",
        "--rm",
        "--network",
        "fixed",
        "--ip",
        "10.6.0.5",
        "busybox",
        "true",
    ]);
    assert!(err.contains("not in network fixed"), "{err}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "fixed",
        "--add-host",
        "db:10.0.0.9",
        "--add-host",
        "gw:host-gateway",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    assert!(
        out.contains("10.0.0.9\tdb") && out.contains("10.5.0.1\tgw"),
        "{out}"
    );
}
