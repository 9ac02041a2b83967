//! Resolving a path inside a root as if the root were `/`: symlinks are followed but can never
//! lead outside it (the `filepath-securejoin` idea). Used for mount destinations, which an
//! image can otherwise aim at the host with a planted symlink.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

const MAX_SYMLINKS: usize = 255;

pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut todo: VecDeque<OsString> = components(unsafe_path);
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::InvalidArgument(format!(
                        "too many symlinks resolving {} in {}",
                        unsafe_path.display(),
                        root.display()
                    )));
                }
                let target = fs::read_link(&full).map_err(|e| {
                    Error::InvalidArgument(format!("read link {}: {e}", full.display()))
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next = components(&target);
                next.extend(todo);
                todo = next;
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../../..", r.join("up")).unwrap();
        symlink("real", r.join("rel")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(
            secure_join(r, Path::new("/abs/passwd")).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(secure_join(r, Path::new("/up/etc")).unwrap(), r.join("etc"));
        assert_eq!(
            secure_join(r, Path::new("/rel/dir")).unwrap(),
            r.join("real/dir")
        );
        assert_eq!(secure_join(r, Path::new("/../../x")).unwrap(), r.join("x"));
        assert!(secure_join(r, Path::new("/loop")).is_err());
    }
}
