//! `herald speaker`: parses arguments and runs the speaker (issue 11, being built).

use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct SpeakerArgs {
    /// This node's name, as in the Node object.
    #[arg(long, env = "METALLB_NODE_NAME")]
    pub node_name: String,
}

pub fn run(_args: SpeakerArgs) -> Result<()> {
    bail!("herald speaker is not implemented yet (issue 11)")
}
