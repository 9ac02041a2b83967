//! Attaching to a container's stdio through its shim's socket.

use shoal_shim::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

use crate::Engine;

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Forward the client's input to the container's stdin.
    pub stdin: bool,
    /// Start the container after attaching (docker run / start -a).
    pub start: bool,
    /// Initial terminal size (rows, cols).
    pub size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The container stopped; always the last event.
    Exit {
        code: i32,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachInput {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
}

pub struct Attached {
    pub events: mpsc::Receiver<AttachEvent>,
    pub input: mpsc::Sender<AttachInput>,
}

impl Engine {
    pub async fn attach(&self, reference: &str, opts: AttachOptions) -> Result<Attached> {
        let (entry, state) = self.subscribe(reference)?;
        // When we start it, the run to report is the one that begins after this moment.
        let previous_start = opts.start.then(|| {
            entry
                .snapshot()
                .state
                .map(|s| s.started_at)
                .unwrap_or_default()
        });
        let stream = if opts.start {
            let _op = entry.op.lock().await;
            self.start_locked(&entry, true)
                .await?
                .ok_or_else(|| Error::Internal("no attach stream".into()))?
        } else {
            let c = entry.snapshot();
            if !crate::lifecycle::is_running(c.status()) {
                return Err(Error::Conflict(format!(
                    "cannot attach to stopped container {}: start it first",
                    c.name
                )));
            }
            self.connect_shim(&c.id).await?
        };
        let auto_remove = entry.snapshot().host_config.is_some_and(|h| h.auto_remove);
        drop(entry);
        let (mut rd, mut wr) = stream.into_split();
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (in_tx, mut in_rx) = mpsc::channel::<AttachInput>(64);
        if let Some((rows, cols)) = opts.size {
            let _ = in_tx.send(AttachInput::Resize(rows, cols)).await;
        }
        let stdin = opts.stdin;
        tokio::spawn(async move {
            while let Some(input) = in_rx.recv().await {
                let wire = match input {
                    AttachInput::Stdin(data) if stdin => frame::encode(frame::STDIN, &data),
                    AttachInput::Stdin(_) => continue,
                    AttachInput::CloseStdin if stdin => frame::encode(frame::CLOSE_STDIN, &[]),
                    AttachInput::CloseStdin => continue,
                    AttachInput::Resize(r, c) => {
                        let mut p = r.to_be_bytes().to_vec();
                        p.extend_from_slice(&c.to_be_bytes());
                        frame::encode(frame::RESIZE, &p)
                    }
                };
                if wr.write_all(&wire).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut header = [0u8; 5];
            loop {
                if rd.read_exact(&mut header).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if len > frame::MAX_PAYLOAD {
                    break;
                }
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let ev = match header[0] {
                    frame::STDOUT => AttachEvent::Stdout(payload),
                    frame::STDERR => AttachEvent::Stderr(payload),
                    _ => continue,
                };
                if ev_tx.send(ev).await.is_err() {
                    return;
                }
            }
            // Output ended: the shim is finishing. Report how this run ended (a container
            // about to restart counts as ended, as with docker run).
            wait_run_ended(state.clone(), previous_start).await;
            let st = state.borrow().clone();
            if auto_remove {
                // `run --rm` returns once the container is gone, as docker's does: the
                // state channel closes when the container is removed.
                let mut rx = state;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                    while rx.changed().await.is_ok() {}
                })
                .await;
            }
            let _ = ev_tx
                .send(AttachEvent::Exit {
                    code: st.exit_code,
                    error: st.error,
                })
                .await;
        });
        Ok(Attached {
            events: ev_rx,
            input: in_tx,
        })
    }
}

/// Until the status leaves running/paused (to exited, restarting, removing...).
/// With `previous_start`, only a run that started after it counts (the output can end
/// before the engine has even recorded the start).
async fn wait_run_ended(
    mut rx: tokio::sync::watch::Receiver<shoal_api::v1::ContainerState>,
    previous_start: Option<String>,
) {
    use shoal_api::ContainerStatus::{Paused, Running};
    loop {
        {
            let st = rx.borrow_and_update();
            let this_run = previous_start.as_ref().is_none_or(|p| st.started_at != *p);
            if this_run && !matches!(st.status(), Running | Paused) {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
