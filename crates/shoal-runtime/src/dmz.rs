//! The last step into a container goes through a "dmz": a tiny static binary (shoal-init,
//! embedded here) executed from a sealed memfd, which then execs the container's program.
//!
//! Why: until that final execve the process *is* this runtime's binary. If the container's
//! program is a script whose interpreter is `#!/proc/self/exe`, the kernel would run the
//! runtime's binary file inside the container, and a container process could then open it
//! through /proc and overwrite the host's runtime (CVE-2019-5736). With the dmz, what
//! `/proc/self/exe` names at that moment is an anonymous, write-sealed copy of a 12 KB
//! program that refuses to be a script interpreter. (runc 1.1.12+ does the same with its
//! `runc-dmz`.) Together with the runtime processes being non-dumpable until they exec, no
//! container process ever gets a handle on the runtime's binary.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Context, Error, Result};

/// The static `shoal-init` executable (also the engine's `--init`).
pub static INIT_BINARY: &[u8] = include_bytes!(env!("SHOAL_INIT_BINARY"));

/// argv[0] that makes shoal-init only exec (shoal_init::DMZ_NAME).
const DMZ_NAME: &CStr = c"shoal-dmz";

/// A sealed, close-on-exec memfd holding the dmz.
pub struct Dmz(OwnedFd);

impl Dmz {
    pub fn new() -> Result<Dmz> {
        debug_assert_eq!(DMZ_NAME.to_bytes(), shoal_init::DMZ_NAME);
        // SAFETY: memfd_create with a NUL-terminated name and flags; returns a new fd.
        let fd = unsafe {
            libc::memfd_create(
                DMZ_NAME.as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "create the dmz memfd".into());
        }
        // SAFETY: a descriptor memfd_create just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        file.write_all(INIT_BINARY).ctx(|| "write the dmz".into())?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on our descriptor with integer arguments.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "seal the dmz".into());
        }
        Ok(Dmz(file.into()))
    }

    /// execveat(dmz, ["shoal-dmz", path, argv...], envp). Returns only on failure.
    pub fn exec(&self, path: &CStr, argv: &[CString], env: &[CString]) -> Error {
        let mut args: Vec<*const libc::c_char> = vec![DMZ_NAME.as_ptr(), path.as_ptr()];
        args.extend(argv.iter().map(|a| a.as_ptr()));
        args.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: both arrays are NULL-terminated and their strings outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.0.as_raw_fd(),
                c"".as_ptr(),
                args.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Error::Init(format!(
            "exec {path:?} through the dmz: {}",
            std::io::Error::last_os_error()
        ))
    }
}
