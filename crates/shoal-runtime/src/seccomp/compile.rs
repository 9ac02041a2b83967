//! From an OCI `linux.seccomp` to a BPF [`Program`], with libseccomp.
//!
//! The conversion follows runc's, so a profile behaves the same under both runtimes:
//!
//! * `SCMP_ACT_KILL` is the historical name of `SCMP_ACT_KILL_THREAD`;
//!   `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without `errnoRet` use EPERM.
//! * A syscall name libseccomp does not know is skipped, so one profile serves kernels
//!   and libseccomp versions old and new; names that exist only on some of the filter's
//!   architectures are applied where they exist.
//! * A rule whose action equals the default action is skipped (libseccomp refuses it, and
//!   it changes nothing).
//! * Conditions on different arguments are ANDed in one rule. Several conditions on the
//!   same argument cannot be ANDed by libseccomp; each becomes a rule of its own (ORed).
//! * For `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the value compared with.
//! * no_new_privs is never set by the filter: the runtime sets it only when
//!   `process.noNewPrivileges` asks for it.

use std::io;

use libseccomp::error::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator as Op,
};

use super::program::Program;
use crate::error::{Error, Result};

/// Compile `seccomp` for this machine. The profile should have passed
/// [`super::validate`]; what it would have refused is refused here too.
///
/// The result is remembered in this process (the container's processes are forked from the
/// runtime after it validated the profile, so they find it there) and in an on-disk cache for
/// the next runtime invocation.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Program> {
    compile_with(seccomp, true)
}

/// For the container's own processes, after pivot_root: never touch the (host) disk cache.
pub(crate) fn compile_in_container(seccomp: &LinuxSeccomp) -> Result<Program> {
    compile_with(seccomp, false)
}

fn compile_with(seccomp: &LinuxSeccomp, disk: bool) -> Result<Program> {
    use std::sync::Mutex;
    static MEMO: Mutex<Option<(String, Program)>> = Mutex::new(None);
    let profile = serde_json::to_vec(seccomp).map_err(|e| Error::Init(format!("seccomp: {e}")))?;
    let key = super::cache::key(&profile);
    if let Some((k, p)) = MEMO.lock().expect("seccomp memo").as_ref() {
        if *k == key {
            return Ok(p.clone());
        }
    }
    let cached = if disk { super::cache::load(&key) } else { None };
    let program = match cached {
        Some(p) => p,
        None => {
            let p = compile_uncached(seccomp)?;
            if disk {
                super::cache::store(&key, &p);
            }
            p
        }
    };
    *MEMO.lock().expect("seccomp memo") = Some((key, program.clone()));
    Ok(program)
}

fn compile_uncached(seccomp: &LinuxSeccomp) -> Result<Program> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(scmp("create a filter"))?;
    ctx.set_ctl_nnp(false)
        .map_err(scmp("leave no_new_privs alone"))?;
    for &arch in seccomp.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(arch))
            .map_err(scmp(format!("add architecture {arch}")))?;
    }
    let mut flags: libc::c_ulong = 0;
    for flag in seccomp.flags().iter().flatten() {
        // Setting the attribute makes libseccomp check that the kernel supports the flag.
        let set = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC;
                ctx.set_ctl_tsync(true)
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                flags |= libc::SECCOMP_FILTER_FLAG_LOG;
                ctx.set_ctl_log(true)
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
                ctx.set_ctl_ssb(true)
            }
        };
        set.map_err(scmp(format!(
            "flag {flag} (is it supported by this kernel?)"
        )))?;
    }
    let mut unknown = Vec::new();
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let groups = condition_groups(rule.args().as_deref().unwrap_or_default())?;
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                continue;
            };
            for conds in &groups {
                ctx.add_rule_conditional(act, nr, conds)
                    .map_err(|e| scmp(format!("add a rule for {name}"))(e))?;
            }
        }
    }
    Program::export(&ctx, flags, unknown)
}

/// The conditions of one rule, as the libseccomp rules to add: one rule with all of them,
/// or one rule per condition when an argument is compared more than once.
fn condition_groups(args: &[LinuxSeccompArg]) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let conds: Vec<ScmpArgCompare> = args.iter().map(condition).collect::<Result<_>>()?;
    let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() == args.len() {
        Ok(vec![conds])
    } else {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    }
}

fn condition(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "seccomp: argument index {} is out of range (0-5)",
                arg.index()
            ))
        })?;
    let (op, datum) = match arg.op() {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        Op::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

/// The libseccomp action for an OCI action and its `errnoRet`.
pub(super) fn action(act: Act, errno_ret: Option<u32>) -> Result<ScmpAction> {
    let ret = |what: &str| -> Result<u16> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(v) => u16::try_from(v).map_err(|_| {
                Error::InvalidArgument(format!(
                    "seccomp: errnoRet {v} of {what} does not fit in 16 bits"
                ))
            }),
        }
    };
    Ok(match act {
        Act::ScmpActKill | Act::ScmpActKillThread => ScmpAction::KillThread,
        Act::ScmpActKillProcess => ScmpAction::KillProcess,
        Act::ScmpActTrap => ScmpAction::Trap,
        Act::ScmpActErrno => ScmpAction::Errno(i32::from(ret("SCMP_ACT_ERRNO")?)),
        Act::ScmpActTrace => ScmpAction::Trace(ret("SCMP_ACT_TRACE")?),
        Act::ScmpActLog => ScmpAction::Log,
        Act::ScmpActAllow => ScmpAction::Allow,
        Act::ScmpActNotify => {
            return Err(Error::Unsupported(
                "linux.seccomp: SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), \
                 which shoal-runc does not support"
                    .into(),
            ))
        }
    })
}

pub(super) fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
    }
}

/// A libseccomp error as [`Error::Io`], keeping it as the source.
fn scmp(what: impl Into<String>) -> impl FnOnce(SeccompError) -> Error {
    let what = what.into();
    move |e| Error::Io {
        context: format!("seccomp: {what}"),
        source: io::Error::other(e),
    }
}
