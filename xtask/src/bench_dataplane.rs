//! `cargo xtask bench dataplane` (issue 12): not built yet.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask bench dataplane is not implemented yet (issue 12)")
}
