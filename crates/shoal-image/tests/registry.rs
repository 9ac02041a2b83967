//! Pulls from a real registry: Debian's `docker-registry` (distribution 2.8) started on
//! loopback for each test, filled by `skopeo` (both installed by deploy/install-deps.sh).

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;
use shoal_image::{Error, RegistryOptions};

/// A registry on a free loopback port, stopped (and its storage removed) on drop.
struct TestRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run deploy/install-deps.sh (it installs docker-registry and skopeo)");
}

impl TestRegistry {
    /// With `htpasswd` (user, bcrypt hash): basic authentication required.
    fn start(htpasswd: Option<(&str, &str)>) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match htpasswd {
            Some((user, hash)) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Copy the test kit's busybox archive into the registry as `repo:tag` with skopeo.
    fn push_busybox(&self, repo: &str, tag: &str, creds: Option<&str>) {
        let archive = shoal_testkit::busybox_image().unwrap();
        let mut cmd = Command::new(tool("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The busybox image's id as a load of the same archive gives it.
fn busybox_id() -> String {
    let sandbox = Sandbox::new();
    let archive = shoal_testkit::busybox_image().unwrap();
    sandbox.store.load(File::open(archive).unwrap()).unwrap()[0]
        .id
        .clone()
}

#[test]
fn a_pulled_image_is_the_image_that_was_pushed_and_runs_from_its_layers() {
    let registry = TestRegistry::start(None);
    registry.push_busybox("test/busybox", "v1", None);
    let sandbox = Sandbox::new();
    let reference = format!("{}/test/busybox:v1", registry.addr);
    let pulled = sandbox
        .store
        .pull(&reference, &RegistryOptions::default())
        .unwrap();
    assert_eq!(
        pulled.id,
        busybox_id(),
        "the same config, so the same image id"
    );
    assert_eq!(pulled.names, std::slice::from_ref(&reference));
    let image = sandbox.store.get(&reference).unwrap();
    assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
    let dirs = sandbox.store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), image.diff_ids.len());
    assert!(
        dirs.iter().any(|d| d.join("bin/busybox").exists()),
        "the layers are unpacked"
    );

    // By digest too: the manifest's digest pins the same image.
    let digest = image.manifest_digest.clone();
    let by_digest = format!("{}/test/busybox@{digest}", registry.addr);
    let again = sandbox
        .store
        .pull(&by_digest, &RegistryOptions::default())
        .unwrap();
    assert_eq!(again.id, pulled.id);
}

#[test]
fn pulling_what_the_registry_lacks_says_so_and_registers_nothing() {
    let registry = TestRegistry::start(None);
    registry.push_busybox("test/busybox", "v1", None);
    let sandbox = Sandbox::new();
    let missing = format!("{}/test/busybox:nope", registry.addr);
    let err = sandbox
        .store
        .pull(&missing, &RegistryOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let err = sandbox
        .store
        .pull(
            &format!("{}/test/other:v1", registry.addr),
            &RegistryOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert!(sandbox.store.list().unwrap().is_empty());
}

#[test]
fn a_registry_with_basic_authentication_wants_credentials() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let registry = TestRegistry::start(Some(("shoal", &hash)));
    registry.push_busybox("private/busybox", "v1", Some("shoal:s3cret"));
    let sandbox = Sandbox::new();
    let reference = format!("{}/private/busybox:v1", registry.addr);

    let err = sandbox
        .store
        .pull(&reference, &RegistryOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("shoal login"), "{err}");

    let wrong = RegistryOptions {
        credentials: HashMap::from([(
            registry.addr.clone(),
            ("shoal".to_owned(), "wrong".to_owned()),
        )]),
        ..Default::default()
    };
    let err = sandbox.store.pull(&reference, &wrong).unwrap_err();
    assert!(err.to_string().contains("shoal login"), "{err}");
    assert!(sandbox.store.list().unwrap().is_empty());

    let right = RegistryOptions {
        credentials: HashMap::from([(
            registry.addr.clone(),
            ("shoal".to_owned(), "s3cret".to_owned()),
        )]),
        ..Default::default()
    };
    let pulled = sandbox.store.pull(&reference, &right).unwrap();
    assert_eq!(pulled.id, busybox_id());
}
