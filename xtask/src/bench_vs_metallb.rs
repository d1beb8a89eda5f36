//! `cargo xtask bench vs-metallb` (issue 12): not built yet.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask bench vs-metallb is not implemented yet (issue 12)")
}
