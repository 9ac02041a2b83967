//! Frames on the attach socket: `[kind: u8][len: u32 big-endian][payload]`.

use std::io::{self, Read, Write};

/// client → shim: bytes for the container's stdin.
pub const STDIN: u8 = 1;
/// client → shim: close the container's stdin.
pub const CLOSE_STDIN: u8 = 2;
/// client → shim: terminal size, payload `[rows u16 BE][cols u16 BE]`.
pub const RESIZE: u8 = 3;
/// shim → client: container output.
pub const STDOUT: u8 = 10;
pub const STDERR: u8 = 11;

/// Largest payload accepted; anything bigger is a protocol error.
pub const MAX_PAYLOAD: usize = 1 << 20;

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn write(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload))
}

/// Read one frame; `Ok(None)` on a clean end of stream.
pub fn read(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((header[0], payload)))
}

/// Incremental decoder for non-blocking readers: feed bytes, take complete frames.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, &'static str> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err("frame too large");
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_incremental() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(RESIZE, &[0, 24, 0, 80]));
        let mut r = &wire[..];
        assert_eq!(read(&mut r).unwrap(), Some((STDOUT, b"hello".to_vec())));
        let mut d = Decoder::default();
        d.feed(&wire[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&wire[3..]);
        assert_eq!(d.next_frame().unwrap(), Some((STDOUT, b"hello".to_vec())));
        assert_eq!(d.next_frame().unwrap(), Some((RESIZE, vec![0, 24, 0, 80])));
        assert_eq!(d.next_frame().unwrap(), None);
    }
}
