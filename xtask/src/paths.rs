//! Where things are in the workspace.

use std::path::{Path, PathBuf};

/// Root of the workspace (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Whether `cmd` is an executable file on `PATH`.
pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}

/// Packages (`command`, `package`) whose command is not on `PATH`.
pub fn missing_packages<'a>(tools: &[(&str, &'a str)]) -> Vec<&'a str> {
    tools
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect()
}

/// `apt-get update`, then `apt-get install` of `packages` (nothing when empty).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    println!("==> apt-get install {}", packages.join(" "));
    let install = [
        &["install", "-y", "-q", "--no-install-recommends"][..],
        packages,
    ]
    .concat();
    for args in [&["update", "-q"][..], &install] {
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| anyhow::anyhow!("running apt-get: {e}"))?;
        if !status.success() {
            anyhow::bail!("apt-get {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}
