//! Archive formats `load` accepts: classic `docker save`, docker ≥ 25's OCI form, OCI image
//! layouts (with image indexes), compressed layers and compressed archives, read from a pipe.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::json;

fn two_layers() -> (Vec<Layer>, Vec<Layer>) {
    let tars = [
        layer_tar(&[E::Dir("etc", 0o755), E::File("etc/one", b"1", 0o644)]),
        layer_tar(&[E::File("etc/two", b"2", 0o644)]),
    ];
    let plain_layers = tars.iter().cloned().map(plain).collect();
    let gzip_layers = vec![gzip(tars[0].clone()), zstd(tars[1].clone())];
    (plain_layers, gzip_layers)
}

/// Hands out at most 7 bytes per read, like a slow pipe.
struct Trickle<R>(R);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn compressed_layers_and_compressed_archives_give_the_same_image() {
    let (plain_layers, compressed) = two_layers();
    let config = config_json(&plain_layers, json!({"Cmd": ["sh"]}));
    let archive = docker_archive(&["fmt:plain"], &plain_layers, &config);
    let compressed_archive = docker_archive(&["fmt:compressed"], &compressed, &config);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&compressed_archive).unwrap();
    let gz_archive = gz.finish().unwrap();
    #[cfg(feature = "zstd")]
    let zstd_archive = zstd::stream::encode_all(archive.as_slice(), 1).unwrap();
    #[cfg(not(feature = "zstd"))]
    let zstd_archive = archive.clone();

    let sandbox = Sandbox::new();
    let a = sandbox.load(&archive).unwrap();
    let b = sandbox.store.load(Trickle(gz_archive.as_slice())).unwrap();
    let c = sandbox.load(&zstd_archive).unwrap();
    assert_eq!(a[0].id, b[0].id);
    assert_eq!(a[0].id, c[0].id);
    let image = sandbox.store.get("fmt:compressed").unwrap();
    assert_eq!(
        image.names,
        [
            "docker.io/library/fmt:compressed",
            "docker.io/library/fmt:plain"
        ]
    );
    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("etc/two")).unwrap(), b"2");
    assert_eq!(std::fs::read(dirs[1].join("etc/one")).unwrap(), b"1");
}

#[test]
fn oci_layouts_load_with_names_from_annotations() {
    let (_, layers) = two_layers();
    let config = config_json(&layers, json!({"Entrypoint": ["/init"], "Cmd": []}));
    let manifest = oci_manifest(&layers, &config);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
              "annotations": { "io.containerd.image.name": "localhost:5000/team/app:v1", "org.opencontainers.image.ref.name": "v1" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
              "annotations": { "org.opencontainers.image.ref.name": "app:v2" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
              "annotations": { "org.opencontainers.image.ref.name": "latest" } },
        ],
    });
    let blobs: Vec<&[u8]> = vec![&config, &manifest, &layers[0].blob, &layers[1].blob];
    let sandbox = Sandbox::new();
    let loaded = sandbox.load(&oci_layout(&blobs, index)).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].names,
        ["localhost:5000/team/app:v1", "docker.io/library/app:v2"]
    );
    let image = sandbox.store.get("localhost:5000/team/app:v1").unwrap();
    assert_eq!(image.manifest_digest, sha256(&manifest));
    assert_eq!(image.config.entrypoint, Some(vec!["/init".to_owned()]));
    assert_eq!(image.config.cmd, Some(vec![]));
    assert_eq!(
        sandbox
            .store
            .get(&format!("localhost:5000/team/app@{}", sha256(&manifest)))
            .unwrap()
            .id,
        image.id
    );
    // Blobs are kept as given, so the manifest's digests can be served later.
    let mut stored = Vec::new();
    sandbox
        .store
        .open_blob(&sha256(&layers[0].blob))
        .unwrap()
        .read_to_end(&mut stored)
        .unwrap();
    assert_eq!(stored, layers[0].blob);
}

#[test]
fn image_indexes_resolve_to_this_platform() {
    let (layers, _) = two_layers();
    let config = config_json(&layers, json!({}));
    let manifest = oci_manifest(&layers, &config);
    let other_config = config_json(&layers, json!({"Cmd": ["arm"]}));
    let other_manifest = oci_manifest(&layers, &other_config);
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let image_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            // Only the other platform's manifest is listed first, and its blob is absent: fine.
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&other_manifest), "size": other_manifest.len(), "platform": { "architecture": other, "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(), "platform": { "architecture": host, "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(b"att"), "size": 3, "platform": { "architecture": "unknown", "os": "unknown" } },
        ],
    }))
    .unwrap();
    let index = json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&image_index), "size": image_index.len(),
          "annotations": { "io.containerd.image.name": "docker.io/library/multi:1" } },
    ]});
    let blobs: Vec<&[u8]> = vec![
        &image_index,
        &config,
        &manifest,
        &layers[0].blob,
        &layers[1].blob,
    ];
    let sandbox = Sandbox::new();
    let loaded = sandbox.load(&oci_layout(&blobs, index)).unwrap();
    assert_eq!(loaded[0].id, sha256(&config));
    assert_eq!(
        sandbox.store.get("multi:1").unwrap().manifest_digest,
        sha256(&manifest)
    );
}

#[test]
fn an_index_without_this_platform_is_refused_clearly() {
    let (layers, _) = two_layers();
    let config = config_json(&layers, json!({}));
    let manifest = oci_manifest(&layers, &config);
    let image_index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(), "platform": { "architecture": "s390x", "os": "linux" } },
    ]}))
    .unwrap();
    let index = json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&image_index), "size": image_index.len() },
    ]});
    let blobs: Vec<&[u8]> = vec![
        &image_index,
        &config,
        &manifest,
        &layers[0].blob,
        &layers[1].blob,
    ];
    let sandbox = Sandbox::new();
    let err = sandbox.load(&oci_layout(&blobs, index)).unwrap_err();
    assert!(err.to_string().contains("linux/s390x"), "{err}");
    sandbox.assert_empty();
}

#[test]
fn docker_25_archives_keep_their_oci_manifest() {
    let (_, layers) = two_layers();
    let config = config_json(&layers, json!({}));
    let manifest = oci_manifest(&layers, &config);
    let blob = |b: &[u8]| format!("blobs/sha256/{}", hex_of(&sha256(b)));
    let docker_manifest = json!([{ "Config": blob(&config), "RepoTags": ["new:25"], "Layers": [blob(&layers[0].blob), blob(&layers[1].blob)] }]);
    let index = json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
          "annotations": { "io.containerd.image.name": "docker.io/library/new:25", "org.opencontainers.image.ref.name": "25" } },
    ]});
    let files = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (blob(&config), config.clone()),
        (blob(&manifest), manifest.clone()),
        (blob(&layers[0].blob), layers[0].blob.clone()),
        (blob(&layers[1].blob), layers[1].blob.clone()),
        ("index.json".to_owned(), serde_json::to_vec(&index).unwrap()),
        (
            "manifest.json".to_owned(),
            serde_json::to_vec(&docker_manifest).unwrap(),
        ),
    ];
    let sandbox = Sandbox::new();
    sandbox.load(&outer_tar(&files)).unwrap();
    let image = sandbox.store.get("new:25").unwrap();
    assert_eq!(image.manifest_digest, sha256(&manifest));
}

#[test]
fn repeated_layers_may_be_symlinks_in_the_archive() {
    let layer = plain(layer_tar(&[E::File("f", b"f", 0o644)]));
    let layers = [layer.clone(), layer.clone()];
    let config = config_json(&layers, json!({}));
    let config_name = format!("{}.json", hex_of(&sha256(&config)));
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, data).unwrap();
    };
    add(&config_name, &config);
    add("a/layer.tar", &layer.blob);
    let manifest = json!([{ "Config": config_name, "RepoTags": ["sym:1"], "Layers": ["a/layer.tar", "b/layer.tar"] }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    tar.append_link(&mut header, "b/layer.tar", "../a/layer.tar")
        .unwrap();
    let archive = tar.into_inner().unwrap();

    let sandbox = Sandbox::new();
    sandbox.load(&archive).unwrap();
    assert_eq!(sandbox.store.get("sym:1").unwrap().diff_ids.len(), 2);
}

#[test]
fn untagged_images_load_by_id() {
    let (layers, _) = two_layers();
    let config = config_json(&layers, json!({}));
    let sandbox = Sandbox::new();
    let loaded = sandbox
        .load(&docker_archive(&[], &layers, &config))
        .unwrap();
    assert!(loaded[0].names.is_empty());
    let image = sandbox.store.get(&loaded[0].id).unwrap();
    assert!(image.names.is_empty());
    assert_eq!(
        sandbox.store.get(&hex_of(&image.id)[..8]).unwrap().id,
        image.id
    );
}

#[test]
fn non_archives_are_refused_clearly() {
    let sandbox = Sandbox::new();
    let err = sandbox
        .load(&outer_tar(&[("hello.txt".into(), b"hi".to_vec())]))
        .unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");
    let err = sandbox
        .load(&outer_tar(&[("repositories".into(), b"{}".to_vec())]))
        .unwrap_err();
    assert!(err.to_string().contains("legacy"), "{err}");
    let err = sandbox.load(b"BZh91AY&SY").unwrap_err();
    assert!(err.to_string().contains("bzip2"), "{err}");
    let err = sandbox.load(b"").unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");
    sandbox.assert_empty();
}

#[test]
fn an_image_without_layers_loads() {
    let config = config_json(&[], json!({ "Cmd": ["true"] }));
    let sandbox = Sandbox::new();
    sandbox
        .load(&docker_archive(&["empty:1"], &[], &config))
        .unwrap();
    let image = sandbox.store.get("empty:1").unwrap();
    assert!(image.diff_ids.is_empty());
    assert!(sandbox.store.layer_dirs(&image).unwrap().is_empty());
    let mut out = Vec::new();
    sandbox
        .store
        .save(&["empty:1".to_owned()], &mut out)
        .unwrap();
    assert_eq!(Sandbox::new().load(&out).unwrap()[0].id, image.id);
}
