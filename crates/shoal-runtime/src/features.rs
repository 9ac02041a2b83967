//! The OCI `features` document: what this runtime supports, for engines that ask.

use serde_json::{json, Value};

use crate::process::known_capabilities;

pub fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
            "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": known_capabilities(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": crate::seccomp::features(),
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "org.opencontainers.runc.version": "compatible",
            "io.github.shoal.runtime": env!("CARGO_PKG_VERSION")
        }
    })
}

/// The default bundle config written by `shoal-runc spec`: runc's defaults (an interactive
/// `sh` with a minimal capability set in fresh namespaces, read-only rootfs named `rootfs`).
pub fn default_spec(rootless: bool) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "shoal",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if rootless {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let linux = &mut spec["linux"];
        linux["namespaces"]
            .as_array_mut()
            .expect("array")
            .push(json!({ "type": "user" }));
        linux["uidMappings"] = json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
        linux["gidMappings"] = json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
        linux.as_object_mut().expect("object").remove("resources");
    }
    spec
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_spec_parses_and_validates() {
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(super::default_spec(false)).unwrap();
        crate::spec::validate(std::path::Path::new("config.json"), &spec).unwrap();
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(super::default_spec(true)).unwrap();
        crate::spec::validate(std::path::Path::new("config.json"), &spec).unwrap();
    }
}
