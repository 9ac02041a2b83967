//! shoal's OCI runtime: takes an OCI runtime-spec bundle (`config.json` + rootfs) and runs
//! it as a container, with Linux namespaces, cgroups (v1 and v2 behind one trait), a
//! pivot_root'ed root filesystem, capabilities, seccomp filters and rlimits.
//!
//! The library is what `shoald` uses (through the `shoal-runc` binary and a per-container
//! supervisor), and `shoal-runc` exposes it with runc's command line so other engines can
//! use it too.
//!
//! Design: `create` forks an intermediate process that joins namespaces by path and clones
//! the container's init with the new ones; init waits on a fifo until `start` opens it,
//! exactly like runc, so create and start are separate steps that other tools can drive.
//! State lives in one JSON file per container under the runtime root; the live status is
//! always recomputed from the kernel.
//!
//! `create`, `run` and `exec` fork: they must be called from a single-threaded process.

pub mod cgroups;
pub mod console;
mod container;
mod create;
mod devices;
pub mod dmz;
mod error;
mod exec;
pub mod features;
mod init;
mod mountopt;
mod namespaces;
pub mod paths;
pub mod process;
mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
mod sync;
pub mod sys;
mod sysctl;
pub mod wait;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub use container::{validate_id, Container};
pub use create::CreateOptions;
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use state::{OciState, Status};

/// The runtime, rooted at a state directory (`--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create a container from a bundle; its init waits for [`Container::start`].
    pub fn create(&self, opts: &CreateOptions) -> Result<Container> {
        create::create(&self.root, opts, None)
    }

    /// Like [`Runtime::create`], with an already connected console socket.
    pub fn create_with_console(
        &self,
        opts: &CreateOptions,
        console: UnixStream,
    ) -> Result<Container> {
        create::create(&self.root, opts, Some(console))
    }

    pub fn load(&self, id: &str) -> Result<Container> {
        Container::load(&self.root, id)
    }

    pub fn list(&self) -> Result<Vec<Container>> {
        container::list_ids(&self.root)?
            .iter()
            .map(|id| self.load(id))
            .collect()
    }

    /// Run a new process in a running container; returns its PID (a child of the caller).
    pub fn exec(&self, container: &Container, opts: &ExecOptions) -> Result<i32> {
        exec::exec(container, opts, None)
    }

    /// Like [`Runtime::exec`], with an already connected console socket.
    pub fn exec_with_console(
        &self,
        container: &Container,
        opts: &ExecOptions,
        console: UnixStream,
    ) -> Result<i32> {
        exec::exec(container, opts, Some(console))
    }
}
