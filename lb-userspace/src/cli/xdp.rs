//! `herald xdp ...` (owned by the data-plane work).
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct XdpArgs {}

pub fn run(_args: XdpArgs) -> Result<()> {
    bail!("herald xdp: not implemented yet")
}
