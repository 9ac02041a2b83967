//! A client of the OCI distribution API (v2), and `ImageStore::pull` on top of it.
//!
//! A registry is reached over HTTPS with the system's roots plus the CA certificates of its
//! own directory (`<certs dir>/<host[:port]>/*.crt`, as docker's `/etc/docker/certs.d`);
//! plain HTTP only for registries named insecure, and for loopback ones, when they do not
//! speak TLS (docker's rule).
//! Authentication follows the registry's challenge: a bearer token from its token service
//! (with the user's credentials if it has them) or basic credentials. Every blob and
//! manifest is checked against its digest before anything is registered; nothing is
//! registered when a pull fails.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::archive::{blob_path, Staging};
use crate::digest::sha256_digest;
use crate::error::{Error, Result};
use crate::fsutil::TmpDir;
use crate::load::LoadedImage;
use crate::manifest::{
    select_platform, Descriptor, ManifestKind, ANNOTATION_IMAGE_NAME, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::reference::{self, Reference};
use crate::store::ImageStore;

/// Manifests larger than this are refused (the spec's advice is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a pull reports as it goes: a blob's bytes so far of its size (`done == total` once
/// it is complete and checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub digest: String,
    pub done: u64,
    pub total: u64,
    /// The store had the blob already: nothing was fetched.
    pub existed: bool,
}

/// Receives a pull's progress (from several download threads at once).
pub type OnProgress<'a> = &'a (dyn Fn(PullProgress) + Sync);

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Directory of per-registry CA certificates: `<dir>/<host[:port]>/*.crt`.
    pub certs_dir: Option<PathBuf>,
    /// Credentials by registry (`host[:port]`): user name and password (or token).
    pub credentials: HashMap<String, (String, String)>,
    /// Blobs larger than this are uploaded in chunks of this size (`PATCH`es, then the
    /// closing `PUT`); 0: 32 MiB.
    pub upload_chunk: u64,
}

const UPLOAD_CHUNK: u64 = 32 << 20;

/// The host to talk to for a reference's domain (docker.io's API lives elsewhere).
fn api_host(domain: &str) -> &str {
    if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// Whether `host[:port]` is on loopback: docker reaches those over plain HTTP unasked.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn registry_error(host: &str, what: impl std::fmt::Display) -> Error {
    Error::Registry(format!("{host}: {what}"))
}

/// One registry, with the tokens it handed out.
pub struct Registry {
    agent: ureq::Agent,
    host: String,
    base: String,
    credentials: Option<(String, String)>,
    /// Bearer tokens by scope; "basic" when the registry asked for basic credentials.
    tokens: Mutex<HashMap<String, String>>,
    upload_chunk: u64,
}

impl Registry {
    /// A client for the registry `domain` names (`docker.io`, `localhost:5000`, …).
    ///
    /// # Errors
    ///
    /// A CA certificate of the registry's directory that cannot be read.
    pub fn new(domain: &str, opts: &RegistryOptions) -> Result<Registry> {
        let host = api_host(domain).to_owned();
        let insecure = opts.insecure.iter().any(|h| h == domain || h == &host);
        let plain = insecure || is_loopback(&host);
        let tls = tls_config(&host, opts.certs_dir.as_deref())?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .build();
        // HTTPS always; a registry allowed plain HTTP gets it only when it does not speak
        // TLS at all (docker's rule): one probe of its API root decides.
        let mut base = format!("https://{host}");
        if plain {
            let probe = agent
                .get(&format!("{base}/v2/"))
                .timeout(Duration::from_secs(5))
                .call();
            if let Err(ureq::Error::Transport(t)) = probe {
                let msg = t.to_string();
                if !msg.contains("certificate") {
                    base = format!("http://{host}");
                }
            }
        }
        Ok(Registry {
            agent,
            credentials: opts
                .credentials
                .get(domain)
                .or_else(|| opts.credentials.get(&host))
                .cloned(),
            host,
            base,
            tokens: Mutex::new(HashMap::new()),
            upload_chunk: if opts.upload_chunk == 0 {
                UPLOAD_CHUNK
            } else {
                opts.upload_chunk
            },
        })
    }

    /// GET `path` (under `/v2/`) for `repo` (pull scope), answering the registry's
    /// authentication challenge once.
    fn get(&self, repo: &str, path: &str, accept: Option<&str>) -> Result<ureq::Response> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}/v2/{path}", self.base);
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        self.send("GET", &url, &scope, &headers, repo, path)
    }

    /// A request without a body, answering the registry's challenge once; 2xx only.
    fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        repo: &str,
        path: &str,
    ) -> Result<ureq::Response> {
        let mut challenged = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(auth) = self.authorization(scope) {
                req = req.set("Authorization", &auth);
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !challenged => {
                    challenged = true;
                    let challenge = r.header("WWW-Authenticate").unwrap_or_default().to_owned();
                    self.answer(&challenge, scope)?;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(registry_error(
                        &self.host,
                        format!(
                            "authentication required for {repo}: log in with `shoal login {}`",
                            self.host
                        ),
                    ))
                }
                Err(ureq::Error::Status(404, _)) => {
                    return Err(Error::NotFound(format!("{}/{repo}: {path}", self.host)))
                }
                Err(ureq::Error::Status(403, _)) => {
                    return Err(registry_error(
                        &self.host,
                        format!(
                            "denied: {repo} ({method} {path}): the credentials do not allow it"
                        ),
                    ))
                }
                Err(ureq::Error::Status(code, r)) => {
                    let body = r.into_string().unwrap_or_default();
                    return Err(registry_error(
                        &self.host,
                        format!("{method} {path}: HTTP {code}: {}", body.trim()),
                    ));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(registry_error(&self.host, transport(&t, &self.base)))
                }
            }
        }
    }

    fn authorization(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tokens.get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if tokens.contains_key("basic") {
            let (u, p) = self.credentials.as_ref()?;
            return Some(basic(u, p));
        }
        None
    }

    /// Answer a `WWW-Authenticate` challenge: get a token, or use basic credentials.
    fn answer(&self, challenge: &str, scope: &str) -> Result<()> {
        let (kind, params) = parse_challenge(challenge);
        match kind.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    registry_error(&self.host, "bearer challenge without a realm")
                })?;
                let mut req = self.agent.get(realm);
                // The challenge's scopes when it names them (a cross-repository mount needs
                // pull on the source too), else ours; one parameter each.
                let wanted = params.get("scope").map_or(scope, String::as_str);
                for one in wanted.split_whitespace() {
                    req = req.query("scope", one);
                }
                if let Some(service) = params.get("service") {
                    req = req.query("service", service);
                }
                if let Some((u, p)) = &self.credentials {
                    req = req.set("Authorization", &basic(u, p));
                }
                let reply: TokenReply = req
                    .call()
                    .map_err(|e| match e {
                        ureq::Error::Status(401 | 403, _) if self.credentials.is_some() => {
                            registry_error(
                                &self.host,
                                format!("the token service refused the credentials: log in again with `shoal login {}`", self.host),
                            )
                        }
                        ureq::Error::Status(401 | 403, _) => registry_error(
                            &self.host,
                            format!("the token service refuses anonymous access: log in with `shoal login {}`", self.host),
                        ),
                        other => registry_error(&self.host, format!("token service: {other}")),
                    })?
                    .into_json()
                    .map_err(|e| registry_error(&self.host, format!("token service reply: {e}")))?;
                let token = reply
                    .token
                    .or(reply.access_token)
                    .ok_or_else(|| registry_error(&self.host, "token service gave no token"))?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(scope.to_owned(), token);
                Ok(())
            }
            "basic" if self.credentials.is_some() => {
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert("basic".into(), String::new());
                Ok(())
            }
            _ => Err(registry_error(
                &self.host,
                format!(
                    "authentication required: log in with `shoal login {}`",
                    self.host
                ),
            )),
        }
    }

    /// Check the credentials against the registry (docker's `login`): its API root, with
    /// its challenge answered.
    ///
    /// # Errors
    ///
    /// Refused credentials (`unauthorized: …`), an unreachable registry.
    pub fn login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut challenged = false;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(auth) = self.authorization("") {
                req = req.set("Authorization", &auth);
            }
            match req.call() {
                Ok(_) => return Ok(()),
                Err(ureq::Error::Status(401, r)) if !challenged && self.credentials.is_some() => {
                    challenged = true;
                    let challenge = r.header("WWW-Authenticate").unwrap_or_default().to_owned();
                    self.answer(&challenge, "").map_err(|_| {
                        registry_error(&self.host, "unauthorized: incorrect username or password")
                    })?;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(registry_error(
                        &self.host,
                        "unauthorized: incorrect username or password",
                    ))
                }
                Err(ureq::Error::Status(code, _)) => {
                    return Err(registry_error(&self.host, format!("GET /v2/: HTTP {code}")))
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(registry_error(&self.host, transport(&t, &self.base)))
                }
            }
        }
    }

    /// A manifest (or index) by tag or digest: its bytes, media type and digest.
    ///
    /// # Errors
    ///
    /// Not found, refused, too large, or (by digest) content that does not match it.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String, String)> {
        let r = self.get(repo, &format!("{repo}/manifests/{reference}"), Some(ACCEPT))?;
        let media_type = r
            .header("Content-Type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut bytes = Vec::new();
        r.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| registry_error(&self.host, format!("reading manifest: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(registry_error(
                &self.host,
                format!("manifest {repo}:{reference} is larger than 4 MiB"),
            ));
        }
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::DigestMismatch {
                what: format!("manifest {}/{repo}", self.host),
                expected: reference.to_owned(),
                actual: digest,
            });
        }
        Ok((bytes, media_type, digest))
    }

    /// Whether the repository has a blob (pushing skips it then).
    fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let path = format!("{repo}/blobs/{digest}");
        let url = format!("{}/v2/{path}", self.base);
        match self.send("HEAD", &url, &push_scope(repo), &[], repo, &path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Upload a blob in one request (POST for an upload URL, then PUT with its digest), or
    /// mount it from `from`, another repository of the registry that has it (no bytes sent);
    /// whether it was mounted.
    fn put_blob(
        &self,
        repo: &str,
        digest: &str,
        from: Option<&str>,
        content: impl FnOnce() -> Result<(File, u64)>,
    ) -> Result<bool> {
        let path = format!("{repo}/blobs/uploads/");
        let mut url = format!("{}/v2/{path}", self.base);
        if let Some(from) = from {
            url.push_str(&format!("?mount={digest}&from={from}"));
        }
        let scope = push_scope(repo);
        let started = self.send(
            "POST",
            &url,
            &scope,
            &[("Content-Length", "0")],
            repo,
            &path,
        )?;
        if started.status() == 201 {
            return Ok(true);
        }
        let (mut content, size) = content()?;
        let location = started.header("Location").ok_or_else(|| {
            registry_error(
                &self.host,
                "the registry started an upload without a Location",
            )
        })?;
        let mut upload = self.absolute(location);
        // A large blob goes in chunks, each answered with where the next goes.
        let mut sent = 0;
        while size > self.upload_chunk && sent < size {
            let n = self.upload_chunk.min(size - sent);
            let mut req = self
                .agent
                .request("PATCH", &upload)
                .set("Content-Type", "application/octet-stream")
                .set("Content-Length", &n.to_string())
                .set("Content-Range", &format!("{sent}-{}", sent + n - 1));
            if let Some(auth) = self.authorization(&scope) {
                req = req.set("Authorization", &auth);
            }
            let r = req
                .send((&mut content).take(n))
                .map_err(|e| self.failed(&format!("uploading {digest} at byte {sent}"), e))?;
            upload = self.absolute(r.header("Location").ok_or_else(|| {
                registry_error(&self.host, "the registry took a chunk without a Location")
            })?);
            sent += n;
        }
        upload.push(if upload.contains('?') { '&' } else { '?' });
        upload.push_str("digest=");
        upload.push_str(digest);
        let rest = size - sent;
        let mut req = self
            .agent
            .put(&upload)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &rest.to_string());
        if let Some(auth) = self.authorization(&scope) {
            req = req.set("Authorization", &auth);
        }
        req.send(content.take(rest))
            .map_err(|e| self.failed(&format!("uploading {digest}"), e))?;
        Ok(false)
    }

    /// A `Location` the registry sent, as a URL.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        }
    }

    /// A failed request, in one line.
    fn failed(&self, what: &str, e: ureq::Error) -> Error {
        match e {
            ureq::Error::Status(code, r) => registry_error(
                &self.host,
                format!(
                    "{what}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default().trim()
                ),
            ),
            ureq::Error::Transport(t) => registry_error(&self.host, transport(&t, &self.base)),
        }
    }

    /// Put a manifest under `tag`; its digest as the registry computed it.
    fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let mut req = self.agent.put(&url).set("Content-Type", media_type);
        if let Some(auth) = self.authorization(&push_scope(repo)) {
            req = req.set("Authorization", &auth);
        }
        let r = req
            .send_bytes(bytes)
            .map_err(|e| self.failed(&format!("putting the manifest of {repo}:{tag}"), e))?;
        Ok(r.header("Docker-Content-Digest")
            .map_or_else(|| sha256_digest(bytes), str::to_owned))
    }

    /// A blob's content, as a stream (the caller checks its digest).
    ///
    /// # Errors
    ///
    /// Not found or refused.
    pub fn blob(&self, repo: &str, digest: &str) -> Result<impl Read + Send + 'static> {
        Ok(self
            .get(repo, &format!("{repo}/blobs/{digest}"), None)?
            .into_reader())
    }
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// What a push did with one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushProgress {
    pub digest: String,
    /// The registry had it already.
    pub existed: bool,
    /// Mounted from this repository of the registry instead of sent.
    pub mounted_from: Option<String>,
}

/// The manifest a push put: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub tag: String,
    pub digest: String,
    pub size: u64,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `Bearer realm="…",service="…",scope="…"` → ("Bearer", {realm, service, scope}).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (kind, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_owned());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    (kind.to_owned(), params)
}

/// A transport failure, in words a user can act on.
fn transport(t: &ureq::Transport, base: &str) -> String {
    let msg = t.to_string();
    if base.starts_with("https://")
        && (msg.contains("InvalidContentType") || msg.contains("CorruptMessage"))
    {
        return format!(
            "{msg}: the registry may speak plain HTTP; if so, start shoald with --insecure-registry for it"
        );
    }
    msg
}

/// rustls with the system's roots and the registry's own CA directory.
fn tls_config(host: &str, certs_dir: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(dir) = certs_dir.map(|d| d.join(host)) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "crt") {
                    use rustls::pki_types::pem::PemObject as _;
                    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
                        .map_err(|e| registry_error(host, format!("{}: {e}", path.display())))?;
                    for c in certs {
                        let c = c.map_err(|e| {
                            registry_error(host, format!("{}: {e}", path.display()))
                        })?;
                        roots.add(c).map_err(|e| {
                            registry_error(host, format!("{}: {e}", path.display()))
                        })?;
                    }
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| registry_error(host, e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Where a pull gets manifests and blobs: a registry, or a swarm's content store.
pub trait Source: Sync {
    /// Names the source in messages (`localhost:5000`, `the swarm's managers`).
    fn describe(&self) -> String;

    /// The manifest or index `reference` (a tag or a digest) names in `repo`: its bytes,
    /// media type (empty if the source does not say) and digest.
    ///
    /// # Errors
    ///
    /// Unreachable, refusing, or no such manifest.
    fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String, String)>;

    /// The content of blob `digest` (checked by the caller).
    ///
    /// # Errors
    ///
    /// Unreachable, refusing, or no such blob.
    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send + '_>>;

    /// An error of this source about `what`.
    fn error(&self, what: String) -> Error {
        Error::Registry(format!("{}: {what}", self.describe()))
    }
}

impl Source for Registry {
    fn describe(&self) -> String {
        self.host.clone()
    }

    fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String, String)> {
        Registry::manifest(self, repo, reference)
    }

    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(Registry::blob(self, repo, digest)?))
    }
}

/// What a reference names on its registry, without fetching any layer: the image id (its
/// config's digest, for this host's platform) and a reference pinned to the manifest's
/// digest (`host/repo@sha256:…`), which names that content whatever the tag says later.
///
/// # Errors
///
/// An invalid reference, an unreachable or refusing registry, a missing image.
pub fn resolve(reference: &str, opts: &RegistryOptions) -> Result<(String, String)> {
    let r = reference::parse(reference)?;
    let registry = Registry::new(&r.domain, opts)?;
    let found = platform_manifest(&registry, &r)?;
    Ok((
        found.manifest.config.digest,
        format!("{}/{}@{}", r.domain, r.path, found.top.2),
    ))
}

/// A reference's manifests as its registry serves them.
struct Found {
    /// The manifest or index the reference names: bytes, media type, digest.
    top: (Vec<u8>, String, String),
    /// For an index, the manifest chosen for this host's platform: bytes and digest.
    chosen: Option<(Vec<u8>, String)>,
    manifest: crate::manifest::Manifest,
}

/// The manifest for this host's platform (else linux/amd64) behind `r`.
fn platform_manifest(registry: &dyn Source, r: &Reference) -> Result<Found> {
    let repo = r.path.as_str();
    let wanted = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let parse = |bytes: &[u8], t: &str| {
        ManifestKind::parse(bytes, media(t))
            .map_err(|e| registry.error(format!("manifest of {repo}: {e}")))
    };
    let top = registry.manifest(repo, &wanted)?;
    let (chosen, manifest) = match parse(&top.0, &top.1)? {
        ManifestKind::Manifest(m) => (None, m),
        ManifestKind::Index(index) => {
            let d = select_platform(&index.manifests).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{}/{repo}:{wanted} has no image for linux/{} or linux/amd64",
                    registry.describe(),
                    crate::manifest::host_architecture()
                ))
            })?;
            let (bytes, t, digest) = registry.manifest(repo, &d.digest)?;
            match parse(&bytes, d.media_type.as_deref().unwrap_or(&t))? {
                ManifestKind::Manifest(m) => (Some((bytes, digest)), m),
                ManifestKind::Index(_) => {
                    return Err(registry.error(format!("{repo}: an index inside an index")))
                }
            }
        }
    };
    Ok(Found {
        top,
        chosen,
        manifest,
    })
}

impl ImageStore {
    /// Pulls `reference` (`[host[:port]/]repo[:tag|@digest]`) from its registry: the
    /// manifest (an index resolved to this host's platform, else linux/amd64), the config and
    /// the layers, each checked against its digest, then registered as a load registers an
    /// archive's images; the tag moves to the pulled image.
    ///
    /// # Errors
    ///
    /// An invalid reference, an unreachable or refusing registry, a missing image, content
    /// that does not match its digest. Nothing is registered then.
    pub fn pull(&self, reference: &str, opts: &RegistryOptions) -> Result<LoadedImage> {
        self.pull_with_progress(reference, opts, &|_| {})
    }

    /// [`ImageStore::pull`], telling `progress` how each blob's download goes.
    ///
    /// # Errors
    ///
    /// As [`ImageStore::pull`].
    pub fn pull_with_progress(
        &self,
        reference: &str,
        opts: &RegistryOptions,
        progress: OnProgress<'_>,
    ) -> Result<LoadedImage> {
        let r = reference::parse(reference)?;
        let registry = Registry::new(&r.domain, opts)?;
        self.pull_from(&registry, reference, progress)
    }

    /// [`ImageStore::pull_with_progress`] from `source`: the same checks, the same import.
    ///
    /// # Errors
    ///
    /// As [`ImageStore::pull`], with the source's own errors.
    pub fn pull_from(
        &self,
        source: &dyn Source,
        reference: &str,
        progress: OnProgress<'_>,
    ) -> Result<LoadedImage> {
        let r = reference::parse(reference)?;
        let _shared = self.gc_shared();
        let work = TmpDir::new(&self.tmp, "pull")?;
        // The claim on the blobs it fetches lasts until they are imported.
        let (staging, _claim) = self.stage_pull(source, &r, work.path(), progress)?;
        let mut loaded = self.import_staged(&staging, work.path())?;
        loaded
            .pop()
            .ok_or_else(|| source.error(format!("{reference}: no image came")))
    }

    fn stage_pull(
        &self,
        registry: &dyn Source,
        r: &Reference,
        work: &Path,
        progress: OnProgress<'_>,
    ) -> Result<(Staging, crate::store::Claim<'_>)> {
        let repo = r.path.as_str();
        let mut staging = Staging::new();
        let found = platform_manifest(registry, r)?;
        let (top, top_type, top_digest) = found.top;
        staging.add(&blob_path(&top_digest)?, &mut &top[..], &work.join("m1"))?;
        if let Some((bytes, digest)) = &found.chosen {
            staging.add(&blob_path(digest)?, &mut &bytes[..], &work.join("m2"))?;
        }
        let manifest = found.manifest;
        // What another pull fetches now (a base layer two images share) is waited for, not
        // fetched again.
        let mut claimed: Vec<String> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|d| d.digest.clone())
            .filter(|d| !self.blobs.contains(d))
            .collect();
        claimed.sort();
        claimed.dedup();
        let claim = self.claim(claimed);
        // Blobs this store has already (a shared base layer, the same image again) are
        // checked where they are, not fetched.
        let (have, blobs): (Vec<&Descriptor>, Vec<&Descriptor>) = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .partition(|d| self.blobs.contains(&d.digest));
        for d in have {
            staging.add_file(
                &blob_path(&d.digest)?,
                &d.digest,
                self.blobs.path(&d.digest)?,
            )?;
            progress(PullProgress {
                digest: d.digest.clone(),
                done: d.size,
                total: d.size,
                existed: true,
            });
        }
        // The others, a few at once.
        let next = std::sync::atomic::AtomicUsize::new(0);
        // One failure ends the pull: the others stop taking blobs.
        let failed = std::sync::atomic::AtomicBool::new(false);
        let staged: Mutex<Vec<Result<(usize, String, PathBuf)>>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..blobs.len().min(3) {
                scope.spawn(|| loop {
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(d) = blobs.get(i) else { break };
                    let file = work.join(format!("b{i}"));
                    let result = fetch_blob(registry, repo, d, &file, progress)
                        .map(|()| (i, d.digest.clone(), file));
                    let broke = result.is_err();
                    staged
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(result);
                    if broke {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                });
            }
        });
        for result in staged.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let (_, digest, file) = result?;
            staging.add_file(&blob_path(&digest)?, &digest, file)?;
        }
        // An OCI layout's index naming the image (a tag; a digest reference names none).
        let mut annotations = std::collections::BTreeMap::new();
        if r.digest.is_none() {
            annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), r.canonical());
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": if top_type.is_empty() { OCI_MANIFEST.to_owned() } else { top_type },
                "digest": top_digest,
                "size": top.len(),
                "annotations": annotations,
            }],
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Registry(e.to_string()))?;
        staging.add("index.json", &mut &bytes[..], &work.join("index.json"))?;
        staging.add(
            "oci-layout",
            &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
            &work.join("oci-layout"),
        )?;
        Ok((staging, claim))
    }
}

impl ImageStore {
    /// Pushes the image named `reference` (`host[:port]/repo[:tag]`) to that registry: each
    /// blob the repository lacks (config and layers, exactly as stored), then the manifest as
    /// stored, so the digests stay the same and a pull gets the same bytes back.
    ///
    /// # Errors
    ///
    /// No such local image, a refusing or unreachable registry.
    pub fn push(
        &self,
        reference: &str,
        opts: &RegistryOptions,
        progress: &(dyn Fn(PushProgress) + Sync),
    ) -> Result<Pushed> {
        let r = reference::parse(reference)?;
        if r.digest.is_some() {
            return Err(Error::InvalidReference(format!(
                "{reference}: push a tag, not a digest"
            )));
        }
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let _shared = self.gc_shared();
        let image = self.get(reference)?;
        let manifest = self.blobs.read(&image.manifest_digest)?;
        let kind = ManifestKind::parse(&manifest, None)
            .map_err(|e| Error::Corrupt(format!("manifest of {reference}: {e}")))?;
        let ManifestKind::Manifest(m) = kind else {
            return Err(Error::Corrupt(format!(
                "{reference}: the stored manifest is an index"
            )));
        };
        let media_type = m
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.to_owned());
        let registry = Registry::new(&r.domain, opts)?;
        let repo = r.path.as_str();
        // Another repository of the same registry this image came from or went to: its
        // blobs are mounted from there rather than sent again.
        let from = image
            .names
            .iter()
            .filter_map(|n| reference::parse(n).ok())
            .find(|n| n.domain == r.domain && n.path != r.path)
            .map(|n| n.path);
        for d in std::iter::once(&m.config).chain(&m.layers) {
            let existed = registry.has_blob(repo, &d.digest)?;
            let mut mounted_from = None;
            if !existed {
                let open = || {
                    let file = self.blobs.open(&d.digest)?;
                    let size = file
                        .metadata()
                        .map_err(Error::with_io(format!("blob {}", d.digest)))?
                        .len();
                    Ok((file, size))
                };
                if registry.put_blob(repo, &d.digest, from.as_deref(), open)? {
                    mounted_from.clone_from(&from);
                }
            }
            progress(PushProgress {
                digest: d.digest.clone(),
                existed,
                mounted_from,
            });
        }
        let digest = registry.put_manifest(repo, &tag, &media_type, &manifest)?;
        Ok(Pushed {
            tag,
            digest,
            size: manifest.len() as u64,
        })
    }
}

/// The media type, when it is one of the manifest types (registries may send others).
fn media(t: &str) -> Option<&str> {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .into_iter()
    .find(|m| *m == t)
}

/// Download one blob into `file`, checking its size and digest.
fn fetch_blob(
    registry: &dyn Source,
    repo: &str,
    d: &Descriptor,
    file: &Path,
    progress: OnProgress<'_>,
) -> Result<()> {
    let mut content = Counting {
        inner: registry
            .blob(repo, &d.digest)?
            .take(d.size.saturating_add(1)),
        done: 0,
        told: 0,
        d,
        progress,
    };
    let out = File::options()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(Error::with_io(format!("writing {}", file.display())))?;
    let mut out = crate::digest::HashingWriter::new(out);
    std::io::copy(&mut content, &mut out)
        .map_err(|e| registry.error(format!("downloading {}: {e}", d.digest)))?;
    let (digest, size, _) = out.finish();
    if size != d.size {
        return Err(registry.error(format!(
            "blob {} is {size} bytes, the manifest says {}",
            d.digest, d.size
        )));
    }
    if digest != d.digest {
        return Err(registry.error(format!(
            "blob {} of {repo} arrived with content that hashes to {digest}: damaged in transit or at the source; nothing was stored",
            d.digest
        )));
    }
    progress(PullProgress {
        digest: d.digest.clone(),
        done: size,
        total: d.size,
        existed: false,
    });
    Ok(())
}

/// A download that reports how far it got, every 512 KiB (the last report comes from
/// `fetch_blob` once the blob is checked).
struct Counting<'a, R> {
    inner: R,
    done: u64,
    told: u64,
    d: &'a Descriptor,
    progress: OnProgress<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.told >= 512 << 10 && self.done < self.d.size {
            self.told = self.done;
            (self.progress)(PullProgress {
                digest: self.d.digest.clone(),
                done: self.done,
                total: self.d.size,
                existed: false,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_like_docker_hubs() {
        let (kind, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(kind, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (kind, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (kind.as_str(), p["realm"].as_str()),
            ("Basic", "Registry Realm")
        );
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }
}
