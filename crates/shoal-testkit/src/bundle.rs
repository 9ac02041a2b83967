//! OCI bundles with a busybox root filesystem, for runtime tests.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::busybox::{applets, GROUP, PASSWD};

/// A bundle directory: `rootfs/` with busybox and its applets, /etc/passwd and /etc/group, and
/// a `config.json` from [`base_config`] merged with `patch` (top-level keys replaced,
/// `process` and `linux` merged one level deep).
pub fn busybox_bundle(dir: &Path, patch: Value) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/shoal",
    ] {
        fs::create_dir_all(rootfs.join(d)).with_context(|| format!("create {d}"))?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copy /bin/busybox (apt-get install busybox-static)")?;
    for a in applets(Path::new("/bin/busybox"))? {
        if a != "busybox" {
            let _ = symlink("busybox", rootfs.join("bin").join(&a));
        }
    }
    fs::write(rootfs.join("etc/passwd"), PASSWD)?;
    fs::write(rootfs.join("etc/group"), GROUP)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let mut config = base_config();
    merge(&mut config, patch);
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(dir.to_path_buf())
}

fn merge(base: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else { return };
    for (k, v) in patch {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(p)) if k == "process" || k == "linux" => {
                for (pk, pv) in p {
                    b.insert(pk, pv);
                }
            }
            (_, v) => {
                base[&k] = v;
            }
        }
    }
}

/// `shoal-runc spec`'s defaults without a terminal, running `true`.
pub fn base_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "shoal-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
