//! The container's terminal: a pty from the container's own devpts whose master end is sent
//! to the caller over a unix socket (`--console-socket`), as runc does.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Context, Error, Result};
use crate::paths::secure_join;

nix::ioctl_write_ptr_bad!(tiocsptlck, libc::TIOCSPTLCK, libc::c_int);
nix::ioctl_read_bad!(tiocgptn, libc::TIOCGPTN, libc::c_uint);

/// A pty created inside the container's devpts.
pub struct Pty {
    pub master: OwnedFd,
    /// Path of the slave inside the container, e.g. `/dev/pts/0`.
    pub slave_path: PathBuf,
}

/// Open a new pty from a devpts `ptmx`; the slave path is where it appears inside the
/// container (`/dev/pts/N`).
pub fn open_pty(ptmx: &Path) -> Result<Pty> {
    let master: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(ptmx)
        .ctx(|| format!("open {} (is devpts mounted at /dev/pts?)", ptmx.display()))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which is valid for the call.
    unsafe { tiocsptlck(master.as_raw_fd(), &unlock) }.ctx(|| "unlock pty".to_string())?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the pointer, which is valid for the call.
    unsafe { tiocgptn(master.as_raw_fd(), &mut n) }.ctx(|| "get pty number".to_string())?;
    Ok(Pty {
        master,
        slave_path: PathBuf::from(format!("/dev/pts/{n}")),
    })
}

/// Open a new pty from `<rootfs>/dev/pts/ptmx` (before pivot_root) and bind its slave over
/// `<rootfs>/dev/console`.
pub fn create_pty(rootfs: &Path) -> Result<Pty> {
    let pty = open_pty(&secure_join(rootfs, Path::new("/dev/pts/ptmx"))?)?;
    let console = secure_join(rootfs, Path::new("/dev/console"))?;
    if !console.exists() {
        File::create(&console).ctx(|| format!("create {}", console.display()))?;
    }
    let host_slave = secure_join(rootfs, &pty.slave_path)?;
    mount(
        Some(host_slave.as_path()),
        &console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| "bind the pty over /dev/console".to_string())?;
    Ok(pty)
}

/// Make the pty slave this process's controlling terminal and its stdio.
pub fn attach_slave(slave_path: &Path) -> Result<()> {
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(slave_path)
        .ctx(|| format!("open {}", slave_path.display()))?;
    let fd = slave.as_raw_fd();
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "dup2 pty slave".to_string());
        }
    }
    // SAFETY: TIOCSCTTY takes an int argument by value; 0 = do not steal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "set controlling terminal".to_string());
    }
    Ok(())
}

/// Send a pty master over a connected unix socket.
pub fn send_fd(socket: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let iov = [IoSlice::new(name.as_bytes())];
    let fds = [fd];
    sendmsg::<()>(
        socket,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send pty master over the console socket".to_string())?;
    Ok(())
}

/// Receive a descriptor sent with [`send_fd`].
pub fn recv_fd(socket: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receive the pty master".to_string())?;
    for cmsg in msg.cmsgs().ctx(|| "read control message".to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Init(
        "console socket message carried no descriptor".into(),
    ))
}

/// Set the window size of a terminal.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid for the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "set window size".to_string());
    }
    Ok(())
}
