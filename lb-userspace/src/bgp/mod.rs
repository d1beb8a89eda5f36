//! BGP mode: announcing Service addresses to BGP peers, as MetalLB's native BGP speaker does.
//!
//! Pure: [`policy`] (which prefixes go to which peer, with which attributes), [`negotiate`]
//! (the OPEN exchange), [`rib`] (what a session must send next), [`passwords`] (TCP MD5 keys
//! from BGPPeers and their Secrets), [`view`] (the sessions as `herald bgp status` shows them).
//! [`wire`] is the only place the BGP codec crate is named.
//! I/O: [`socket`] (TCP with MD5, TTL, source address, VRF device), [`session`] (one session's
//! task), [`sessions`] (the set of sessions kept in line with the plan); [`metrics`] are
//! MetalLB's native BGP metrics.

pub mod bfd;
pub mod metrics;
pub mod negotiate;
pub mod passwords;
pub mod policy;
pub mod rib;
pub mod session;
pub mod sessions;
pub mod socket;
pub mod view;
pub mod wire;
