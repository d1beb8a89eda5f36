use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct BuildArgs {}

pub fn build(_args: &BuildArgs) -> Result<()> {
    bail!("build-ebpf: not implemented yet")
}
