//! docker's json-file log format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"…"}`. Lines longer than 16 KiB are split, as
//! docker does, so a line without a newline never grows without bound.

use std::io::{self, Write};

use crate::time::now_rfc3339;

pub const MAX_LINE: usize = 16 * 1024;

pub struct LogWriter<W: Write> {
    out: W,
    pending: [Vec<u8>; 2],
}

impl<W: Write> LogWriter<W> {
    pub fn new(out: W) -> Self {
        LogWriter {
            out,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Append output of stream 0 (stdout) or 1 (stderr).
    pub fn write(&mut self, stream: usize, data: &[u8]) -> io::Result<()> {
        self.pending[stream].extend_from_slice(data);
        loop {
            let buf = &self.pending[stream];
            let cut = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => return Ok(()),
            };
            let line: Vec<u8> = self.pending[stream].drain(..cut).collect();
            self.emit(stream, &line)?;
        }
    }

    /// Write out partial lines (at exit).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for stream in 0..2 {
            if !self.pending[stream].is_empty() {
                let line = std::mem::take(&mut self.pending[stream]);
                self.emit(stream, &line)?;
            }
        }
        self.out.flush()
    }

    fn emit(&mut self, stream: usize, line: &[u8]) -> io::Result<()> {
        let mut rec = Vec::with_capacity(line.len() + 80);
        rec.extend_from_slice(b"{\"log\":");
        json_string(&mut rec, line);
        rec.extend_from_slice(if stream == 0 {
            b",\"stream\":\"stdout\",\"time\":\""
        } else {
            b",\"stream\":\"stderr\",\"time\":\""
        });
        rec.extend_from_slice(now_rfc3339().as_bytes());
        rec.extend_from_slice(b"\"}\n");
        self.out.write_all(&rec)
    }
}

/// Append `data` as a JSON string literal; invalid UTF-8 becomes U+FFFD.
pub fn json_string(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    for ch in String::from_utf8_lossy(data).chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(w: LogWriter<Vec<u8>>) -> Vec<String> {
        String::from_utf8(w.out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn splits_lines_and_escapes() {
        let mut w = LogWriter::new(Vec::new());
        w.write(0, b"a\"b\nc").unwrap();
        w.write(1, b"err\n").unwrap();
        w.write(0, b"d\n").unwrap();
        let l = lines(w);
        assert_eq!(l.len(), 3);
        assert!(l[0].starts_with("{\"log\":\"a\\\"b\\n\",\"stream\":\"stdout\",\"time\":\""));
        assert!(l[1].contains("\"err\\n\",\"stream\":\"stderr\""));
        assert!(l[2].starts_with("{\"log\":\"cd\\n\""));
    }

    #[test]
    fn long_lines_are_split_and_partials_flushed() {
        let mut w = LogWriter::new(Vec::new());
        w.write(0, &vec![b'x'; MAX_LINE + 10]).unwrap();
        w.flush_partial().unwrap();
        assert_eq!(lines(w).len(), 2);
    }

    #[test]
    fn control_and_invalid_bytes() {
        let mut out = Vec::new();
        json_string(&mut out, b"\x01\xff");
        assert_eq!(String::from_utf8(out).unwrap(), "\"\\u0001\u{fffd}\"");
    }
}
