//! `cargo xtask bench failover` (issue 11): not built yet.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask bench failover is not implemented yet (issue 11)")
}
