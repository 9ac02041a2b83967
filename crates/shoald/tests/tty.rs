//! `shoal run -it` through a real pty, as a person at a terminal would use it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use shoal_testkit::Daemon;

fn read_until(master: &mut std::fs::File, needle: &str, timeout: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut pfd = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, 100) };
        if n > 0 {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn interactive_tty_session() {
    let d = Daemon::start();
    d.load_busybox();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut cmd = d.cmd(&["run", "-it", "--rm", "busybox", "sh"]);
    // SAFETY: pre_exec runs in the forked child before exec; setsid and TIOCSCTTY only touch it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let prompt = read_until(&mut master, "# ", Duration::from_secs(15));
    assert!(prompt.contains("# "), "shell prompt: {prompt:?}");
    master.write_all(b"tty; echo $((6*7))\r").unwrap();
    let out = read_until(&mut master, "42", Duration::from_secs(10));
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("42"), "{out:?}");
    master.write_all(b"exit 5\r").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(15));
    assert_eq!(status, Some(5));
}

fn wait_timeout(child: &mut std::process::Child, t: Duration) -> Option<i32> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn interactive_stdin_without_tty() {
    let d = Daemon::start();
    d.load_busybox();
    let mut child = d
        .cmd(&[
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO\ndone\n",
        "stdin is closed when ours ends"
    );
}
