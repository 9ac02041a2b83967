//! Messages on stderr, built without `core::fmt` (which would triple the executable's size):
//! `shoal-init: ` and the parts of the message, written with one `write` so lines from the
//! init and its child do not interleave.

use crate::sys::{self, Errno};

const STDOUT: i32 = 1;
const STDERR: i32 = 2;

/// A message line under construction; longer lines are cut.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        let mut line = Line {
            buf: [0; 512],
            len: 0,
        };
        line.push(b"shoal-init: ");
        line
    }

    fn push(&mut self, part: &[u8]) {
        // Keep the last byte for the newline.
        let room = self.buf.len() - 1 - self.len;
        let n = part.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&part[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: u32) {
        let mut digits = [0u8; 10];
        self.push(decimal(n, &mut digits));
    }

    fn finish(&mut self) -> &[u8] {
        self.buf[self.len] = b'\n';
        &self.buf[..=self.len]
    }
}

/// `n` in decimal, in `digits`.
fn decimal(mut n: u32, digits: &mut [u8; 10]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[start..];
        }
    }
}

/// What `strerror` would say, lower-case, for the errors the init can meet.
fn describe(e: Errno) -> Option<&'static [u8]> {
    Some(match e {
        Errno::EPERM => b"operation not permitted",
        Errno::ENOENT => b"no such file or directory",
        Errno::ENXIO => b"no such device or address",
        Errno::E2BIG => b"argument list too long",
        Errno::ENOEXEC => b"exec format error",
        Errno::EAGAIN => b"resource temporarily unavailable",
        Errno::ENOMEM => b"cannot allocate memory",
        Errno::EACCES => b"permission denied",
        Errno::ENOTDIR => b"not a directory",
        Errno::EISDIR => b"is a directory",
        Errno::EINVAL => b"invalid argument",
        Errno::ENOTTY => b"inappropriate ioctl for device",
        Errno::ETXTBSY => b"text file busy",
        Errno::ENAMETOOLONG => b"file name too long",
        Errno::ELOOP => b"too many levels of symbolic links",
        _ => return None,
    })
}

fn error_line(parts: &[&[u8]], err: Option<Errno>) -> Line {
    let mut line = Line::new();
    for part in parts {
        line.push(part);
    }
    if let Some(e) = err {
        line.push(b": ");
        match describe(e) {
            Some(text) => line.push(text),
            None => {
                line.push(b"errno ");
                line.push_number(e.0.unsigned_abs());
            }
        }
    }
    line
}

/// Prints `shoal-init: <parts>` on stderr.
pub(crate) fn error(parts: &[&[u8]]) {
    write_err(error_line(parts, None).finish());
}

/// Prints `shoal-init: <parts>: <what err means>` on stderr.
pub(crate) fn error_errno(parts: &[&[u8]], err: Errno) {
    write_err(error_line(parts, Some(err)).finish());
}

/// Prints `shoal-init: <what> at <file>:<line>` on stderr (for the panic handler).
#[cfg(not(test))]
#[cfg(shoal_init_static)]
pub(crate) fn error_at(what: &[u8], file: &str, line_no: u32) {
    let mut line = error_line(&[what, b" at ", file.as_bytes(), b":"], None);
    line.push_number(line_no);
    write_err(line.finish());
}

pub(crate) fn write_err(bytes: &[u8]) {
    write_all(STDERR, bytes);
}

pub(crate) fn write_out(bytes: &[u8]) {
    write_all(STDOUT, bytes);
}

/// Writes everything it can; nothing to do about a closed or broken stderr.
fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(mut line: Line) -> String {
        String::from_utf8(line.finish().to_vec()).unwrap()
    }

    #[test]
    fn lines_name_the_init_and_the_error() {
        assert_eq!(
            text(error_line(&[b"exec ", b"/etc/passwd"], Some(Errno::EACCES))),
            "shoal-init: exec /etc/passwd: permission denied\n"
        );
        assert_eq!(
            text(error_line(&[b"fork"], Some(Errno(95)))),
            "shoal-init: fork: errno 95\n"
        );
    }

    #[test]
    fn long_lines_are_cut_and_still_end_the_line() {
        let long = [b'x'; 600];
        let line = text(error_line(&[&long], Some(Errno::ENOENT)));
        assert_eq!(line.len(), 512);
        assert!(line.ends_with("xx\n"));
    }

    #[test]
    fn numbers_are_decimal() {
        let mut digits = [0u8; 10];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(137, &mut digits), b"137");
        assert_eq!(decimal(u32::MAX, &mut digits), b"4294967295");
    }
}
