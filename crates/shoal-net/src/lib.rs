//! shoal's host networking: address management, bridges and veth pairs configured over
//! netlink, nftables rules for outbound NAT and published ports, and the embedded DNS
//! server. Everything here is a primitive the overlay network and service VIPs reuse.
//!
//! No I/O in `ipam`, `ports` and `resolvconf` parsing: they are pure decisions over the
//! state they are given.

pub mod dns;
pub mod error;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod nft;
pub mod ports;
pub mod resolvconf;

pub use error::{Error, Result};
