//! Finds the XDP object built by `cargo xtask build-ebpf` so `herald` can embed it (one file to
//! ship). `HERALD_XDP_OBJECT` overrides the path.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=HERALD_XDP_OBJECT");
    let object = if let Some(path) = std::env::var_os("HERALD_XDP_OBJECT") {
        PathBuf::from(path)
    } else {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_default();
        let root = manifest.parent().map(PathBuf::from).unwrap_or_default();
        root.join("target/ebpf/herald.bpf.o")
    };
    // A missing file counts as changed, so the next build after build-ebpf picks it up.
    println!("cargo::rerun-if-changed={}", object.display());
    if !object.is_file() {
        println!(
            "cargo::error=the XDP object {} is missing: run `cargo xtask build-ebpf` first",
            object.display()
        );
        return;
    }
    println!("cargo::rustc-env=HERALD_XDP_OBJECT={}", object.display());
}
