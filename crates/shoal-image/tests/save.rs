//! `save` writes archives `load` (and docker's `docker load`) reads back to the same image.

mod common;

use common::*;
use serde_json::{json, Value};
use shoal_image::Error;

fn image(sandbox: &Sandbox) -> String {
    let layers = [
        gzip(layer_tar(&[
            E::Dir("etc", 0o755),
            E::Owned("etc/a", b"a", 0o600, 1000, 1000),
        ])),
        zstd(layer_tar(&[
            E::File("etc/.wh.a", b"", 0o644),
            E::Symlink("etc/b", "/etc/a"),
        ])),
        plain(layer_tar(&[E::Long(
            "x/".to_owned() + &"y".repeat(120),
            b"long",
        )])),
    ];
    let config = config_json(&layers, json!({ "Cmd": ["sh"], "Env": ["A=1"] }));
    sandbox
        .load(&docker_archive(
            &["saved:1", "saved:2", "other:1"],
            &layers,
            &config,
        ))
        .unwrap()[0]
        .id
        .clone()
}

fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (e.path().unwrap().display().to_string(), data)
        })
        .collect()
}

fn manifest(archive: &[u8]) -> Value {
    let (_, data) = entries(archive)
        .into_iter()
        .find(|(p, _)| p == "manifest.json")
        .unwrap();
    serde_json::from_slice(&data).unwrap()
}

#[test]
fn save_then_load_gives_the_same_image() {
    let source = Sandbox::new();
    let id = image(&source);
    let original = source.store.get(&id).unwrap();
    let mut archive = Vec::new();
    source
        .store
        .save(&["saved:1".to_owned()], &mut archive)
        .unwrap();

    let manifest = manifest(&archive);
    assert_eq!(manifest[0]["RepoTags"], json!(["saved:1"]));
    assert_eq!(
        manifest[0]["Config"],
        json!(format!("{}.json", hex_of(&id)))
    );
    let paths: Vec<String> = entries(&archive).into_iter().map(|(p, _)| p).collect();
    for diff_id in &original.diff_ids {
        assert!(
            paths.contains(&format!("{}/layer.tar", hex_of(diff_id))),
            "{paths:?}"
        );
    }
    assert!(paths.contains(&"repositories".to_owned()));

    let target = Sandbox::new();
    let loaded = target.load(&archive).unwrap();
    assert_eq!(loaded[0].id, id);
    assert_eq!(loaded[0].names, ["docker.io/library/saved:1"]);
    let copy = target.store.get("saved:1").unwrap();
    assert_eq!(copy.diff_ids, original.diff_ids);
    assert_eq!(copy.config, original.config);
    assert_eq!(copy.size, original.size);
    let dirs = target.store.layer_dirs(&copy).unwrap();
    assert_eq!(
        std::fs::read(dirs[0].join("x").join("y".repeat(120))).unwrap(),
        b"long"
    );
    assert_eq!(
        std::fs::read_link(dirs[1].join("etc/b")).unwrap().to_str(),
        Some("/etc/a")
    );

    // Deterministic: the same request gives the same bytes.
    let mut again = Vec::new();
    source
        .store
        .save(&["saved:1".to_owned()], &mut again)
        .unwrap();
    assert_eq!(archive, again);
}

#[test]
fn names_in_the_archive_follow_the_references() {
    let sandbox = Sandbox::new();
    let id = image(&sandbox);
    let save = |refs: &[&str]| {
        let mut out = Vec::new();
        sandbox
            .store
            .save(
                &refs.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                &mut out,
            )
            .unwrap();
        manifest(&out)
    };
    assert_eq!(save(&[&id])[0]["RepoTags"], Value::Null);
    assert_eq!(
        save(&["saved"])[0]["RepoTags"],
        json!(["saved:1", "saved:2"])
    );
    let both = save(&["saved:2", "other:1", &hex_of(&id)[..8]]);
    assert_eq!(both.as_array().unwrap().len(), 1);
    assert_eq!(both[0]["RepoTags"], json!(["saved:2", "other:1"]));
}

#[test]
fn shared_layers_are_written_once() {
    let sandbox = Sandbox::new();
    let base = plain(layer_tar(&[E::File("base", b"b", 0o644)]));
    for marker in ["x", "y"] {
        let layers = [
            base.clone(),
            plain(layer_tar(&[E::File(leak(marker.to_owned()), b"m", 0o644)])),
        ];
        let config = config_json(&layers, json!({ "Cmd": [marker] }));
        sandbox
            .load(&docker_archive(
                &[leak(format!("{marker}:1"))],
                &layers,
                &config,
            ))
            .unwrap();
    }
    let mut out = Vec::new();
    sandbox
        .store
        .save(&["x:1".to_owned(), "y:1".to_owned()], &mut out)
        .unwrap();
    let base_path = format!("{}/layer.tar", hex_of(&base.diff_id));
    assert_eq!(
        entries(&out)
            .iter()
            .filter(|(p, _)| *p == base_path)
            .count(),
        1
    );
    assert_eq!(manifest(&out).as_array().unwrap().len(), 2);
    let target = Sandbox::new();
    assert_eq!(target.load(&out).unwrap().len(), 2);
}

#[test]
fn save_refuses_unknown_images_and_damaged_blobs() {
    let sandbox = Sandbox::new();
    let id = image(&sandbox);
    let err = sandbox
        .store
        .save(&["nothing:1".to_owned()], Vec::new())
        .unwrap_err();
    assert_eq!(err.to_string(), "no such image: nothing:1");
    assert!(sandbox.store.save(&[], Vec::new()).is_err());

    // Damage a stored layer blob: save notices instead of writing a wrong layer.
    let image = sandbox.store.get(&id).unwrap();
    let blobs = sandbox.root().join("blobs/sha256");
    let raw = plain(layer_tar(&[E::Long(
        "x/".to_owned() + &"y".repeat(120),
        b"long",
    )]));
    let path = blobs.join(hex_of(&raw.diff_id));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = sandbox
        .store
        .save(std::slice::from_ref(&image.id), std::io::sink())
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains(&raw.diff_id), "{err}");
}
