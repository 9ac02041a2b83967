//! Content that is not what the archive promises is refused, and a failed or interrupted load
//! leaves nothing registered and nothing behind.

mod common;

use common::*;
use serde_json::json;
use shoal_image::{Error, ImageStore};

fn layers() -> Vec<Layer> {
    vec![
        plain(layer_tar(&[
            E::Dir("etc", 0o755),
            E::File("etc/a", b"a", 0o644),
        ])),
        gzip(layer_tar(&[E::File("etc/b", &[7u8; 100_000], 0o644)])),
    ]
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let mut layers = layers();
    let wrong = layers[1].diff_id.clone();
    layers[1] = gzip(layer_tar(&[E::File("etc/b", b"tampered", 0o644)]));
    let mut claimed = layers.clone();
    claimed[1].diff_id = wrong.clone();
    let config = config_json(&claimed, json!({}));
    let sandbox = Sandbox::new();
    let err = sandbox
        .load(&docker_archive(&["bad:1"], &layers, &config))
        .unwrap_err();
    match &err {
        Error::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            assert!(what.contains(&wrong), "the error names the layer: {what}");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &layers[1].diff_id);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("export it again"), "{err}");
    sandbox.assert_empty();
}

#[test]
fn a_blob_that_does_not_match_the_manifest_digest_is_refused() {
    let layers = layers();
    let config = config_json(&layers, json!({}));
    let manifest = oci_manifest(&layers, &config);
    let index = json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len() },
    ]});
    // The second layer's blob file carries other bytes under the right name.
    let mut files = vec![(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    for blob in [&config, &manifest, &layers[0].blob] {
        files.push((
            format!("blobs/sha256/{}", hex_of(&sha256(blob))),
            blob.to_vec(),
        ));
    }
    let mut tampered = layers[1].blob.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0xff;
    files.push((
        format!("blobs/sha256/{}", hex_of(&sha256(&layers[1].blob))),
        tampered,
    ));
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));

    let sandbox = Sandbox::new();
    let err = sandbox.load(&outer_tar(&files)).unwrap_err();
    match &err {
        Error::DigestMismatch { what, expected, .. } => {
            assert!(what.contains("layer"), "{what}");
            assert_eq!(expected, &sha256(&layers[1].blob));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    sandbox.assert_empty();
}

#[test]
fn a_config_that_does_not_match_its_digest_is_refused() {
    let layers = layers();
    let config = config_json(&layers, json!({}));
    let mut archive_files = vec![
        (
            format!("{}.json", hex_of(&sha256(b"other"))),
            config.clone(),
        ),
        ("l0/layer.tar".to_owned(), layers[0].blob.clone()),
        ("l1/layer.tar".to_owned(), layers[1].blob.clone()),
    ];
    // A docker archive names its config by its id, but nothing forces it: the id is the content
    // digest, whatever the file is called. An OCI layout's blob name is a promise, though.
    let manifest = oci_manifest(&layers, &config);
    archive_files.clear();
    archive_files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    archive_files.push((
        format!("blobs/sha256/{}", hex_of(&sha256(&config))),
        b"{\"tampered\":1}".to_vec(),
    ));
    archive_files.push((
        format!("blobs/sha256/{}", hex_of(&sha256(&manifest))),
        manifest.clone(),
    ));
    let index = json!({ "schemaVersion": 2, "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len() },
    ]});
    archive_files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    let sandbox = Sandbox::new();
    let err = sandbox.load(&outer_tar(&archive_files)).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("image config"), "{err}");
    sandbox.assert_empty();
}

#[test]
fn a_truncated_gzip_layer_is_refused() {
    let mut layers = layers();
    let len = layers[1].blob.len();
    layers[1].blob.truncate(len / 2);
    let config = config_json(&layers, json!({}));
    let sandbox = Sandbox::new();
    let err = sandbox
        .load(&docker_archive(&["trunc:1"], &layers, &config))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidLayer { .. }), "{err}");
    assert!(
        err.to_string().contains(&layers[1].diff_id),
        "names the layer: {err}"
    );
    sandbox.assert_empty();
}

#[test]
fn a_truncated_or_corrupt_tar_layer_is_refused() {
    for damage in ["truncate", "checksum"] {
        let mut layers = layers();
        match damage {
            "truncate" => {
                let tar = layer_tar(&[E::File("big", &[1u8; 5000], 0o644)]);
                layers[0] = plain(tar[..3000].to_vec());
                layers[0].diff_id = sha256(&tar);
            }
            _ => {
                let mut tar = layer_tar(&[E::File("f", b"x", 0o644)]);
                tar[0] ^= 0x01; // the header checksum no longer matches
                layers[0] = plain(tar);
            }
        }
        let config = config_json(&layers, json!({}));
        let sandbox = Sandbox::new();
        let err = sandbox
            .load(&docker_archive(&["corrupt:1"], &layers, &config))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidLayer { .. } | Error::DigestMismatch { .. }
            ),
            "{damage}: {err}"
        );
        sandbox.assert_empty();
    }
}

#[test]
fn a_truncated_archive_is_refused() {
    let layers = layers();
    let config = config_json(&layers, json!({}));
    let archive = docker_archive(&["t:1"], &layers, &config);
    // Cuts inside entries. (An archive that lacks only its end-of-archive blocks is complete and
    // every byte of it is digest-checked, so it loads.)
    let manifest_at = archive
        .windows(10)
        .position(|w| w == b"[{\"Config\"")
        .unwrap();
    for cut in [100, 1000, archive.len() / 2 + 7, manifest_at + 10] {
        let sandbox = Sandbox::new();
        let err = sandbox.load(&archive[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArchive(_)),
            "cut at {cut}: {err}"
        );
        sandbox.assert_empty();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &archive).unwrap();
    let gz = gz.finish().unwrap();
    let sandbox = Sandbox::new();
    let err = sandbox.load(&gz[..gz.len() - 10]).unwrap_err();
    assert!(matches!(err, Error::InvalidArchive(_)), "{err}");
    sandbox.assert_empty();
}

#[test]
fn unsafe_archive_paths_are_refused() {
    for path in ["../manifest.json", "/manifest.json", "a/../../b"] {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, &b"[]"[..]).unwrap();
        let sandbox = Sandbox::new();
        let err = sandbox.load(&tar.into_inner().unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidArchive(_)), "{path}: {err}");
        sandbox.assert_empty();
    }
}

#[test]
fn layer_count_must_match_the_config() {
    let layers = layers();
    let config = config_json(&layers[..1], json!({}));
    let sandbox = Sandbox::new();
    let err = sandbox
        .load(&docker_archive(&["count:1"], &layers, &config))
        .unwrap_err();
    assert!(err.to_string().contains("rootfs.diff_ids"), "{err}");
    sandbox.assert_empty();
}

#[test]
fn reopening_after_a_crash_removes_leftovers() {
    let sandbox = Sandbox::new();
    let layers = layers();
    let config = config_json(&layers, json!({}));
    sandbox
        .load(&docker_archive(&["keep:1"], &layers, &config))
        .unwrap();
    let root = sandbox.root();
    let Sandbox { dir, store } = sandbox;
    drop(store);

    // What a crash in the middle of a load leaves: a scratch dir, an unpacked but unregistered
    // layer, a stored but unreferenced blob, a half-written index.
    std::fs::create_dir_all(root.join("tmp/load-1-0/layer-x/etc")).unwrap();
    std::fs::create_dir_all(root.join("layers").join("f".repeat(64)).join("bin")).unwrap();
    std::fs::write(root.join("blobs/sha256").join("e".repeat(64)), b"orphan").unwrap();
    std::fs::write(root.join("index.tmp-999"), b"{").unwrap();

    let store = ImageStore::open(&root).unwrap();
    assert_eq!(store.get("keep:1").unwrap().id, sha256(&config));
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert!(!root.join("layers").join("f".repeat(64)).exists());
    assert!(!root.join("blobs/sha256").join("e".repeat(64)).exists());
    assert!(!root.join("index.tmp-999").exists());
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 2);
    drop(dir);
}

#[test]
fn a_store_is_opened_by_one_process_at_a_time() {
    let sandbox = Sandbox::new();
    let err = ImageStore::open(&sandbox.root()).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
}
