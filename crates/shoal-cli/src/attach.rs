//! Attached runs: stream the container's output, feed it our stdin, keep a terminal in raw
//! mode for `-t`, forward signals (`run` without `-t`), and return its exit code.

use std::io::{IsTerminal, Read, Write};

use anyhow::Result;
use shoal_api::v1::{
    attach_input, attach_output, AttachInput, AttachStart, KillContainerRequest, TtySize,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{err, start_exit_code, Client};

pub struct AttachSpec {
    pub id: String,
    pub stdin: bool,
    pub tty: bool,
    pub start: bool,
}

/// Exit status of an attached container run, or the code for a failed start.
pub enum Outcome {
    Exited(i32),
    StartFailed { code: i32, message: String },
}

pub async fn attach(client: &mut Client, spec: AttachSpec) -> Result<Outcome> {
    let (tx, rx) = mpsc::channel::<AttachInput>(64);
    let size = if spec.tty { terminal_size() } else { None };
    tx.send(AttachInput {
        input: Some(attach_input::Input::Start(AttachStart {
            id: spec.id.clone(),
            stdin: spec.stdin,
            start: spec.start,
            size: size.map(|(rows, cols)| TtySize {
                rows: rows.into(),
                cols: cols.into(),
            }),
        })),
    })
    .await?;
    let response = client.attach(ReceiverStream::new(rx)).await;
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unavailable => return Err(err(s)),
        Err(s) => {
            // docker: 126/127 when the program cannot run, 125 for any other refusal.
            let code = start_exit_code(&s).unwrap_or(125);
            return Ok(Outcome::StartFailed {
                code,
                message: s.message().to_string(),
            });
        }
    };

    let _raw = if spec.tty && spec.stdin && std::io::stdin().is_terminal() {
        RawMode::enable()
    } else {
        None
    };
    if spec.stdin {
        pump_stdin(tx.clone(), spec.tty);
    }
    if spec.tty {
        forward_resizes(tx.clone());
    } else {
        proxy_signals(client.clone(), spec.id.clone());
    }
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(msg) = inbound.message().await.map_err(err)? {
        match msg.output {
            Some(attach_output::Output::Stdout(d)) => {
                stdout.write_all(&d)?;
                stdout.flush()?;
            }
            Some(attach_output::Output::Stderr(d)) => {
                stderr.write_all(&d)?;
                stderr.flush()?;
            }
            Some(attach_output::Output::Exit(w)) => return Ok(Outcome::Exited(w.exit_code)),
            None => {}
        }
    }
    Ok(Outcome::Exited(0))
}

/// Our stdin to the container, on a thread (stdin reads block).
fn pump_stdin(tx: mpsc::Sender<AttachInput>, tty: bool) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = AttachInput {
                        input: Some(attach_input::Input::Stdin(buf[..n].to_vec())),
                    };
                    if tx.blocking_send(m).is_err() {
                        return;
                    }
                }
            }
        }
        if !tty {
            let _ = tx.blocking_send(AttachInput {
                input: Some(attach_input::Input::CloseStdin(true)),
            });
        }
    });
}

fn forward_resizes(tx: mpsc::Sender<AttachInput>) {
    tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some((rows, cols)) = terminal_size() {
                let m = AttachInput {
                    input: Some(attach_input::Input::Resize(TtySize {
                        rows: rows.into(),
                        cols: cols.into(),
                    })),
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// docker's --sig-proxy: signals we receive go to the container.
fn proxy_signals(client: Client, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let mut client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let Ok(mut s) = signal(kind) else { return };
            while s.recv().await.is_some() {
                let _ = client
                    .kill_container(KillContainerRequest {
                        id: id.clone(),
                        signal: name.into(),
                    })
                    .await;
            }
        });
    }
}

pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0
        // SAFETY: as above, on stdin.
        || unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The local terminal in raw mode until dropped.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enable() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
