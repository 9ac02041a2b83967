//! sha256 digests (`sha256:<64 hex>`) and readers/writers that hash what passes through them.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::reference::is_full_hex_id;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed `sha256:<64 lower-case hex>` digest.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| is_full_hex_id(hex))
}

/// Counts and hashes every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (hashing it), then returns `(digest, total bytes)`.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0; 64 * 1024];
        while self.read(&mut buf)? != 0 {}
        Ok(self.finish())
    }

    /// `(digest, bytes read)` of what has been read so far.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Counts and hashes every byte written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.count
    }

    /// `(digest, bytes written, inner writer)`.
    pub(crate) fn finish(self) -> (String, u64, W) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (digest, self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly the bytes of a stream whose length and digest are known, failing with
/// `InvalidData` if the stream is longer, shorter or hashes differently. Used when copying a
/// layer into a `docker save` archive whose tar header already promised the size.
pub(crate) struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected_digest: String,
    expected_len: u64,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(inner: R, expected_digest: &str, expected_len: u64) -> Self {
        VerifyingReader {
            inner: HashingReader::new(inner),
            expected_digest: expected_digest.to_owned(),
            expected_len,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if self.inner.count > self.expected_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "stream is longer than the expected {} bytes",
                    self.expected_len
                ),
            ));
        }
        if n == 0 {
            self.done = true;
            let hasher = std::mem::replace(&mut self.inner.hasher, Sha256::new());
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if self.inner.count != self.expected_len || actual != self.expected_digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "content changed on disk: expected {} ({} bytes), found {actual} ({} bytes)",
                        self.expected_digest, self.expected_len, self.inner.count
                    ),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_passes_through() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_digest(b""), empty);
        let (digest, count) = HashingReader::new(&b""[..]).drain_and_finish().unwrap();
        assert_eq!((digest.as_str(), count), (empty, 0));
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (digest, count, inner) = writer.finish();
        assert_eq!(digest, sha256_digest(b"abc"));
        assert_eq!((count, inner), (3, b"abc".to_vec()));
        assert_eq!(sha256_hex(empty), Some(&empty[7..]));
        assert_eq!(sha256_hex("sha256:abc"), None);
    }

    #[test]
    fn verifying_reader_rejects_changed_content() {
        let good = sha256_digest(b"abc");
        let mut out = Vec::new();
        VerifyingReader::new(&b"abc"[..], &good, 3)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
        assert!(VerifyingReader::new(&b"abd"[..], &good, 3)
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(VerifyingReader::new(&b"ab"[..], &good, 3)
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(VerifyingReader::new(&b"abcd"[..], &good, 3)
            .read_to_end(&mut Vec::new())
            .is_err());
    }
}
