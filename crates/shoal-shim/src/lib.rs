//! The per-container supervisor ("shim") and the small protocol shoald uses to talk to it.
//!
//! One shim runs per running container, like containerd-shim: it is the parent of the
//! container's init, holds its stdio, writes its log, collects its exit status and keeps
//! doing all that while shoald is down or restarting. It depends on nothing but libc so that
//! it stays small (goal: ≤ 2 MB RSS each).
//!
//! Files in the shim's state directory:
//! - `attach.sock`: unix socket; clients exchange [`frame`]s (stdin in, stdout/stderr out).
//! - `exit`: written atomically when the container has exited: `{"status":N,"time":"…"}`
//!   where N is the raw wait(2) status.
//! - `init.pid`, `runtime.log`: written by the runtime during create.

pub mod frame;
pub mod logfile;
pub mod time;
