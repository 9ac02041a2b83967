//! Layer content survives unpacking: modes (setuid, sticky), owners, symlinks, hard links,
//! devices, fifos, xattrs, mtimes (directories too), long names, and whiteouts that overlayfs
//! understands.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` has `buf.len()` writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn unpacks_every_kind_of_entry_with_its_metadata() {
    let sandbox = Sandbox::new();
    let long = "d/".to_owned() + &"n".repeat(150);
    let layer = gzip(layer_tar(&[
        E::Dir("d", 0o750),
        E::Dir("tmp", 0o1777),
        E::Owned("d/suid", b"#!/bin/sh\n", 0o4755, 0, 0),
        E::Owned("d/owned", b"data", 0o640, 1000, 2000),
        E::Symlink("d/link", "/nowhere/at/all"),
        E::Hardlink("d/hard", "d/owned"),
        E::Char("d/null", 1, 3),
        E::Fifo("d/fifo"),
        E::Xattr("d/xattr", b"x", "user.shoal", b"yes"),
        E::Xattr("d/overlay", b"x", "trusted.overlay.redirect", b"/etc"),
        E::Long(long.clone(), b"long"),
        E::File("implicit/parent/file", b"p", 0o600),
    ]));
    let config = config_json(std::slice::from_ref(&layer), serde_json::json!({}));
    let loaded = sandbox
        .load(&docker_archive(&["kinds:1"], &[layer], &config))
        .unwrap();
    let image = sandbox.store.get("kinds:1").unwrap();
    assert_eq!(image.id, loaded[0].id);
    let root = &sandbox.store.layer_dirs(&image).unwrap()[0];

    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(meta("d").mode() & 0o7777, 0o750);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("d/suid").mode() & 0o7777, 0o4755);
    assert_eq!((meta("d/owned").uid(), meta("d/owned").gid()), (1000, 2000));
    assert_eq!(meta("d/owned").mode() & 0o7777, 0o640);
    assert_eq!(
        fs::read_link(root.join("d/link")).unwrap(),
        Path::new("/nowhere/at/all")
    );
    assert_eq!(meta("d/hard").ino(), meta("d/owned").ino());
    let null = meta("d/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(meta("d/fifo").file_type().is_fifo());
    assert_eq!(
        xattr_of(&root.join("d/xattr"), "user.shoal").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        xattr_of(&root.join("d/overlay"), "trusted.overlay.redirect"),
        None,
        "overlay xattrs must be dropped"
    );
    assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    assert_eq!(meta("implicit/parent").mode() & 0o7777, 0o755);
    // Files and directories keep the archive's mtime, directories even after children were added.
    assert_eq!(meta("d/owned").mtime(), MTIME as i64);
    assert_eq!(meta("d").mtime(), MTIME as i64);
    assert_eq!(meta("tmp").mtime(), MTIME as i64);
    assert_eq!(image.size, 10 + 4 + 1 + 1 + 4 + 1);
}

#[test]
fn whiteouts_become_overlayfs_whiteouts_and_hide_lower_files() {
    let sandbox = Sandbox::new();
    let lower = plain(layer_tar(&[
        E::Dir("keep", 0o755),
        E::File("keep/a", b"a", 0o644),
        E::File("keep/gone", b"g", 0o644),
        E::Dir("opaque", 0o755),
        E::File("opaque/old", b"o", 0o644),
    ]));
    let upper = plain(layer_tar(&[
        E::File("keep/.wh.gone", b"", 0o644),
        E::File("opaque/.wh..wh..opq", b"", 0o644),
        E::File("opaque/new", b"n", 0o644),
        E::File(".wh..wh.plnk", b"", 0o644),
    ]));
    let layers = [lower, upper];
    let config = config_json(&layers, serde_json::json!({}));
    sandbox
        .load(&docker_archive(&["wh:1"], &layers, &config))
        .unwrap();
    let image = sandbox.store.get("wh:1").unwrap();
    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 2);
    let top = &dirs[0];
    let whiteout = fs::symlink_metadata(top.join("keep/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!top.join("keep/.wh.gone").exists());
    assert_eq!(
        xattr_of(&top.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        !top.join(".wh..wh.plnk").exists(),
        "aufs metadata is skipped"
    );

    // The real test: overlayfs agrees.
    let mnt = sandbox.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let lowerdir = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lowerdir}").as_str()),
    )
    .expect("mounting overlayfs (tests run as root)");
    let listing = |dir: &str| {
        let mut names: Vec<String> = fs::read_dir(mnt.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let keep = listing("keep");
    let opaque = listing("opaque");
    nix::mount::umount(&mnt).unwrap();
    assert_eq!(keep, ["a"]);
    assert_eq!(opaque, ["new"]);
}

#[test]
fn layers_are_unpacked_once_and_shared() {
    let sandbox = Sandbox::new();
    let base = plain(layer_tar(&[E::File("base", b"shared", 0o644)]));
    let one = plain(layer_tar(&[E::File("one", b"1", 0o644)]));
    let two = gzip(layer_tar(&[E::File("two", b"2", 0o644)]));
    let first = [base.clone(), one];
    let config = config_json(&first, serde_json::json!({"Cmd": ["one"]}));
    sandbox
        .load(&docker_archive(&["one:1"], &first, &config))
        .unwrap();
    let image_one = sandbox.store.get("one:1").unwrap();
    let base_dir = sandbox.store.layer_dirs(&image_one).unwrap()[1].clone();
    let inode = fs::metadata(base_dir.join("base")).unwrap().ino();

    // Same base layer, this time gzip-compressed in the archive: still the same diff id.
    let second = [gzip(layer_tar(&[E::File("base", b"shared", 0o644)])), two];
    assert_eq!(second[0].diff_id, base.diff_id);
    let config = config_json(&second, serde_json::json!({"Cmd": ["two"]}));
    sandbox
        .load(&docker_archive(&["two:1"], &second, &config))
        .unwrap();
    let image_two = sandbox.store.get("two:1").unwrap();
    let dirs = sandbox.store.layer_dirs(&image_two).unwrap();
    assert_eq!(dirs[1], base_dir);
    assert_eq!(
        fs::metadata(base_dir.join("base")).unwrap().ino(),
        inode,
        "base layer unpacked again"
    );
    assert_eq!(
        fs::read_dir(sandbox.root().join("layers")).unwrap().count(),
        3
    );
}

#[test]
fn a_layer_listed_twice_is_stacked_once() {
    let sandbox = Sandbox::new();
    let empty = plain(layer_tar(&[]));
    let file = plain(layer_tar(&[E::File("f", b"f", 0o644)]));
    let layers = [empty.clone(), file, empty];
    let config = config_json(&layers, serde_json::json!({}));
    sandbox
        .load(&docker_archive(&["dup:1"], &layers, &config))
        .unwrap();
    let image = sandbox.store.get("dup:1").unwrap();
    assert_eq!(image.diff_ids.len(), 3);
    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 2);
    assert!(
        dirs[1].join("f").exists(),
        "topmost occurrence kept: {dirs:?}"
    );
}
