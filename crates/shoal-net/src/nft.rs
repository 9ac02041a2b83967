//! nftables: outbound NAT, published ports, isolation between networks, in one table that
//! shoal owns (`ip shoal`), replaced as a whole in one atomic transaction whenever what it
//! should hold changes. A whole-table replacement makes every apply a reconciliation: rules
//! left by a crash vanish, rules of live containers come back.
//!
//! Rules are typed documents of the `nftables` crate (nft's JSON schema), handed to
//! `nft -j -f -` — no rule text is ever built from strings. We use nft's JSON front end
//! rather than linking libnftnl so shoal stays Apache-2.0 (the netavark approach).
//!
//! On a host where iptables (the nf_tables backend, as docker uses it) sets the FORWARD
//! policy to DROP, our own table cannot override that verdict: [`sync_forward_accepts`] puts
//! plain, iptables-compatible accept rules for our bridges into `ip filter`'s DOCKER-USER
//! chain (or FORWARD), tagged with a comment so we find and remove exactly ours.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use nftables::expr::{
    Expression as E, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression as N, Payload,
    PayloadField, Prefix, SetItem, CT,
};
use nftables::schema::{Chain, NfCmd, NfListObject as O, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement as S, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::{Error, Result};
use crate::ports::Protocol;

/// What a bridge network needs from the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNet {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The bridge's own address in the subnet.
    pub gateway: Ipv4Addr,
    /// No traffic in or out of the network, only within it.
    pub internal: bool,
}

/// One published port: traffic to `host_ip:host_port` (any local address when `None`) goes
/// to `ip:port` in a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortForward {
    pub proto: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Everything the table should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub networks: Vec<BridgeNet>,
    pub ports: Vec<PortForward>,
}

/// The firewall of one daemon: its table name (one per daemon on a host).
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
}

/// Comment prefix on the rules we put in other software's chains.
const TAG: &str = "shoal";

impl Firewall {
    pub fn new(table: impl Into<String>) -> Firewall {
        Firewall {
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Replace our table with exactly `rs`, atomically. Blocking (runs nft).
    pub fn apply(&self, rs: &Ruleset) -> Result<()> {
        let doc = self.document(rs);
        run_nft(&doc, &[]).map(drop).map_err(|m| Error::Nftables {
            context: "apply shoal's nftables rules".into(),
            message: m,
        })
    }

    /// Delete our table (missing is fine). Blocking.
    pub fn remove(&self) -> Result<()> {
        let t = || {
            O::Table(Table {
                family: NfFamily::IP,
                name: Cow::Owned(self.table.clone()),
                handle: None,
            })
        };
        // Adding first makes the delete succeed when the table is absent.
        let doc = Nftables {
            objects: vec![
                NfObject::CmdObject(NfCmd::Add(t())),
                NfObject::CmdObject(NfCmd::Delete(t())),
            ]
            .into(),
        };
        run_nft(&doc, &[]).map(drop).map_err(|m| Error::Nftables {
            context: format!("delete nftables table ip {}", self.table),
            message: m,
        })
    }

    fn document(&self, rs: &Ruleset) -> Nftables<'static> {
        let mut cmds: Vec<NfCmd<'static>> = Vec::new();
        let table = O::Table(Table {
            family: NfFamily::IP,
            name: Cow::Owned(self.table.clone()),
            handle: None,
        });
        // add + delete + add: replaces the table whether or not it existed, in one
        // transaction, so packets never see a half-made ruleset.
        cmds.push(NfCmd::Add(table.clone()));
        cmds.push(NfCmd::Delete(table.clone()));
        cmds.push(NfCmd::Add(table));
        let base = |name: &'static str, ty, hook, prio| {
            NfCmd::Add(O::Chain(Chain {
                family: NfFamily::IP,
                table: Cow::Owned(self.table.clone()),
                name: name.into(),
                _type: Some(ty),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..Default::default()
            }))
        };
        cmds.push(base(
            "prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            -100,
        ));
        cmds.push(base("output", NfChainType::NAT, NfHook::Output, -100));
        cmds.push(base(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
        ));
        cmds.push(base("forward", NfChainType::Filter, NfHook::Forward, 0));
        // Raw priority: before connection tracking looks at the packet.
        cmds.push(base("raw", NfChainType::Filter, NfHook::Prerouting, -300));
        cmds.push(NfCmd::Add(O::Chain(Chain {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: "publish".into(),
            ..Default::default()
        })));
        let rule = |chain: &'static str, expr: Vec<S<'static>>| {
            NfCmd::Add(O::Rule(Rule {
                family: NfFamily::IP,
                table: Cow::Owned(self.table.clone()),
                chain: chain.into(),
                expr: expr.into(),
                ..Default::default()
            }))
        };

        // Published ports: anything addressed to this host (from outside, from the host
        // itself including 127.0.0.1, from containers) on a published port.
        for chain in ["prerouting", "output"] {
            cmds.push(rule(
                chain,
                vec![fib_daddr_local(), S::Jump(jump("publish"))],
            ));
        }
        let mut ports = rs.ports.clone();
        ports.sort();
        for p in &ports {
            let mut expr = Vec::new();
            if let Some(h) = p.host_ip {
                expr.push(matches(payload("ip", "daddr"), ip(h)));
            }
            expr.push(matches(
                payload(p.proto.as_str(), "dport"),
                E::Number(p.host_port.into()),
            ));
            expr.push(S::DNAT(Some(NAT {
                addr: Some(ip(p.ip)),
                family: Some(nftables::stmt::NATFamily::IP),
                port: Some(E::Number(p.port.into())),
                flags: None,
            })));
            cmds.push(rule("publish", expr));
        }

        let bridges: Vec<&str> = rs.networks.iter().map(|n| n.bridge.as_str()).collect();
        for n in &rs.networks {
            let br = || s(&n.bridge);
            let subnet = || prefix(n.subnet);
            if !n.internal {
                // Outbound NAT.
                cmds.push(rule(
                    "postrouting",
                    vec![
                        matches(payload("ip", "saddr"), subnet()),
                        not_matches(meta(MetaKey::Oifname), br()),
                        S::Masquerade(None),
                    ],
                ));
            }
            // Hairpin: a container reaching a published port of its own network through
            // the host must see replies come back through the host.
            cmds.push(rule(
                "postrouting",
                vec![
                    matches(meta(MetaKey::Oifname), br()),
                    has_flag(ct("status"), "dnat"),
                    matches(payload("ip", "saddr"), subnet()),
                    S::Masquerade(None),
                ],
            ));
            // The host's own 127.0.0.1 to a published port (route_localnet is on).
            cmds.push(rule(
                "postrouting",
                vec![
                    matches(meta(MetaKey::Oifname), br()),
                    matches(
                        payload("ip", "saddr"),
                        prefix("127.0.0.0/8".parse().expect("valid")),
                    ),
                    S::Masquerade(None),
                ],
            ));
        }

        // Container to container on one network needs no NAT and no state: with
        // br_netfilter (docker loads it) every bridged packet would otherwise go through
        // connection tracking, a fifth of the bridge's throughput. Traffic to the gateway
        // stays tracked: hairpin replies to a published port come back to it and must be
        // un-NATed.
        for n in &rs.networks {
            cmds.push(rule(
                "raw",
                vec![
                    matches(meta(MetaKey::Iifname), s(&n.bridge)),
                    matches(payload("ip", "saddr"), prefix(n.subnet)),
                    matches(payload("ip", "daddr"), prefix(n.subnet)),
                    not_matches(payload("ip", "daddr"), ip(n.gateway)),
                    S::Notrack,
                ],
            ));
        }

        if !bridges.is_empty() {
            let all = || set_of(&bridges);
            cmds.push(rule(
                "forward",
                vec![
                    matches(ct("state"), E::List(vec![s("established"), s("related")])),
                    S::Accept(None),
                ],
            ));
            // Published ports are reachable from everywhere, other networks included.
            cmds.push(rule(
                "forward",
                vec![
                    matches(meta(MetaKey::Oifname), all()),
                    has_flag(ct("status"), "dnat"),
                    S::Accept(None),
                ],
            ));
            for n in &rs.networks {
                cmds.push(rule(
                    "forward",
                    vec![
                        matches(meta(MetaKey::Iifname), s(&n.bridge)),
                        matches(meta(MetaKey::Oifname), s(&n.bridge)),
                        S::Accept(None),
                    ],
                ));
            }
            // Isolation: no network talks to another.
            cmds.push(rule(
                "forward",
                vec![
                    matches(meta(MetaKey::Iifname), all()),
                    matches(meta(MetaKey::Oifname), all()),
                    S::Drop(None),
                ],
            ));
            for n in rs.networks.iter().filter(|n| n.internal) {
                for key in [MetaKey::Iifname, MetaKey::Oifname] {
                    cmds.push(rule(
                        "forward",
                        vec![matches(meta(key), s(&n.bridge)), S::Drop(None)],
                    ));
                }
            }
            // Nothing from outside reaches a container unless it was published.
            cmds.push(rule(
                "forward",
                vec![matches(meta(MetaKey::Oifname), all()), S::Drop(None)],
            ));
        }
        Nftables {
            objects: cmds.into_iter().map(NfObject::CmdObject).collect(),
        }
    }
}

/// Where bridged traffic must be accepted besides our table, and what we did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardHook {
    /// No `ip filter` table: nothing else filters forwarded traffic.
    None,
    /// Our accept rules are at the top of this chain of `ip filter`.
    Chain(String),
}

/// Make sure `ip filter` (iptables-nft's table, where docker puts FORWARD DROP) accepts
/// traffic of exactly these bridges, using only rules iptables can display and delete.
/// Stale rules of ours (bridges no longer in the list) are removed. Blocking.
pub fn sync_forward_accepts(bridges: &[String]) -> Result<ForwardHook> {
    let listed = match run_nft_args(&["-j", "-a", "list", "table", "ip", "filter"]) {
        Ok(out) => out,
        // No such table: nothing to do.
        Err(m) if m.contains("No such file or directory") => return Ok(ForwardHook::None),
        Err(m) => {
            return Err(Error::Nftables {
                context: "read the iptables filter table".into(),
                message: m,
            })
        }
    };
    let doc: Nftables<'static> = serde_json::from_str(&listed).map_err(|e| Error::Nftables {
        context: "read the iptables filter table".into(),
        message: e.to_string(),
    })?;
    let mut chains = HashSet::new();
    let mut ours: Vec<(String, u32, String)> = Vec::new();
    for o in doc.objects.iter() {
        match o {
            NfObject::ListObject(O::Chain(c)) => {
                chains.insert(c.name.to_string());
            }
            NfObject::ListObject(O::Rule(r)) => {
                if let (Some(c), Some(h)) = (&r.comment, r.handle) {
                    if c.starts_with(TAG) {
                        ours.push((r.chain.to_string(), h, c.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    let chain = if chains.contains("DOCKER-USER") {
        "DOCKER-USER"
    } else if chains.contains("FORWARD") {
        "FORWARD"
    } else {
        return Ok(ForwardHook::None);
    };
    let want: BTreeSet<String> = bridges
        .iter()
        .flat_map(|b| [format!("{TAG}:{b}:in"), format!("{TAG}:{b}:out")])
        .collect();
    let mut cmds = Vec::new();
    let mut have = BTreeSet::new();
    for (c, handle, comment) in &ours {
        if c == chain && want.contains(comment) && !have.contains(comment) {
            have.insert(comment.clone());
            continue;
        }
        cmds.push(NfCmd::Delete(O::Rule(Rule {
            family: NfFamily::IP,
            table: "filter".into(),
            chain: Cow::Owned(c.clone()),
            handle: Some(*handle),
            ..Default::default()
        })));
    }
    for comment in want.difference(&have) {
        let mut parts = comment.splitn(3, ':');
        let (_, bridge, dir) = (parts.next(), parts.next().unwrap_or(""), parts.next());
        let key = if dir == Some("in") {
            MetaKey::Iifname
        } else {
            MetaKey::Oifname
        };
        cmds.push(NfCmd::Insert(O::Rule(Rule {
            family: NfFamily::IP,
            table: "filter".into(),
            chain: chain.into(),
            expr: vec![matches(meta(key), s(bridge)), S::Accept(None)].into(),
            comment: Some(Cow::Owned(comment.clone())),
            ..Default::default()
        })));
    }
    if !cmds.is_empty() {
        let doc = Nftables {
            objects: cmds.into_iter().map(NfObject::CmdObject).collect(),
        };
        run_nft(&doc, &[]).map_err(|m| Error::Nftables {
            context: format!("accept shoal's bridges in ip filter {chain}"),
            message: m,
        })?;
    }
    Ok(ForwardHook::Chain(chain.into()))
}

/// Is iptables-legacy filtering this host? nftables cannot add to its chains.
pub fn legacy_iptables_active() -> bool {
    std::fs::read_to_string("/proc/net/ip_tables_names")
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
}

/// The nft binary: the usual places, then PATH.
fn nft_binary() -> &'static str {
    static FOUND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nft")
    })
}

/// Feed one JSON document to `nft -j -f -` (one kernel transaction). The error is nft's own
/// message.
fn run_nft(doc: &Nftables<'_>, extra: &[&str]) -> std::result::Result<String, String> {
    let json = to_json(doc)?;
    let mut child = Command::new(nft_binary())
        .args(extra)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} (install nftables): {e}", nft_binary()))?;
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(json.as_bytes());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(one_line(&String::from_utf8_lossy(&out.stderr)));
    }
    written.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The document as nft's JSON. The crate writes argument-less statements (`notrack`) as bare
/// strings, which nft refuses; nft wants `{"notrack": null}`.
fn to_json(doc: &Nftables<'_>) -> std::result::Result<String, String> {
    fn fix(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Array(exprs)) = m.get_mut("expr") {
                    for e in exprs.iter_mut() {
                        if let serde_json::Value::String(name) = e {
                            *e = serde_json::json!({ name.as_str(): null });
                        }
                    }
                }
                m.values_mut().for_each(fix);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(fix),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    fix(&mut v);
    Ok(v.to_string())
}

fn run_nft_args(args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new(nft_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} (install nftables): {e}", nft_binary()))?;
    if !out.status.success() {
        return Err(one_line(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// nft's error output, first meaningful line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("nft failed")
        .to_string()
}

fn s(v: &str) -> E<'static> {
    E::String(Cow::Owned(v.to_string()))
}

fn ip(a: Ipv4Addr) -> E<'static> {
    s(&a.to_string())
}

fn prefix(n: Ipv4Net) -> E<'static> {
    E::Named(N::Prefix(Prefix {
        addr: Box::new(ip(n.network())),
        len: n.prefix_len().into(),
    }))
}

fn set_of(items: &[&str]) -> E<'static> {
    if items.len() == 1 {
        return s(items[0]);
    }
    E::Named(N::Set(
        items.iter().map(|i| SetItem::Element(s(i))).collect(),
    ))
}

fn payload(proto: &str, field: &str) -> E<'static> {
    E::Named(N::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Owned(proto.to_string()),
        field: Cow::Owned(field.to_string()),
    })))
}

fn meta(key: MetaKey) -> E<'static> {
    E::Named(N::Meta(Meta { key }))
}

fn ct(key: &str) -> E<'static> {
    E::Named(N::CT(CT {
        key: Cow::Owned(key.to_string()),
        family: None,
        dir: None,
    }))
}

fn matches(left: E<'static>, right: E<'static>) -> S<'static> {
    let op = if matches!(right, E::List(_)) || matches!(right, E::Named(N::Set(_))) {
        Operator::IN
    } else {
        Operator::EQ
    };
    S::Match(Match { left, right, op })
}

/// A bit of a bitmask is set (`ct status dnat`): nft's `in` on a flag, not `==`, which
/// would compare the whole mask.
fn has_flag(left: E<'static>, flag: &str) -> S<'static> {
    S::Match(Match {
        left,
        right: s(flag),
        op: Operator::IN,
    })
}

fn not_matches(left: E<'static>, right: E<'static>) -> S<'static> {
    S::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

fn fib_daddr_local() -> S<'static> {
    S::Match(Match {
        left: E::Named(N::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([FibFlag::Daddr]),
        })),
        op: Operator::EQ,
        right: s("local"),
    })
}

fn jump(target: &str) -> nftables::stmt::JumpTarget<'static> {
    nftables::stmt::JumpTarget {
        target: Cow::Owned(target.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_nft_json() {
        let fw = Firewall::new("shoal-unit");
        let rs = Ruleset {
            networks: vec![
                BridgeNet {
                    bridge: "shoal0".into(),
                    subnet: "172.18.0.0/16".parse().unwrap(),
                    gateway: "172.18.0.1".parse().unwrap(),
                    internal: false,
                },
                BridgeNet {
                    bridge: "shoal-abc".into(),
                    subnet: "10.9.0.0/24".parse().unwrap(),
                    gateway: "10.9.0.1".parse().unwrap(),
                    internal: true,
                },
            ],
            ports: vec![PortForward {
                proto: Protocol::Udp,
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                ip: "172.18.0.2".parse().unwrap(),
                port: 53,
            }],
        };
        let json = to_json(&fw.document(&rs)).unwrap();
        for want in [
            r#""masquerade":null"#,
            r#""dnat":{"addr":"172.18.0.2","family":"ip","port":53}"#,
            r#""fib":{"flags":["daddr"],"result":"type"}"#,
            r#""set":["shoal0","shoal-abc"]"#,
            r#""notrack":null"#,
        ] {
            assert!(json.contains(want), "{want} missing from {json}");
        }
    }
}
