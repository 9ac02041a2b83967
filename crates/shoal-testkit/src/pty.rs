//! Running a command on a pseudo-terminal, as a person at a terminal would.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command whose stdin, stdout and stderr are a new pty, with that pty as its controlling
/// terminal; the test holds the master side.
pub struct PtySession {
    pub child: Child,
    master: File,
    seen: Vec<u8>,
}

impl PtySession {
    pub fn spawn(mut cmd: Command) -> PtySession {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = pty.slave;
        // SAFETY: pre_exec runs in the forked child before exec; setsid and TIOCSCTTY only
        // change the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().expect("dup pty")))
            .stdout(Stdio::from(slave.try_clone().expect("dup pty")))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("spawn on a pty");
        PtySession {
            child,
            master: File::from(pty.master),
            seen: Vec::new(),
        }
    }

    /// Type into the terminal.
    pub fn send(&mut self, input: &[u8]) {
        self.master.write_all(input).expect("write to the pty");
    }

    /// Everything the terminal showed so far, once `needle` appeared (or the time is up).
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.seen).contains(needle) && Instant::now() < deadline {
            let mut pfd = [libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: poll on one pollfd we own.
            if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 100) } <= 0 {
                continue;
            }
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO: the other side is gone
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// The command's exit code, or `None` (and it is killed) if it did not exit in time.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}
