//! docker's seccomp profile format (`--security-opt seccomp=PROFILE.json`), resolved into an
//! OCI `linux.seccomp` for one container on one machine.
//!
//! A docker profile is an OCI profile plus conditions: `archMap` lists, per native
//! architecture, the sub-architectures to add (x86_64 also runs x86 and x32 code), and each
//! rule may be limited with `includes` / `excludes` on the container's capabilities (its
//! bounding set), the machine's architecture (docker's names: `amd64`, `arm64`, ...) and a
//! minimum kernel version. Resolution follows moby's `setupSeccomp`: a rule is dropped if
//! any `excludes` condition holds or any `includes` condition fails.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A docker seccomp profile as written in JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    pub default_action: Option<LinuxSeccompAction>,
    pub default_errno_ret: Option<u32>,
    pub architectures: Option<Vec<Arch>>,
    pub arch_map: Option<Vec<ArchMap>>,
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: Option<String>,
    pub syscalls: Option<Vec<Rule>>,
}

/// Architectures are strings here: only the entry for this machine is converted, so a
/// profile may list architectures the OCI types do not know (e.g. loongarch64).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMap {
    pub architecture: String,
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rule {
    /// Older profiles name one syscall per rule.
    pub name: Option<String>,
    pub names: Option<Vec<String>>,
    pub action: LinuxSeccompAction,
    pub errno_ret: Option<u32>,
    pub args: Option<Vec<LinuxSeccompArg>>,
    pub includes: Option<Condition>,
    pub excludes: Option<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Condition {
    pub caps: Option<Vec<String>>,
    pub arches: Option<Vec<String>>,
    /// "<kernel>.<major>", e.g. "4.8".
    pub min_kernel: Option<String>,
}

/// The machine a docker profile is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// docker's architecture name: amd64, x86, arm64, arm, ppc64le, s390x, riscv64, ...
    pub arch: String,
    /// Kernel version, (major, minor).
    pub kernel: (u32, u32),
}

impl Platform {
    /// This machine.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "powerpc" => "ppc",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mipsel64",
            "mips" if cfg!(target_endian = "little") => "mipsle",
            other => other,
        };
        Platform {
            arch: arch.to_string(),
            kernel: kernel_release()
                .and_then(|r| parse_version(&r))
                .unwrap_or((0, 0)),
        }
    }
}

/// Parse a docker profile and resolve it for a container with capabilities `caps` (names
/// with or without `CAP_`, as in the bounding set) on this machine.
pub fn parse_docker_profile(json: &str, caps: &HashSet<String>) -> Result<LinuxSeccomp> {
    parse_docker_profile_for(json, caps, &Platform::host())
}

/// [`parse_docker_profile`] for another machine.
pub fn parse_docker_profile_for(
    json: &str,
    caps: &HashSet<String>,
    platform: &Platform,
) -> Result<LinuxSeccomp> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let profile: Profile = serde_path_to_error::deserialize(de)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile: {e}")))?;
    resolve(&profile, caps, platform)
        .map_err(|msg| Error::InvalidArgument(format!("seccomp profile: {msg}")))
}

/// The OCI profile `profile` means for this container and machine; errors name the field.
pub(super) fn resolve(
    profile: &Profile,
    caps: &HashSet<String>,
    platform: &Platform,
) -> std::result::Result<LinuxSeccomp, String> {
    let caps: HashSet<String> = caps.iter().map(|c| cap_name(c)).collect();
    let Some(default_action) = profile.default_action else {
        return Err("defaultAction is missing (e.g. \"SCMP_ACT_ERRNO\")".into());
    };
    let mut architectures = profile.architectures.clone().unwrap_or_default();
    let arch_map = profile.arch_map.as_deref().unwrap_or_default();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err("both architectures and archMap are set: use one of them".into());
    }
    let native = seccomp_arch_name(&platform.arch);
    if let Some((i, entry)) = arch_map
        .iter()
        .enumerate()
        .find(|(_, a)| Some(a.architecture.as_str()) == native)
    {
        architectures.push(oci_arch(
            &entry.architecture,
            &format!("archMap[{i}].architecture"),
        )?);
        for (j, sub) in entry.sub_architectures.iter().flatten().enumerate() {
            architectures.push(oci_arch(
                sub,
                &format!("archMap[{i}].subArchitectures[{j}]"),
            )?);
        }
    }

    let mut syscalls = Vec::new();
    for (i, rule) in profile.syscalls.iter().flatten().enumerate() {
        let names = match (&rule.name, &rule.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(format!(
                    "syscalls[{i}]: both name and names are set: use names"
                ));
            }
            (Some(name), _) => vec![name.clone()],
            (None, names) => names.clone().unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(format!(
                "syscalls[{i}].names is empty: list the syscalls of the rule"
            ));
        }
        if let Some(j) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(format!("syscalls[{i}].names[{j}] is an empty name"));
        }
        let field = |which: &str| format!("syscalls[{i}].{which}");
        let excluded = match &rule.excludes {
            Some(c) => c.any_holds(&caps, platform, &field("excludes"))?,
            None => false,
        };
        let included = match &rule.includes {
            Some(c) => c.all_hold(&caps, platform, &field("includes"))?,
            None => true,
        };
        if excluded || !included {
            continue;
        }
        let mut call = LinuxSyscall::default();
        call.set_names(names);
        call.set_action(rule.action);
        call.set_errno_ret(rule.errno_ret);
        call.set_args(rule.args.clone().filter(|a| !a.is_empty()));
        syscalls.push(call);
    }

    let mut out = LinuxSeccomp::default();
    out.set_default_action(default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_architectures(Some(architectures).filter(|a| !a.is_empty()));
    out.set_flags(profile.flags.clone().filter(|f| !f.is_empty()));
    out.set_listener_path(profile.listener_path.clone());
    out.set_listener_metadata(profile.listener_metadata.clone());
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

impl Condition {
    /// `excludes`: does any of its conditions hold?
    fn any_holds(&self, caps: &HashSet<String>, p: &Platform, field: &str) -> Result<bool, String> {
        let min_kernel = self.min_kernel(field)?;
        let arch = self.arches.iter().flatten().any(|a| *a == p.arch);
        let cap = (self.caps.iter().flatten()).any(|c| caps.contains(&cap_name(c)));
        Ok(arch || cap || min_kernel.is_some_and(|k| p.kernel >= k))
    }

    /// `includes`: do all of its conditions hold?
    fn all_hold(&self, caps: &HashSet<String>, p: &Platform, field: &str) -> Result<bool, String> {
        let min_kernel = self.min_kernel(field)?;
        let arches = self.arches.as_deref().unwrap_or_default();
        let arch = arches.is_empty() || arches.contains(&p.arch);
        let cap = (self.caps.iter().flatten()).all(|c| caps.contains(&cap_name(c)));
        Ok(arch && cap && min_kernel.is_none_or(|k| p.kernel >= k))
    }

    /// "4.8" → (4, 8).
    fn min_kernel(&self, field: &str) -> Result<Option<(u32, u32)>, String> {
        let Some(v) = &self.min_kernel else {
            return Ok(None);
        };
        let parsed = v
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .filter(|k| *k != (0, 0));
        match parsed {
            Some(k) => Ok(Some(k)),
            None => Err(format!(
                "{field}.minKernel: invalid kernel version {v:?}, expected \"<kernel>.<major>\""
            )),
        }
    }
}

/// "sys_admin" and "CAP_SYS_ADMIN" both mean CAP_SYS_ADMIN.
fn cap_name(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// libseccomp's architecture for docker's architecture name.
fn seccomp_arch_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "x32" => "SCMP_ARCH_X32",
        "arm64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "ppc64" => "SCMP_ARCH_PPC64",
        "ppc" => "SCMP_ARCH_PPC",
        "s390x" => "SCMP_ARCH_S390X",
        "s390" => "SCMP_ARCH_S390",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "loong64" => "SCMP_ARCH_LOONGARCH64",
        "mips64" => "SCMP_ARCH_MIPS64",
        "mips64n32" => "SCMP_ARCH_MIPS64N32",
        "mipsel64" => "SCMP_ARCH_MIPSEL64",
        "mipsel64n32" => "SCMP_ARCH_MIPSEL64N32",
        "mipsle" => "SCMP_ARCH_MIPSEL",
        _ => return None,
    })
}

fn oci_arch(name: &str, field: &str) -> Result<Arch, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| format!("{field}: architecture {name:?} is not supported by shoal-runc"))
}

fn kernel_release() -> Option<String> {
    // SAFETY: uname fills the zeroed struct we pass; its fields are NUL-terminated.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return None;
        }
        let release = std::ffi::CStr::from_ptr(uts.release.as_ptr());
        Some(release.to_string_lossy().into_owned())
    }
}

/// "6.1.0-18-amd64" → (6, 1).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
