//! Test kit for shoal's integration tests and shell scripts.
//!
//! Fixtures that many crates share live here so tests read as phases: a real busybox image built
//! from the host's `busybox-static` (no registry, no docker needed), unique resource names so
//! parallel test processes never collide, and the one polling helper, [`wait_until`], whose panic
//! says what was still false.
//!
//! The image builder writes `docker save` archives with the `tar` crate directly and does not
//! depend on `shoal-image`, so that crate's own tests can use it to check the importer.

mod bins;
mod bundle;
mod busybox;
mod daemon;
mod docker_archive;
mod names;
mod netns;
mod pty;
mod registry;
pub mod token;
mod wait;

pub use bins::bin;
pub use bundle::{base_config, busybox_bundle};
pub use busybox::{busybox_image, busybox_image_with, BUSYBOX_IMAGE_NAME};
pub use daemon::{cleanup_tree, remove_cgroup, Daemon};
pub use names::unique_name;
pub use netns::{in_netns, lan, Remote};
pub use pty::PtySession;
pub use registry::TestRegistry;
pub use token::TokenService;
pub use wait::wait_until;
