//! Volumes, bind mounts and tmpfs end to end, as a docker user types them: `volume
//! create/ls/inspect/rm/prune`, `-v`, `--mount`, `--tmpfs`, image VOLUMEs, copy-up, and what
//! is left behind (nothing: each test ends with no volume and no mount under the daemon root).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{unique_name, wait_until, Daemon};

fn volume_inspect(d: &Daemon, name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&d.ok(&["volume", "inspect", name])).expect("volume inspect json");
    v[0].clone()
}

fn run_out(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = d.shoal(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn volumes(d: &Daemon) -> Vec<String> {
    d.ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Mount points on the host under `root`.
/// Mounts the daemon made under its root (the testkit's own pin of the daemon's network
/// namespace is not one of them).
fn mounts_under(d: &Daemon) -> Vec<String> {
    let needle = d.root.display().to_string();
    let pin = d.netns().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle) && *m != pin)
        .map(str::to_string)
        .collect()
}

/// Remove every container and volume through the CLI, then require that nothing stays
/// mounted under the daemon's root.
fn finish(d: &Daemon) {
    for id in d.ok(&["ps", "-aq", "--no-trunc"]).lines() {
        d.ok(&["rm", "-f", id]);
    }
    for v in volumes(d) {
        d.ok(&["volume", "rm", &v]);
    }
    assert!(volumes(d).is_empty(), "volumes left");
    let left = mounts_under(d);
    assert!(
        left.is_empty(),
        "mounts left under {}: {left:?}",
        d.root.display()
    );
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn volume_create_ls_inspect_rm() {
    let d = Daemon::with_busybox();
    let name = unique_name("vol");
    assert_eq!(
        d.ok(&["volume", "create", "--label", "tier=db", &name]),
        format!("{name}\n")
    );
    // Creating it again is not an error (docker is idempotent here).
    assert_eq!(d.ok(&["volume", "create", &name]), format!("{name}\n"));
    let anon = d.ok(&["volume", "create"]).trim().to_string();
    assert!(is_id(&anon), "a generated name: {anon}");

    let ls = d.ok(&["volume", "ls"]);
    let mut lines = ls.lines();
    assert!(
        lines.next().unwrap().starts_with("DRIVER   VOLUME NAME"),
        "{ls}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["local", name.as_str()]), "{ls}");
    assert!(rows.contains(&vec!["local", anon.as_str()]), "{ls}");
    let mut q = volumes(&d);
    q.sort();
    let mut want = vec![name.clone(), anon.clone()];
    want.sort();
    assert_eq!(q, want);
    for l in d.ok(&["volume", "ls", "--format", "json"]).lines() {
        let v: Value = serde_json::from_str(l).expect("one JSON object per line");
        assert_eq!(v["Driver"], "local");
    }

    let v = volume_inspect(&d, &name);
    assert_eq!(v["Name"], name.as_str());
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["tier"], "db");
    let mountpoint = v["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        Path::new(&mountpoint),
        d.data_root().join("volumes").join(&name).join("_data")
    );
    assert!(Path::new(&mountpoint).is_dir());
    assert!(v["CreatedAt"].as_str().unwrap().starts_with("20"));
    assert_eq!(v["UsageData"]["RefCount"], 0);

    let (code, err) = d.fails(&["volume", "inspect", "nosuchvol"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such volume: nosuchvol"), "{err}");
    let (_, err) = d.fails(&["volume", "create", "bad/name"]);
    assert!(err.contains("invalid characters"), "{err}");
    let (_, err) = d.fails(&["volume", "create", "-o", "color=red", "optvol"]);
    assert!(err.contains("invalid option"), "{err}");
    let (_, err) = d.fails(&["volume", "create", "-d", "nfs", "drvvol"]);
    assert!(err.contains("not available"), "{err}");
    assert_eq!(volumes(&d).len(), 2, "failed creates leave nothing");

    assert_eq!(d.ok(&["volume", "rm", &name]), format!("{name}\n"));
    assert!(!Path::new(&mountpoint).exists(), "its directory is gone");
    assert!(!volumes(&d).contains(&name));
    let (code, err) = d.fails(&["volume", "rm", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("no such volume"), "{err}");
    d.ok(&["volume", "rm", "-f", &name]);

    let events = d.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "-f",
        "type=volume",
    ]);
    assert!(
        events.contains(&format!("volume create {name}"))
            && events.contains(&format!("volume destroy {name}")),
        "{events}"
    );
    finish(&d);
}

#[test]
fn named_volume_data_outlives_its_containers() {
    let d = Daemon::with_busybox();
    let vol = unique_name("data");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/data"),
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f; mkdir /data/sub; chown 1000:1000 /data/sub",
    ]);
    assert!(volumes(&d).contains(&vol), "-v created the volume");
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/elsewhere"),
        "busybox",
        "sh",
        "-c",
        "cat /elsewhere/f; stat -c %u /elsewhere/sub",
    ]);
    assert_eq!(out, "hello\n1000\n");
    let out = d.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=volume,src={vol},dst=/m"),
        "busybox",
        "cat",
        "/m/f",
    ]);
    assert_eq!(out, "hello\n");
    let (code, _, err) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/ro:ro"),
            "busybox",
            "sh",
            "-c",
            "cat /ro/f; touch /ro/new",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("Read-only file system"), "{err}");
    // Two containers share it live.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "a1",
        "-v",
        &format!("{vol}:/s"),
        "busybox",
        "sleep",
        "1000",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "a2",
        "-v",
        &format!("{vol}:/s"),
        "busybox",
        "sleep",
        "1000",
    ]);
    d.ok(&["exec", "a1", "sh", "-c", "echo from-a1 > /s/live"]);
    assert_eq!(d.ok(&["exec", "a2", "cat", "/s/live"]), "from-a1\n");
    let v = volume_inspect(&d, &vol);
    assert_eq!(v["UsageData"]["RefCount"], 2);
    let m = &d.inspect("a1")["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], vol.as_str());
    assert_eq!(m["Destination"], "/s");
    assert_eq!(m["RW"], true);
    finish(&d);
}

#[test]
fn a_new_volume_is_seeded_from_the_image_unless_nocopy() {
    let d = Daemon::with_busybox();
    let seeded = unique_name("seed");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{seeded}:/etc"),
        "busybox",
        "true",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{seeded}:/x"),
        "busybox",
        "sh",
        "-c",
        "cat /x/passwd; cat /x/shoal-test-image; stat -c '%a %u %g' /x/passwd /x",
    ]);
    assert!(out.starts_with("root:x:0:0:root:/root:/bin/sh\n"), "{out}");
    assert!(
        out.contains("shoal test image, layer 2\n"),
        "both layers: {out}"
    );
    assert!(
        out.ends_with("644 0 0\n755 0 0\n"),
        "owners and modes kept: {out}"
    );
    // Symlinks, executables and other owners are copied as they are: a container runs from
    // a copy of /bin, and /home/shoal keeps its owner.
    let bin = unique_name("bin");
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{bin}:/bin"),
        "busybox",
        "sh",
        "-c",
        "readlink /bin/sh; echo ran-from-the-copy",
    ]);
    assert_eq!(out, "busybox\nran-from-the-copy\n");
    let home = unique_name("home");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{home}:/home"),
        "busybox",
        "true",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{home}:/x"),
        "busybox",
        "stat",
        "-c",
        "%u:%g %a",
        "/x/shoal",
    ]);
    assert_eq!(out, "1000:1000 755\n");

    // nocopy (-v and --mount) leaves a new volume empty.
    let bare = unique_name("bare");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{bare}:/etc:nocopy"),
        "busybox",
        "true",
    ]);
    let bare2 = unique_name("bare");
    d.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=volume,src={bare2},dst=/etc,volume-nocopy"),
        "busybox",
        "true",
    ]);
    for v in [&bare, &bare2] {
        let out = d.ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{v}:/x"),
            "busybox",
            "sh",
            "-c",
            "ls /x/passwd 2>&1; true",
        ]);
        assert!(out.contains("No such file"), "{v}: {out}");
    }

    // A volume that already has content hides the image's: no copy-up into it.
    let full = unique_name("full");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{full}:/d"),
        "busybox",
        "sh",
        "-c",
        "echo mine > /d/marker",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{full}:/etc"),
        "busybox",
        "sh",
        "-c",
        "cat /etc/marker; ls /etc/passwd 2>&1; true",
    ]);
    assert!(
        out.starts_with("mine\n") && out.contains("No such file"),
        "{out}"
    );
    finish(&d);
}

#[test]
fn image_volumes_get_anonymous_volumes() {
    let d = Daemon::with_busybox();
    let img = shoal_testkit::busybox_image_with(
        serde_json::json!({"Volumes": {"/data": {}}, "Cmd": ["sh", "-c", "echo x > /data/f"]}),
        "withvol:1",
    )
    .expect("variant image");
    d.ok(&["load", "-i", img.to_str().unwrap()]);

    d.ok(&["run", "--name", "keeps", "withvol:1"]);
    let mounts = d.inspect("keeps")["Mounts"].clone();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/data");
    let kept = mounts[0]["Name"].as_str().unwrap().to_string();
    assert!(is_id(&kept), "{kept}");
    assert_eq!(volumes(&d), vec![kept.clone()]);
    d.ok(&["rm", "keeps"]);
    assert_eq!(volumes(&d), vec![kept.clone()], "rm without -v keeps it");
    let data = volume_inspect(&d, &kept)["Mountpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&data).join("f")).unwrap(),
        "x\n"
    );

    d.ok(&["run", "--name", "drops", "withvol:1"]);
    let dropped = d.inspect("drops")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(dropped, kept, "each container gets its own");
    d.ok(&["rm", "-v", "drops"]);
    assert_eq!(
        volumes(&d),
        vec![kept.clone()],
        "rm -v removed the anonymous volume"
    );

    // --rm removes it too.
    d.ok(&["run", "--rm", "withvol:1"]);
    wait_until(
        "the --rm container is gone",
        Duration::from_secs(10),
        || d.ok(&["ps", "-aq"]).is_empty(),
    );
    assert_eq!(
        volumes(&d),
        vec![kept.clone()],
        "--rm removed its anonymous volume"
    );

    // A user mount at the same place replaces the image's volume; rm -v keeps named ones.
    let named = unique_name("named");
    d.ok(&[
        "run",
        "--name",
        "named-user",
        "-v",
        &format!("{named}:/data"),
        "withvol:1",
    ]);
    let mounts = d.inspect("named-user")["Mounts"].clone();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["Name"], named.as_str());
    d.ok(&["rm", "-v", "named-user"]);
    let mut left = volumes(&d);
    left.sort();
    let mut want = vec![kept.clone(), named.clone()];
    want.sort();
    assert_eq!(left, want, "rm -v does not remove named volumes");

    // --rm keeps named volumes too.
    let named2 = unique_name("named");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{named2}:/k"),
        "busybox",
        "true",
    ]);
    wait_until(
        "the --rm container is gone",
        Duration::from_secs(10),
        || d.ok(&["ps", "-aq"]).is_empty(),
    );
    assert!(volumes(&d).contains(&named2), "--rm keeps named volumes");
    d.ok(&["volume", "rm", &named2]);

    // -v /path (no source) is an anonymous volume too.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/x",
    ]);
    wait_until(
        "the --rm container is gone",
        Duration::from_secs(10),
        || d.ok(&["ps", "-aq"]).is_empty(),
    );
    assert_eq!(volumes(&d).len(), 2);
    finish(&d);
}

#[test]
fn a_volume_in_use_cannot_be_removed() {
    let d = Daemon::with_busybox();
    let vol = unique_name("busy");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "-v",
        &format!("{vol}:/d"),
        "busybox",
        "sleep",
        "1000",
    ]);
    let holder = d.inspect("holder")["Id"].as_str().unwrap().to_string();
    let (code, err) = d.fails(&["volume", "rm", &vol]);
    assert_eq!(code, 1);
    assert!(
        err.contains("in use") && err.contains(&holder[..12]),
        "says which container: {err}"
    );
    let (code, err) = d.fails(&["volume", "rm", "-f", &vol]);
    assert_eq!(code, 1, "-f does not remove a volume in use");
    assert!(err.contains("in use"), "{err}");
    assert!(volumes(&d).contains(&vol));
    let out = d.ok(&["volume", "prune", "-f"]);
    assert!(!out.contains(&vol), "{out}");
    assert!(volumes(&d).contains(&vol));

    // A stopped container still uses it.
    d.ok(&["stop", "-t", "0", "holder"]);
    let (_, err) = d.fails(&["volume", "rm", &vol]);
    assert!(err.contains("in use"), "{err}");
    d.ok(&["rm", "holder"]);
    assert_eq!(d.ok(&["volume", "rm", &vol]), format!("{vol}\n"));

    // prune takes what nobody uses, and reports it.
    let spare = unique_name("spare");
    d.ok(&["volume", "create", &spare]);
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{spare}:/s"),
        "busybox",
        "sh",
        "-c",
        "head -c 40000 /dev/zero > /s/f",
    ]);
    let labelled = unique_name("lab");
    d.ok(&["volume", "create", "--label", "keep=1", &labelled]);
    let out = d.ok(&["volume", "prune", "-f", "--filter", "label!=keep"]);
    assert!(
        out.contains("Deleted Volumes:") && out.contains(&spare),
        "{out}"
    );
    assert!(!out.contains(&labelled), "the filter kept it: {out}");
    assert_eq!(volumes(&d), vec![labelled.clone()]);
    assert!(out.contains("Total reclaimed space: 40kB"), "{out}");
    finish(&d);
}

#[test]
fn bind_mounts() {
    let d = Daemon::with_busybox();
    let host = d.root.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from-host\n").unwrap();
    let hs = host.to_str().unwrap();

    let (code, out, err) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{hs}:/h:ro"),
            "busybox",
            "sh",
            "-c",
            "cat /h/f; touch /h/new",
        ],
    );
    assert_eq!((code, out.as_str()), (1, "from-host\n"));
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!host.join("new").exists());

    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{hs}:/h"),
        "busybox",
        "sh",
        "-c",
        "echo from-container > /h/back",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("back")).unwrap(),
        "from-container\n"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,source={hs},target=/m,readonly"),
        "busybox",
        "sh",
        "-c",
        "cat /m/back; touch /m/x 2>&1; true",
    ]);
    assert!(
        out.starts_with("from-container\n") && out.contains("Read-only"),
        "{out}"
    );
    // A single file.
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{hs}/f:/etc/greeting:ro"),
        "busybox",
        "cat",
        "/etc/greeting",
    ]);
    assert_eq!(out, "from-host\n");

    // -v creates a missing source directory; --mount refuses it and creates nothing.
    let made = d.root.join("made-by-v");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/x", made.display()),
        "busybox",
        "true",
    ]);
    assert!(made.is_dir(), "-v created {}", made.display());
    let missing = d.root.join("missing2");
    let before = d.ok(&["ps", "-aq"]);
    let (code, err) = d.fails(&[
        "run",
        "--name",
        "nobind",
        "--mount",
        &format!("type=bind,src={},dst=/x", missing.display()),
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("bind source path does not exist"), "{err}");
    assert!(!missing.exists());
    assert_eq!(d.ok(&["ps", "-aq"]), before, "no container was left");
    let (code, err) = d.fails(&["run", "--rm", "-v", "./rel:/x", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("use an absolute path"), "{err}");
    let (code, err) = d.fails(&["run", "--rm", "-v", "/a:rel", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("absolute path"), "{err}");
    let (code, err) = d.fails(&["run", "--rm", "-v", "/a:/b:bogus", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid mode"), "{err}");
    let m = inspect_mount_of(&d, hs);
    assert_eq!(m["Type"], "bind");
    assert_eq!(m["Source"], hs);
    assert_eq!(m["RW"], false);
    assert_eq!(m["Propagation"], "rprivate");
    finish(&d);
}

/// The Mounts entry of a created container with `hs` bound read-only at /h.
fn inspect_mount_of(d: &Daemon, hs: &str) -> Value {
    d.ok(&[
        "create",
        "--name",
        "bound",
        "-v",
        &format!("{hs}:/h:ro"),
        "busybox",
        "true",
    ]);
    d.inspect("bound")["Mounts"][0].clone()
}

#[test]
fn tmpfs_mounts() {
    let d = Daemon::with_busybox();
    let (code, out, err) = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--tmpfs",
            "/t:size=1m,mode=700",
            "busybox",
            "sh",
            "-c",
            "grep ' /t ' /proc/mounts; stat -c %a /t; df -k /t | tail -1; \
             dd if=/dev/zero of=/t/big bs=1k count=2000; echo rc=$?",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mount = out.lines().next().unwrap_or_default();
    assert!(mount.starts_with("tmpfs /t tmpfs "), "{out}");
    assert!(mount.contains("size=1024k"), "{mount}");
    assert!(mount.contains("mode=700"), "{mount}");
    assert!(
        mount.contains("nosuid") && mount.contains("nodev") && mount.contains("noexec"),
        "{mount}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "700");
    assert_eq!(lines[2].split_whitespace().nth(1), Some("1024"), "{out}");
    assert_eq!(lines[3], "rc=1", "writing 2 MB into 1 MiB fails: {out}");
    assert!(err.contains("No space left on device"), "{err}");

    let out = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,dst=/m,tmpfs-size=2m,tmpfs-mode=1770",
        "busybox",
        "sh",
        "-c",
        "grep ' /m ' /proc/mounts; stat -c %a /m",
    ]);
    assert!(
        out.contains("size=2048k") && out.contains("mode=1770"),
        "{out}"
    );
    assert!(out.ends_with("1770\n"), "{out}");
    // Defaults: world-writable with the sticky bit.
    let out = d.ok(&[
        "run", "--rm", "--tmpfs", "/d", "busybox", "stat", "-c", "%a", "/d",
    ]);
    assert_eq!(out, "1777\n");

    // tmpfs content does not survive a restart of the container.
    d.ok(&[
        "run", "-d", "--name", "tmp", "--tmpfs", "/run/x", "busybox", "sleep", "1000",
    ]);
    d.ok(&["exec", "tmp", "touch", "/run/x/file"]);
    assert!(
        d.inspect("tmp")["HostConfig"]["Tmpfs"]
            .as_object()
            .is_some_and(|t| t.contains_key("/run/x")),
        "inspect lists the tmpfs"
    );
    d.ok(&["restart", "-t", "0", "tmp"]);
    let (code, _, _) = run_out(&d, &["exec", "tmp", "ls", "/run/x/file"]);
    assert_eq!(code, 1, "the tmpfs starts empty again");

    let (code, err) = d.fails(&["run", "--rm", "--tmpfs", "rel", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("absolute"), "{err}");
    let (code, err) = d.fails(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,src=x,dst=/t",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("source is not allowed"), "{err}");
    finish(&d);
}

#[test]
fn duplicate_mount_points_are_refused() {
    let d = Daemon::with_busybox();
    let (a, b) = (unique_name("dupa"), unique_name("dupb"));
    let hs = d.root.display().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "-v".into(),
            format!("{a}:/x"),
            "-v".into(),
            format!("{b}:/x"),
        ],
        vec![
            "-v".into(),
            format!("{a}:/x"),
            "--tmpfs".into(),
            "/x".into(),
        ],
        vec![
            "-v".into(),
            format!("{hs}:/x"),
            "--mount".into(),
            format!("type=bind,src={hs},dst=/x/"),
        ],
        vec!["-v".into(), "/x".into(), "-v".into(), "/x".into()],
    ];
    for flags in cases {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(&["busybox", "true"]);
        let (code, err) = d.fails(&args);
        assert_eq!(code, 125, "{flags:?}");
        assert!(err.contains("duplicate mount point"), "{flags:?}: {err}");
    }
    assert!(volumes(&d).is_empty(), "refused creates leave no volume");
    assert!(d.ok(&["ps", "-aq"]).is_empty(), "and no container");
    // The image's VOLUME at a user's mount point is not a duplicate: the user's wins.
    finish(&d);
}

#[test]
fn a_volume_with_driver_options_is_mounted_while_in_use() {
    let d = Daemon::with_busybox();
    let vol = unique_name("tmpv");
    d.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        &vol,
    ]);
    let v = volume_inspect(&d, &vol);
    assert_eq!(v["Options"]["type"], "tmpfs");
    assert_eq!(v["Options"]["o"], "size=1m");
    let data = v["Mountpoint"].as_str().unwrap().to_string();
    assert!(
        !mounts_under(&d).contains(&data),
        "not mounted while nobody uses it"
    );

    d.ok(&[
        "run",
        "-d",
        "--name",
        "u1",
        "-v",
        &format!("{vol}:/v"),
        "busybox",
        "sleep",
        "1000",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "u2",
        "-v",
        &format!("{vol}:/v"),
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(mounts_under(&d).contains(&data), "mounted while in use");
    let out = d.ok(&["exec", "u1", "sh", "-c", "grep ' /v ' /proc/mounts"]);
    assert!(
        out.starts_with("tmpfs /v tmpfs") && out.contains("size=1024k"),
        "{out}"
    );
    let (code, _, err) = run_out(
        &d,
        &[
            "exec",
            "u1",
            "dd",
            "if=/dev/zero",
            "of=/v/big",
            "bs=1k",
            "count=2000",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("No space left on device"), "{err}");
    d.ok(&["exec", "u1", "sh", "-c", "rm /v/big; echo shared > /v/f"]);
    assert_eq!(d.ok(&["exec", "u2", "cat", "/v/f"]), "shared\n");

    // One user stopping does not take the mount from the other.
    d.ok(&["stop", "-t", "0", "u1"]);
    assert!(mounts_under(&d).contains(&data), "still mounted for u2");
    d.ok(&["exec", "u2", "sh", "-c", "echo again > /v/g"]);
    d.ok(&["rm", "-f", "u2"]);
    assert!(
        !mounts_under(&d).contains(&data),
        "unmounted with its last running user"
    );
    // A tmpfs volume starts empty at its next use.
    d.ok(&["start", "u1"]);
    let (code, _, _) = run_out(&d, &["exec", "u1", "ls", "/v/f"]);
    assert_eq!(code, 1);
    finish(&d);
}

#[test]
fn failed_creates_and_starts_leave_no_volume_behind() {
    let d = Daemon::with_busybox();
    // A create that fails after the mounts were resolved removes the volumes it made.
    let fresh = unique_name("fresh");
    let (code, err) = d.fails(&[
        "run",
        "-v",
        &format!("{fresh}:/x"),
        "--mount",
        "type=bind,src=/no/such/source,dst=/y",
        "busybox",
        "true",
    ]);
    assert_eq!(code, 125, "{err}");
    assert!(volumes(&d).is_empty(), "{:?}", volumes(&d));
    let (code, _) = d.fails(&["run", "-v", &format!("{fresh}:/x"), "busybox:nope", "true"]);
    assert_eq!(code, 125);
    assert!(volumes(&d).is_empty(), "{:?}", volumes(&d));

    // A container whose program cannot start does not keep a volume mounted.
    let vol = unique_name("optv");
    d.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        &vol,
    ]);
    let (code, err) = d.fails(&[
        "run",
        "--name",
        "broken",
        "-v",
        &format!("{vol}:/v"),
        "busybox",
        "no-such-program",
    ]);
    assert_eq!(code, 127, "{err}");
    let data = volume_inspect(&d, &vol)["Mountpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !mounts_under(&d).contains(&data),
        "the volume of a container that never ran is not mounted"
    );
    d.ok(&["rm", "broken"]);
    finish(&d);
}

#[test]
fn run_resolves_its_user_with_a_bind_mounted_passwd() {
    let d = Daemon::with_busybox();
    let passwd = d.root.join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nbob:x:4321:4321::/home/bob:/bin/sh\n",
    )
    .unwrap();
    // docker (runc) looks the user up inside the container, after its mounts.
    let out = d.ok(&[
        "run",
        "--rm",
        "-u",
        "bob",
        "-v",
        &format!("{}:/etc/passwd:ro", passwd.display()),
        "busybox",
        "id",
        "-u",
    ]);
    assert_eq!(out, "4321\n");
    finish(&d);
}
