//! Resolving `--user name[:group]` against the container's /etc/passwd and /etc/group, as
//! docker does at start.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Largest passwd/group file read (docker limits these reads too).
const MAX_DB_FILE: u64 = 1 << 20;

/// The container's filesystem as its user database will be read before it starts: the
/// rootfs with the container's bind and volume mounts on top (a `-v ./passwd:/etc/passwd`
/// must count, as it does when runc resolves the user inside the container).
pub struct RootView<'a> {
    pub rootfs: &'a Path,
    /// (destination in the container, source on the host)
    pub mounts: Vec<(&'a str, &'a Path)>,
}

impl<'a> RootView<'a> {
    pub fn plain(rootfs: &'a Path) -> Self {
        RootView {
            rootfs,
            mounts: Vec::new(),
        }
    }

    /// Host path of `path` in the container: through the mount with the longest covering
    /// destination, else inside the rootfs; symlinks stay inside what they resolve in.
    fn host_path(&self, path: &str) -> Option<std::path::PathBuf> {
        let covering = self
            .mounts
            .iter()
            .filter(|(dest, _)| {
                path == *dest || path.starts_with(&format!("{}/", dest.trim_end_matches('/')))
            })
            .max_by_key(|(dest, _)| dest.len());
        match covering {
            Some((dest, source)) if path == *dest => Some(source.to_path_buf()),
            Some((dest, source)) => {
                let rest = &path[dest.trim_end_matches('/').len()..];
                shoal_runtime::paths::secure_join(source, Path::new(rest)).ok()
            }
            None => shoal_runtime::paths::secure_join(self.rootfs, Path::new(path)).ok(),
        }
    }
}

/// Read a file as the container would see it: symlinks resolved inside the container, only a
/// regular file, at most [`MAX_DB_FILE`] bytes. A missing or odd file reads as empty, as
/// docker treats a missing /etc/passwd.
fn read_in_root(view: &RootView<'_>, path: &str) -> Result<String> {
    use std::io::Read;
    let Some(resolved) = view.host_path(path) else {
        return Ok(String::new());
    };
    match std::fs::symlink_metadata(&resolved) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "{path} in the image is not a regular file"
            )))
        }
        Err(_) => return Ok(String::new()),
    }
    let mut text = String::new();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&resolved);
    if let Ok(f) = file {
        let _ = f.take(MAX_DB_FILE).read_to_string(&mut text);
    }
    Ok(text)
}

fn read_passwd(view: &RootView<'_>) -> Result<Vec<PasswdEntry>> {
    let text = read_in_root(view, "/etc/passwd")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect())
}

fn read_group(view: &RootView<'_>) -> Result<Vec<GroupEntry>> {
    let text = read_in_root(view, "/etc/group")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// A group by name (from the image's /etc/group) or number, for --group-add.
pub fn resolve_group(view: &RootView<'_>, group: &str) -> Result<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    read_group(view)?
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unable to find group {group}: no matching entries in group file"
            ))
        })
}

/// `spec` is `user`, `uid`, `user:group`, `uid:gid` or empty (root).
pub fn resolve(view: &RootView<'_>, spec: &str) -> Result<ResolvedUser> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_passwd(view)?;
    let groups = read_group(view)?;
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        })?),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user.parse().expect("numeric when no entry"),
    };
    let mut gid = entry.map_or(0, |e| e.gid);
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    // Supplementary groups: every group listing the user by name (docker's behaviour), but
    // only when no explicit group was asked for.
    // The primary group is listed too, as docker does (so `id` shows it under groups=).
    let mut additional_gids = vec![gid];
    if let (Some(e), None) = (entry, group) {
        for g in &groups {
            if g.members.contains(&e.name) && g.gid != gid && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map_or_else(|| "/".to_string(), |e| e.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nshoal:x:1000:1000::/home/shoal:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nshoal:x:1000:\nextra:x:2000:shoal\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = rootfs();
        let r = |s| resolve(&RootView::plain(d.path()), s);
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0],
                home: "/root".into()
            }
        );
        let shoal = r("shoal").unwrap();
        assert_eq!(
            (shoal.uid, shoal.gid, shoal.additional_gids.clone()),
            (1000, 1000, vec![1000, 2000])
        );
        assert_eq!(shoal.home, "/home/shoal");
        assert_eq!(r("1000:extra").unwrap().gid, 2000);
        let anon = r("4242:4343").unwrap();
        assert_eq!((anon.uid, anon.gid, anon.home.as_str()), (4242, 4343, "/"));
        assert!(r("nobody-here")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody-here"));
        assert!(r("shoal:nogroup").is_err());
    }

    #[test]
    fn image_files_are_read_inside_the_rootfs_only() {
        let d = rootfs();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        // An absolute symlink resolves inside the rootfs, never to the host's file.
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("etc/passwd")).unwrap();
        let err = resolve(&RootView::plain(d.path()), "root")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unable to find user root"), "{err}");
        // A FIFO is refused instead of blocking the daemon.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = resolve(&RootView::plain(d.path()), "root")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
