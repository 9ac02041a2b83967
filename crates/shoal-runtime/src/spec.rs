//! Loading and validating a bundle's `config.json`.
//!
//! Validation happens before anything is created, so a bad config leaves no state behind and
//! the error names the field to fix. Features this runtime does not implement are refused
//! with a clear message rather than silently ignored.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// A validated bundle: its config and the absolute rootfs path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = fs::canonicalize(dir)
        .map_err(|e| Error::InvalidArgument(format!("bundle {}: {e}", dir.display())))?;
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| {
        Error::invalid_spec(
            &path,
            format!("cannot read: {e} (create one with `shoal-runc spec`)"),
        )
    })?;
    // The error names the field (e.g. `linux.seccomp.syscalls[2].action: unknown variant`).
    let spec: Spec =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| Error::invalid_spec(&path, e.to_string()))?;
    let rootfs = validate(&path, &spec)?;
    let rootfs = if rootfs.is_absolute() {
        rootfs
    } else {
        dir.join(rootfs)
    };
    if !rootfs.is_dir() {
        return Err(Error::invalid_spec(
            &path,
            format!("root.path {} is not a directory", rootfs.display()),
        ));
    }
    Ok(Bundle { dir, spec, rootfs })
}

/// Check everything `create` relies on; returns root.path as written.
pub fn validate(path: &Path, spec: &Spec) -> Result<PathBuf> {
    let bad = |msg: String| Err(Error::invalid_spec(path, msg));
    if !spec.version().starts_with("1.") {
        return bad(format!(
            "ociVersion {:?} is not a 1.x version",
            spec.version()
        ));
    }
    let Some(root) = spec.root() else {
        return bad("root is missing".into());
    };
    let Some(process) = spec.process() else {
        return bad("process is missing".into());
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return bad("process.args must name the program to run".into());
    }
    if !process.cwd().is_absolute() {
        return bad(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        ));
    }
    if let Some(hooks) = spec.hooks() {
        let any = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ]
        .iter()
        .any(|h| h.as_ref().is_some_and(|v| !v.is_empty()));
        if any {
            return Err(Error::Unsupported(
                "hooks are not supported by shoal-runc: remove \"hooks\" from config.json".into(),
            ));
        }
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(Error::Unsupported(
            "process.apparmorProfile: AppArmor is not supported".into(),
        ));
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(Error::Unsupported(
            "process.selinuxLabel: SELinux is not supported".into(),
        ));
    }
    let Some(linux) = spec.linux() else {
        return bad("linux is missing".into());
    };
    if let Some(seccomp) = linux.seccomp() {
        crate::seccomp::validate(path, seccomp)?;
    }
    if linux.intel_rdt().is_some() {
        return Err(Error::Unsupported("linux.intelRdt is not supported".into()));
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(Error::Unsupported(
            "linux.timeOffsets is not supported".into(),
        ));
    }
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let mut seen = Vec::new();
    for ns in &namespaces {
        if seen.contains(&ns.typ()) {
            return bad(format!("namespace {} is listed twice", ns.typ()));
        }
        seen.push(ns.typ());
        if ns.typ() == LinuxNamespaceType::Time {
            return Err(Error::Unsupported(
                "time namespaces are not supported".into(),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.exists() {
                return bad(format!("namespace path {} does not exist", p.display()));
            }
        }
    }
    if !has(LinuxNamespaceType::Mount) {
        return bad("a mount namespace is required (add {\"type\": \"mount\"})".into());
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return bad("hostname is set but there is no uts namespace".into());
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return bad("domainname is set but there is no uts namespace".into());
    }
    let user_ns = has(LinuxNamespaceType::User);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let joins_user = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_some());
    if user_ns && !joins_user && !maps {
        return bad("a new user namespace needs linux.uidMappings and linux.gidMappings".into());
    }
    if maps && !user_ns {
        return bad("uidMappings/gidMappings are set but there is no user namespace".into());
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return bad(format!(
                "mount destination {:?} must be absolute",
                m.destination()
            ));
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if !matches!(
            prop.as_str(),
            "" | "private"
                | "rprivate"
                | "slave"
                | "rslave"
                | "shared"
                | "rshared"
                | "unbindable"
                | "runbindable"
        ) {
            return bad(format!(
                "rootfsPropagation {prop:?} is not a propagation mode"
            ));
        }
    }
    if let Some(rlimits) = process.rlimits() {
        for r in rlimits {
            if r.soft() > r.hard() {
                return bad(format!(
                    "rlimit {}: soft {} exceeds hard {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                ));
            }
        }
    }
    Ok(root.path().clone())
}
