//! Ownership, permissions, timestamps and extended attributes of tar entries, and applying them
//! to what the unpacker created.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fchmodat, futimens, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};

const XATTR_PAX_PREFIX: &[u8] = b"SCHILY.xattr.";
/// overlayfs reads these from lower layers; an image must not smuggle them in (redirects,
/// metacopy, whiteouts by xattr). Opaque directories come only from `.wh..wh..opq` entries.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// The metadata of one tar entry.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub(crate) mode: u32,
    pub(crate) mtime: TimeSpec,
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    /// Reads the header and PAX records (`uid`, `gid`, `mtime`, `SCHILY.xattr.*`) of `entry`.
    pub(crate) fn from_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
        let header = entry.header();
        let old = header.as_old();
        let mut uid = numeric(header.uid(), &old.uid, "uid")?;
        let mut gid = numeric(header.gid(), &old.gid, "gid")?;
        let mode = numeric(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let mtime = numeric(header.mtime(), &old.mtime, "mtime")?;
        let mut mtime = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|err| format!("bad PAX header: {err}"))?
        {
            for record in pax {
                let record = record.map_err(|err| format!("bad PAX record: {err}"))?;
                let (key, value) = (record.key_bytes(), record.value_bytes());
                match key {
                    b"uid" => uid = parse_decimal(value).ok_or("bad PAX uid")?,
                    b"gid" => gid = parse_decimal(value).ok_or("bad PAX gid")?,
                    b"mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix(XATTR_PAX_PREFIX) {
                            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                                tracing::warn!(xattr = %String::from_utf8_lossy(name), "ignoring overlayfs xattr in layer");
                                continue;
                            }
                            let name =
                                CString::new(name).map_err(|_| "xattr name contains a NUL byte")?;
                            xattrs.push((name, value.to_vec()));
                        }
                    }
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} is out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} is out of range"))?;
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    fn perm(&self) -> Mode {
        Mode::from_bits_truncate(self.mode)
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs, on an open file or directory.
    pub(crate) fn apply_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (uid, gid) = self.owner();
        fchown(fd, uid, gid)?;
        fchmod(fd, self.perm())?;
        for (name, value) in &self.xattrs {
            tolerate_unsupported(fsetxattr(fd, name, value), name)?;
        }
        Ok(())
    }

    /// Owner and xattrs of `dir/name` without following it, and its mode unless it is a symlink
    /// (for a device or fifo the unpacker has just created).
    pub(crate) fn apply_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        is_symlink: bool,
    ) -> io::Result<()> {
        let (uid, gid) = self.owner();
        fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if !is_symlink {
            fchmodat(dir, name, self.perm(), FchmodatFlags::FollowSymlink)?;
        }
        for (xattr, value) in &self.xattrs {
            tolerate_unsupported(lsetxattr_at(dir, name, xattr, value), xattr)?;
        }
        Ok(())
    }

    pub(crate) fn set_times_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(futimens(fd, &self.mtime, &self.mtime)?)
    }

    pub(crate) fn set_times_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        Ok(utimensat(
            dir,
            name,
            &self.mtime,
            &self.mtime,
            UtimensatFlags::NoFollowSymlink,
        )?)
    }
}

/// Sets `trusted.overlay.opaque=y`, overlayfs's mark for "hide the lower layers' content".
pub(crate) fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    fsetxattr(dir, c"trusted.overlay.opaque", b"y")
}

/// A file system without support for an xattr namespace should not fail the whole image.
fn tolerate_unsupported(result: io::Result<()>, name: &CStr) -> io::Result<()> {
    match result {
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            tracing::warn!(xattr = %name.to_string_lossy(), "file system does not support this xattr, skipping it");
            Ok(())
        }
        other => other,
    }
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor for the duration of the call, `name` is NUL-terminated
    // and `value` points to `value.len()` readable bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lsetxattr` on `dir/name`: the directory is reached through its `/proc/self/fd` link, the
/// final component is not followed.
fn lsetxattr_at(dir: BorrowedFd<'_>, name: &[u8], xattr: &CStr, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` and `xattr` are NUL-terminated and `value` points to `value.len()` readable
    // bytes; the directory fd in the path is open for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            xattr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A numeric header field; a blank one (only NULs and spaces) reads as 0, as in Go's
/// `archive/tar` (docker) and GNU tar.
fn numeric(parsed: io::Result<u64>, raw: &[u8], what: &str) -> Result<u64, String> {
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(err) => Err(format!("bad {what} field: {err}")),
    }
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A PAX time: decimal seconds with an optional fraction (`1700000000.123456789`).
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if secs < 0 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some(TimeSpec::new(secs, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(TimeSpec::new(12, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time(b"-1.5"), None);
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
