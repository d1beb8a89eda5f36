//! The `herald` binary: one file holding the controller, the speaker, the XDP object and tools.

use anyhow::Result;
use clap::{Parser, Subcommand};
use herald::cli;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Bare-metal LoadBalancer for Kubernetes (MetalLB drop-in) with an XDP ARP/NDP responder"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Allocate LoadBalancer IPs: watch Services and pools, write status, explain with Events.
    Controller(cli::controller::ControllerArgs),
    /// Announce this node's share of LoadBalancer IPs (layer 2 from XDP, BGP to routers) and
    /// gossip with peers.
    Speaker(Box<cli::speaker::SpeakerArgs>),
    /// Inspect this node's BGP sessions on its running speaker.
    Bgp(cli::bgp::BgpArgs),
    /// Load, feed and inspect the XDP responder without Kubernetes.
    Xdp(cli::xdp::XdpArgs),
    /// Validate, allocate and elect over YAML files, printing each Service's outcome.
    Simulate(cli::simulate::SimulateArgs),
    /// Check configuration objects only.
    Validate(cli::simulate::ValidateArgs),
    /// Convert a MetalLB <= 0.12 ConfigMap to metallb.io CRDs.
    ConvertConfigmap(cli::convert::ConvertArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cli::init_tracing();
    match cli.command {
        Command::Controller(args) => cli::controller::run(args),
        Command::Speaker(args) => cli::speaker::run(*args),
        Command::Bgp(args) => cli::bgp::run(args),
        Command::Xdp(args) => cli::xdp::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Validate(args) => cli::simulate::validate(args),
        Command::ConvertConfigmap(args) => cli::convert::run(args),
    }
}
