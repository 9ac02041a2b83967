//! Embeds the static `shoal-init` (built by the shoal-init crate's build script) so the
//! runtime can exec it from a sealed memfd as its "dmz" (see `src/dmz.rs`).

fn main() {
    let binary = std::env::var("DEP_SHOAL_INIT_BINARY")
        .expect("shoal-init's build script announces the binary (links = \"shoal_init\")");
    println!("cargo::rerun-if-env-changed=DEP_SHOAL_INIT_BINARY");
    println!("cargo::rerun-if-changed={binary}");
    println!("cargo::rustc-env=SHOAL_INIT_BINARY={binary}");
}
