//! Compiles `proto/` into Rust with a vendored protoc, so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; tonic-prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "shoal/v1/network.proto",
        "shoal/v1/container.proto",
        "shoal/v1/image.proto",
        "shoal/v1/engine.proto",
        "shoal/v1/raft.proto",
        "shoal/v1/swarm.proto",
        "shoal/v1/nodeca.proto",
        "shoal/v1/service.proto",
        "shoal/v1/content.proto",
    ]
    .map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .compile_protos(&files, &[root])?;
    Ok(())
}
