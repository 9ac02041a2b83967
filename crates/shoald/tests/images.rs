//! Image commands end to end: load (file and stdin), ls, inspect, tag, save round trip, rmi.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;
use shoal_testkit::Daemon;

#[test]
fn load_list_inspect_tag_save_and_remove() {
    let d = Daemon::start();
    let archive = shoal_testkit::busybox_image().unwrap();
    // load from stdin
    let mut child = d
        .cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&archive).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: busybox:latest\n"
    );

    let ls = d.ok(&["images"]);
    assert!(
        ls.starts_with("REPOSITORY   TAG      IMAGE ID       CREATED"),
        "{ls}"
    );
    assert!(ls.contains("busybox      latest"), "{ls}");
    let img: Value = serde_json::from_str(&d.ok(&["image", "inspect", "busybox"])).unwrap();
    let id = img[0]["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:"));
    assert_eq!(img[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(img[0]["Config"]["Cmd"], serde_json::json!(["sh"]));

    d.ok(&["tag", "busybox", "mine/box:v1"]);
    assert!(d.ok(&["images"]).contains("mine/box"));
    let (_, out, _) = {
        let o = d.shoal(&["run", "--rm", "mine/box:v1", "echo", "tagged"]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            (),
        )
    };
    assert_eq!(out, "tagged\n");

    let saved = d.root.join("saved.tar");
    d.ok(&["save", "-o", saved.to_str().unwrap(), "mine/box:v1"]);
    d.ok(&["rmi", "mine/box:v1"]);
    assert!(!d.ok(&["images"]).contains("mine/box"));
    let (_, err) = d.fails(&["rmi", "mine/box:v1"]);
    assert!(err.contains("no such image"), "{err}");
    d.ok(&["load", "-i", saved.to_str().unwrap()]);
    let again: Value = serde_json::from_str(&d.ok(&["image", "inspect", "mine/box:v1"])).unwrap();
    assert_eq!(
        again[0]["Id"].as_str().unwrap(),
        id,
        "save/load keeps the image id"
    );

    // An image a container uses cannot be deleted.
    d.ok(&["create", "--name", "user", "busybox", "true"]);
    let (_, err) = d.fails(&["rmi", &id]);
    assert!(
        err.contains("conflict") || err.contains("must force") || err.contains("is using"),
        "{err}"
    );
    d.ok(&["rm", "user"]);
    let out = d.ok(&["rmi", "-f", &id]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(d.ok(&["images", "-q"]), "");

    let (_, err) = d.fails(&["load", "-i", "/nonexistent.tar"]);
    assert!(err.contains("/nonexistent.tar"));
    let junk = d.root.join("junk.tar");
    std::fs::write(&junk, b"not a tar archive at all").unwrap();
    let (_, err) = d.fails(&["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        d.ok(&["images", "-q"]),
        "",
        "a failed load registers nothing"
    );
    let (_, err) = d.fails(&["save", "-o", d.root.join("x.tar").to_str().unwrap(), "nope"]);
    assert!(err.contains("no such image"), "{err}");
    assert!(!d.root.join("x.tar").exists(), "no partial output");
}

#[test]
fn json_output_for_scripts() {
    let d = Daemon::start();
    d.load_busybox();
    d.ok(&["create", "--name", "scripted", "busybox", "true"]);
    let v: Value =
        serde_json::from_str(&d.ok(&["inspect", "--format", "json", "scripted"])).unwrap();
    assert_eq!(v[0]["Name"], "/scripted");
    let v: Value =
        serde_json::from_str(&d.ok(&["image", "inspect", "-f", "json", "busybox"])).unwrap();
    assert!(v[0]["Id"].as_str().unwrap().starts_with("sha256:"));
    let v: Value = serde_json::from_str(&d.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(v["Server"]["ApiVersion"], "v1");
    for line in d.ok(&["images", "--format", "json"]).lines() {
        let _: Value = serde_json::from_str(line).expect("one document per line");
    }
    let (_, err) = d.fails(&["inspect", "--format", "{{.Id}}", "scripted"]);
    assert!(err.contains("use --format json"), "{err}");
}
