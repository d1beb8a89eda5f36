//! `herald convert-configmap` (owned by the core work).
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct ConvertArgs {}

pub fn run(_args: ConvertArgs) -> Result<()> {
    bail!("herald convert-configmap: not implemented yet")
}
