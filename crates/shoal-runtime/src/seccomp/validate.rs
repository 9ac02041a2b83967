//! Checks on `linux.seccomp` before anything is created, with errors that name the field.
//!
//! Unknown actions, operators, architectures and flags never get here: they fail to
//! deserialize, and `spec::load_bundle` reports the path of the bad field. What is left is
//! what the types allow but the kernel or this runtime cannot do.

use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};

use super::compile;
use crate::error::{Error, Result};

pub fn validate(path: &Path, seccomp: &LinuxSeccomp) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid_spec(path, format!("linux.seccomp.{msg}")));
    if seccomp.listener_path().is_some() {
        return Err(Error::Unsupported(
            "linux.seccomp.listenerPath: seccomp agents (SCMP_ACT_NOTIFY) are not supported by \
             shoal-runc: remove listenerPath and the SCMP_ACT_NOTIFY rules"
                .into(),
        ));
    }
    let notify = LinuxSeccompAction::ScmpActNotify;
    if seccomp.default_action() == notify {
        return Err(Error::Unsupported(
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY is not supported by shoal-runc".into(),
        ));
    }
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        if rule.action() == notify {
            return Err(Error::Unsupported(format!(
                "linux.seccomp.syscalls[{i}].action: SCMP_ACT_NOTIFY is not supported by shoal-runc"
            )));
        }
        if rule.names().is_empty() {
            return bad(format!(
                "syscalls[{i}].names is empty: list the syscalls the rule applies to"
            ));
        }
        if let Some(j) = rule.names().iter().position(|n| n.trim().is_empty()) {
            return bad(format!("syscalls[{i}].names[{j}] is an empty name"));
        }
        if let Some(v) = rule.errno_ret().filter(|v| *v > u32::from(u16::MAX)) {
            return bad(format!(
                "syscalls[{i}].errnoRet {v} is out of range (0-65535)"
            ));
        }
        for (j, arg) in rule.args().iter().flatten().enumerate() {
            if arg.index() > 5 {
                return bad(format!(
                    "syscalls[{i}].args[{j}].index {} is out of range: syscalls have arguments 0-5",
                    arg.index()
                ));
            }
        }
    }
    if let Some(v) = seccomp
        .default_errno_ret()
        .filter(|v| *v > u32::from(u16::MAX))
    {
        return bad(format!("defaultErrnoRet {v} is out of range (0-65535)"));
    }
    // Whatever libseccomp or the kernel's feature checks refuse, refuse it now.
    let program = compile::compile(seccomp).map_err(|e| match e {
        Error::Unsupported(_) => e,
        e => Error::invalid_spec(path, format!("linux.seccomp: {e}")),
    })?;
    if !program.unknown_syscalls().is_empty() {
        tracing::debug!(
            unknown = ?program.unknown_syscalls(),
            "seccomp: rules for syscalls libseccomp does not know are skipped"
        );
    }
    Ok(())
}
