//! A token service for a test registry's bearer authentication (the scheme of Docker Hub and
//! most hosted registries): the registry answers 401 with a `Bearer realm=…` challenge, the
//! client asks this service for a token (with basic credentials), and presents the token.
//!
//! Tokens are JWTs signed ES256 with a key whose self-signed certificate the registry trusts
//! (`rootcertbundle`), the certificate carried in the header's `x5c` as distribution expects.
//! The service grants what is asked to the one user it knows and refuses everyone else.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

pub const TOKEN_SERVICE: &str = "shoal-test-registry";
pub const TOKEN_ISSUER: &str = "shoal-test-token-issuer";

pub struct TokenService {
    /// `http://127.0.0.1:PORT/token`, the registry's realm.
    pub realm: String,
    /// Tokens handed out so far.
    pub issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl TokenService {
    /// A service on a free loopback port of the caller's namespace, for `user:password`;
    /// the certificate the registry must trust is written to `cert_pem`.
    pub fn start(user: &str, password: &str, cert_pem: &Path) -> TokenService {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed certificate");
        std::fs::write(cert_pem, cert.pem()).expect("write the token certificate");
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("the signing key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        let port = listener.local_addr().expect("address").port();
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (count, halt, user) = (issued.clone(), stop.clone(), user.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") && value.trim() == expected {
                            authorized = true;
                        }
                    }
                }
                let reply = if authorized {
                    let scopes = scopes(&request);
                    let token = jwt(&signer, &x5c, &user, &scopes);
                    count.fetch_add(1, Ordering::Relaxed);
                    let body = format!("{{\"token\":\"{token}\",\"expires_in\":300}}");
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    let body = "{\"details\":\"unauthorized\"}";
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        TokenService {
            realm: format!("http://127.0.0.1:{port}/token"),
            issued,
            stop,
            port,
        }
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The `scope` parameters of `GET /token?…` (`repository:test/busybox:pull,push`).
fn scopes(request_line: &str) -> Vec<(String, Vec<String>)> {
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .filter_map(|s| {
            let s = percent_decode(s);
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "repository").then(|| {
                (
                    name.to_string(),
                    actions.split(',').map(str::to_string).collect(),
                )
            })
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn jwt(signer: &EcdsaKeyPair, x5c: &str, user: &str, scopes: &[(String, Vec<String>)]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [x5c] });
    let access: Vec<_> = scopes
        .iter()
        .map(|(name, actions)| {
            serde_json::json!({ "type": "repository", "name": name, "actions": actions })
        })
        .collect();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": user,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signer
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .expect("sign the token");
    format!("{signing_input}.{}", b64(signature.as_ref()))
}
