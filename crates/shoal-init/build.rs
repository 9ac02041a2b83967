//! Builds the static `shoal-init` executable into OUT_DIR and announces its path to dependents.
//!
//! Cargo cannot build it as a bin target: a `no_std` executable needs `-C panic=abort`, which
//! cargo only sets per profile, for the whole workspace (see `src/lib.rs`). So this script runs
//! rustc on `src/lib.rs` as a binary with exactly the flags the init needs, whatever the
//! profile: abort on panic, static relocation model, no C runtime or libc at link time.
//! `RUSTFLAGS` are not applied to it (they are meant for the std-based crates); only the
//! profile's optimisation level is followed (`opt-level=s` and stripped, or a debug build).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo::rustc-check-cfg=cfg(shoal_init_static)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");

    let built = out_dir.join("shoal-init");
    compile(&manifest_dir.join("src/lib.rs"), &built);
    // Dependents read it at build time (`DEP_SHOAL_INIT_BINARY`); nothing is written outside
    // OUT_DIR.
    println!("cargo::metadata=binary={}", built.display());
}

fn compile(root: &Path, out: &Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("TARGET");
    let optimized = env::var("OPT_LEVEL").is_ok_and(|level| level != "0");

    let mut cmd = Command::new(rustc);
    cmd.arg(root)
        .args(["--crate-name", "shoal_init", "--crate-type", "bin"])
        .args(["--edition", "2021", "--target", &target])
        .args(["--cfg", "shoal_init_static"])
        .args(["-C", "panic=abort", "-C", "relocation-model=static"])
        .args(["-C", "codegen-units=1"])
        // Our own _start, no crt objects, no libc or libgcc, no dynamic section.
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .arg("-o")
        .arg(out);
    if optimized {
        cmd.args(["-C", "opt-level=s", "-C", "strip=symbols"])
            .args(["-C", "debug-assertions=off", "-C", "overflow-checks=off"]);
    } else {
        cmd.args(["-C", "opt-level=0", "-C", "debuginfo=2"]).args([
            "-C",
            "debug-assertions=on",
            "-C",
            "overflow-checks=on",
        ]);
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    let status = cmd.status().expect("run rustc for the static shoal-init");
    assert!(
        status.success(),
        "building the static shoal-init failed: rustc {status}"
    );
}
