//! The cgroup v2 device controller: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE
//! attached to the container's cgroup, compiled from the same rules v1 writes to
//! `devices.allow`/`devices.deny` (the approach of runc and youki).
//!
//! The program receives `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! where `access_type = access << 16 | type`, and returns 1 to allow, 0 to deny. Rules are
//! checked last to first; the first that matches decides, which is "later rules win".

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::{DeviceRule, Kind, ALL_ACCESS};
use crate::error::{Context, Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const ALU_AND_K: u8 = 0x54; // w_dst &= imm
const ALU_RSH_K: u8 = 0x74; // w_dst >>= imm
const ALU_MOV_X: u8 = 0xbc; // w_dst = w_src
const ALU64_MOV_K: u8 = 0xb7; // r_dst = imm
const JMP_JNE_K: u8 = 0x55; // if r_dst != imm goto +off
const JMP_EXIT: u8 = 0x95;

/// Compile rules (already including the defaults) into a program.
pub fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let mut default_allow = true;
    for r in rules.iter().rev() {
        if r.is_wildcard() {
            default_allow = r.allow;
            break;
        }
        let mut block = Vec::new();
        // Each check jumps past the rest of this block when it fails; offsets are patched
        // once the block's length is known (marked with off = i16::MIN).
        match r.kind {
            Kind::All => {}
            Kind::Block => block.push(insn(JMP_JNE_K, 2, 0, i16::MIN, DEV_BLOCK)),
            Kind::Char => block.push(insn(JMP_JNE_K, 2, 0, i16::MIN, DEV_CHAR)),
        }
        if r.access != ALL_ACCESS {
            // The requested access must be within the rule's: (access & !rule) == 0.
            block.push(insn(ALU_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU_AND_K, 1, 0, 0, i32::from(!r.access & ALL_ACCESS)));
            block.push(insn(JMP_JNE_K, 1, 0, i16::MIN, 0));
        }
        if let Some(m) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, i16::MIN, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, i16::MIN, m as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == i16::MIN {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Load the program for `rules` and attach it to the cgroup directory `dir`.
pub fn attach_device_filter(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let prog = load(&compile(rules))?;
    let cgroup = std::fs::File::open(dir).ctx(|| format!("open cgroup {}", dir.display()))?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: bpf(2) reads `attr.len()` bytes of the union from our buffer.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, attr.as_ptr(), attr.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("attach the device filter to {}", dir.display()));
    }
    // The kernel keeps the program alive while it is attached; our descriptor can go.
    Ok(())
}

fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) reads the union from our buffer; the instruction, license and log
    // buffers it points to live until the call returns.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
        return Err(Error::Cgroup {
            path: "bpf".into(),
            msg: format!(
                "load the device filter program: {err} (the kernel needs CONFIG_CGROUP_BPF){}",
                if verifier.is_empty() {
                    String::new()
                } else {
                    format!("; verifier: {verifier}")
                }
            ),
        });
    }
    // SAFETY: the kernel returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::super::devices::{DEFAULT_ALLOWED, MKNOD};
    use super::*;

    #[test]
    fn jumps_skip_to_the_next_rule() {
        let rules = [DeviceRule {
            allow: true,
            kind: Kind::Char,
            major: Some(1),
            minor: Some(3),
            access: MKNOD,
        }];
        let p = compile(&rules);
        // prologue 6, then: type check, access (3), major, minor, mov, exit, then default.
        let block = &p[6..p.len() - 2];
        assert_eq!(block.len(), 8);
        for (i, ins) in block.iter().enumerate() {
            if ins.code == JMP_JNE_K {
                assert_eq!(
                    i as i16 + ins.off + 1,
                    block.len() as i16,
                    "jump {i} lands after its block"
                );
            }
        }
        assert_eq!(p.last().unwrap().code, JMP_EXIT);
    }

    #[test]
    fn a_wildcard_rule_becomes_the_default() {
        let mut rules = vec![DeviceRule {
            allow: false,
            kind: Kind::All,
            major: None,
            minor: None,
            access: ALL_ACCESS,
        }];
        rules.extend_from_slice(DEFAULT_ALLOWED);
        let p = compile(&rules);
        let default = p[p.len() - 2];
        assert_eq!(
            (default.code, default.imm),
            (ALU64_MOV_K, 0),
            "deny unless a rule allows"
        );
    }
}
