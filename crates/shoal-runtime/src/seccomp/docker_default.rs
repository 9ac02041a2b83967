//! docker's default seccomp profile, as data.
//!
//! Equivalent to moby's `profiles/seccomp/default.json` (the moby/profiles version of 2025,
//! which no longer allows io_uring and only allows the common socket families): errors with
//! EPERM by default; allows the syscalls any process needs; and allows the dangerous ones
//! only to containers holding the capability that guards them in the kernel anyway, so a
//! kernel bug in, say, `mount` cannot be reached from a container without CAP_SYS_ADMIN.
//!
//! It is built as a docker profile with its `includes`/`excludes` conditions and resolved by
//! the same code as a user's `--security-opt seccomp=PROFILE.json`.

use std::collections::HashSet;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator as Op,
};

use super::docker::{resolve, ArchMap, Condition, Platform, Profile, Rule};

/// docker's default profile for a container whose bounding set is `caps` (names with or
/// without `CAP_`), on this machine.
pub fn docker_default_profile(caps: &HashSet<String>) -> LinuxSeccomp {
    docker_default_profile_for(caps, &Platform::host())
}

/// [`docker_default_profile`] for another machine.
pub fn docker_default_profile_for(caps: &HashSet<String>, platform: &Platform) -> LinuxSeccomp {
    resolve(&profile(), caps, platform).expect("the built-in profile is well-formed")
}

/// Syscalls every container may make, whatever its capabilities. Names unknown to the
/// kernel or to libseccomp (other architectures' or newer syscalls) are skipped when the
/// filter is compiled.
#[rustfmt::skip]
const ALWAYS: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
    "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
    "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// The CLONE_NEW* flags: without CAP_SYS_ADMIN, clone(2) may not create namespaces.
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// socket(2) families allowed besides those below AF_DECnet (12). Not allowed: AF_DECnet,
/// AF_ECONET (19), AF_ATMSVC (20), AF_IRDA (23), AF_WANPIPE (25), AF_ISDN (34), AF_CAIF
/// (37), AF_ALG (38), AF_VSOCK (40, it reaches the host), and families newer than AF_MCTP.
#[rustfmt::skip]
const SOCKET_FAMILIES: &[u64] = &[
    13, 14, 15, 16, 17, 18, // AF_NETBEUI, AF_SECURITY, AF_KEY, AF_NETLINK, AF_PACKET, AF_ASH
    21, 22, 24,             // AF_RDS, AF_SNA, AF_PPPOX
    26, 27, 28, 29, 30,     // AF_LLC, AF_IB, AF_MPLS, AF_CAN, AF_TIPC
    31, 32, 33,             // AF_BLUETOOTH, AF_IUCV, AF_RXRPC
    35, 36, 39,             // AF_PHONET, AF_IEEE802154, AF_NFC
    41, 42, 43, 44, 45,     // AF_KCM, AF_QIPCRTR, AF_SMC, AF_XDP, AF_MCTP
];

/// personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and
/// 0xffffffff (query). Others (e.g. READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE) weaken the
/// process's protections.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// What CAP_SYS_ADMIN unlocks: mounts, namespaces, and the kernel's most exposed interfaces.
#[rustfmt::skip]
const SYS_ADMIN: &[&str] = &[
    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
    "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
    "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
    "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
];

/// Syscalls allowed only with the capability the kernel checks for them.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &[
        "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
    ]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

fn profile() -> Profile {
    let mut rules = vec![allow(ALWAYS)];
    // Before 4.8, ptrace could be used to bypass seccomp; from then on it is harmless.
    rules.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]).min_kernel("4.8"));
    rules.push(allow(&["socket"]).arg(0, libc::AF_DECnet as u64, Op::ScmpCmpLt));
    for &family in SOCKET_FAMILIES {
        rules.push(allow(&["socket"]).arg(0, family, Op::ScmpCmpEq));
    }
    for &persona in PERSONALITIES {
        rules.push(allow(&["personality"]).arg(0, persona, Op::ScmpCmpEq));
    }
    // Architecture-specific syscalls.
    rules.push(allow(&["sync_file_range2", "swapcontext"]).on(&["ppc64le"]));
    let arm = [
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ];
    rules.push(allow(&arm).on(&["arm", "arm64"]));
    rules.push(allow(&["arch_prctl"]).on(&["amd64", "x32"]));
    rules.push(allow(&["modify_ldt"]).on(&["amd64", "x32", "x86"]));
    let s390 = [
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ];
    rules.push(allow(&s390).on(&["s390", "s390x"]));
    rules.push(allow(&["riscv_flush_icache"]).on(&["riscv64"]));

    rules.push(allow(SYS_ADMIN).with_cap("CAP_SYS_ADMIN"));
    // Without CAP_SYS_ADMIN: clone without namespace flags only (the flags are argument 1
    // on s390); clone3 passes its flags in memory seccomp cannot read, so it fails with
    // ENOSYS and the C library falls back to clone.
    let no_ns = |index| allow(&["clone"]).masked(index, CLONE_NAMESPACES, 0);
    rules.push(
        no_ns(0)
            .without_cap("CAP_SYS_ADMIN")
            .not_on(&["s390", "s390x"]),
    );
    rules.push(no_ns(1).without_cap("CAP_SYS_ADMIN").on(&["s390", "s390x"]));
    rules.push(errno(&["clone3"], libc::ENOSYS).without_cap("CAP_SYS_ADMIN"));
    for (cap, names) in BY_CAPABILITY {
        rules.push(allow(names).with_cap(cap));
    }

    Profile {
        default_action: Some(Act::ScmpActErrno),
        default_errno_ret: Some(libc::EPERM as u32),
        arch_map: Some(arch_map()),
        syscalls: Some(rules),
        ..Profile::default()
    }
}

/// Per native architecture, the others its processes can run as.
fn arch_map() -> Vec<ArchMap> {
    let entry = |arch: &str, subs: &[&str]| ArchMap {
        architecture: format!("SCMP_ARCH_{arch}"),
        sub_architectures: Some(subs.iter().map(|s| format!("SCMP_ARCH_{s}")).collect()),
    };
    vec![
        entry("X86_64", &["X86", "X32"]),
        entry("AARCH64", &["ARM"]),
        entry("MIPS64", &["MIPS", "MIPS64N32"]),
        entry("MIPS64N32", &["MIPS", "MIPS64"]),
        entry("MIPSEL64", &["MIPSEL", "MIPSEL64N32"]),
        entry("MIPSEL64N32", &["MIPSEL", "MIPSEL64"]),
        entry("S390X", &["S390"]),
        entry("RISCV64", &[]),
        entry("LOONGARCH64", &[]),
    ]
}

fn allow(names: &[&str]) -> Rule {
    Rule {
        names: Some(names.iter().map(|n| n.to_string()).collect()),
        action: Act::ScmpActAllow,
        ..Rule::default()
    }
}

fn errno(names: &[&str], errno: i32) -> Rule {
    Rule {
        action: Act::ScmpActErrno,
        errno_ret: Some(errno as u32),
        ..allow(names)
    }
}

impl Rule {
    fn arg(self, index: usize, value: u64, op: Op) -> Rule {
        let arg = LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op);
        self.push_arg(arg.build().expect("every field is set"))
    }

    /// (argument & mask) == value
    fn masked(self, index: usize, mask: u64, value: u64) -> Rule {
        let arg = LinuxSeccompArgBuilder::default()
            .index(index)
            .value(mask)
            .value_two(value)
            .op(Op::ScmpCmpMaskedEq);
        self.push_arg(arg.build().expect("every field is set"))
    }

    fn push_arg(mut self, arg: LinuxSeccompArg) -> Rule {
        self.args.get_or_insert_with(Vec::new).push(arg);
        self
    }

    fn min_kernel(mut self, version: &str) -> Rule {
        self.includes
            .get_or_insert_with(Condition::default)
            .min_kernel = Some(version.into());
        self
    }

    fn on(mut self, arches: &[&str]) -> Rule {
        self.includes.get_or_insert_with(Condition::default).arches = Some(strings(arches));
        self
    }

    fn not_on(mut self, arches: &[&str]) -> Rule {
        self.excludes.get_or_insert_with(Condition::default).arches = Some(strings(arches));
        self
    }

    fn with_cap(mut self, cap: &str) -> Rule {
        self.includes.get_or_insert_with(Condition::default).caps = Some(strings(&[cap]));
        self
    }

    fn without_cap(mut self, cap: &str) -> Rule {
        self.excludes.get_or_insert_with(Condition::default).caps = Some(strings(&[cap]));
        self
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}
