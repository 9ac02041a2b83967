//! Finding the program the way `execvp` does: a name containing `/` is executed as it is,
//! any other name is tried in each directory of `$PATH`, in order.

use core::ffi::CStr;

use crate::sys::Errno;

/// `$PATH` when the environment has none (the OCI and docker default).
pub(crate) const DEFAULT_PATH: &[u8] =
    b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest path the kernel accepts, with its NUL.
const PATH_MAX: usize = 4096;

/// Whether `name` is looked up in `$PATH` (it has no `/`).
pub(crate) fn searches_path(name: &CStr) -> bool {
    !name.to_bytes().contains(&b'/')
}

/// Executes `name` through `exec`, which is handed a NUL-terminated path and returns only on
/// failure, with the error; returns the error that decides how the launch failed.
///
/// Like musl's `execvp`: a directory where the file is missing (`ENOENT`, `ENOTDIR`, or a path
/// too long to build) moves on to the next one; `EACCES` is remembered and reported if no
/// directory worked; any other error (`ENOEXEC`, `E2BIG`...) stops the search. An empty entry in
/// `path` is the current directory.
pub(crate) fn search(name: &CStr, path: &[u8], mut exec: impl FnMut(&CStr) -> Errno) -> Errno {
    if name.to_bytes().is_empty() {
        return Errno::ENOENT;
    }
    if !searches_path(name) {
        return exec(name);
    }
    let mut buf = [0u8; PATH_MAX];
    let mut denied = false;
    for dir in path.split(|&b| b == b':') {
        let Some(candidate) = join(&mut buf, dir, name.to_bytes()) else {
            continue;
        };
        match exec(candidate) {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = true,
            other => return other,
        }
    }
    if denied {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }
}

/// `dir/name` with a NUL in `buf` (just `name` for an empty `dir`); `None` if it does not fit
/// or `dir` holds a NUL.
fn join<'b>(buf: &'b mut [u8; PATH_MAX], dir: &[u8], name: &[u8]) -> Option<&'b CStr> {
    let slash = usize::from(!dir.is_empty());
    let len = dir.len() + slash + name.len();
    if len >= PATH_MAX {
        return None;
    }
    let (d, rest) = buf.split_at_mut(dir.len());
    d.copy_from_slice(dir);
    let (s, rest) = rest.split_at_mut(slash);
    s.fill(b'/');
    let (n, rest) = rest.split_at_mut(name.len());
    n.copy_from_slice(name);
    rest[0] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `search` against a fake `exec` that fails each path with the given error (ENOENT
    /// for paths not listed); returns the outcome and the paths tried.
    fn run(name: &str, path: &str, errors: &[(&str, Errno)]) -> (Errno, Vec<String>) {
        let name = std::ffi::CString::new(name).unwrap();
        let mut tried = Vec::new();
        let outcome = search(&name, path.as_bytes(), |p| {
            let p = p.to_str().unwrap().to_string();
            let err = errors
                .iter()
                .find(|(q, _)| *q == p)
                .map_or(Errno::ENOENT, |(_, e)| *e);
            tried.push(p);
            err
        });
        (outcome, tried)
    }

    #[test]
    fn names_with_a_slash_are_not_searched() {
        let (err, tried) = run("./prog", "/bin", &[]);
        assert_eq!((err, tried), (Errno::ENOENT, vec!["./prog".to_string()]));
        let (err, tried) = run("/etc/passwd", "/bin", &[("/etc/passwd", Errno::EACCES)]);
        assert_eq!((err, tried.len()), (Errno::EACCES, 1));
    }

    #[test]
    fn every_path_entry_is_tried_in_order() {
        let (err, tried) = run("sh", "/usr/local/bin::/bin/", &[]);
        assert_eq!(err, Errno::ENOENT);
        assert_eq!(tried, ["/usr/local/bin/sh", "sh", "/bin//sh"]);
    }

    #[test]
    fn permission_denied_is_reported_only_if_nothing_else_runs() {
        let errors = [("/a/x", Errno::EACCES), ("/b/x", Errno::ENOTDIR)];
        let (err, tried) = run("x", "/a:/b:/c", &errors);
        assert_eq!((err, tried.len()), (Errno::EACCES, 3));
    }

    #[test]
    fn other_errors_stop_the_search() {
        let (err, tried) = run("x", "/a:/b:/c", &[("/b/x", Errno::ENOEXEC)]);
        assert_eq!(
            (err, tried),
            (Errno::ENOEXEC, vec!["/a/x".into(), "/b/x".into()])
        );
    }

    #[test]
    fn an_empty_name_is_not_found_and_long_paths_are_skipped() {
        assert_eq!(run("", "/bin", &[]), (Errno::ENOENT, vec![]));
        let long = "d".repeat(PATH_MAX);
        let (err, tried) = run("x", &format!("{long}:/bin"), &[]);
        assert_eq!((err, tried), (Errno::ENOENT, vec!["/bin/x".into()]));
    }
}
