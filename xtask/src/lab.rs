//! `cargo xtask lab up | status | failover | down` (issue 11): not built yet.

use anyhow::{Result, bail};

#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Start the control plane, the node namespaces and Herald.
    Up,
    /// Show who announces what and what the client sees.
    Status,
    /// Kill the announcing speaker, then take a node's link down; time the recovery.
    Failover,
    /// Stop everything `up` started.
    Down,
}

pub fn run(_command: &LabCommand) -> Result<()> {
    bail!("cargo xtask lab is not implemented yet (issue 11)")
}
