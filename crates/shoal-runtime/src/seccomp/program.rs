//! A compiled seccomp filter: the BPF program libseccomp generated, and the one seccomp(2)
//! call that installs it.
//!
//! The program is exported from libseccomp before the container's process reports `Ready`,
//! so everything that can fail in libseccomp fails while `create` or `exec` can still
//! report it. Installing it is then a single system call with no allocation after it:
//! nothing but `execve` runs between the filter taking effect and the user's program.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::ScmpFilterContext;

use crate::error::{Context, Error, Result};

/// The kernel refuses longer programs (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// A BPF program ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Clone)]
pub struct Program {
    insns: Vec<libc::sock_filter>,
    /// SECCOMP_FILTER_FLAG_* bits from `linux.seccomp.flags`.
    flags: libc::c_ulong,
    /// Syscall names libseccomp does not know, left to the default action.
    unknown: Vec<String>,
}

impl Program {
    /// Export the filter of `ctx` as raw BPF (through a memfd: the program can be larger
    /// than a pipe buffer).
    pub(super) fn export(
        ctx: &ScmpFilterContext,
        flags: libc::c_ulong,
        unknown: Vec<String>,
    ) -> Result<Program> {
        // SAFETY: memfd_create reads a NUL-terminated name; the result is checked below.
        let fd = unsafe { libc::memfd_create(c"shoal-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).ctx(|| "seccomp: memfd_create".into());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        ctx.export_bpf(&file).map_err(|e| Error::Io {
            context: "seccomp: generate the BPF program".into(),
            source: io::Error::other(e),
        })?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .ctx(|| "seccomp: read the BPF program".into())?;
        let size = std::mem::size_of::<libc::sock_filter>();
        if bytes.len() % size != 0 {
            return Err(Error::Init(format!(
                "seccomp: libseccomp produced {} bytes, not a whole number of BPF instructions",
                bytes.len()
            )));
        }
        let insns: Vec<libc::sock_filter> = bytes
            .chunks_exact(size)
            .map(|b| libc::sock_filter {
                code: u16::from_ne_bytes([b[0], b[1]]),
                jt: b[2],
                jf: b[3],
                k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            })
            .collect();
        if insns.is_empty() || insns.len() > MAX_INSNS {
            return Err(Error::InvalidArgument(format!(
                "seccomp: the filter compiles to {} BPF instructions; the kernel accepts 1 to {MAX_INSNS}: \
                 use fewer rules or fewer architectures",
                insns.len()
            )));
        }
        Ok(Program {
            insns,
            flags,
            unknown,
        })
    }

    /// Bytes for the compile cache: flags, unknown names, instructions.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.insns.len() * 8);
        #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
        out.extend_from_slice(&(self.flags as u64).to_le_bytes());
        let names = self.unknown.join("\n");
        out.extend_from_slice(&(names.len() as u32).to_le_bytes());
        out.extend_from_slice(names.as_bytes());
        for i in &self.insns {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
        out
    }

    /// The inverse of [`Program::encode`]; `None` for anything malformed.
    pub(super) fn decode(b: &[u8]) -> Option<Program> {
        let flags = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?) as libc::c_ulong;
        let n = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        let names = std::str::from_utf8(b.get(12..12 + n)?).ok()?;
        let unknown = names
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let rest = b.get(12 + n..)?;
        if rest.is_empty() || rest.len() % 8 != 0 || rest.len() / 8 > MAX_INSNS {
            return None;
        }
        let insns = rest
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Some(Program {
            insns,
            flags,
            unknown,
        })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Syscall names of the profile that libseccomp does not know (other kernels' or newer
    /// syscalls): their rules were skipped, as runc skips them.
    pub fn unknown_syscalls(&self) -> &[String] {
        &self.unknown
    }

    /// Install the filter on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN in the
    /// current user namespace. Makes exactly one system call.
    pub fn load(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            // Checked against MAX_INSNS at export.
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp(2) reads `prog`, which points at `self.insns`, alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        match ret {
            0 => Ok(()),
            // With SECCOMP_FILTER_FLAG_TSYNC, the id of a thread that could not be synced.
            tid if tid > 0 => Err(io::Error::other(format!(
                "thread {tid} cannot be synchronised to the filter"
            ))),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("insns", &self.insns.len())
            .field("flags", &self.flags)
            .finish()
    }
}
