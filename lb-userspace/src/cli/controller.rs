//! `herald controller` (owned by the controller work).
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct ControllerArgs {}

pub fn run(_args: ControllerArgs) -> Result<()> {
    bail!("herald controller: not implemented yet")
}
