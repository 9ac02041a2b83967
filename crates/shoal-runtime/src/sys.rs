//! Thin wrappers over the few raw syscalls the runtime needs that `nix` does not cover the
//! way we need them. Everything unsafe in the crate that is not a single libc call lives here.

use std::fs;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::Path;

use crate::error::{Context, Result};

/// `clone(2)` used like `fork(2)`: a copy of the address space on the same stack, with extra
/// namespace flags. Returns 0 in the child and the child's PID in the parent.
///
/// # Safety
/// The caller must be single-threaded: the child only has the calling thread, and locks held
/// by other threads (allocator, stdio) would stay locked forever in the child.
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<libc::pid_t> {
    // SAFETY: without CLONE_VM and with a null stack the child runs on a private copy of the
    // parent's stack, exactly like fork(2); the caller guarantees single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// Make this process (and the children it forks for the container) non-dumpable until they
/// exec: container processes then cannot open their /proc/PID/exe, fds or memory, which
/// would reach the runtime's binary on the host (runc does the same).
pub fn set_non_dumpable() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Number of threads of this process.
pub fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(1)
}

/// Mark every descriptor from `first` up close-on-exec, so nothing of the runtime leaks into
/// the container process.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    let first = RawFd::try_from(first).unwrap_or(RawFd::MAX);
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags of this process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    for entry in fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if fd >= first {
            // SAFETY: fcntl on a descriptor number; a stale number just fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Start time (clock ticks since boot) of a process, from field 22 of /proc/PID/stat, and
/// whether it is a zombie. `None` if the process does not exist.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// Is `pid` the same live (non-zombie) process that started at `start_time`?
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && matches!(proc_start_time(pid), Some((t, false)) if t == start_time)
}

/// Write a file atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("write {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("sync {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Signal number from "KILL", "SIGKILL" or "9".
pub fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}

/// Bring the loopback interface up (a new network namespace starts with it down).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zero-initialised ifreq whose name we set; the
    // socket is closed before returning.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(io::Error::last_os_error());
            }
        }
        libc::close(sock);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signals() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("KILL"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn reads_own_start_time() {
        let (t, zombie) = proc_start_time(std::process::id() as i32).unwrap();
        assert!(t > 0 && !zombie);
        assert!(process_alive(std::process::id() as i32, t));
        assert!(!process_alive(std::process::id() as i32, t + 1));
    }
}
