//! Pulls from a real registry: Debian's `docker-registry` (distribution 2.8) started on
//! loopback for each test, filled by `skopeo` (both installed by deploy/install-deps.sh).

mod common;

use std::collections::HashMap;
use std::fs::File;

use common::Sandbox;
use shoal_image::{Error, RegistryOptions};
use shoal_testkit::{TestRegistry, TokenService};

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
    let registry = TestRegistry::start(None, None);
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

    // Again: every blob is here already, nothing is fetched.
    let fetched = std::sync::Mutex::new(Vec::new());
    sandbox
        .store
        .pull_with_progress(&reference, &RegistryOptions::default(), &|p| {
            fetched.lock().unwrap().push(p.existed)
        })
        .unwrap();
    let fetched = fetched.into_inner().unwrap();
    assert_eq!(fetched.len(), 1 + image.diff_ids.len());
    assert!(fetched.iter().all(|e| *e), "{fetched:?}");

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
    let registry = TestRegistry::start(None, None);
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
    let registry = TestRegistry::start(None, Some(("shoal", &hash)));
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

#[test]
fn a_pushed_image_reads_back_byte_identical_and_a_second_push_sends_no_blob() {
    let registry = TestRegistry::start(None, None);
    let sandbox = Sandbox::new();
    let archive = shoal_testkit::busybox_image().unwrap();
    let id = sandbox.store.load(File::open(archive).unwrap()).unwrap()[0]
        .id
        .clone();
    let name = format!("{}/team/pushed:v1", registry.addr);
    sandbox.store.tag("busybox", &name).unwrap();

    // In chunks of 256 KiB: the 2 MB layer goes as several PATCHes, then the PUT.
    let chunked = RegistryOptions {
        upload_chunk: 256 << 10,
        ..Default::default()
    };
    let sent = std::sync::Mutex::new(Vec::new());
    let pushed = sandbox
        .store
        .push(&name, &chunked, &|p| sent.lock().unwrap().push(p))
        .unwrap();
    let image = sandbox.store.get(&name).unwrap();
    assert_eq!(
        pushed.digest, image.manifest_digest,
        "the manifest as stored"
    );
    assert_eq!(pushed.tag, "v1");
    let sent = sent.into_inner().unwrap();
    assert_eq!(sent.len(), 1 + image.diff_ids.len(), "config and layers");
    assert!(sent.iter().all(|p| !p.existed));

    // skopeo reads back the very bytes.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut local = Vec::new();
    std::io::Read::read_to_end(
        &mut sandbox.store.open_blob(&image.manifest_digest).unwrap(),
        &mut local,
    )
    .unwrap();
    assert_eq!(
        out.stdout, local,
        "the registry serves the manifest byte for byte"
    );

    // Pulled into another store: the same image.
    let other = Sandbox::new();
    let pulled = other
        .store
        .pull(&name, &RegistryOptions::default())
        .unwrap();
    assert_eq!(pulled.id, id);

    // Pushed again under another tag: every blob is there already.
    let again = format!("{}/team/pushed:v2", registry.addr);
    sandbox.store.tag("busybox", &again).unwrap();
    let existed = std::sync::Mutex::new(Vec::new());
    sandbox
        .store
        .push(&again, &RegistryOptions::default(), &|p| {
            existed.lock().unwrap().push(p.existed)
        })
        .unwrap();
    assert!(existed.into_inner().unwrap().iter().all(|e| *e));
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM).
fn tls_material() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn a_tls_registry_is_trusted_through_its_ca_directory_only() {
    let (ca, cert, key) = tls_material();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("cert.pem"), cert).unwrap();
    std::fs::write(files.path().join("key.pem"), key).unwrap();
    let registry = TestRegistry::start_tls(
        None,
        &files.path().join("cert.pem"),
        &files.path().join("key.pem"),
    );
    registry.push_busybox("secure/busybox", "v1", None);
    let reference = format!("{}/secure/busybox:v1", registry.addr);

    // Not trusted: the certificate error, not a silent fall back to plain HTTP.
    let sandbox = Sandbox::new();
    let err = sandbox
        .store
        .pull(&reference, &RegistryOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // Its CA in the registry's own directory: trusted.
    let certs = tempfile::tempdir().unwrap();
    std::fs::create_dir(certs.path().join(&registry.addr)).unwrap();
    std::fs::write(certs.path().join(&registry.addr).join("ca.crt"), ca).unwrap();
    let opts = RegistryOptions {
        certs_dir: Some(certs.path().to_path_buf()),
        ..Default::default()
    };
    let pulled = sandbox.store.pull(&reference, &opts).unwrap();
    assert_eq!(pulled.id, busybox_id());
}

#[test]
fn bearer_tokens_come_from_the_registrys_token_service_with_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("token-issuer.pem");
    let tokens = TokenService::start("tester", "s3cret", &cert);
    let registry = TestRegistry::start_token(&tokens, &cert);
    registry.push_busybox("team/busybox", "v1", Some("tester:s3cret"));
    let reference = format!("{}/team/busybox:v1", registry.addr);
    let sandbox = Sandbox::new();

    // Anonymous: the token service refuses, the pull fails in one line, nothing is stored.
    let err = sandbox
        .store
        .pull(&reference, &RegistryOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("refuses anonymous access")
            && err.to_string().contains("shoal login"),
        "{err}"
    );
    assert!(sandbox.store.list().unwrap().is_empty());

    let mut opts = RegistryOptions::default();
    opts.credentials.insert(
        registry.addr.clone(),
        ("tester".to_owned(), "s3cret".to_owned()),
    );
    let before = tokens.issued.load(std::sync::atomic::Ordering::Relaxed);
    let pulled = sandbox.store.pull(&reference, &opts).unwrap();
    assert_eq!(pulled.id, busybox_id());
    assert!(
        tokens.issued.load(std::sync::atomic::Ordering::Relaxed) > before,
        "the pull presented a token from the token service"
    );

    // A push asks for a push scope the same way.
    let copy = format!("{}/team/copy:v1", registry.addr);
    sandbox.store.tag(&reference, &copy).unwrap();
    let pushed = sandbox.store.push(&copy, &opts, &|_| {}).unwrap();
    assert_eq!(pushed.tag, "v1");
    let again = Sandbox::new();
    assert_eq!(again.store.pull(&copy, &opts).unwrap().id, busybox_id());
}

#[test]
fn pulls_of_images_sharing_layers_at_once_fetch_each_blob_once() {
    let registry = TestRegistry::start(None, None);
    registry.push_busybox("team/a", "v1", None);
    // The same layers under another config.
    let other = shoal_testkit::busybox_image_with(
        serde_json::json!({ "Env": ["PATH=/bin", "OTHER=1"] }),
        "team/b:v1",
    )
    .unwrap();
    registry.copy(
        &format!("docker-archive:{}", other.display()),
        "team/b",
        "v1",
        None,
    );
    let sandbox = Sandbox::new();
    let fetched = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for repo in ["team/a", "team/b"] {
            let (store, fetched, addr) = (&sandbox.store, &fetched, &registry.addr);
            scope.spawn(move || {
                store
                    .pull_with_progress(
                        &format!("{addr}/{repo}:v1"),
                        &RegistryOptions::default(),
                        &|p| {
                            if !p.existed && p.done == p.total {
                                fetched.lock().unwrap().push(p.digest);
                            }
                        },
                    )
                    .unwrap();
            });
        }
    });
    let fetched = fetched.into_inner().unwrap();
    let mut once = fetched.clone();
    once.sort();
    once.dedup();
    assert_eq!(
        fetched.len(),
        once.len(),
        "a blob fetched twice: {fetched:?}"
    );
    let a = sandbox
        .store
        .get(&format!("{}/team/a:v1", registry.addr))
        .unwrap();
    let b = sandbox
        .store
        .get(&format!("{}/team/b:v1", registry.addr))
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(a.diff_ids, b.diff_ids);
    assert_eq!(
        fetched.len(),
        a.diff_ids.len() + 2,
        "the shared layers once, and the two configs"
    );
}
