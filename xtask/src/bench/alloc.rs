//! `cargo xtask bench alloc`: builds and runs the allocator benchmark (`herald` example
//! `bench_alloc`) in release mode; the example prints allocations/s, peak memory and growth.

use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::paths::workspace_root())
        .args([
            "run",
            "--release",
            "--package",
            "herald",
            "--example",
            "bench_alloc",
        ])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("bench_alloc failed: {status}");
    }
    Ok(())
}
