//! `cargo xtask kube build | up | down`: a real Kubernetes control plane (etcd, kube-apiserver with
//! RBAC and static token identities, kube-controller-manager) built from the Kubernetes Go modules
//! at v1.37.2 and run on this machine, for tests and the lab. The processes are started by
//! `herald-control-plane`; facts behind it: DEVELOPERS.md.

use anyhow::{Context, Result, bail};
use herald_control_plane::{Binaries, ControlPlane};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::workspace_root;

/// Commands built from tests/kube/go.mod, and the binary name `go build` gives each.
const BINARIES: &[(&str, &str)] = &[
    ("go.etcd.io/etcd/server/v3", Binaries::ETCD),
    (
        "k8s.io/kubernetes/cmd/kube-apiserver",
        Binaries::KUBE_APISERVER,
    ),
    (
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        Binaries::KUBE_CONTROLLER_MANAGER,
    ),
    ("k8s.io/kubernetes/cmd/kubectl", Binaries::KUBECTL),
    (
        "k8s.io/kubernetes/cmd/kube-scheduler",
        Binaries::KUBE_SCHEDULER,
    ),
    ("k8s.io/kubernetes/cmd/kubelet", KUBELET),
    ("k8s.io/kubernetes/cmd/kube-proxy", KUBE_PROXY),
];

pub const KUBELET: &str = "kubelet";
pub const KUBE_PROXY: &str = "kube-proxy";
pub const CONTAINERD: &str = "containerd";
pub const CTR: &str = "ctr";
pub const SHIM: &str = "containerd-shim-runc-v2";
pub const RUNC: &str = "runc";
/// CNI plugins, in `target/kube/bin/cni`.
pub const CNI_DIR: &str = "cni";
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];

/// One `go install`: packages, the binaries it makes, the subdirectory of target/kube/bin they
/// go to, whether cgo is on, build tags.
type GoInstall = (
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
    bool,
    &'static str,
);

/// What runs on a real node besides kubelet, from their own Go modules (`go install`). containerd 2.x
/// because kubelet 1.37 needs the CRI `RuntimeConfig` call (Debian's 1.6 lacks it); runc with
/// libseccomp, for the RuntimeDefault profile.
const NODE_RUNTIME: &[GoInstall] = &[
    (
        &[
            "github.com/containerd/containerd/v2/cmd/containerd@v2.4.2",
            "github.com/containerd/containerd/v2/cmd/ctr@v2.4.2",
        ],
        &[CONTAINERD, CTR],
        "",
        true,
        "no_btrfs urfave_cli_no_docs",
    ),
    (
        &["github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v2.4.2"],
        &[SHIM],
        "",
        false,
        "urfave_cli_no_docs no_grpc",
    ),
    (
        &["github.com/opencontainers/runc@v1.5.3"],
        &[RUNC],
        "",
        true,
        "seccomp urfave_cli_no_docs",
    ),
    (
        &[
            "github.com/containernetworking/plugins/plugins/main/bridge@v1.10.0",
            "github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0",
            "github.com/containernetworking/plugins/plugins/main/loopback@v1.10.0",
            "github.com/containernetworking/plugins/plugins/meta/portmap@v1.10.0",
        ],
        &CNI_PLUGINS,
        CNI_DIR,
        false,
        "",
    ),
];

#[derive(clap::Subcommand)]
pub enum KubeCommand {
    /// Build etcd, kube-apiserver, kube-controller-manager, kubectl, kube-scheduler, kubelet and
    /// kube-proxy into target/kube/bin, and with `--nodes` what a real node runs beside kubelet
    /// (containerd, runc, CNI plugins).
    Build {
        #[arg(long)]
        nodes: bool,
    },
    /// Start the control plane; prints the directory holding one kubeconfig per identity.
    Up(UpArgs),
    /// Stop exactly the processes `up` started.
    Down,
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Address kube-apiserver binds and advertises (the lab uses its bridge address).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// kube-apiserver secure port.
    #[arg(long, default_value_t = 16443)]
    pub port: u16,
    /// Service ClusterIP range(s), comma-separated (the lab adds an IPv6 range for dual stack).
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: String,
}

pub fn run(cmd: &KubeCommand) -> Result<()> {
    match cmd {
        KubeCommand::Build { nodes } => {
            build()?;
            if *nodes {
                build_node_runtime()?;
            }
            Ok(())
        }
        KubeCommand::Up(args) => up(args).map(|plane| println!("{}", plane.dir.display())),
        KubeCommand::Down => down(),
    }
}

fn kube_dir() -> PathBuf {
    workspace_root().join("target/kube")
}

/// The binaries [`build`] makes.
pub fn binaries() -> Binaries {
    Binaries::in_dir(kube_dir().join("bin"))
}

/// Builds containerd, ctr, the runc shim, runc and the CNI plugins a real node runs (cached:
/// each is built once, then kept under target/kube/bin).
pub fn build_node_runtime() -> Result<()> {
    let out = binaries().dir;
    if !node_runtime_built() && !Path::new("/usr/include/seccomp.h").is_file() {
        // runc's seccomp support.
        crate::paths::apt_install(&["libseccomp-dev", "pkg-config"])?;
    }
    for (packages, made, sub, cgo, tags) in NODE_RUNTIME {
        let dir = out.join(sub);
        if made.iter().all(|b| dir.join(b).is_file()) {
            continue;
        }
        println!(
            "==> go install {} (cold: containerd ~2.5 min, the rest < 20 s each)",
            packages.join(" ")
        );
        let status = Command::new("go")
            .arg("install")
            .args(if tags.is_empty() {
                vec![]
            } else {
                vec!["-tags", tags]
            })
            .args(*packages)
            .env("GOBIN", &dir)
            .env("CGO_ENABLED", if *cgo { "1" } else { "0" })
            .current_dir(std::env::temp_dir())
            .status()
            .context("running go (is Go installed?)")?;
        if !status.success() {
            bail!("go install {} failed: {status}", packages.join(" "));
        }
    }
    Ok(())
}

/// Whether everything [`build_node_runtime`] makes is there.
pub fn node_runtime_built() -> bool {
    let out = binaries().dir;
    NODE_RUNTIME
        .iter()
        .all(|(_, made, sub, _, _)| made.iter().all(|b| out.join(sub).join(b).is_file()))
}

/// Builds the control plane binaries (Go's own caches make a warm rebuild take seconds).
pub fn build() -> Result<PathBuf> {
    let module = workspace_root().join("tests/kube");
    let out = binaries().dir;
    fs::create_dir_all(&out)?;
    for (pkg, name) in BINARIES {
        if out.join(name).is_file() && !stale(&out.join(name), &module.join("go.mod")) {
            continue;
        }
        println!(
            "==> go build {pkg} (cold: kube-apiserver ~9 min, controller-manager ~4 min on 2 cores)"
        );
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(pkg)
            .current_dir(&module)
            .env("GOFLAGS", "-mod=mod")
            .status()
            .context("running go (is Go installed?)")?;
        if !status.success() {
            bail!("go build {pkg} failed: {status}");
        }
    }
    Ok(out)
}

fn stale(binary: &Path, source: &Path) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(binary), modified(source)) {
        (Some(b), Some(s)) => b < s,
        _ => true,
    }
}

/// Starts etcd, kube-apiserver and kube-controller-manager.
pub fn up(args: &UpArgs) -> Result<ControlPlane> {
    up_in(&kube_dir().join("run"), args, &[])
}

/// `up` with its own run directory (the lab keeps its control plane apart from `kube up`'s).
/// The processes outlive xtask (and the handle returned); [`down_in`] stops them.
pub fn up_in(run: &Path, args: &UpArgs, kubelets: &[&str]) -> Result<ControlPlane> {
    build()?;
    let grace: &[&str] = if kubelets.is_empty() {
        &[]
    } else {
        // With the lab kubelets' 8 s lease (see lab/nodes.rs).
        &["--node-monitor-grace-period=12s"]
    };
    let plane = ControlPlane::builder()
        .kubelets(kubelets.iter().copied())
        .controller_manager_args(grace.iter().copied())
        .binaries(binaries())
        .run_dir(run)
        .bind(&args.bind)
        .port(args.port)
        .service_cidrs(args.service_cidr.split(','))
        .controller_manager(true)
        .detached(true)
        .start()?;
    println!(
        "control plane up at {}; kubeconfigs: {}/{{admin,controller,speaker}}.kubeconfig",
        plane.server,
        plane.dir.display()
    );
    Ok(plane)
}

/// Stops the processes recorded by `up` (and nothing else).
pub fn down() -> Result<()> {
    down_in(&kube_dir().join("run"))
}

/// `down` for a control plane started with [`up_in`].
pub fn down_in(run: &Path) -> Result<()> {
    herald_control_plane::stop_recorded(run)
}
