//! Swarm images on real hosts: an image loaded on one manager runs, by digest, on workers
//! that never saw it; an update rolls a new image across; damaged content is refused with
//! the reason; a transfer resumes from another manager when the one serving it dies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_chaos_tests::{task_rows, wait_until, Cluster};

const SETTLE: Duration = Duration::from_secs(60);
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The busybox test image as `name`, its config marked with `APP=<mark>` (a distinct id).
fn app_image(name: &str, mark: &str) -> PathBuf {
    shoal_testkit::busybox_image_with(json!({ "Env": [PATH, format!("APP={mark}")] }), name)
        .expect("build the test image")
}

fn wait_ready(c: &Cluster, n: usize) {
    wait_until("all nodes ready", SETTLE, || {
        c.hosts[0].ok(&["node", "ls"]).matches("Ready").count() == n
    });
}

fn drain(c: &Cluster, i: usize) {
    c.hosts[0].ok(&["node", "update", "--availability", "drain", &c.node_id(i)]);
}

/// The image id `reference` has on host `i`, if it has the image.
fn image_id(c: &Cluster, i: usize, reference: &str) -> Option<String> {
    let out = c.hosts[i].shoal(&["image", "inspect", reference]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("image inspect JSON");
    v[0]["Id"].as_str().map(str::to_string)
}

/// (node, desired, current) of each task of `svc`, and the whole table.
fn tasks(c: &Cluster, svc: &str) -> (Vec<(String, String, String)>, String) {
    let out = c.hosts[0].ok(&["service", "ps", "--no-trunc", svc]);
    (task_rows(&out), out)
}

fn running_nodes(c: &Cluster, svc: &str) -> Vec<String> {
    let mut v: Vec<String> = tasks(c, svc)
        .0
        .into_iter()
        .filter(|(_, d, s)| d == "Running" && s == "Running")
        .map(|(n, _, _)| n)
        .collect();
    v.sort();
    v
}

/// [`wait_until`], but a timeout shows what the swarm and its hosts said about `svc`.
fn settle(c: &Cluster, what: &str, svc: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut report = String::new();
    for (i, h) in c.hosts.iter().enumerate() {
        if let Some(t) = h
            .is_running()
            .then(|| h.shoal(&["service", "ps", "--no-trunc", svc]))
        {
            report += &format!("host {i}: {}\n", String::from_utf8_lossy(&t.stdout));
        }
        let log = std::fs::read_to_string(h.root.join("shoald.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("blob")
                    || l.contains("image")
                    || l.contains("WARN")
                    || l.contains("shoald::executor")
            })
            .collect();
        report += &format!(
            "host {i} log:\n{}\n",
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    panic!("timed out after {within:?}: {what}\n{report}");
}

fn content_dir(c: &Cluster, i: usize) -> PathBuf {
    c.hosts[i].data_root().join("swarm/content/blobs/sha256")
}

fn blobs(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    v
}

#[test]
fn an_image_loaded_on_one_manager_runs_on_every_worker_by_digest() {
    let c = Cluster::swarm(1, 3, "1s");
    wait_ready(&c, 4);
    drain(&c, 0);
    let v1 = app_image("app:v1", "v1");
    let v2 = app_image("app:v2", "v2");

    let out = c.hosts[0].ok(&["image", "load", "-i", v1.to_str().unwrap()]);
    assert!(
        out.contains("Published to the swarm: app:v1"),
        "load on a swarm node publishes the image: {out}"
    );
    // A worker lists it as a swarm image before it has it.
    let ls = c.hosts[1].ok(&["image", "ls"]);
    assert!(ls.lines().next().unwrap().ends_with("SCOPE"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("app ") && l.ends_with("swarm")),
        "{ls}"
    );
    assert_eq!(image_id(&c, 1, "app:v1"), None);

    c.hosts[0].ok(&[
        "service",
        "create",
        "--name",
        "app",
        "--replicas",
        "3",
        "app:v1",
        "sleep",
        "3600",
    ]);
    settle(&c, "a task on each worker", "app", SETTLE, || {
        running_nodes(&c, "app").len() == 3 && (1..4).all(|i| c.containers(i, "app") == 1)
    });
    let id = image_id(&c, 0, "app:v1").expect("the image on manager 1");
    for i in 1..4 {
        assert_eq!(
            image_id(&c, i, "app:v1").as_deref(),
            Some(id.as_str()),
            "worker {i} runs the image it fetched from the managers"
        );
    }
    let spec: Value = serde_json::from_str(&c.hosts[0].ok(&["service", "inspect", "app"])).unwrap();
    let pinned = spec[0]["spec"]["task"]["image_pinned"].as_str().unwrap();
    assert!(
        pinned.starts_with("docker.io/library/app@sha256:"),
        "the service is pinned to the swarm image's digest: {pinned}"
    );

    // v2, loaded on the manager only, rolls across the workers.
    c.hosts[0].ok(&["image", "load", "-i", v2.to_str().unwrap()]);
    c.hosts[0].ok(&["service", "update", "--image", "app:v2", "app"]);
    let id2 = image_id(&c, 0, "app:v2").expect("v2 on manager 1");
    assert_ne!(id, id2);
    settle(&c, "v2 runs on the workers", "app", SETTLE, || {
        let out = c.hosts[0].ok(&["service", "ps", "app"]);
        out.lines()
            .filter(|l| l.contains(" Running ") && l.contains("app:v2"))
            .count()
            == 3
    });
    for i in 1..4 {
        if c.containers(i, "app") > 0 {
            assert_eq!(
                image_id(&c, i, "app:v2").as_deref(),
                Some(id2.as_str()),
                "worker {i} runs v2 as fetched from the managers"
            );
        }
    }
    c.hosts[0].ok(&["service", "rm", "app"]);
}

#[test]
fn damaged_content_is_refused_and_the_task_says_why() {
    let c = Cluster::swarm(1, 1, "1s");
    wait_ready(&c, 2);
    drain(&c, 0);
    let v1 = app_image("app:damaged", "damaged");
    c.hosts[0].ok(&["image", "load", "-i", v1.to_str().unwrap()]);

    // Flip a byte in the largest blob (a layer) on the manager: same size, other content.
    let (layer, _) = blobs(&content_dir(&c, 0))
        .into_iter()
        .next()
        .expect("blobs on the manager");
    let good = std::fs::read(&layer).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&layer, &bad).unwrap();

    c.hosts[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "bad",
        "app:damaged",
        "sleep",
        "3600",
    ]);
    let mut table = String::new();
    wait_until("the task is rejected with the reason", SETTLE, || {
        table = tasks(&c, "bad").1;
        table.contains("Rejected") && table.contains("hashes to")
    });
    assert!(table.contains("swarm image"), "{table}");
    // Nothing of it is kept on the worker: no image, no blob, no layer of the damaged one.
    assert_eq!(image_id(&c, 1, "app:damaged"), None, "{table}");

    // Repaired, the next task runs.
    std::fs::write(&layer, &good).unwrap();
    wait_until("a task runs once the content is whole", SETTLE, || {
        running_nodes(&c, "bad").len() == 1
    });
    c.hosts[0].ok(&["service", "rm", "bad"]);
}

#[test]
fn a_transfer_resumes_from_another_manager_when_the_one_serving_it_dies() {
    // Managers serve blobs at 256 KiB/s: the 2 MB layer takes ~8 s, long enough to kill the
    // manager in the middle.
    let mut c = Cluster::swarm_with_env(3, 1, "1s", &[("SHOAL_TEST_CONTENT_RATE", "262144")]);
    wait_ready(&c, 4);
    for i in 0..3 {
        drain(&c, i);
    }
    let image = app_image("app:resume", "resume");
    let out = c.hosts[0].ok(&["image", "load", "-i", image.to_str().unwrap()]);
    assert!(out.contains("on 3 of 3 managers"), "{out}");
    for i in 0..3 {
        assert_eq!(
            blobs(&content_dir(&c, i)).len(),
            4,
            "manager {i} holds every blob"
        );
    }

    c.hosts[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "slow",
        "app:resume",
        "sleep",
        "3600",
    ]);
    // Whichever manager the worker fetches from dies once the transfer is under way.
    let log = c.hosts[3].root.join("shoald.log");
    let mut serving = None;
    wait_until(
        "the worker fetches the layer from a manager",
        SETTLE,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            serving = text
                .lines()
                .filter(|l| l.contains("fetching a blob from a manager"))
                .find_map(|l| (0..3).find(|i| l.contains(&format!("{}:2377", c.ips[*i]))));
            serving.is_some()
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let serving = serving.unwrap();
    c.kill9(serving);

    wait_until(
        "the task runs all the same",
        Duration::from_secs(90),
        || {
            let from = (0..3).find(|i| *i != serving).unwrap();
            let out = c.hosts[from].shoal(&["service", "ps", "slow"]);
            task_rows(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .any(|(_, d, s)| d == "Running" && s == "Running")
        },
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(
            |l| l.contains("resuming a blob transfer from another manager")
                && !l.contains("offset=0 ")
        ),
        "the transfer resumed where it stopped:\n{}",
        c.hosts[3].log_tail()
    );
}

#[test]
fn content_no_name_or_service_needs_is_collected_after_the_grace_period() {
    let c = Cluster::swarm_with_env(1, 0, "1s", &[("SHOAL_TEST_CONTENT_GC_GRACE", "3")]);
    wait_ready(&c, 1);
    let load = |name: &str, mark: &str| {
        let archive = app_image(name, mark);
        c.hosts[0].ok(&["image", "load", "-i", archive.to_str().unwrap()]);
        image_id(&c, 0, name).expect("loaded")
    };
    let blob = |id: &str| content_dir(&c, 0).join(id.trim_start_matches("sha256:"));
    // A service uses "used"; nothing uses "dropped".
    let used = load("app:used", "used");
    let dropped = load("app:dropped", "dropped");
    c.hosts[0].ok(&[
        "service", "create", "-d", "--name", "keep", "app:used", "sleep", "3600",
    ]);
    // Their names move to other images: both are nameless now.
    let used_next = load("app:used", "used-next");
    let dropped_next = load("app:dropped", "dropped-next");
    assert!(blob(&dropped).exists() && blob(&used).exists());

    settle(
        &c,
        "the nameless, unused image's blobs are removed",
        "keep",
        SETTLE,
        || !blob(&dropped).exists(),
    );
    // What a name or a service refers to stays, and so does the layer they share.
    std::thread::sleep(Duration::from_secs(5));
    for id in [&used, &used_next, &dropped_next] {
        assert!(blob(id).exists(), "{id} is still needed");
    }
    let ls = c.hosts[0].ok(&["image", "ls", "--format", "json"]);
    assert!(
        !ls.lines()
            .any(|l| l.contains("\"swarm\"") && l.contains(&dropped[7..19])),
        "the forgotten image is no swarm image any more: {ls}"
    );
    c.hosts[0].ok(&["service", "rm", "keep"]);
}

#[test]
fn a_worker_fetches_from_managers_that_joined_after_it() {
    // The worker joins when there is one manager; two more join after it.
    let mut c = Cluster::swarm(1, 1, "1s");
    let token = c.token("manager");
    for _ in 0..2 {
        let i = c.add_host();
        c.hosts[i].ok(&["swarm", "join", "--token", &token, &c.addr(0)]);
    }
    wait_ready(&c, 4);
    for i in [0, 2, 3] {
        drain(&c, i);
    }
    let image = app_image("app:later", "later");
    let out = c.hosts[0].ok(&["image", "load", "-i", image.to_str().unwrap()]);
    assert!(out.contains("on 3 of 3 managers"), "{out}");
    // The manager the worker first knew is gone; the others still make a quorum.
    std::thread::sleep(Duration::from_secs(3));
    c.kill9(0);
    let leader = c.wait_leader(&[2, 3], SETTLE);
    c.hosts[leader].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "later",
        "app:later",
        "sleep",
        "3600",
    ]);
    let mut table = String::new();
    settle(
        &c,
        "the worker runs it, fetched from the later managers",
        "later",
        SETTLE,
        || {
            let out = c.hosts[leader].shoal(&["service", "ps", "later"]);
            table = String::from_utf8_lossy(&out.stdout).into_owned();
            task_rows(&table)
                .iter()
                .any(|(_, d, s)| d == "Running" && s == "Running")
        },
    );
    assert_eq!(c.containers(1, "later"), 1, "{table}");
}
