//! A real OCI registry for one test: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, in the caller's network namespace or a given one (a test daemon's), filled
//! with `skopeo`. Both come from deploy/install-deps.sh. Stopped, its storage removed, on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`, as image references name it.
    pub addr: String,
    netns: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tool installed by deploy/install-deps.sh.
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
    /// In `netns` (else the caller's); with `htpasswd` (user, bcrypt hash), basic
    /// authentication is required.
    pub fn start(netns: Option<&Path>, htpasswd: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(netns, htpasswd, None)
    }

    /// Serving HTTPS with this certificate and key (PEM files).
    pub fn start_tls(netns: Option<&Path>, cert: &Path, key: &Path) -> TestRegistry {
        Self::start_with(netns, None, Some((cert, key)))
    }

    /// Requiring bearer tokens from `tokens` (in the caller's namespace), whose certificate
    /// is the PEM file `token_cert`.
    pub fn start_token(tokens: &crate::TokenService, token_cert: &Path) -> TestRegistry {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            tokens.realm,
            crate::token::TOKEN_SERVICE,
            crate::token::TOKEN_ISSUER,
            token_cert.display()
        );
        Self::start_configured(None, auth, None)
    }

    fn start_with(
        netns: Option<&Path>,
        htpasswd: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
    ) -> TestRegistry {
        let dir = tempfile::tempdir().expect("registry dir");
        let auth = match htpasswd {
            Some((user, hash)) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        Self::start_in(dir, netns, auth, tls)
    }

    fn start_configured(
        netns: Option<&Path>,
        auth: String,
        tls: Option<(&Path, &Path)>,
    ) -> TestRegistry {
        Self::start_in(tempfile::tempdir().expect("registry dir"), netns, auth, tls)
    }

    fn start_in(
        dir: tempfile::TempDir,
        netns: Option<&Path>,
        auth: String,
        tls: Option<(&Path, &Path)>,
    ) -> TestRegistry {
        // A free port: in another namespace nothing else binds loopback ports anyway.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let tls = tls.map_or_else(String::new, |(cert, key)| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        });
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = in_ns(netns, &tool("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let r = TestRegistry {
            child,
            addr,
            netns: netns.map(Path::to_path_buf),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = in_ns(r.netns.as_deref(), Path::new("/bin/bash"))
                .arg("-c")
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {}",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Copy the test kit's busybox archive into the registry as `repo:tag`.
    pub fn push_busybox(&self, repo: &str, tag: &str, creds: Option<&str>) {
        let archive = crate::busybox_image().expect("busybox image");
        self.copy(
            &format!("docker-archive:{}", archive.display()),
            repo,
            tag,
            creds,
        );
    }

    /// `skopeo copy SOURCE docker://ADDR/repo:tag`.
    pub fn copy(&self, source: &str, repo: &str, tag: &str, creds: Option<&str>) {
        let mut cmd = in_ns(self.netns.as_deref(), &tool("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn in_ns(netns: Option<&Path>, program: &Path) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(program);
            c
        }
    }
}
