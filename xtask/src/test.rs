use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct TestArgs {}

pub fn run(_args: &TestArgs) -> Result<()> {
    bail!("test: not implemented yet")
}
