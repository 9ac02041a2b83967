//! Registries end to end: `shoal login`, `pull`, `run` and `logout` against a real
//! docker-registry with basic authentication, in the test daemon's own network namespace.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

use shoal_testkit::{Daemon, TestRegistry};

/// `shoal` with its credentials kept in `config`, the password (if any) on stdin.
fn shoal(d: &Daemon, config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = d
        .cmd(args)
        .env("SHOAL_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn login_pull_run_and_logout_against_a_registry_with_basic_auth() {
    let d = Daemon::start();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let registry = TestRegistry::start(Some(&d.netns()), Some(("shoal", &hash)));
    registry.push_busybox("team/busybox", "v1", Some("shoal:s3cret"));
    let config = tempfile::tempdir().unwrap();
    let image = format!("{}/team/busybox:v1", registry.addr);

    // Without credentials: refused, and the error says what to do.
    let o = shoal(&d, config.path(), &["pull", &image], None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shoal login"), "{}", text(&o));

    // Wrong password: refused, nothing stored.
    let login = ["login", "-u", "shoal", "--password-stdin", &registry.addr];
    let o = shoal(&d, config.path(), &login, Some("wrong\n"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("unauthorized"), "{}", text(&o));
    assert!(!config.path().join("config.json").exists());

    // Right password: stored for this user only.
    let o = shoal(&d, config.path(), &login, Some("s3cret\n"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Login Succeeded"), "{}", text(&o));
    let mode = std::fs::metadata(config.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Pull, then run what was pulled.
    let o = shoal(&d, config.path(), &["pull", &image], None);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("v1: Pulling from team/busybox"), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded image for {image}")),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some(image.as_str()));
    assert!(d.ok(&["images"]).contains("team/busybox"));
    let hello = d.ok(&["run", "--rm", &image, "echo", "pulled and running"]);
    assert_eq!(hello.trim(), "pulled and running");

    // -q prints the name only.
    let o = shoal(&d, config.path(), &["pull", "-q", &image], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        image,
        "{}",
        text(&o)
    );

    // Push under another name: the blobs are mounted from the repository they came from
    // (cross-repository mount, no bytes sent), the manifest goes up; pulled
    // back after the local copies are gone, it is the same image.
    let copy = format!("{}/team/copy:v2", registry.addr);
    d.ok(&["tag", &image, &copy]);
    let o = shoal(&d, config.path(), &["push", &copy], None);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("Mounted from team/busybox"), "{out}");
    assert!(!out.contains("Pushed"), "no blob sent again: {out}");
    assert!(out.contains("v2: digest: sha256:"), "{out}");
    let id_of = |name: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["image", "inspect", name])).unwrap();
        v[0]["Id"].as_str().unwrap().to_owned()
    };
    let id = id_of(&image);
    d.ok(&["rmi", &image, &copy]);
    let o = shoal(&d, config.path(), &["pull", &copy], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(id_of(&copy), id);

    // Logout forgets the credentials: the next pull is refused again.
    let o = shoal(&d, config.path(), &["logout", &registry.addr], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = shoal(&d, config.path(), &["pull", &image], None);
    assert!(!o.status.success(), "{}", text(&o));
}

#[test]
fn pulling_a_missing_image_or_a_bad_reference_fails_in_one_line() {
    let d = Daemon::start();
    let registry = TestRegistry::start(Some(&d.netns()), None);
    registry.push_busybox("team/busybox", "v1", None);
    let config = tempfile::tempdir().unwrap();

    let missing = format!("{}/team/busybox:v9", registry.addr);
    let o = shoal(&d, config.path(), &["pull", &missing], None);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("no such image") || err.contains("not found"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let o = shoal(&d, config.path(), &["pull", "Bad//Name"], None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid reference format"),
        "{}",
        text(&o)
    );
    assert!(!d.ok(&["images"]).contains("team/busybox"));
}

#[test]
fn a_service_from_a_registry_image_runs_the_content_its_tag_named_at_create() {
    let d = Daemon::start();
    d.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let registry = TestRegistry::start(Some(&d.netns()), None);
    registry.push_busybox("team/busybox", "v1", None);
    let image = format!("{}/team/busybox:v1", registry.addr);
    assert!(
        !d.ok(&["images"]).contains("team/busybox"),
        "not on the node yet"
    );

    d.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        &image,
        "sleep",
        "1d",
    ]);
    shoal_testkit::wait_until(
        "2 tasks running",
        std::time::Duration::from_secs(60),
        || d.ok(&["service", "ls"]).contains("2/2"),
    );
    // The managers pinned the manifest's digest; the node pulled that, once.
    let pretty = d.ok(&["service", "inspect", "--pretty", "web"]);
    let pinned = pretty
        .lines()
        .find_map(|l| l.trim().strip_prefix("Pinned:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no pinned image in:\n{pretty}"))
        .to_owned();
    assert!(
        pinned.starts_with(&format!("{}/team/busybox@sha256:", registry.addr)),
        "{pinned}"
    );

    // The tag moves to other content: the running service does not change.
    let other =
        shoal_testkit::busybox_image_with(serde_json::json!({"Env": ["MOVED=1"]}), "busybox-moved")
            .unwrap();
    registry.copy(
        &format!("docker-archive:{}", other.display()),
        "team/busybox",
        "v1",
        None,
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = d.ok(&["service", "inspect", "--pretty", "web"]);
    assert!(after.contains(&pinned), "{after}");
    assert!(d.ok(&["service", "ls"]).contains("2/2"));
}

#[test]
fn with_registry_auth_a_service_runs_a_private_image_and_never_shows_the_credentials() {
    let d = Daemon::start();
    d.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let registry = TestRegistry::start(Some(&d.netns()), Some(("shoal", &hash)));
    registry.push_busybox("private/busybox", "v1", Some("shoal:s3cret"));
    let config = tempfile::tempdir().unwrap();
    let image = format!("{}/private/busybox:v1", registry.addr);

    // Without --with-registry-auth: the node cannot pull, and says why.
    let o = shoal(
        &d,
        config.path(),
        &[
            "service", "create", "-d", "--name", "noauth", &image, "sleep", "1d",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    shoal_testkit::wait_until(
        "the task is rejected",
        std::time::Duration::from_secs(30),
        || {
            d.ok(&["service", "ps", "--no-trunc", "noauth"])
                .contains("shoal login")
        },
    );

    // --with-registry-auth before a login: refused in one line.
    let args = [
        "service",
        "create",
        "-d",
        "--with-registry-auth",
        "--name",
        "web",
        &image,
        "sleep",
        "1d",
    ];
    let o = shoal(&d, config.path(), &args, None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shoal login"), "{}", text(&o));

    let login = ["login", "-u", "shoal", "--password-stdin", &registry.addr];
    let o = shoal(&d, config.path(), &login, Some("s3cret\n"));
    assert!(o.status.success(), "{}", text(&o));
    let o = shoal(&d, config.path(), &args, None);
    assert!(o.status.success(), "{}", text(&o));
    shoal_testkit::wait_until(
        "the private image runs",
        std::time::Duration::from_secs(60),
        || d.ok(&["service", "ls"]).contains("1/1"),
    );

    // The credentials stay in the store: not in inspect, not in ps; an update without the
    // flag keeps them (a scale re-pulls nothing, but the spec still carries them).
    let encoded = "c2hvYWw6czNjcmV0"; // base64("shoal:s3cret")
    for out in [
        d.ok(&["service", "inspect", "web"]),
        d.ok(&["service", "ps", "--no-trunc", "web"]),
    ] {
        assert!(!out.contains(encoded) && !out.contains("s3cret"), "{out}");
    }
    d.ok(&["service", "update", "-d", "--env-add", "A=1", "web"]);
    shoal_testkit::wait_until(
        "the update runs",
        std::time::Duration::from_secs(60),
        || {
            d.ok(&["service", "ps", "web"]).matches("Running").count() >= 1
                && d.ok(&["service", "inspect", "web"]).contains("A=1")
                && d.ok(&["service", "ls"]).contains("1/1")
        },
    );
}
