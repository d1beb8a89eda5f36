//! `cargo xtask <habit>`: one command per habit.

mod bench_alloc;
mod bench_controller;
mod bench_dataplane;
mod bench_failover;
mod bench_vs_metallb;
mod bench_xdp;
mod ebpf;
mod kube;
mod lab;
mod manifests;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP object (installs rust-src and bpf-linker first when missing).
    BuildEbpf(ebpf::BuildArgs),
    /// Write the CRD YAML to manifests/crds/.
    Manifests,
    /// Install what the tests need, build the XDP object and run every test (root for netns tests).
    Test(test::TestArgs),
    /// Real Kubernetes control plane for tests and the lab: build | up | down.
    Kube {
        #[command(subcommand)]
        command: kube::KubeCommand,
    },
    /// The lab: real control plane + node namespaces running Herald: up | status | failover | down.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// Benchmarks, each against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Allocate 1k/10k/100k services into an IPv4 /15 and an IPv6 /64 pool.
    Alloc(bench_alloc::Args),
    /// ns per packet for the XDP program beside an empty XDP_PASS program.
    Xdp(bench_xdp::Args),
    /// 1,000 Services on the real API server: Herald's controller beside MetalLB's.
    Controller(bench_controller::Args),
    /// Failover time over repeated speaker kills and link downs in the lab.
    Failover(bench_failover::Args),
    /// ARP/NDP replies/s and latency: XDP (driver, skb), userspace fallback, kernel.
    Dataplane(bench_dataplane::Args),
    /// Herald against MetalLB's controller and speaker in the same lab, same run.
    VsMetallb(bench_vs_metallb::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf(args) => ebpf::build(&args),
        Command::Manifests => manifests::write(),
        Command::Test(args) => test::run(&args),
        Command::Kube { command } => kube::run(&command),
        Command::Bench {
            which: Bench::Alloc(args),
        } => bench_alloc::run(&args),
        Command::Bench {
            which: Bench::Xdp(args),
        } => bench_xdp::run(&args),
        Command::Bench {
            which: Bench::Controller(args),
        } => bench_controller::run(&args),
        Command::Bench {
            which: Bench::Failover(args),
        } => bench_failover::run(&args),
        Command::Bench {
            which: Bench::Dataplane(args),
        } => bench_dataplane::run(&args),
        Command::Bench {
            which: Bench::VsMetallb(args),
        } => bench_vs_metallb::run(&args),
        Command::Lab { command } => lab::run(&command),
    }
}

/// Root of the workspace (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}
