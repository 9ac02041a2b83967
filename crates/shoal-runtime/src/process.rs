//! Turning the spec's `process` into the running program: rlimits, identity (groups, gid,
//! uid), capabilities, no_new_privileges, umask, cwd, then execve. Shared by a container's
//! init and by `exec`.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability as OciCap, LinuxCapabilities, PosixRlimitType, Process,
};

use crate::error::{Context, Error, Result};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn apply_rlimits(process: &Process) -> Result<()> {
    for r in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(r.typ());
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass; resource is a valid constant.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| format!("set rlimit {}", r.typ()));
        }
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

pub fn set_oom_score_adj(process: &Process) -> Result<()> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("set oom_score_adj {adj}"))?;
    }
    Ok(())
}

/// Kernel capability numbers of a spec capability set; capabilities this kernel does not
/// know are skipped (as runc does), so one config works across kernel versions.
fn cap_bits(set: &Option<Capabilities>) -> u64 {
    let last = last_cap();
    set.iter()
        .flatten()
        .filter_map(cap_index)
        .filter(|i| *i <= last)
        .fold(0u64, |acc, i| acc | (1u64 << i))
}

fn cap_index(c: &OciCap) -> Option<u8> {
    let name = serde_json::to_value(c).ok()?;
    let name = name.as_str()?;
    name.parse::<caps::Capability>().ok().map(|c| c.index())
}

fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drop from the bounding set everything not in the spec. Needs CAP_SETPCAP, so it runs
/// before the identity change.
pub fn drop_bounding(caps: Option<&LinuxCapabilities>) -> Result<()> {
    // No capabilities in the spec means none at all (as runc), not "leave them alone".
    let keep = caps.map_or(0, |c| cap_bits(c.bounding()));
    for i in 0..=last_cap() {
        if keep & (1 << i) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, i as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e).ctx(|| format!("drop capability {i} from the bounding set"));
                }
            }
        }
    }
    Ok(())
}

/// setgroups, setgid, setuid, keeping permitted capabilities across the uid change.
pub fn set_identity(process: &Process) -> Result<()> {
    let user = process.user();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: setgroups reads `groups.len()` gids from a valid pointer.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        // In a user namespace with setgroups denied, only an empty list would be allowed.
        if !(e.raw_os_error() == Some(libc::EPERM) && groups.is_empty()) {
            return Err(e).ctx(|| format!("setgroups {groups:?}"));
        }
    }
    nix::unistd::setresgid(user.gid().into(), user.gid().into(), user.gid().into())
        .ctx(|| format!("setgid {}", user.gid()))?;
    nix::unistd::setresuid(user.uid().into(), user.uid().into(), user.uid().into())
        .ctx(|| format!("setuid {}", user.uid()))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Set effective, permitted and inheritable in one capset(2), then the ambient set.
pub fn set_capabilities(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let empty = None;
    let (e, p, i, a) = match caps {
        Some(c) => (
            cap_bits(c.effective()),
            cap_bits(c.permitted()),
            cap_bits(c.inheritable()),
            cap_bits(c.ambient()),
        ),
        None => (
            cap_bits(&empty),
            cap_bits(&empty),
            cap_bits(&empty),
            cap_bits(&empty),
        ),
    };
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, both valid for the call.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).ctx(|| "set capabilities".to_string());
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for bit in 0..64u64 {
        if a & (1 << bit) != 0 {
            // SAFETY: prctl with integer arguments only.
            let r =
                unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, bit, 0, 0) };
            if r != 0 {
                return Err(std::io::Error::last_os_error()).ctx(|| {
                    format!("raise ambient capability {bit} (it must be permitted and inheritable)")
                });
            }
        }
    }
    Ok(())
}

pub fn set_no_new_privileges(process: &Process) -> Result<()> {
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "set no_new_privs".to_string());
        }
    }
    Ok(())
}

pub fn set_umask(process: &Process) {
    let mask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// chdir to the process cwd inside the container, creating it if missing (docker creates a
/// missing WORKDIR).
pub fn enter_cwd(process: &Process) -> Result<()> {
    let cwd = process.cwd();
    if nix::unistd::chdir(cwd).is_err() {
        std::fs::create_dir_all(cwd)
            .ctx(|| format!("create working directory {}", cwd.display()))?;
        nix::unistd::chdir(cwd).ctx(|| format!("chdir to {}", cwd.display()))?;
    }
    Ok(())
}

/// What to hand to execve, checked before `start` so that a missing program is reported by
/// `create`, with the messages users know from docker/runc.
pub struct ExecPlan {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// The sealed dmz the program is started through (see `dmz.rs`).
    pub dmz: crate::dmz::Dmz,
}

pub fn plan_exec(process: &Process) -> Result<ExecPlan> {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let prog = args
        .first()
        .ok_or_else(|| Error::Init("process.args is empty".into()))?;
    let path = lookup(prog, &env)?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| Error::InvalidArgument(format!("{s:?} contains a NUL byte")))
    };
    Ok(ExecPlan {
        path: CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidArgument("program path contains a NUL byte".into()))?,
        args: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
        dmz: crate::dmz::Dmz::new()?,
    })
}

fn lookup(prog: &str, env: &[String]) -> Result<PathBuf> {
    let not_exec =
        |p: &Path, why: &str| Error::Init(format!("exec: {:?}: {why}", p.display().to_string()));
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Err(not_exec(&p, "is a directory: permission denied")),
            Ok(_) if nix::unistd::access(&p, nix::unistd::AccessFlags::X_OK).is_err() => {
                Err(not_exec(&p, "permission denied"))
            }
            Ok(_) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_exec(
                &p,
                &format!("stat {prog}: no such file or directory"),
            )),
            Err(e) => Err(not_exec(&p, &e.to_string())),
        };
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(prog);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
                    return Ok(candidate);
                }
                denied = true;
            }
        }
    }
    if denied {
        return Err(Error::Init(format!("exec: {prog:?}: permission denied")));
    }
    Err(Error::Init(format!(
        "exec: {prog:?}: executable file not found in $PATH"
    )))
}

/// Reset what a runtime process may have changed but a container program must not inherit:
/// the signal mask and ignored signals (Rust ignores SIGPIPE).
pub fn reset_signals() {
    // SAFETY: signal/sigprocmask with valid arguments; no handlers are installed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// execve, never returning on success.
/// execve through the dmz, never returning on success.
pub fn exec(plan: &ExecPlan) -> Error {
    plan.dmz.exec(&plan.path, &plan.args, &plan.env)
}

/// Capabilities in this process's bounding set: the most a container can be given (a
/// runtime inside a restricted sandbox may itself lack some).
pub fn own_bounding_capabilities() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    let last = last_cap();
    let mut v: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| c.index() <= last && mask & (1u64 << c.index()) != 0)
        .map(|c| c.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    v.sort();
    v
}

/// Capability names this kernel knows, for `features`.
pub fn known_capabilities() -> Vec<String> {
    let last = last_cap();
    let mut v: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| c.index() <= last)
        .map(|c| c.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    v.sort();
    v
}
