//! Resolving `--user name[:group]` against the container's /etc/passwd and /etc/group, as
//! docker does at start.

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

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    text.lines()
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
        .collect()
}

fn read_group(rootfs: &Path) -> Vec<GroupEntry> {
    let text = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    text.lines()
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
        .collect()
}

/// `spec` is `user`, `uid`, `user:group`, `uid:gid` or empty (root).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_passwd(rootfs);
    let groups = read_group(rootfs);
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
        let r = |s| resolve(d.path(), s);
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
}
