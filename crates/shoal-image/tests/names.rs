//! Names, lookups and removal: docker's `tag`, `images`, `inspect` and `rmi` semantics, and
//! that deleting an image deletes exactly the files no other image needs.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;
use shoal_image::{Error, ImageStore, Removed};

fn load_image(sandbox: &Sandbox, tag: &str, marker: &'static [u8]) -> String {
    let layers = [
        plain(layer_tar(&[E::File("shared", b"shared base", 0o644)])),
        gzip(layer_tar(&[E::File("marker", marker, 0o644)])),
    ];
    let config = config_json(&layers, json!({ "Cmd": [String::from_utf8_lossy(marker)] }));
    let tags: Vec<&str> = if tag.is_empty() { vec![] } else { vec![tag] };
    sandbox
        .load(&docker_archive(&tags, &layers, &config))
        .unwrap()[0]
        .id
        .clone()
}

fn nobody(_: &str) -> Option<String> {
    None
}

fn count(sandbox: &Sandbox, dir: &str) -> usize {
    std::fs::read_dir(sandbox.root().join(dir)).unwrap().count()
}

#[test]
fn store_is_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageStore>();
    let sandbox = Sandbox::new();
    let store = std::sync::Arc::new(sandbox.store);
    let handles: Vec<_> = ["one", "two", "three"]
        .into_iter()
        .map(|marker| {
            let store = store.clone();
            std::thread::spawn(move || {
                let layers = [
                    plain(layer_tar(&[E::File("shared", b"shared base", 0o644)])),
                    plain(layer_tar(&[E::File(
                        "m",
                        leak(marker.to_owned()).as_bytes(),
                        0o644,
                    )])),
                ];
                let config = config_json(&layers, json!({ "Cmd": [marker] }));
                store
                    .load(
                        docker_archive(&[leak(format!("{marker}:1"))], &layers, &config).as_slice(),
                    )
                    .unwrap()
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(store.list().unwrap().len(), 3);
    assert_eq!(
        std::fs::read_dir(sandbox.dir.path().join("store/layers"))
            .unwrap()
            .count(),
        4
    );
}

#[test]
fn tag_get_and_list() {
    let sandbox = Sandbox::new();
    let id = load_image(&sandbox, "busybox:1.36", b"a");
    sandbox
        .store
        .tag("busybox:1.36", "localhost:5000/tools/busybox")
        .unwrap();
    sandbox.store.tag(&id, "busybox").unwrap();
    let image = sandbox
        .store
        .get("docker.io/library/busybox:latest")
        .unwrap();
    assert_eq!(image.id, id);
    assert_eq!(
        image.names,
        [
            "docker.io/library/busybox:1.36",
            "docker.io/library/busybox:latest",
            "localhost:5000/tools/busybox:latest"
        ]
    );
    assert_eq!(image.config.cmd, Some(vec!["a".to_owned()]));
    assert_eq!(image.diff_ids.len(), 2);
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(image.created.as_deref(), Some("2024-05-01T00:00:00Z"));
    assert_eq!(sandbox.store.list().unwrap(), vec![image]);

    let err = sandbox.store.get("busybox:1.37").unwrap_err();
    assert_eq!(err.to_string(), "no such image: busybox:1.37");
    assert!(matches!(err, Error::NotFound(_)));
    let err = sandbox.store.tag("busybox", "BusyBox").unwrap_err();
    assert!(
        err.to_string()
            .contains("repository name must be lowercase"),
        "{err}"
    );
    let digest = format!("busybox@sha256:{}", "a".repeat(64));
    assert!(sandbox.store.tag("busybox", &digest).is_err());
    assert!(matches!(
        sandbox.store.tag("nothing", "x").unwrap_err(),
        Error::NotFound(_)
    ));

    // Names survive a restart.
    let root = sandbox.root();
    let Sandbox { dir, store } = sandbox;
    drop(store);
    let store = ImageStore::open(&root).unwrap();
    assert_eq!(store.get("localhost:5000/tools/busybox").unwrap().id, id);
    drop(dir);
}

#[test]
fn loading_a_name_again_moves_it_and_leaves_the_old_image_dangling() {
    let sandbox = Sandbox::new();
    let old = load_image(&sandbox, "app:1", b"old");
    let new = load_image(&sandbox, "app:1", b"new");
    assert_ne!(old, new);
    assert_eq!(sandbox.store.get("app:1").unwrap().id, new);
    assert!(sandbox.store.get(&old).unwrap().names.is_empty());
}

#[test]
fn removing_names_and_images_follows_docker() {
    let sandbox = Sandbox::new();
    let id = load_image(&sandbox, "busybox:1.36", b"a");
    sandbox.store.tag("busybox:1.36", "busybox:latest").unwrap();
    sandbox.store.tag("busybox:1.36", "other/repo:x").unwrap();

    // A name with other names left: untag only.
    let removed = sandbox.store.remove("busybox", false, &nobody).unwrap();
    assert_eq!(
        removed,
        [Removed::Untagged("docker.io/library/busybox:latest".into())]
    );

    // By id with names in two repositories: refused unless forced.
    let err = sandbox.store.remove(&id, false, &nobody).unwrap_err();
    assert!(matches!(err, Error::Conflict(_)));
    assert!(
        err.to_string()
            .contains("image is referenced in multiple repositories"),
        "{err}"
    );

    // Last name of a used image: refused (docker's message, with the container from in_use).
    sandbox
        .store
        .remove("other/repo:x", false, &nobody)
        .unwrap();
    let in_use = |image: &str| (image == id).then(|| "c0ffee0123456789abcdef".to_owned());
    let err = sandbox
        .store
        .remove("busybox:1.36", false, &in_use)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "conflict: unable to remove repository reference \"busybox:1.36\" (must force) - container c0ffee012345 is using its referenced image {}",
            &hex_of(&id)[..12]
        )
    );
    // By id: refused even with force, the container's layers are the image's.
    let err = sandbox.store.remove(&id, true, &in_use).unwrap_err();
    assert!(
        err.to_string()
            .contains("(cannot be forced) - image is being used by container c0ffee012345"),
        "{err}"
    );
    // Forced by name: the name goes, the image stays for the container.
    let removed = sandbox.store.remove("busybox:1.36", true, &in_use).unwrap();
    assert_eq!(
        removed,
        [Removed::Untagged("docker.io/library/busybox:1.36".into())]
    );
    assert!(sandbox.store.get(&id).unwrap().names.is_empty());

    // Unused and untagged: delete by id prefix.
    let removed = sandbox
        .store
        .remove(&hex_of(&id)[..6], false, &nobody)
        .unwrap();
    assert_eq!(removed, [Removed::Deleted(id.clone())]);
    sandbox.assert_empty();
}

#[test]
fn removing_the_last_name_deletes_the_image_but_keeps_shared_layers() {
    let sandbox = Sandbox::new();
    let a = load_image(&sandbox, "a:1", b"a");
    let b = load_image(&sandbox, "b:1", b"b");
    assert_eq!(count(&sandbox, "layers"), 3);
    let blobs_before = count(&sandbox, "blobs/sha256");

    let removed = sandbox.store.remove("a:1", false, &nobody).unwrap();
    assert_eq!(
        removed,
        [
            Removed::Untagged("docker.io/library/a:1".into()),
            Removed::Deleted(a.clone())
        ]
    );
    assert!(matches!(sandbox.store.get(&a), Err(Error::NotFound(_))));
    // a's own layer, config, manifest and layer blob are gone; the shared base stays.
    assert_eq!(count(&sandbox, "layers"), 2);
    assert_eq!(count(&sandbox, "blobs/sha256"), blobs_before - 3);
    let image = sandbox.store.get("b:1").unwrap();
    for dir in sandbox.store.layer_dirs(&image).unwrap() {
        assert!(dir.is_dir());
    }

    // By id, names in one repository: all untagged, image deleted.
    sandbox.store.tag("b:1", "b:2").unwrap();
    let removed = sandbox.store.remove(&b, false, &nobody).unwrap();
    assert_eq!(
        removed,
        [
            Removed::Untagged("docker.io/library/b:1".into()),
            Removed::Untagged("docker.io/library/b:2".into()),
            Removed::Deleted(b)
        ]
    );
    sandbox.assert_empty();
    assert!(matches!(
        sandbox.store.remove("b:1", false, &nobody),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn ambiguous_prefixes_are_refused() {
    let sandbox = Sandbox::new();
    let mut ids = HashMap::new();
    for marker in [
        &b"1"[..],
        b"2",
        b"3",
        b"4",
        b"5",
        b"6",
        b"7",
        b"8",
        b"9",
        b"10",
        b"11",
        b"12",
        b"13",
        b"14",
        b"15",
        b"16",
        b"17",
        b"18",
    ] {
        let id = load_image(&sandbox, "", marker);
        ids.entry(hex_of(&id)[..1].to_owned())
            .or_insert_with(Vec::new)
            .push(id);
    }
    let (prefix, _) = ids
        .iter()
        .find(|(_, v)| v.len() > 1)
        .expect("18 ids share a first digit");
    assert!(matches!(
        sandbox.store.get(prefix),
        Err(Error::Ambiguous(_))
    ));
}
