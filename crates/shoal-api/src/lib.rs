//! shoal's object model and wire protocol.
//!
//! The protobuf messages in `proto/` are the object model: the engine persists them as its
//! records and the daemon serves them; conversions to user-facing shapes (docker-style
//! tables and inspect JSON) live in the CLI. Generated code is included here, never copied.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("shoal.v1");
}

pub use v1::ContainerStatus;

impl ContainerStatus {
    /// docker's lower-case name (`created`, `running`, ...).
    pub fn docker_name(self) -> &'static str {
        match self {
            ContainerStatus::Unspecified => "unknown",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Removing => "removing",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
}

impl v1::Container {
    pub fn status(&self) -> ContainerStatus {
        self.state
            .as_ref()
            .map(|s| s.status())
            .unwrap_or(ContainerStatus::Unspecified)
    }
}
