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
];

#[derive(clap::Subcommand)]
pub enum KubeCommand {
    /// Build etcd, kube-apiserver, kube-controller-manager and kubectl into target/kube/bin.
    Build,
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
        KubeCommand::Build => build().map(|_| ()),
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
    up_in(&kube_dir().join("run"), args)
}

/// `up` with its own run directory (the lab keeps its control plane apart from `kube up`'s).
/// The processes outlive xtask (and the handle returned); [`down_in`] stops them.
pub fn up_in(run: &Path, args: &UpArgs) -> Result<ControlPlane> {
    build()?;
    let plane = ControlPlane::builder()
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
