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
