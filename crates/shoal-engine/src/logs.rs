//! Reading a container's json log: all or the last N lines, and following it while the
//! container runs.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::Engine;

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: String,
    pub line: Vec<u8>,
    pub time: String,
}

#[derive(Deserialize)]
struct Record {
    log: String,
    stream: String,
    time: String,
}

fn parse(line: &str) -> Option<LogLine> {
    let r: Record = serde_json::from_str(line).ok()?;
    Some(LogLine {
        stream: r.stream,
        line: r.log.into_bytes(),
        time: r.time,
    })
}

impl Engine {
    pub async fn logs(&self, reference: &str, opts: LogOptions) -> Result<mpsc::Receiver<LogLine>> {
        let (entry, state) = self.subscribe(reference)?;
        let path = std::path::PathBuf::from(entry.snapshot().log_path);
        drop(entry);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut offset = 0u64;
            // Initial read (with tail) on the blocking pool.
            let p = path.clone();
            let tail = opts.tail;
            let first = tokio::task::spawn_blocking(move || read_from(&p, 0, tail)).await;
            let Ok((lines, end)) = first else { return };
            offset = offset.max(end);
            for l in lines {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            if !opts.follow {
                return;
            }
            loop {
                // Like docker, following a container that is not running returns at once.
                let running = crate::lifecycle::is_running(state.borrow().status());
                let p = path.clone();
                let Ok((lines, end)) =
                    tokio::task::spawn_blocking(move || read_from(&p, offset, None)).await
                else {
                    return;
                };
                let got_any = !lines.is_empty();
                offset = end;
                for l in lines {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
                if !running && !got_any {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

/// Complete lines from `offset`; with `tail`, only the last N. Returns the offset after the
/// last complete line.
fn read_from(path: &std::path::Path, offset: u64, tail: Option<u64>) -> (Vec<LogLine>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (Vec::new(), offset);
    }
    let mut reader = BufReader::new(f);
    let mut out: VecDeque<LogLine> = VecDeque::new();
    let mut pos = offset;
    let mut buf = String::new();
    loop {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !buf.ends_with('\n') {
                    break; // a line still being written
                }
                pos += n as u64;
                if let Some(l) = parse(buf.trim_end_matches('\n')) {
                    out.push_back(l);
                    if let Some(t) = tail {
                        while out.len() as u64 > t {
                            out.pop_front();
                        }
                    }
                }
            }
        }
    }
    (out.into(), pos)
}
