//! `cargo xtask test`: the README's test command. Installs what the tests need (Debian packages,
//! the eBPF toolchain through `build-ebpf`), then runs every test: unit, property, BPF_PROG_TEST_RUN
//! and network-namespace tests, a short run of every fuzz target, `cargo fmt --check` and clippy.

use anyhow::{Context, Result, bail};
use std::process::Command;

use crate::paths::{have, workspace_root};

/// Nightly used for the eBPF object and cargo-fuzz (same pin as build-ebpf).
const NIGHTLY: &str = "nightly-2026-10-15";

/// Debian packages the end-to-end tests drive (command → package).
const TOOLS: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("arping", "arping"),
    ("ndisc6", "ndisc6"),
    ("tcpdump", "tcpdump"),
    ("ip", "iproute2"),
    // Certificates and HTTPS requests for the metrics endpoint's TLS tests.
    ("openssl", "openssl"),
    ("curl", "curl"),
    // Running the real binaries with exactly a given capability set.
    ("setpriv", "util-linux"),
    ("capsh", "libcap2-bin"),
    // Real BGP routers for the BGP tests (support/routers): BIRD 2, FRR, GoBGP (+ its CLI).
    ("bird", "bird2"),
    ("vtysh", "frr"),
    ("gobgpd", "gobgpd"),
    // Real nodes: runc's seccomp support, kube-proxy's tables, the images (podman, a static
    // busybox for the backend, musl for the static herald).
    ("pkg-config", "pkg-config"),
    ("iptables", "iptables"),
    ("conntrack", "conntrack"),
    ("podman", "podman"),
    ("busybox", "busybox-static"),
    ("musl-gcc", "musl-tools"),
    // A foreign XDP program (compiled from LLVM IR) that holds a node's interface.
    ("llc", "llvm"),
];

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip installing packages and toolchains (use what is there).
    #[arg(long)]
    pub no_install: bool,
    /// Skip formatting and lint checks.
    #[arg(long)]
    pub no_lint: bool,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let root = workspace_root();
    if !is_root() {
        bail!(
            "cargo xtask test needs root (CAP_BPF, CAP_NET_ADMIN for namespaces and XDP): run it with sudo"
        );
    }
    if !args.no_install {
        install_tools()?;
    }
    step("cargo xtask build-ebpf");
    cargo(&root, &["xtask", "build-ebpf"])?;

    step("real Kubernetes control plane and nodes (cargo xtask kube build --nodes)");
    crate::kube::build()?;
    crate::kube::build_node_runtime()?;
    step("images for the real nodes (cargo xtask image)");
    crate::image::build()?;
    step("build herald (the e2e tests run the real binary)");
    cargo(&root, &["build", "--workspace", "--bins"])?;
    step("run every test");
    cargo(&root, &["test", "--workspace", "--no-fail-fast"])?;
    fuzz_build(&root)?;
    if !args.no_lint {
        step("cargo fmt --check");
        cargo(&root, &["fmt", "--all", "--check"])?;
        step("cargo clippy -D warnings");
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    println!("xtask test: all passed");
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn step(what: &str) {
    println!("==> {what}");
}

fn install_tools() -> Result<()> {
    crate::paths::apt_install(&crate::paths::missing_packages(TOOLS))
}

/// Every fuzz target: (crate directory, fuzz directory, targets). Each decoder of untrusted bytes
/// has one: frames (the packet logic shared by the XDP program), gossip datagrams, configuration
/// text, BGP messages and BFD packets from peers.
const FUZZ: &[(&str, &str, &[&str])] = &[
    ("lb-ebpf/common", "lb-ebpf/common/fuzz", &["respond"]),
    (
        "lb-userspace",
        "lb-userspace/fuzz",
        &["gossip_datagram", "config_load", "bgp_decode", "bfd_decode"],
    ),
];

/// Builds the fuzz targets (cargo-fuzz needs nightly for sanitizer flags) and runs each briefly.
fn fuzz_build(root: &std::path::Path) -> Result<()> {
    if !have("cargo-fuzz") {
        step("cargo install cargo-fuzz");
        sh(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    for (krate, dir, targets) in FUZZ {
        let fuzz_dir = root.join(dir);
        step(&format!("cargo fuzz build ({dir})"));
        sh(Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args(["fuzz", "build", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .current_dir(root.join(krate)))?;
        for target in *targets {
            // A short run: new inputs go to a scratch corpus under target/, the checked-in seeds
            // stay as they are.
            let scratch = root.join("target/fuzz-corpus").join(target);
            std::fs::create_dir_all(&scratch)?;
            step(&format!(
                "cargo fuzz run {target} (20 s, scratch corpus under target/)"
            ));
            sh(Command::new("cargo")
                .arg(format!("+{NIGHTLY}"))
                .args(["fuzz", "run", target, "--fuzz-dir"])
                .arg(&fuzz_dir)
                .arg(&scratch)
                .arg(fuzz_dir.join("seeds").join(target))
                .args(["--", "-max_total_time=20"])
                .current_dir(root.join(krate)))?;
        }
    }
    Ok(())
}

fn cargo(root: &std::path::Path, args: &[&str]) -> Result<()> {
    sh(Command::new("cargo").args(args).current_dir(root))
}

fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
