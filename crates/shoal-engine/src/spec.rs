//! The OCI runtime spec for a container: docker's defaults (capabilities, masked paths,
//! mounts) plus what the user asked for.

use std::path::Path;

use serde_json::{json, Value};
use shoal_api::v1::Container;

use crate::user::ResolvedUser;

/// docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub struct SpecInput<'a> {
    pub container: &'a Container,
    pub rootfs: &'a Path,
    pub user: &'a ResolvedUser,
    pub env: Vec<String>,
    pub hostname: &'a str,
    /// /etc/hostname, /etc/hosts, /etc/resolv.conf prepared for the container.
    pub etc_dir: &'a Path,
    pub cgroup_path: String,
    pub swap_supported: bool,
    /// The container's capability set (see `security::effective_caps`).
    pub caps: Vec<String>,
    /// `linux.seccomp`, or `None` for unconfined.
    pub seccomp: Option<Value>,
    /// The `shoal-init` binary to bind-mount as PID 1 for `--init`.
    pub init_binary: Option<&'a Path>,
    pub netns: &'a crate::network::NetNs,
}

/// Where `--init`'s init appears inside the container.
pub const INIT_PATH: &str = "/sbin/shoal-init";

pub fn build(input: &SpecInput<'_>) -> Value {
    let c = input.container;
    let cfg = c.config.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let mut args = vec![c.path.clone()];
    args.extend(c.args.iter().cloned());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    let user_targets: Vec<&str> = c
        .mount_points
        .iter()
        .map(|m| m.destination.as_str())
        .chain(
            host.mounts
                .iter()
                .filter(|m| m.r#type == "tmpfs")
                .map(|m| m.target.as_str()),
        )
        .collect();
    for f in ["resolv.conf", "hostname", "hosts"] {
        // A user mount on the same path wins.
        if user_targets.contains(&format!("/etc/{f}").as_str()) {
            continue;
        }
        mounts.push(json!({
            "destination": format!("/etc/{f}"),
            "type": "bind",
            "source": input.etc_dir.join(f),
            "options": ["rbind", "rprivate"]
        }));
    }

    mounts.extend(crate::mounts::spec_mounts(&c.mount_points, &host.mounts));

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match input.netns {
        crate::network::NetNs::Host => {}
        crate::network::NetNs::New => namespaces.push(json!({"type": "network"})),
        crate::network::NetNs::Join(p) => namespaces.push(json!({"type": "network", "path": p})),
    }

    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
        ]
    });
    if host.memory > 0 {
        let mut mem = json!({"limit": host.memory});
        if input.swap_supported {
            // docker's default: as much swap as memory.
            mem["swap"] = json!(host.memory * 2);
        }
        resources["memory"] = mem;
    }
    if host.nano_cpus > 0 {
        let period: i64 = 100_000;
        resources["cpu"] =
            json!({"quota": host.nano_cpus * period / 1_000_000_000, "period": period});
    }
    if host.pids_limit > 0 {
        resources["pids"] = json!({"limit": host.pids_limit});
    }

    let caps = json!(input.caps);
    if let Some(init) = input.init_binary {
        mounts.push(json!({"destination": INIT_PATH, "type": "bind", "source": init, "options": ["rbind", "ro", "rprivate"]}));
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let privileged = host.privileged;
    if privileged {
        // Everything docker's --privileged gives: devices, writable sysfs and cgroupfs.
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                    opts.push(json!("rw"));
                }
            }
        }
    }
    let rlimits = crate::security::rlimits(&host).unwrap_or_default();
    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": cfg.tty,
            "user": {
                "uid": input.user.uid,
                "gid": input.user.gid,
                "additionalGids": input.user.additional_gids,
            },
            "args": args,
            "env": input.env,
            "cwd": if c.resolved_working_dir.is_empty() { "/" } else { c.resolved_working_dir.as_str() },
                        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": host.no_new_privileges,
            "rlimits": rlimits,
            "oomScoreAdj": 0
        },
        "root": {"path": input.rootfs, "readonly": host.readonly_rootfs},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": input.cgroup_path,
            "resources": resources,
            "namespaces": namespaces,
                        "maskedPaths": if privileged { json!([]) } else { json!(MASKED_PATHS) },
            "readonlyPaths": if privileged { json!([]) } else { json!(READONLY_PATHS) },
            "sysctl": host.sysctls,
        }
    });
    if let Some(s) = &input.seccomp {
        spec["linux"]["seccomp"] = s.clone();
    }
    if privileged {
        spec["linux"]["devices"] = json!(crate::security::host_devices());
    }
    spec
}

/// Environment at start: the merged env plus what docker adds (PATH if missing, HOSTNAME,
/// HOME from the user's passwd entry, TERM for a tty).
pub fn runtime_env(c: &Container, hostname: &str, user: &ResolvedUser) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    env.extend(c.resolved_env.iter().cloned());
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={}", shoal_runtime::process::DEFAULT_PATH));
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if c.config.as_ref().is_some_and(|c| c.tty) && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// Can a swap limit be set (v1 swap accounting, or a v2 memory controller)?
pub fn swap_supported() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
}
