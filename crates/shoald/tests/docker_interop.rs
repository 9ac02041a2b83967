//! Interoperability with docker itself: `shoal image save` output is accepted by a real
//! `docker load` (and runs), and a real `docker save` is accepted by `shoal image load`.
//! A private dockerd (Debian's docker.io, installed by deploy/install-deps.sh) is started with
//! its own roots and no iptables/bridge changes, and removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_testkit::{cleanup_tree, unique_name, wait_until, Daemon};

struct Dockerd {
    root: PathBuf,
    child: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dockerd = Path::new("/usr/sbin/dockerd");
        assert!(
            dockerd.exists(),
            "dockerd not found: apt-get install docker.io (deploy/install-deps.sh does)"
        );
        let root = PathBuf::from("/tmp").join(unique_name("sh-dk"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--bridge=none",
                "--storage-driver",
                "overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { root, child };
        wait_until("dockerd answers", Duration::from_secs(60), || {
            d.docker(&["version"]).status.success()
        });
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        let client = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(client)
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.root.join("docker.sock").display()
            ))
            .args(args)
            .env("DOCKER_CONFIG", self.root.join("client"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup_tree(&self.root, "");
    }
}

#[test]
fn docker_loads_our_save_and_we_load_dockers_save() {
    let shoal = Daemon::start();
    shoal.load_busybox();
    let docker = Dockerd::start();

    // shoal → docker
    let ours = shoal.root.join("from-shoal.tar");
    shoal.ok(&["tag", "busybox", "interop/from-shoal:v1"]);
    shoal.ok(&[
        "save",
        "-o",
        ours.to_str().unwrap(),
        "interop/from-shoal:v1",
    ]);
    let loaded = docker.ok(&["load", "-i", ours.to_str().unwrap()]);
    assert!(loaded.contains("interop/from-shoal:v1"), "{loaded}");
    let ran = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "interop/from-shoal:v1",
        "cat",
        "/etc/shoal-test-image",
    ]);
    assert!(ran.starts_with("shoal test image"), "{ran}");
    let shoal_id: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "inspect", "interop/from-shoal:v1"])).unwrap();
    let docker_id = docker.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "interop/from-shoal:v1",
    ]);
    assert_eq!(
        docker_id.trim(),
        shoal_id[0]["Id"].as_str().unwrap(),
        "same image id on both sides"
    );

    // docker → shoal: an image docker itself built (a new layer with a whiteout).
    let ctx = docker.root.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM interop/from-shoal:v1\nRUN rm /etc/shoal-test-image && echo built-by-docker > /etc/built\nCMD [\"cat\", \"/etc/built\"]\n").unwrap();
    let built = docker.docker(&[
        "build",
        "--network",
        "none",
        "-t",
        "interop/from-docker:v1",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let theirs = shoal.root.join("from-docker.tar");
    docker.ok(&[
        "save",
        "-o",
        theirs.to_str().unwrap(),
        "interop/from-docker:v1",
    ]);
    shoal.ok(&["load", "-i", theirs.to_str().unwrap()]);
    assert_eq!(
        shoal.ok(&["run", "--rm", "interop/from-docker:v1"]),
        "built-by-docker\n"
    );
    let whiteout = shoal.shoal(&[
        "run",
        "--rm",
        "interop/from-docker:v1",
        "cat",
        "/etc/shoal-test-image",
    ]);
    assert!(
        !whiteout.status.success(),
        "the file docker deleted is gone in shoal too"
    );
}
