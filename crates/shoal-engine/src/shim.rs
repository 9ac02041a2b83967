//! Starting a container's shim and reading what it leaves behind.

use std::path::Path;

use crate::error::{start_failure_code, Error, IoContext, Result};
use crate::EngineConfig;

/// What the shim reported once the container was created.
#[derive(Debug, Clone, Copy)]
pub struct ShimInfo {
    pub shim_pid: i32,
    pub shim_start_time: u64,
    pub init_pid: i32,
}

pub async fn spawn(
    cfg: &EngineConfig,
    id: &str,
    bundle: &Path,
    log: &Path,
    stdin: bool,
    tty: bool,
) -> Result<ShimInfo> {
    let state_dir = cfg.shim_dir(id);
    let mut cmd = tokio::process::Command::new(&cfg.shim);
    cmd.arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(bundle)
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--runtime")
        .arg(&cfg.runtime)
        .arg("--runtime-root")
        .arg(cfg.runtime_root())
        .arg("--log")
        .arg(log)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if stdin {
        cmd.arg("--stdin");
    }
    if tty {
        cmd.arg("--tty");
    }
    cmd.kill_on_drop(true);
    // The launcher reports as soon as the runtime has created the container.
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| Error::Internal("the container supervisor did not report within 60 s".into()))?
        .ctx(|| format!("run {}", cfg.shim.display()))?;
    let report = String::from_utf8_lossy(&out.stdout);
    let report = report.trim();
    if let Some(rest) = report.strip_prefix("ok ") {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let parse = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        if let (Some(p), Some(t), Some(i)) = (parse(0), parse(1), parse(2)) {
            return Ok(ShimInfo {
                shim_pid: p as i32,
                shim_start_time: t as u64,
                init_pid: i as i32,
            });
        }
    }
    let message = report.strip_prefix("error ").unwrap_or(report).to_string();
    let message = if message.is_empty() {
        format!("shim exited with {}", out.status)
    } else {
        message
    };
    Err(Error::StartFailed {
        exit_code: start_failure_code(&message),
        message,
    })
}

/// The raw wait status the shim recorded, if it wrote one.
pub fn read_exit(state_dir: &Path) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(state_dir.join("exit")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        v["status"].as_i64()? as i32,
        v["time"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Shell-style exit code of a raw wait status.
pub fn exit_code(status: i32) -> i32 {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

/// Is the shim still the process we started (guards against PID reuse)?
pub fn shim_alive(pid: i32, start_time: u64) -> bool {
    shoal_runtime::sys::process_alive(pid, start_time)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes() {
        assert_eq!(super::exit_code(3 << 8), 3);
        assert_eq!(super::exit_code(9), 137);
        assert_eq!(super::exit_code(15), 143);
        assert_eq!(super::exit_code(0), 0);
    }
}
