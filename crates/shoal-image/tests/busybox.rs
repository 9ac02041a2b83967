//! The test kit's busybox image loads, its layers stack into a working root file system, and its
//! variants carry their config overrides.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::Sandbox;
use serde_json::json;

#[test]
fn busybox_image_loads_with_its_config_and_layers() {
    let sandbox = Sandbox::new();
    let archive = shoal_testkit::busybox_image().unwrap();
    let loaded = sandbox.store.load(File::open(&archive).unwrap()).unwrap();
    assert_eq!(loaded[0].names, ["docker.io/library/busybox:latest"]);
    let image = sandbox.store.get("busybox").unwrap();
    assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(image.config.entrypoint, None);
    assert_eq!(
        image.config.env,
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(image.diff_ids.len(), 2);

    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    assert!(
        dirs[0].join("etc/shoal-test-image").is_file(),
        "topmost layer first"
    );
    let base = &dirs[1];
    assert!(
        fs::metadata(base.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    assert_eq!(
        fs::read_link(base.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let home = fs::metadata(base.join("home/shoal")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    assert_eq!(
        fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(fs::read_to_string(base.join("etc/group"))
        .unwrap()
        .contains("extra:x:2000:shoal"));

    // Loading the same archive again is a no-op with the same id.
    let again = sandbox.store.load(File::open(&archive).unwrap()).unwrap();
    assert_eq!(again[0].id, loaded[0].id);
}

#[test]
fn busybox_runs_from_the_stacked_layers() {
    let sandbox = Sandbox::new();
    let archive = shoal_testkit::busybox_image().unwrap();
    sandbox.store.load(File::open(&archive).unwrap()).unwrap();
    let image = sandbox.store.get("busybox:latest").unwrap();
    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    let lowerdir = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mnt = sandbox.dir.path().join("rootfs");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lowerdir}").as_str()),
    )
    .expect("mounting overlayfs (tests run as root)");
    let output = Command::new("/usr/sbin/chroot")
        .arg(&mnt)
        .args([
            "/bin/sh",
            "-c",
            "cat /etc/shoal-test-image && id -un && ls /bin | grep -c .",
        ])
        .env("PATH", "/bin")
        .output();
    nix::mount::umount(&mnt).unwrap();
    let output = output.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "shoal test image, layer 2");
    assert_eq!(lines[1], "root");
    assert!(
        lines[2].parse::<u32>().unwrap() > 100,
        "applet links: {}",
        lines[2]
    );
}

#[test]
fn busybox_variants_carry_their_config() {
    let sandbox = Sandbox::new();
    let patch = json!({ "Entrypoint": ["/bin/echo", "hi"], "Cmd": null, "WorkingDir": "/tmp", "User": "shoal", "StopSignal": "SIGUSR1" });
    let archive = shoal_testkit::busybox_image_with(patch, "shoal-test/entry:1").unwrap();
    sandbox.store.load(File::open(&archive).unwrap()).unwrap();
    let image = sandbox.store.get("shoal-test/entry:1").unwrap();
    assert_eq!(
        image.config.entrypoint,
        Some(vec!["/bin/echo".to_owned(), "hi".to_owned()])
    );
    assert_eq!(image.config.cmd, None);
    assert_eq!(image.config.working_dir, "/tmp");
    assert_eq!(image.config.user, "shoal");
    assert_eq!(image.config.stop_signal.as_deref(), Some("SIGUSR1"));

    // Same layers as the plain image: nothing unpacked twice.
    let plain = shoal_testkit::busybox_image().unwrap();
    sandbox.store.load(File::open(&plain).unwrap()).unwrap();
    let base = sandbox.store.get("busybox").unwrap();
    assert_eq!(base.diff_ids, image.diff_ids);
    assert_ne!(base.id, image.id);
}
