//! Device access rules for a container's cgroup: the spec's `linux.resources.devices` plus
//! the nodes every container needs, as one list both cgroup versions apply (v1 by writing
//! `devices.allow`/`devices.deny`, v2 by compiling it to an eBPF program).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// Access bits, as the kernel's BPF_DEVCG_ACC_* values.
pub const MKNOD: u8 = 1;
pub const READ: u8 = 2;
pub const WRITE: u8 = 4;
pub const ALL_ACCESS: u8 = MKNOD | READ | WRITE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Block,
    Char,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: Kind,
    /// `None` matches any number.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

impl DeviceRule {
    const fn char(major: u32, minor: Option<u32>, access: u8) -> Self {
        DeviceRule {
            allow: true,
            kind: Kind::Char,
            major: Some(major),
            minor,
            access,
        }
    }

    pub fn from_spec(r: &LinuxDeviceCgroup) -> Result<Self> {
        let kind = match r.typ() {
            None | Some(LinuxDeviceType::A) => Kind::All,
            Some(LinuxDeviceType::B) => Kind::Block,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Kind::Char,
            Some(LinuxDeviceType::P) => {
                return Err(Error::InvalidArgument(
                    "device cgroup rules cannot name fifos (type p)".into(),
                ))
            }
        };
        let num = |n: Option<i64>| -> Result<Option<u32>> {
            match n {
                None | Some(-1) => Ok(None),
                Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                    Error::InvalidArgument(format!("device number {v} is out of range"))
                }),
            }
        };
        let mut access = 0;
        for c in r.access().as_deref().unwrap_or("rwm").chars() {
            access |= match c {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "device access {other:?}: use r, w and m"
                    )))
                }
            };
        }
        Ok(DeviceRule {
            allow: r.allow(),
            kind,
            major: num(r.major())?,
            minor: num(r.minor())?,
            access,
        })
    }

    /// Matches every device and every access: decides everything before it.
    pub fn is_wildcard(&self) -> bool {
        self.kind == Kind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ALL_ACCESS
    }

    /// The v1 `devices.allow`/`devices.deny` line, e.g. `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            Kind::All => "a",
            Kind::Block => "b",
            Kind::Char => "c",
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |v| v.to_string());
        let mut access = String::new();
        for (bit, c) in [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        format!("{kind} {}:{} {access}", num(self.major), num(self.minor))
    }
}

/// Nodes every container may create (any char/block node: access still needs a rule) and
/// use: null, zero, full, random, urandom, tty, console, ptmx, the pty slaves — as runc.
pub const DEFAULT_ALLOWED: &[DeviceRule] = &[
    DeviceRule {
        allow: true,
        kind: Kind::Char,
        major: None,
        minor: None,
        access: MKNOD,
    },
    DeviceRule {
        allow: true,
        kind: Kind::Block,
        major: None,
        minor: None,
        access: MKNOD,
    },
    DeviceRule::char(1, Some(3), ALL_ACCESS),
    DeviceRule::char(1, Some(5), ALL_ACCESS),
    DeviceRule::char(1, Some(7), ALL_ACCESS),
    DeviceRule::char(1, Some(8), ALL_ACCESS),
    DeviceRule::char(1, Some(9), ALL_ACCESS),
    DeviceRule::char(5, Some(0), ALL_ACCESS),
    DeviceRule::char(5, Some(1), ALL_ACCESS),
    DeviceRule::char(5, Some(2), ALL_ACCESS),
    DeviceRule::char(136, None, ALL_ACCESS),
];

/// The spec's rules followed by the defaults; later rules win.
pub fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut rules = spec
        .iter()
        .map(DeviceRule::from_spec)
        .collect::<Result<Vec<_>>>()?;
    rules.extend_from_slice(DEFAULT_ALLOWED);
    Ok(rules)
}

/// What the rules decide for one access (used to test the eBPF program's logic).
pub fn decide(rules: &[DeviceRule], kind: Kind, major: u32, minor: u32, access: u8) -> bool {
    for r in rules.iter().rev() {
        let kind_ok = r.kind == Kind::All || r.kind == kind;
        let num_ok = r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor);
        if kind_ok && num_ok && access & !r.access == 0 {
            return r.allow;
        }
        if r.is_wildcard() {
            return r.allow;
        }
    }
    // A cgroup without rules allows everything (the v1 default).
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny_all() -> DeviceRule {
        DeviceRule {
            allow: false,
            kind: Kind::All,
            major: None,
            minor: None,
            access: ALL_ACCESS,
        }
    }

    #[test]
    fn v1_lines() {
        assert_eq!(DEFAULT_ALLOWED[0].v1_line(), "c *:* m");
        assert_eq!(DEFAULT_ALLOWED[2].v1_line(), "c 1:3 rwm");
        assert_eq!(deny_all().v1_line(), "a *:* rwm");
    }

    #[test]
    fn later_rules_win_and_access_must_be_covered() {
        let mut rules = vec![deny_all()];
        rules.extend_from_slice(DEFAULT_ALLOWED);
        assert!(decide(&rules, Kind::Char, 1, 3, READ | WRITE));
        assert!(
            decide(&rules, Kind::Block, 8, 0, MKNOD),
            "mknod of any node is allowed"
        );
        assert!(
            !decide(&rules, Kind::Block, 8, 0, READ),
            "but not using a disk"
        );
        assert!(!decide(&rules, Kind::Char, 10, 200, READ));
        assert!(decide(&rules, Kind::Char, 136, 4, READ | WRITE));
        assert!(decide(&[], Kind::Block, 8, 0, READ), "no rules: allow");
    }
}
