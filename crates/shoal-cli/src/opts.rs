//! `run`/`create` flags → a CreateContainerRequest, with docker's parsing rules.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use shoal_api::v1::{ContainerConfig, CreateContainerRequest, HostConfig, StringList};

#[derive(Args, Debug, Clone)]
pub struct CreateFlags {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID, optionally with group (user[:group]).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Overwrite the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long = "hostname")]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long = "memory")]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Keep STDIN open.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Set metadata (key=value).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Network mode: none or host.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Signal to stop the container (default: the image's, else SIGTERM).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i32>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "IMAGE [COMMAND] [ARG...]")]
    pub image_and_command: Vec<String>,
}

/// docker's RAMInBytes: "64m", "1.5g", "512k", "100b" or bytes (binary units).
pub fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        anyhow!("invalid size {s:?}: use a number with an optional unit b, k, m or g")
    })?;
    let mult: f64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        _ => bail!("invalid size {s:?}: unknown unit {unit:?}"),
    };
    if n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult) as i64)
}

/// "1.5" CPUs in units of 1e-9 CPUs.
pub fn parse_cpus(s: &str) -> Result<i64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid --cpus {s:?}: use a number such as 0.5 or 2"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("invalid --cpus {s:?}: must be a positive number");
    }
    Ok((v * 1e9).round() as i64)
}

/// `KEY=VAL` as is; `KEY` takes this shell's value or is dropped when unset (docker).
fn resolve_env(entry: &str, env: &HashMap<String, String>) -> Result<Option<String>> {
    let key = entry.split('=').next().unwrap_or_default();
    if key.is_empty() {
        bail!("invalid environment variable {entry:?}: the name is empty");
    }
    if key.contains(char::is_whitespace) {
        bail!("invalid environment variable {entry:?}: names cannot contain whitespace");
    }
    if entry.contains('=') {
        return Ok(Some(entry.to_string()));
    }
    Ok(env.get(key).map(|v| format!("{key}={v}")))
}

fn read_env_file(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(path))
        .with_context(|| format!("read env file {path}"))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl CreateFlags {
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    pub fn to_request(&self) -> Result<CreateContainerRequest> {
        let shell_env: HashMap<String, String> = std::env::vars().collect();
        let mut env = Vec::new();
        for f in &self.env_file {
            for e in read_env_file(f)? {
                env.extend(resolve_env(&e, &shell_env)?);
            }
        }
        for e in &self.env {
            env.extend(resolve_env(e, &shell_env)?);
        }
        let mut labels = HashMap::new();
        for l in &self.label {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                bail!("invalid label {l:?}: the key is empty");
            }
            labels.insert(k.to_string(), v.to_string());
        }
        let command = &self.image_and_command[1..];
        let memory = self
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()?
            .unwrap_or(0);
        let nano_cpus = self
            .cpus
            .as_deref()
            .map(parse_cpus)
            .transpose()?
            .unwrap_or(0);
        let network = self.network.clone().unwrap_or_default();
        Ok(CreateContainerRequest {
            name: self.name.clone().unwrap_or_default(),
            config: Some(ContainerConfig {
                hostname: self.hostname.clone().unwrap_or_default(),
                user: self.user.clone().unwrap_or_default(),
                env,
                cmd: (!command.is_empty()).then(|| StringList {
                    values: command.to_vec(),
                }),
                entrypoint: self.entrypoint.as_ref().map(|e| StringList {
                    values: if e.is_empty() {
                        Vec::new()
                    } else {
                        vec![e.clone()]
                    },
                }),
                image: self.image().to_string(),
                working_dir: self.workdir.clone().unwrap_or_default(),
                labels,
                tty: self.tty,
                open_stdin: self.interactive,
                stop_signal: self.stop_signal.clone().unwrap_or_default(),
                stop_timeout: self.stop_timeout,
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: network,
                memory,
                nano_cpus,
                pids_limit: self.pids_limit.unwrap_or(0),
                auto_remove: self.rm,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5x").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("two").is_err());
    }

    #[test]
    fn env_resolution() {
        let shell: HashMap<String, String> = [("HOME".to_string(), "/root".to_string())].into();
        assert_eq!(resolve_env("A=1", &shell).unwrap().as_deref(), Some("A=1"));
        assert_eq!(
            resolve_env("HOME", &shell).unwrap().as_deref(),
            Some("HOME=/root")
        );
        assert_eq!(resolve_env("UNSET_X", &shell).unwrap(), None);
        assert!(resolve_env("=x", &shell).is_err());
        assert!(resolve_env("A B=1", &shell).is_err());
    }
}
