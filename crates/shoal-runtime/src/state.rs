//! Container lifecycle states and the state record persisted under the runtime root.
//!
//! The persisted record is the runtime's memory between commands; the *status* shown to users
//! is always recomputed from the kernel (is the init process alive, is the exec fifo still
//! there, is the cgroup frozen) so that a crashed or killed container is never reported as
//! running.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupConfig;

/// OCI lifecycle status, ordered so that "moves forward only" reads as a comparison for the
/// create path (creating < created < running); paused is a detour from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    pub fn can_delete(self) -> bool {
        self == Status::Stopped
    }

    pub fn can_pause(self) -> bool {
        self == Status::Running
    }

    pub fn can_resume(self) -> bool {
        self == Status::Paused
    }

    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the runtime remembers about a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    /// Host PID of the container's init process (0 while creating).
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat); guards
    /// against PID reuse.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// Last status this runtime wrote. The live status comes from [`crate::Container::status`].
    pub status: Status,
    pub cgroup: CgroupConfig,
    /// The bundle's config at create time: `exec` inherits its process settings.
    pub config: Spec,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

/// The OCI runtime-spec `state` document (plus runc's extra fields, which tools expect).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_guards() {
        assert!(Status::Created.can_start());
        assert!(!Status::Running.can_start());
        assert!(Status::Paused.can_kill());
        assert!(!Status::Stopped.can_kill());
        assert!(Status::Stopped.can_delete());
        assert!(!Status::Paused.can_delete());
        assert!(Status::Running.can_pause() && Status::Paused.can_resume());
    }

    #[test]
    fn status_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Status::Paused).unwrap(),
            "\"paused\""
        );
    }
}
