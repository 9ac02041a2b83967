//! Malicious layers: every way out of the layer directory is refused, nothing is written outside,
//! nothing is registered and no scratch directory is left behind.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use shoal_image::Error;

/// Loads a one-layer image made of `entries` (after an innocent first layer, so a failure also
/// has an already-unpacked layer to clean up).
fn load_evil(
    sandbox: &Sandbox,
    entries: &[E],
) -> shoal_image::Result<Vec<shoal_image::LoadedImage>> {
    let good = plain(layer_tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/ok", b"fine", 0o644),
    ]));
    let evil = plain(layer_tar(entries));
    let layers = [good, evil];
    let config = config_json(&layers, serde_json::json!({}));
    sandbox.load(&docker_archive(&["evil:latest"], &layers, &config))
}

fn assert_unsafe(result: shoal_image::Result<Vec<shoal_image::LoadedImage>>, path_part: &str) {
    if let Err(err) = &result {
        eprintln!("{err}");
    }
    match result {
        Err(Error::UnsafePath { path, .. }) => assert!(path.contains(path_part), "{path}"),
        other => panic!("expected an unsafe-path error for {path_part}, got {other:?}"),
    }
}

#[test]
fn dotdot_entries_are_rejected() {
    for name in [
        "../escape",
        "a/../../escape",
        "./../escape",
        "a/b/../../../../../../../../tmp/escape",
    ] {
        let sandbox = Sandbox::new();
        let entries = [E::File(leak(name.to_owned()), b"pwned", 0o644)];
        assert_unsafe(load_evil(&sandbox, &entries), "escape");
        sandbox.assert_empty();
        assert!(!std::path::Path::new("/tmp/escape").exists());
    }
}

#[test]
fn absolute_entries_are_unpacked_relative_to_the_layer() {
    let sandbox = Sandbox::new();
    let outside = Outside::new("abs");
    let name = leak(format!("{}/file", outside.0.display()));
    let loaded = load_evil(&sandbox, &[E::File(name, b"inside", 0o644)]).unwrap();
    assert!(
        !outside.0.exists(),
        "an absolute entry was written at its absolute path"
    );
    let image = sandbox.store.get(&loaded[0].id).unwrap();
    let top = &sandbox.store.layer_dirs(&image).unwrap()[0];
    let inside = top.join(name.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
}

#[test]
fn writing_through_a_planted_symlink_is_rejected() {
    let sandbox = Sandbox::new();
    let outside = Outside::new("dir");
    std::fs::create_dir(&outside.0).unwrap();
    let target = leak(outside.0.display().to_string());
    assert_unsafe(
        load_evil(
            &sandbox,
            &[E::Symlink("a", target), E::File("a/file", b"pwned", 0o644)],
        ),
        "a/file",
    );
    assert_eq!(
        std::fs::read_dir(&outside.0).unwrap().count(),
        0,
        "wrote through the symlink"
    );
    sandbox.assert_empty();
}

#[test]
fn writing_through_a_symlink_to_dotdot_is_rejected() {
    let sandbox = Sandbox::new();
    assert_unsafe(
        load_evil(
            &sandbox,
            &[E::Symlink("a", ".."), E::File("a/escape", b"pwned", 0o644)],
        ),
        "a/escape",
    );
    sandbox.assert_empty();

    let sandbox = Sandbox::new();
    let outside = Outside::new("up");
    std::fs::create_dir(&outside.0).unwrap();
    let target = leak(format!(
        "../../../../../../../../../..{}",
        outside.0.display()
    ));
    let entries = [
        E::Dir("d", 0o755),
        E::Symlink("d/up", target),
        E::Dir("d/up/sub", 0o755),
    ];
    assert_unsafe(load_evil(&sandbox, &entries), "d/up/sub");
    assert_eq!(std::fs::read_dir(&outside.0).unwrap().count(), 0);
    sandbox.assert_empty();
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_followed() {
    let sandbox = Sandbox::new();
    let outside = Outside::new("swap");
    std::fs::create_dir(&outside.0).unwrap();
    let target = leak(outside.0.display().to_string());
    let entries = [
        E::Dir("d", 0o755),
        E::File("d/x", b"a", 0o644),
        E::Symlink("d", target),
        E::File("d/y", b"pwned", 0o644),
    ];
    assert_unsafe(load_evil(&sandbox, &entries), "d/y");
    assert_eq!(std::fs::read_dir(&outside.0).unwrap().count(), 0);
    sandbox.assert_empty();
}

#[test]
fn a_file_over_a_symlink_replaces_the_symlink() {
    let sandbox = Sandbox::new();
    let outside = Outside::new("file");
    std::fs::write(&outside.0, b"original").unwrap();
    let target = leak(outside.0.display().to_string());
    let entries = [
        E::Symlink("a", target),
        E::File("a", b"replaced", 0o644),
        E::Symlink("b", target),
        E::Dir("b", 0o755),
    ];
    let loaded = load_evil(&sandbox, &entries).unwrap();
    assert_eq!(std::fs::read(&outside.0).unwrap(), b"original");
    let image = sandbox.store.get(&loaded[0].id).unwrap();
    let top = &sandbox.store.layer_dirs(&image).unwrap()[0];
    assert_eq!(std::fs::read(top.join("a")).unwrap(), b"replaced");
    assert!(std::fs::symlink_metadata(top.join("b")).unwrap().is_dir());
}

#[test]
fn hard_links_out_of_the_layer_are_rejected() {
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let sandbox = Sandbox::new();
    assert_unsafe(
        load_evil(&sandbox, &[E::Hardlink("x", "../../etc/passwd")]),
        "x",
    );
    sandbox.assert_empty();

    // Absolute targets are relative to the layer too: /etc/passwd is not in this layer.
    let sandbox = Sandbox::new();
    let err = load_evil(&sandbox, &[E::Hardlink("x", "/etc/passwd")]).unwrap_err();
    assert!(matches!(err, Error::InvalidLayer { .. }), "{err}");
    assert!(err.to_string().contains("not in this layer"), "{err}");
    sandbox.assert_empty();
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
}

#[test]
fn hard_links_through_a_symlink_are_rejected() {
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let sandbox = Sandbox::new();
    assert_unsafe(
        load_evil(
            &sandbox,
            &[E::Symlink("s", "/etc"), E::Hardlink("x", "s/passwd")],
        ),
        "x",
    );
    sandbox.assert_empty();
    let sandbox = Sandbox::new();
    assert_unsafe(
        load_evil(
            &sandbox,
            &[E::Symlink("s", ".."), E::Hardlink("x", "s/etc/ok")],
        ),
        "x",
    );
    sandbox.assert_empty();
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
}

#[test]
fn hard_links_to_directories_are_rejected() {
    let sandbox = Sandbox::new();
    assert_unsafe(
        load_evil(&sandbox, &[E::Dir("d", 0o755), E::Hardlink("x", "d")]),
        "x",
    );
    sandbox.assert_empty();
}

#[test]
fn whiteouts_cannot_escape_or_go_through_symlinks() {
    for name in [".wh..", ".wh...", "../.wh.x"] {
        let sandbox = Sandbox::new();
        let err = load_evil(&sandbox, &[E::File(leak(name.to_owned()), b"", 0o644)]).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{name}: {err}");
        sandbox.assert_empty();
    }
    let sandbox = Sandbox::new();
    let outside = Outside::new("wh");
    std::fs::create_dir(&outside.0).unwrap();
    std::fs::write(outside.0.join("victim"), b"keep").unwrap();
    let target = leak(outside.0.display().to_string());
    assert_unsafe(
        load_evil(
            &sandbox,
            &[E::Symlink("s", target), E::File("s/.wh.victim", b"", 0o644)],
        ),
        "s/.wh.victim",
    );
    assert_unsafe(
        load_evil(
            &sandbox,
            &[
                E::Symlink("s", target),
                E::File("s/.wh..wh..opq", b"", 0o644),
            ],
        ),
        "s/.wh..wh..opq",
    );
    assert_eq!(std::fs::read(outside.0.join("victim")).unwrap(), b"keep");
    assert!(xattr_of(&outside.0, "trusted.overlay.opaque").is_none());
    sandbox.assert_empty();
}

#[test]
fn a_file_entry_for_the_layer_root_is_rejected() {
    let sandbox = Sandbox::new();
    let err = load_evil(&sandbox, &[E::File(".", b"x", 0o644)]).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    sandbox.assert_empty();
}

fn xattr_of(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
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
