//! Where the control plane's binaries are.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Where the control plane's binaries are, by the names `go build` gives them.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// etcd (`go build go.etcd.io/etcd/server/v3` names it `server`).
    pub const ETCD: &str = "server";
    pub const KUBE_APISERVER: &str = "kube-apiserver";
    pub const KUBE_CONTROLLER_MANAGER: &str = "kube-controller-manager";
    pub const KUBECTL: &str = "kubectl";
    pub const KUBE_SCHEDULER: &str = "kube-scheduler";
    /// Every control-plane binary `cargo xtask kube build` makes.
    pub const ALL: [&str; 4] = [
        Self::ETCD,
        Self::KUBE_APISERVER,
        Self::KUBE_CONTROLLER_MANAGER,
        Self::KUBECTL,
    ];

    pub fn in_dir(dir: impl Into<PathBuf>) -> Binaries {
        Binaries { dir: dir.into() }
    }

    /// `target/kube/bin` of this workspace.
    pub fn workspace() -> Binaries {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Binaries::in_dir(root.join("target/kube/bin"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn kubectl(&self) -> PathBuf {
        self.path(Self::KUBECTL)
    }

    /// Fails naming the first of `names` that is not there, and how to build it.
    pub fn require(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let bin = self.path(name);
            if !bin.is_file() {
                bail!(
                    "{} is missing: run `cargo xtask kube build` first (builds etcd, kube-apiserver, kube-controller-manager and kubectl from tests/kube/go.mod; CI does it before the tests)",
                    bin.display()
                );
            }
        }
        Ok(())
    }
}
