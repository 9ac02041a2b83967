//! Namespaces from the spec: which to create with clone(2), which to join with setns(2).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Context, Result};

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// `/proc/PID/ns/<name>` entry for a namespace type.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to join, opened in the runtime's own mount namespace before any fork.
pub struct JoinNs {
    pub typ: LinuxNamespaceType,
    pub file: File,
}

/// Namespaces split into what to create and what to join.
pub struct Plan {
    /// Flags for the clone that creates init. The cgroup namespace is not in here: init
    /// unshares it after it has been moved into its cgroup, so the cgroup is its root.
    pub clone_flags: CloneFlags,
    pub new_cgroup_ns: bool,
    pub join: Vec<JoinNs>,
}

impl Plan {
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Plan> {
        let mut plan = Plan {
            clone_flags: CloneFlags::empty(),
            new_cgroup_ns: false,
            join: Vec::new(),
        };
        for ns in namespaces {
            match ns.path() {
                Some(path) => plan.join.push(open_ns(ns.typ(), path)?),
                None if ns.typ() == LinuxNamespaceType::Cgroup => plan.new_cgroup_ns = true,
                None => plan.clone_flags |= flag(ns.typ()),
            }
        }
        // Join the user namespace first (it grants the capabilities to join the others) and
        // the mount namespace last (it changes how later paths resolve).
        plan.join.sort_by_key(|j| match j.typ {
            LinuxNamespaceType::User => 0,
            LinuxNamespaceType::Mount => 2,
            _ => 1,
        });
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        if t == LinuxNamespaceType::Cgroup {
            return self.new_cgroup_ns;
        }
        self.clone_flags.contains(flag(t))
    }

    /// The container has a namespace of this type apart from the runtime's: a new one, or a
    /// joined one that is not the runtime's own (runc's rule for namespaced sysctls).
    pub fn owns(&self, t: LinuxNamespaceType) -> bool {
        if self.creates(t) {
            return true;
        }
        let ours = std::fs::metadata(format!("/proc/self/ns/{}", proc_name(t)));
        self.join.iter().any(|j| {
            use std::os::unix::fs::MetadataExt;
            j.typ == t
                && match (j.file.metadata(), &ours) {
                    (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
                    _ => false,
                }
        })
    }

    /// Join every namespace in `join`. Runs in the intermediate process.
    pub fn enter(&self) -> Result<()> {
        for j in &self.join {
            nix::sched::setns(j.file.as_fd(), flag(j.typ))
                .ctx(|| format!("join {} namespace", proc_name(j.typ)))?;
        }
        Ok(())
    }
}

pub fn open_ns(typ: LinuxNamespaceType, path: &Path) -> Result<JoinNs> {
    let file =
        File::open(path).ctx(|| format!("open {} namespace {}", proc_name(typ), path.display()))?;
    Ok(JoinNs { typ, file })
}

/// Is the namespace of `typ` at `path` the one this process is already in?
pub fn is_own(typ: LinuxNamespaceType, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata(format!("/proc/self/ns/{}", proc_name(typ)));
    let other = std::fs::metadata(path);
    matches!((own, other), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}
