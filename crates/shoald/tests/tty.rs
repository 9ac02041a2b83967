//! `shoal run -it` through a real pty, as a person at a terminal would use it.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use shoal_testkit::{Daemon, PtySession};

#[test]
fn interactive_tty_session() {
    let d = Daemon::start();
    d.load_busybox();
    let mut term = PtySession::spawn(d.cmd(&["run", "-it", "--rm", "busybox", "sh"]));
    let prompt = term.read_until("# ", Duration::from_secs(15));
    assert!(prompt.contains("# "), "shell prompt: {prompt:?}");
    term.send(b"tty; echo $((6*7))\r");
    let out = term.read_until("42", Duration::from_secs(10));
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("42"), "{out:?}");
    term.send(b"exit 5\r");
    assert_eq!(term.wait(Duration::from_secs(15)), Some(5));
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
