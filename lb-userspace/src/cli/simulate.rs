//! `herald simulate` and `herald validate` (owned by the core work).
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct SimulateArgs {}

#[derive(clap::Args)]
pub struct ValidateArgs {}

pub fn run(_args: SimulateArgs) -> Result<()> {
    bail!("herald simulate: not implemented yet")
}

pub fn validate(_args: ValidateArgs) -> Result<()> {
    bail!("herald validate: not implemented yet")
}
