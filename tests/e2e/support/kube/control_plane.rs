//! The real Kubernetes control plane the kube tests share (etcd + kube-apiserver with RBAC and
//! static token identities, from `herald-control-plane`), started once per test binary in a temp
//! dir on free loopback ports, from the binaries `cargo xtask kube build` puts in
//! `target/kube/bin`. No state is shared with `cargo xtask kube up`.
//!
//! The processes die with the test binary even when it is killed (parent-death signal); an
//! `atexit` hook stops them and removes the temp dir on a normal exit.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use herald_control_plane::Binaries;
pub use herald_control_plane::ControlPlane;

/// The workspace's `target/` directory, found from the test executable (target/debug/deps/x).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // deps → debug (profile) → target
    while dir.file_name().is_some_and(|n| n != "target") {
        if !dir.pop() {
            break;
        }
    }
    dir
}

/// `target/<profile>/herald`: the real binary the tests run.
pub fn herald_binary() -> PathBuf {
    static WARNED: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("herald");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p herald` (cargo xtask test does)",
        bin.display()
    );
    WARNED.get_or_init(|| {
        let sources = workspace_root().join("lb-userspace/src");
        if let (Some(built), Some(edited)) = (modified(&bin), newest_modification(&sources))
            && built < edited
        {
            eprintln!(
                "warning: {} is older than {}: these tests run the binary, rebuild it with `cargo build -p herald`",
                bin.display(),
                sources.display()
            );
        }
    });
    bin
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification time of any file under `dir`.
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(time) = modified(&path) {
                newest = newest.max(Some(time));
            }
        }
    }
    newest
}

/// The workspace root (the directory holding `manifests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A free loopback TCP port (bound then released; the race with other processes is tolerable
/// for tests).
pub fn free_port() -> u16 {
    herald_control_plane::free_port().expect("free port")
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    if let Some(plane) = PLANE.get() {
        plane.stop_and_remove();
    }
}

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(|| {
        let plane = ControlPlane::builder()
            .binaries(Binaries::in_dir(target_dir().join("kube/bin")))
            // Tests need no durability across machine crashes; fsync only costs time here.
            .etcd_args(["--unsafe-no-fsync"])
            .ready_timeout(Duration::from_secs(180))
            .start()
            .unwrap_or_else(|e| panic!("starting the control plane: {e:#}"));
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        plane
    })
}
