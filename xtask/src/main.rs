//! `cargo xtask <habit>`: one command per habit.

mod bench;
mod ebpf;
mod image;
mod kube;
mod lab;
mod manifests;
mod paths;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP object (installs rust-src and bpf-linker first when missing).
    BuildEbpf(ebpf::BuildArgs),
    /// Write the CRD YAML to manifests/crds/.
    Manifests,
    /// Install what the tests need, build the XDP object and run every test (root for netns tests).
    Test(test::TestArgs),
    /// Herald's container image (static herald, FROM scratch, podman without pulling) and the
    /// lab's pause and backend images, saved under target/images for `ctr images import`.
    Image(image::ImageArgs),
    /// Real Kubernetes control plane for tests and the lab: build | up | down.
    Kube {
        #[command(subcommand)]
        command: kube::KubeCommand,
    },
    /// The lab: real control plane + node namespaces running Herald: up | status | failover | down.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// Benchmarks, each against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() -> Result<()> {
    forget_cargo_run_env();
    match Cli::parse().command {
        Command::BuildEbpf(args) => ebpf::build(&args),
        Command::Manifests => manifests::write(),
        Command::Test(args) => test::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Kube { command } => kube::run(&command),
        Command::Bench { which } => bench::run(&which),
        Command::Lab { command } => lab::run(&command),
    }
}

/// Removes what `cargo run` added to this process's environment (the xtask package's
/// `CARGO_PKG_*`/`CARGO_MANIFEST_*`, the target directories on `LD_LIBRARY_PATH`). The cargo
/// commands xtask starts inherit it, and with it cargo rebuilt ring, rustls and kube (about 2
/// minutes) on every nested `cargo build`, then again on the next build from a shell.
fn forget_cargo_run_env() {
    let target = paths::workspace_root().join("target");
    let added = |path: &std::path::Path| {
        path.starts_with(&target) || path.components().any(|c| c.as_os_str() == ".rustup")
    };
    let library_path = std::env::var_os("LD_LIBRARY_PATH").map(|value| {
        std::env::split_paths(&value)
            .filter(|p| !added(p))
            .collect::<Vec<_>>()
    });
    let cargo_run_vars: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| {
            key.to_str()
                .is_some_and(|k| k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_"))
        })
        .collect();
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        for key in cargo_run_vars {
            std::env::remove_var(key);
        }
        match library_path {
            Some(paths) if paths.is_empty() => std::env::remove_var("LD_LIBRARY_PATH"),
            Some(paths) => {
                if let Ok(joined) = std::env::join_paths(paths) {
                    std::env::set_var("LD_LIBRARY_PATH", joined);
                }
            }
            None => {}
        }
    }
}
