//! The cluster's certificate authority: an ECDSA P-256 root made at `swarm init`, and node
//! certificates naming the node and its role, signed from a node's certificate request.
//!
//! A node certificate's subject is set by the CA, never taken from the request (the request
//! only proves the node holds its key): `CN` = node id, `OU` = `swarm-manager` or
//! `swarm-worker`, `O` = cluster id, as SwarmKit does. Peers read the role from `OU`.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A node's role as its certificate states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
        }
    }

    fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            "swarm-manager" => Some(Role::Manager),
            "swarm-worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// The root CA: its certificate, and its key on managers.
pub struct RootCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: Option<KeyPair>,
}

/// How long the root is valid (docker: 20 years).
const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Node certificates start a little in the past: clocks of a cluster are never exact.
const BACKDATE: Duration = Duration::from_secs(3600);

impl RootCa {
    /// A new root for the cluster `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<RootCa> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let cert = root_params(cluster_id).self_signed(&key).map_err(ca_err)?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key: Some(key),
        })
    }

    /// A root loaded from PEM; with its key it can sign.
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<RootCa> {
        let der = pem_der(cert_pem, "CERTIFICATE")?;
        let key = key_pem
            .map(|k| KeyPair::from_pem(k).map_err(ca_err))
            .transpose()?;
        Ok(RootCa {
            cert_pem: cert_pem.to_string(),
            cert_der: der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The key as PEM (managers store it 0600), if this copy has it.
    pub fn key_pem(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.serialize_pem())
    }

    /// The fingerprint join tokens pin: SHA-256 of the certificate's DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    /// Sign a node certificate for `node_id` in `role` from the node's request. The request's
    /// own subject and extensions are ignored.
    pub fn issue(
        &self,
        csr_pem: &str,
        cluster_id: &str,
        node_id: &str,
        role: Role,
        validity: Duration,
    ) -> Result<String> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::Ca("this node does not hold the CA key".into()))?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Ca(format!("invalid certificate request: {e}")))?;
        let mut params = CertificateParams::new(vec![node_id.to_string()]).map_err(ca_err)?;
        params
            .subject_alt_names
            .push(SanType::DnsName(role.ou().try_into().map_err(ca_err)?));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.ou());
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + validity).into();
        params.use_authority_key_identifier_extension = true;
        let issuer =
            Issuer::from_ca_cert_der(&self.cert_der.clone().into(), key).map_err(ca_err)?;
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(ca_err)?;
        Ok(cert.pem())
    }

    /// `next` (a new root) signed by this root: during a rotation, certificates from `next`
    /// carry it so nodes that still trust only this root accept them (SwarmKit's
    /// cross-signed intermediate).
    pub fn cross_sign(&self, next: &RootCa, cluster_id: &str) -> Result<String> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::Ca("this node does not hold the CA key".into()))?;
        let next_key = next
            .key
            .as_ref()
            .ok_or_else(|| Error::Ca("the new root's key is missing".into()))?;
        let params = root_params(cluster_id);
        let issuer =
            Issuer::from_ca_cert_der(&self.cert_der.clone().into(), key).map_err(ca_err)?;
        Ok(params.signed_by(next_key, &issuer).map_err(ca_err)?.pem())
    }
}

/// A root's subject and constraints (a rotated root has the same subject: certificates
/// chain by signature, and the cross-signed copy must name it exactly).
fn root_params(cluster_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "shoal-swarm-ca");
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster_id);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_VALIDITY).into();
    params
}

/// When a node renews its certificate: at a random point in the last half of its life
/// (docker's rule), the same point every time for a given certificate (its serial picks it),
/// so a restart does not move it.
pub fn renew_at(id: &Identity) -> SystemTime {
    let life = id
        .not_after
        .duration_since(id.not_before)
        .unwrap_or_default();
    let pick = Sha256::digest(id.serial.as_bytes());
    let r = f64::from(u16::from_be_bytes([pick[0], pick[1]])) / f64::from(u16::MAX);
    id.not_before + life.mul_f64(0.5 + 0.5 * r)
}

/// Lower-case hex, as fingerprints are shown.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A node's new key and the certificate request it sends to a manager.
pub struct NodeKey {
    pub key_pem: String,
    pub csr_pem: String,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let params = CertificateParams::default();
        let csr = params.serialize_request(&key).map_err(ca_err)?;
        Ok(NodeKey {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem().map_err(ca_err)?,
        })
    }
}

/// Who a node certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    /// When it expires, and when it became valid.
    pub not_after: SystemTime,
    pub not_before: SystemTime,
    pub serial: String,
}

/// Read the identity in a node certificate (DER), after TLS has verified it chains to the
/// cluster's root.
pub fn identity(cert_der: &[u8]) -> Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::Ca(format!("unreadable certificate: {e}")))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let node_id = first(&mut subject.iter_common_name())
        .ok_or_else(|| Error::Ca("certificate has no node id (CN)".into()))?;
    let ou = first(&mut subject.iter_organizational_unit())
        .ok_or_else(|| Error::Ca("certificate has no role (OU)".into()))?;
    let role = Role::from_ou(&ou)
        .ok_or_else(|| Error::Ca(format!("certificate has an unknown role {ou:?}")))?;
    let cluster_id = first(&mut subject.iter_organization())
        .ok_or_else(|| Error::Ca("certificate has no cluster id (O)".into()))?;
    let validity = cert.validity();
    let to_time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok(Identity {
        node_id,
        role,
        cluster_id,
        not_after: to_time(validity.not_after),
        not_before: to_time(validity.not_before),
        serial: cert.raw_serial_as_string(),
    })
}

pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The DER inside the first PEM block, which must have the given label.
pub fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Ca(format!("no {label} in the PEM text: {e}")))?;
    if block.label != label {
        return Err(Error::Ca(format!(
            "expected a {label} in the PEM text, found a {}",
            block.label
        )));
    }
    Ok(block.contents)
}

fn ca_err(e: impl std::fmt::Display) -> Error {
    Error::Ca(e.to_string())
}
