//! `cargo xtask <habit>`: one command per habit (build-ebpf, test, bench, manifests, lab, kube).

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
    BuildEbpf,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf => anyhow::bail!("build-ebpf: not implemented yet"),
    }
}
