//! seccomp: the OCI `linux.seccomp` filter of a container's processes, and docker's profiles.
//!
//! Built on libseccomp (the `libseccomp` crate, the same C library runc and youki use):
//! it knows every architecture's syscall numbers, so one profile naming syscalls serves
//! x86_64 with its x86 and x32 sub-architectures, and it produces the same filter as runc.
//!
//! * [`validate`] checks a spec's profile before anything is created (and compiles it once,
//!   so what libseccomp refuses is refused then); [`compile`] turns it into a BPF
//!   [`Program`] that one seccomp(2) call installs.
//! * [`docker_default_profile`] is docker's default profile for a set of capabilities;
//!   [`parse_docker_profile`] reads docker's JSON format for `--security-opt seccomp=...`.
//!
//! # When the filter is installed
//!
//! In a container's init (`init.rs`) and in `exec` (`exec.rs`), following runc's
//! `standard_init_linux.go` / `setns_init_linux.go` and youki's `init_process.rs`:
//!
//! * The profile is compiled while the process is being set up, before it reports `Ready`,
//!   so a profile that cannot be compiled fails `create` or `exec` with the reason.
//! * With `process.noNewPrivileges`, the filter is installed as the very last step before
//!   execve: after the exec fifo handshake, the signal reset and the close-on-exec sweep.
//!   (runc installs it just before the fifo handshake, because it may have to pass a
//!   seccomp-notify descriptor over its init pipe; shoal has no notify support, so it can
//!   go later.) The only syscall of the runtime the filter ever sees is execve itself, so a
//!   profile need not allow anything the runtime uses, and installing it is one syscall.
//! * Without it, the kernel lets only a process with CAP_SYS_ADMIN install a filter, and
//!   the identity and capability changes usually take that away. The filter is then
//!   installed just before them, while the process is still privileged (as runc and youki
//!   do). What follows runs under the filter: setgroups, setresgid, setresuid, capset and
//!   prctl, umask, the program lookup, the `Ready` message on the sync socket, the exec
//!   fifo's open and write, rt_sigprocmask/rt_sigaction, close_range and execve. Such a
//!   profile must allow them (docker's does), as it must under runc.

mod cache;
mod compile;
mod docker;
mod docker_default;
mod program;
mod validate;

use serde_json::{json, Value};

pub use compile::compile;
pub(crate) use compile::compile_in_container;
pub use docker::{parse_docker_profile, parse_docker_profile_for, Platform};
pub use docker_default::{docker_default_profile, docker_default_profile_for};
pub use program::Program;
pub use validate::validate;

/// The `linux.seccomp` part of the OCI features document.
pub fn features() -> Value {
    // libseccomp's API level says which filter flags this kernel supports.
    let api = libseccomp::get_api();
    let supported: Vec<&str> = [
        (2, "SECCOMP_FILTER_FLAG_TSYNC"),
        (3, "SECCOMP_FILTER_FLAG_LOG"),
        (4, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
    ]
    .into_iter()
    .filter(|(level, _)| api >= *level)
    .map(|(_, flag)| flag)
    .collect();
    json!({
        "enabled": true,
        "actions": [
            "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
        ],
        "operators": [
            "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
            "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
        ],
        "archs": [
            "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
            "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE",
            "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_X32",
            "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"
        ],
        "knownFlags": [
            "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
        ],
        "supportedFlags": supported,
    })
}

#[cfg(test)]
mod tests;
