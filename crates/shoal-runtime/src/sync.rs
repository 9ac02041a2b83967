//! Messages between the runtime and the container's init (or exec) process while it is
//! being set up, over a SOCK_SEQPACKET socketpair so each message keeps its boundaries.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// intermediate → runtime: host PID of the process it cloned.
    ChildPid(i32),
    /// runtime → child: cgroups and id mappings are in place, continue.
    Go,
    /// child → runtime: set up; about to wait for `start` (or exec right away).
    Ready,
    /// child → runtime: setup failed.
    Error(String),
}

pub struct SyncSocket(OwnedFd);

pub fn pair() -> Result<(SyncSocket, SyncSocket)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "create sync socketpair".to_string())?;
    Ok((SyncSocket(a), SyncSocket(b)))
}

impl SyncSocket {
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let data = serde_json::to_vec(msg).expect("sync messages always serialise");
        nix::sys::socket::send(
            self.0.as_raw_fd(),
            &data,
            nix::sys::socket::MsgFlags::empty(),
        )
        .ctx(|| "send on sync socket".to_string())?;
        Ok(())
    }

    /// The next message, or `None` when the other side closed without sending one (it died).
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match nix::sys::socket::recv(
                self.0.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.ctx(|| "receive on sync socket".to_string())?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| Error::Init(format!("bad sync message: {e}")))
    }

    /// Receive and require a specific message; anything else is an error naming `stage`.
    pub fn expect(&self, want: Msg, stage: &str) -> Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Msg::Error(e)) => Err(Error::Init(strip_prefix(e))),
            Some(other) => Err(Error::Init(format!(
                "{stage}: unexpected message {other:?}"
            ))),
            None => Err(Error::Init(format!(
                "{stage}: the process exited during setup"
            ))),
        }
    }
}

/// Errors from the child already read "container init: ..."; do not say it twice.
pub(crate) fn strip_prefix(e: String) -> String {
    match e.strip_prefix("container init: ") {
        Some(rest) => rest.to_string(),
        None => e,
    }
}

impl AsRawFd for SyncSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
