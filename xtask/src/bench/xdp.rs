//! `cargo xtask bench xdp`: builds the XDP object, then runs the bench runner
//! (`tests/e2e/bench_xdp_runner.rs`, example `bench_xdp` of herald-tests) as root.

use anyhow::{Context, Result, bail};
use std::process::Command;

use crate::paths::workspace_root;

#[derive(clap::Args)]
pub struct Args {
    /// Runs per BPF_PROG_TEST_RUN call for frames the program leaves unchanged.
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Single-run calls per round for answered frames (the reply would be re-run otherwise).
    #[arg(long, default_value_t = 20_000)]
    pub calls: usize,
    /// Rounds per case; the table shows medians.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

pub fn run(args: &Args) -> Result<()> {
    crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
    let root = workspace_root();
    let object = crate::ebpf::object_path();
    println!("bench xdp: cargo run --release -p herald-tests --example bench_xdp");
    let status = Command::new("cargo")
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "herald-tests",
            "--example",
            "bench_xdp",
            "--",
        ])
        .arg(&object)
        .args([
            "--repeat",
            &args.repeat.to_string(),
            "--calls",
            &args.calls.to_string(),
            "--rounds",
            &args.rounds.to_string(),
        ])
        .current_dir(&root)
        .status()
        .context("running the bench runner")?;
    if !status.success() {
        bail!("bench runner failed: {status}");
    }
    Ok(())
}
