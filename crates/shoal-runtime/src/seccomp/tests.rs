//! Unit tests: docker's profile format and its conditions, the built-in default profile, and
//! compilation. Installing filters is tested end to end in `tests/seccomp.rs`.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompOperator as Op, LinuxSyscall,
};
use serde_json::json;

use super::*;

fn caps(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn on(arch: &str) -> Platform {
    Platform {
        arch: arch.into(),
        kernel: (6, 1),
    }
}

/// The rules of `p` that name `syscall`.
fn rules_for<'a>(p: &'a LinuxSeccomp, syscall: &str) -> Vec<&'a LinuxSyscall> {
    p.syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names().iter().any(|n| n == syscall))
        .collect()
}

const CONDITIONAL: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_LOONGARCH64", "subArchitectures": null}
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": null, "comment": "", "includes": {}, "excludes": {}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390x"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["kexec_load"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.0"}},
        {"name": "clone3", "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
    ]
}"#;

#[test]
fn includes_and_excludes_follow_capabilities() {
    let p = parse_docker_profile_for(CONDITIONAL, &caps(&["CAP_CHOWN"]), &on("amd64")).unwrap();
    assert_eq!(p.default_action(), Act::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(1));
    assert!(
        rules_for(&p, "mount").is_empty(),
        "mount needs CAP_SYS_ADMIN"
    );
    let clone = rules_for(&p, "clone");
    assert_eq!(clone.len(), 1);
    let arg = clone[0].args().as_ref().unwrap()[0];
    assert_eq!(
        (arg.index(), arg.value(), arg.value_two(), arg.op()),
        (0, 0x7E02_0000, Some(0), Op::ScmpCmpMaskedEq)
    );
    let clone3 = rules_for(&p, "clone3");
    assert_eq!(
        clone3[0].errno_ret(),
        Some(38),
        "the old `name` field is read"
    );

    // "sys_admin" means CAP_SYS_ADMIN.
    let p = parse_docker_profile_for(CONDITIONAL, &caps(&["sys_admin"]), &on("amd64")).unwrap();
    assert_eq!(rules_for(&p, "mount").len(), 1);
    assert!(rules_for(&p, "clone").is_empty());
    assert!(rules_for(&p, "clone3").is_empty());
}

#[test]
fn includes_and_excludes_follow_architecture_and_kernel() {
    let none = caps(&[]);
    let amd64 = parse_docker_profile_for(CONDITIONAL, &none, &on("amd64")).unwrap();
    assert_eq!(
        amd64.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    assert_eq!(rules_for(&amd64, "arch_prctl").len(), 1);
    assert_eq!(rules_for(&amd64, "clone").len(), 1);

    let arm64 = parse_docker_profile_for(CONDITIONAL, &none, &on("arm64")).unwrap();
    assert_eq!(
        arm64.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
    assert!(rules_for(&arm64, "arch_prctl").is_empty());

    let s390x = parse_docker_profile_for(CONDITIONAL, &none, &on("s390x")).unwrap();
    assert_eq!(
        s390x.architectures(),
        &None,
        "no archMap entry: native only"
    );
    assert!(rules_for(&s390x, "clone").is_empty(), "excluded on s390x");

    let old = Platform {
        arch: "amd64".into(),
        kernel: (4, 4),
    };
    let p = parse_docker_profile_for(CONDITIONAL, &none, &old).unwrap();
    assert!(rules_for(&p, "ptrace").is_empty(), "needs 4.8");
    assert_eq!(rules_for(&p, "kexec_load").len(), 1, "excluded from 5.0 on");
    assert_eq!(rules_for(&amd64, "ptrace").len(), 1);
    assert!(rules_for(&amd64, "kexec_load").is_empty());
}

#[test]
fn malformed_docker_profiles_name_the_field() {
    let cases = [
        ("{not json", "seccomp profile: key must be a string"),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_MAYBE"}]}"#,
            "seccomp profile: syscalls[0].action: unknown variant `SCMP_ACT_MAYBE`",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SIMILAR"}]}]}"#,
            "seccomp profile: syscalls[0].args[0].op: unknown variant `SCMP_CMP_SIMILAR`",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}"#,
            "seccomp profile: syscalls[0].names: invalid type: string",
        ),
        (
            r#"{"syscalls": []}"#,
            "seccomp profile: defaultAction is missing",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
            "seccomp profile: syscalls[0].names is empty",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}"#,
            "seccomp profile: syscalls[0]: both name and names are set",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
                "includes": {"minKernel": "four"}}]}"#,
            "seccomp profile: syscalls[0].includes.minKernel: invalid kernel version \"four\"",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
            "seccomp profile: both architectures and archMap are set",
        ),
    ];
    for (json, expected) in cases {
        let err = parse_docker_profile_for(json, &caps(&[]), &on("amd64"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(expected),
            "expected {expected:?}, got {err:?}"
        );
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
}

#[test]
fn docker_default_depends_on_capabilities() {
    let default_caps = caps(&["CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID", "CAP_SYS_CHROOT"]);
    let p = docker_default_profile_for(&default_caps, &on("amd64"));
    assert_eq!(p.default_action(), Act::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
    for blocked in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "keyctl",
        "kexec_load",
        "bpf",
    ] {
        assert!(
            rules_for(&p, blocked).is_empty(),
            "{blocked} is not allowed"
        );
    }
    assert_eq!(
        rules_for(&p, "chroot").len(),
        1,
        "CAP_SYS_CHROOT allows chroot"
    );
    assert_eq!(rules_for(&p, "ptrace").len(), 1, "from kernel 4.8 on");
    assert_eq!(rules_for(&p, "arch_prctl").len(), 1);
    assert!(rules_for(&p, "io_uring_setup").is_empty());
    let clone = rules_for(&p, "clone");
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0].args().as_ref().unwrap()[0].value(), 0x7E02_0000);
    assert_eq!(
        rules_for(&p, "clone3")[0].errno_ret(),
        Some(libc::ENOSYS as u32)
    );
    let socket = rules_for(&p, "socket");
    let allows = |family: u64| {
        socket.iter().any(|r| {
            let a = r.args().as_ref().unwrap()[0];
            match a.op() {
                Op::ScmpCmpLt => family < a.value(),
                Op::ScmpCmpEq => family == a.value(),
                _ => false,
            }
        })
    };
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
    ] {
        assert!(allows(family as u64), "family {family} allowed");
    }
    assert!(!allows(libc::AF_VSOCK as u64), "AF_VSOCK reaches the host");
    assert!(!allows(libc::AF_ALG as u64));

    let admin = docker_default_profile_for(&caps(&["CAP_SYS_ADMIN"]), &on("amd64"));
    for allowed in ["mount", "umount2", "unshare", "setns", "clone", "clone3"] {
        let rules = rules_for(&admin, allowed);
        assert_eq!(rules.len(), 1, "{allowed}");
        assert!(rules[0].args().is_none(), "{allowed} unconditionally");
    }

    let s390x = docker_default_profile_for(&default_caps, &on("s390x"));
    let clone = rules_for(&s390x, "clone");
    assert_eq!(
        clone[0].args().as_ref().unwrap()[0].index(),
        1,
        "s390 flags"
    );
    let arm64 = docker_default_profile_for(&default_caps, &on("arm64"));
    assert_eq!(rules_for(&arm64, "cacheflush").len(), 1);
    assert!(rules_for(&arm64, "arch_prctl").is_empty());
}

#[test]
fn profiles_compile_for_this_machine() {
    let docker = docker_default_profile(&caps(&["CAP_CHOWN"]));
    let program = compile(&docker).unwrap();
    assert!(program.len() > 100 && program.len() < 4096, "{program:?}");

    let custom: LinuxSeccomp = serde_json::from_value(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mkdir", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_TRAP", "args": [
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}
            ]}
        ]
    }))
    .unwrap();
    let program = compile(&custom).unwrap();
    assert_eq!(program.unknown_syscalls(), ["no_such_syscall"]);

    let mut notify = custom.clone();
    notify.set_default_action(Act::ScmpActNotify);
    assert!(compile(&notify).is_err());
}
