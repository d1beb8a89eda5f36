//! The `herald` binary: one file holding the controller, the speaker, the XDP object and tools.

use anyhow::Result;
use clap::{Parser, Subcommand};
use herald::cli;

#[derive(Parser)]
#[command(name = "herald", version, about = "Bare-metal LoadBalancer for Kubernetes (MetalLB drop-in) with an XDP ARP/NDP responder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Allocate LoadBalancer IPs: watch Services and pools, write status, explain with Events.
    Controller(cli::controller::ControllerArgs),
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
    cli::init_tracing();
    match Cli::parse().command {
        Command::Controller(args) => cli::controller::run(args),
        Command::Xdp(args) => cli::xdp::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Validate(args) => cli::simulate::validate(args),
        Command::ConvertConfigmap(args) => cli::convert::run(args),
    }
}
