//! The swarm's control plane: the cluster's certificate authority and join tokens, the
//! dispatcher (heartbeats, agents' sessions, status reports, logs) and the leader's control
//! loop (orchestrators and scheduler).

pub mod ca;
pub mod counts;
pub mod dispatcher;
pub mod error;
pub mod ids;
pub mod join;
pub mod logs;
pub mod node_ca;
pub mod objects;
pub mod orchestrator;
pub mod scheduler;
pub mod security;
pub mod service;
pub mod sessions;
pub mod token;

pub use ca::{hex, identity, renew_at, Identity, NodeKey, Role, RootCa};
pub use error::{Error, Result};
pub use token::JoinToken;

#[cfg(test)]
mod tests;
