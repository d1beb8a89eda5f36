//! BGP mode: announcing Service addresses to BGP peers, as MetalLB's BGP speaker does.

pub mod policy;
pub mod wire;
