//! shoal's host networking: address management, bridges and veth pairs configured over
//! netlink, nftables rules for outbound NAT and published ports, and the embedded DNS
//! server. Everything here is a primitive the overlay network and service VIPs reuse.
//!
//! No I/O in `ipam` and `ports`: they are pure decisions over the state they are given.

pub mod error;
pub mod ipam;
pub mod ports;

pub use error::{Error, Result};
