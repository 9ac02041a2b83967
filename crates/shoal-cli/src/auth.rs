//! Registry credentials, as docker's CLI keeps them: `~/.shoal/config.json` (or
//! `$SHOAL_CONFIG/config.json`), `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`,
//! mode 0600 in a 0700 directory, replaced atomically. The daemon never stores them: each
//! pull carries the credentials of its registry.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Config {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    auth: String,
}

fn dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("SHOAL_CONFIG") {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .context("HOME is not set: set SHOAL_CONFIG to a directory for shoal's credentials")?;
    Ok(PathBuf::from(home).join(".shoal"))
}

fn read() -> Result<Config> {
    let path = dir()?.join("config.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid: fix or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn write(config: &Config) -> Result<()> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let tmp = dir.join(".config.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(config)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("config.json"))
        .with_context(|| format!("replace {}", dir.join("config.json").display()))?;
    Ok(())
}

/// docker.io's credentials are filed under its index, as docker files them.
fn key(server: &str) -> String {
    match server {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_owned()
        }
        s => s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
    }
}

/// The stored credentials for a registry, if any.
pub fn credentials_for(server: &str) -> Result<Option<(String, String)>> {
    let Some(e) = read()?.auths.remove(&key(server)) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(e.auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((u, p)) => Ok(Some((u.to_owned(), p.to_owned()))),
        None => bail!(
            "the stored credentials for {server} are malformed: run `shoal login {server}` again"
        ),
    }
}

pub fn store(server: &str, user: &str, password: &str) -> Result<()> {
    let mut config = read()?;
    config.auths.insert(
        key(server),
        Entry {
            auth: base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
        },
    );
    write(&config)
}

/// Forget a registry's credentials; whether there were any.
pub fn remove(server: &str) -> Result<bool> {
    let mut config = read()?;
    let had = config.auths.remove(&key(server)).is_some();
    if had {
        write(&config)?;
    }
    Ok(had)
}

/// The registry a `login`/`logout` argument names (docker.io when none).
pub fn server(arg: Option<&str>) -> String {
    match arg {
        None => "docker.io".to_owned(),
        Some(s) => s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
    }
}
