//! `cargo xtask build-ebpf`: builds the XDP object `herald` embeds, installing first whatever is
//! missing (the pinned nightly with rust-src, bpf-linker built against that nightly's libLLVM).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::workspace_root;

/// Nightly that builds the eBPF object (LLVM 23; bpf-linker links its libLLVM).
pub const NIGHTLY: &str = "nightly-2026-10-15";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
const TARGET: &str = "bpfel-unknown-none";

/// Where the built object is copied; `lb-userspace/build.rs` embeds it from here.
pub fn object_path() -> PathBuf {
    workspace_root().join("target/ebpf/herald.bpf.o")
}

#[derive(clap::Args)]
pub struct BuildArgs {}

pub fn build(_args: &BuildArgs) -> Result<()> {
    let root = workspace_root();
    ensure_nightly()?;
    ensure_bpf_linker(&root)?;
    say(&format!(
        "cargo +{NIGHTLY} build -p lb-ebpf -Z build-std=core --target {TARGET} --profile bpf"
    ));
    let target_dir = root.join("target");
    run(Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args([
            "build",
            "-p",
            "lb-ebpf",
            "-Z",
            "build-std=core",
            "--target",
            TARGET,
            "--profile",
            "bpf",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // BTF (from debug info) is what makes the maps BTF-defined and `bpftool map dump` readable.
        // Loops of a constant trip count are unrolled whole (in rustc and again in the linker's
        // LTO): each access then has a constant offset, which the verifier accepts without
        // CAP_PERFMON, where one instruction adding a different offset on each pass is refused
        // (Spectre v1 sanitation) — the speaker runs without CAP_PERFMON.
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf -C llvm-args=-unroll-threshold=4000 -C link-arg=--llvm-args=-unroll-threshold=4000",
        )
        .current_dir(&root))?;
    let built = target_dir.join(TARGET).join("bpf").join("lb-ebpf");
    let object = object_path();
    if let Some(dir) = object.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Copied only when it changed: herald's build script watches this file, and a fresh mtime
    // alone would rebuild herald (minutes in release) after every build-ebpf.
    let unchanged =
        std::fs::read(&built).is_ok_and(|new| std::fs::read(&object).is_ok_and(|old| old == new));
    if !unchanged {
        std::fs::copy(&built, &object)
            .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    }
    say(&format!("XDP object: {}", object.display()));
    Ok(())
}

fn say(what: &str) {
    println!("build-ebpf: {what}");
}

fn ensure_nightly() -> Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !installed.lines().any(|l| l.starts_with(NIGHTLY)) {
        say(&format!("installing toolchain {NIGHTLY} with rust-src"));
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        return Ok(());
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !components.lines().any(|l| l.trim() == "rust-src") {
        say(&format!("adding rust-src to {NIGHTLY}"));
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

fn ensure_bpf_linker(root: &Path) -> Result<()> {
    // bpf-linker loads the nightly's libLLVM, which rustup puts on the library path.
    let version = Command::new("rustup")
        .args(["run", NIGHTLY, "bpf-linker", "--version"])
        .output();
    if let Ok(out) = &version
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // bpf-linker must use the same LLVM as the nightly emitting the bitcode: point LLVM_PREFIX at
    // a directory whose lib/libLLVM.so is the nightly's own libLLVM.
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
    )?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-* in {} (is {NIGHTLY} complete?)",
                lib.display()
            )
        })?;
    let prefix = root.join("target/bpf-linker-llvm");
    let link = prefix.join("lib/libLLVM.so");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    say(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against {} (LLVM_PREFIX={}, takes a few minutes)",
        llvm.display(),
        prefix.display()
    ));
    run(Command::new("cargo")
        // --force: a bpf-linker that is present but cannot load this LLVM is rebuilt.
        .args([
            "install",
            "--force",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .env("LLVM_PREFIX", &prefix)
        .current_dir(root))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
