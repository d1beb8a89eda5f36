//! `cargo xtask bench <which>`: one module per benchmark, each measured beside a baseline in
//! the same run.

mod alloc;
mod bgp;
mod controller;
pub mod dataplane;
mod failover;
mod speaker_memory;
mod vs_metallb;
mod xdp;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Allocate 1k/10k/100k services into an IPv4 /15 and an IPv6 /64 pool.
    Alloc(alloc::Args),
    /// ns per packet for the XDP program beside an empty XDP_PASS program.
    Xdp(xdp::Args),
    /// 1,000 Services on the real API server: Herald's controller beside MetalLB's.
    Controller(controller::Args),
    /// Failover time over repeated speaker kills and link downs in the lab.
    Failover(failover::Args),
    /// ARP/NDP replies/s and latency: XDP (driver, skb), userspace fallback, kernel.
    Dataplane(dataplane::Args),
    /// Herald against MetalLB's controller and speaker in the same lab, same run.
    VsMetallb(vs_metallb::Args),
    /// Herald's native BGP speaker beside MetalLB's in the lab's BGP mode, same run.
    Bgp(bgp::Args),
    /// BGP failover: Herald with BFD beside MetalLB native; graceful restarts; BFD under load.
    BgpFailover(bgp::failover::Args),
    /// Resident memory of one real speaker with 1,000 and 10,000 Services on the API server.
    SpeakerMemory(speaker_memory::Args),
}

pub fn run(which: &Bench) -> Result<()> {
    match which {
        Bench::Alloc(args) => alloc::run(args),
        Bench::Xdp(args) => xdp::run(args),
        Bench::Controller(args) => controller::run(args),
        Bench::Failover(args) => failover::run(args),
        Bench::Dataplane(args) => dataplane::run(args),
        Bench::VsMetallb(args) => vs_metallb::run(args),
        Bench::Bgp(args) => bgp::run(args),
        Bench::BgpFailover(args) => bgp::failover::run(args),
        Bench::SpeakerMemory(args) => speaker_memory::run(args),
    }
}
