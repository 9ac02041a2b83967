use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn a_node_certificate_names_the_node_and_role_the_ca_chose() {
    let ca = RootCa::generate("cluster-1").unwrap();
    let node = NodeKey::generate().unwrap();
    let pem = ca
        .issue(
            &node.csr_pem,
            "cluster-1",
            "node-abc",
            Role::Worker,
            Duration::from_secs(90 * 24 * 3600),
        )
        .unwrap();
    let der = ca::pem_der(&pem, "CERTIFICATE").unwrap();
    let id = identity(&der).unwrap();
    assert_eq!(id.node_id, "node-abc");
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.cluster_id, "cluster-1");
    let days = id
        .not_after
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
        / 86400;
    assert!((89..=90).contains(&days), "{days}");

    // It chains to the root: the issuer is the root's subject and the signature verifies.
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert_eq!(cert.issuer(), root.subject());
    cert.verify_signature(Some(root.public_key())).unwrap();
    // A different root does not verify it.
    let other = RootCa::generate("cluster-2").unwrap();
    let (_, other_root) = x509_parser::parse_x509_certificate(other.cert_der()).unwrap();
    assert!(cert
        .verify_signature(Some(other_root.public_key()))
        .is_err());
}

#[test]
fn a_root_reloaded_from_pem_signs_and_keeps_its_fingerprint() {
    let ca = RootCa::generate("c").unwrap();
    let again = RootCa::from_pem(ca.cert_pem(), ca.key_pem().as_deref()).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    let node = NodeKey::generate().unwrap();
    again
        .issue(
            &node.csr_pem,
            "c",
            "n",
            Role::Manager,
            Duration::from_secs(60),
        )
        .unwrap();
    // A copy without the key (a worker's) cannot sign.
    let public = RootCa::from_pem(ca.cert_pem(), None).unwrap();
    let e = public
        .issue(
            &node.csr_pem,
            "c",
            "n",
            Role::Manager,
            Duration::from_secs(60),
        )
        .unwrap_err();
    assert!(e.to_string().contains("does not hold the CA key"), "{e}");
    assert!(ca
        .issue("garbage", "c", "n", Role::Worker, Duration::from_secs(60))
        .is_err());
}

/// Whether `chain` (leaf first, as PEM) verifies for the manager name under `roots` alone.
fn verifies(chain_pem: &str, roots: &[&RootCa]) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r.cert_der().to_vec()))
            .unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(store),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let certs: Vec<CertificateDer<'static>> =
        x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
            .map(|p| CertificateDer::from(p.unwrap().contents))
            .collect();
    verifier
        .verify_server_cert(
            &certs[0],
            &certs[1..],
            &ServerName::try_from("swarm-manager").unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn during_a_rotation_new_certificates_verify_under_the_old_root_too() {
    let old = RootCa::generate("c").unwrap();
    let new = RootCa::generate("c").unwrap();
    let cross = old.cross_sign(&new, "c").unwrap();
    let node = NodeKey::generate().unwrap();
    let leaf = new
        .issue(
            &node.csr_pem,
            "c",
            "n",
            Role::Manager,
            Duration::from_secs(3600),
        )
        .unwrap();
    // With the cross-signed root, a node that trusts only the old root accepts it.
    let chain = format!("{}\n{cross}", leaf.trim_end());
    assert!(verifies(&chain, &[&old]));
    assert!(verifies(&chain, &[&new]));
    assert!(verifies(&chain, &[&old, &new]));
    // Without it, only the new root does.
    assert!(!verifies(&leaf, &[&old]));
    assert!(verifies(&leaf, &[&new]));
    // Another cluster's root signs nothing of ours.
    let stranger = RootCa::generate("c").unwrap();
    assert!(!verifies(&chain, &[&stranger]));
}

#[test]
fn renewal_falls_in_the_second_half_of_a_certificates_life() {
    let ca = RootCa::generate("c").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let node = NodeKey::generate().unwrap();
        let pem = ca
            .issue(
                &node.csr_pem,
                "c",
                "n",
                Role::Worker,
                Duration::from_secs(100 * 3600),
            )
            .unwrap();
        let id = identity(&ca::pem_der(&pem, "CERTIFICATE").unwrap()).unwrap();
        let at = renew_at(&id);
        let life = id.not_after.duration_since(id.not_before).unwrap();
        let into = at.duration_since(id.not_before).unwrap();
        assert!(into >= life / 2 && into <= life, "{into:?} of {life:?}");
        // Stable for one certificate.
        assert_eq!(at, renew_at(&id));
        seen.insert(into.as_secs() / 60);
    }
    assert!(seen.len() > 5, "renewal points are spread: {seen:?}");
}
