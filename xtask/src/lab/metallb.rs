//! MetalLB itself in the lab, for side-by-side runs (`cargo xtask bench vs-metallb`):
//! its controller and speaker built from the Go module proxy and run out of cluster as recorded
//! lab processes against the same control plane, Nodes, speaker Pods and manifests as Herald —
//! the controller on the host, one speaker inside each node namespace with memberlist bound on
//! the node's address. MetalLB's speaker finds its memberlist peers by listing the Pods that
//! match `--ml-labels` in its namespace: the lab's kubelet already registers one per node with
//! the node's address (`agent.rs`), the same Pods Herald's speakers use.
//!
//! Identity: both run with the lab's **admin** kubeconfig (MetalLB's own RBAC is not in
//! `manifests/`; Herald's speakers keep their service account).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::kubectl::memberlist_secret;
use super::procs;
use super::spec::{NODES, NodeSpec, kubeconfig, run_dir};
use crate::paths::workspace_root;

/// The MetalLB release compared against (v0.16.x does not build from the module proxy: it
/// needs a frr-k8s version the proxy does not serve).
pub const VERSION: &str = "v0.15.2";
/// Labels of the lab's speaker Pods (`agent.rs`), passed as `--ml-labels`.
pub const ML_LABELS: &str = "app=metallb,component=speaker";
/// The controller's metrics port on the host (Herald's controller uses 19120).
const CONTROLLER_METRICS_PORT: u16 = 17472;
const CONTROLLER: &str = "metallb-controller";

/// Where `go install` puts MetalLB's binaries (kept between runs, like the Kubernetes ones).
pub fn bin_dir() -> PathBuf {
    workspace_root().join("target/kube/metallb")
}

/// `go install go.universe.tf/metallb/<component>@v0.15.2` into [`bin_dir`] unless already
/// there; returns the binary. `component` is `controller` or `speaker`.
pub fn install(component: &str) -> Result<PathBuf> {
    let gobin = bin_dir();
    let out = gobin.join(component);
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&gobin).with_context(|| format!("creating {}", gobin.display()))?;
    let module = format!("go.universe.tf/metallb/{component}@{VERSION}");
    println!("==> go install {module} (about 2 minutes cold)");
    let status = Command::new("go")
        .args(["install", &module])
        .env("GOBIN", &gobin)
        .status()
        .context("running go (is Go installed? `cargo xtask kube build` needs it too)")?;
    if !status.success() {
        bail!("go install {module} failed: {status}");
    }
    if !out.is_file() {
        bail!(
            "go install {module} succeeded but {} is missing",
            out.display()
        );
    }
    Ok(out)
}

fn speaker_name(node: &NodeSpec) -> String {
    format!("metallb-speaker-{}", node.name)
}

/// Directory holding `secretkey` (what `--ml-secret-key-path` reads, as a mounted Secret).
fn secret_dir() -> PathBuf {
    run_dir().join("metallb-memberlist")
}

/// Copies the key of Secret metallb-system/memberlist (made by Herald's controller, which the
/// lab starts first) to the file MetalLB's speakers read.
fn write_memberlist_secret() -> Result<()> {
    let key = memberlist_secret("go-template={{index .data \"secretkey\" | base64decode}}")
        .context("reading Secret metallb-system/memberlist (key secretkey)")?;
    if key.is_empty() {
        bail!("Secret metallb-system/memberlist has an empty secretkey");
    }
    fs::create_dir_all(secret_dir())?;
    fs::write(secret_dir().join("secretkey"), key).context("writing the memberlist key file")
}

/// Starts MetalLB's controller (webhooks disabled) on the host.
pub fn start_controller() -> Result<u32> {
    let controller = install("controller")?;
    procs::spawn_recorded(
        CONTROLLER,
        None,
        Command::new(controller)
            .arg(format!("--kubeconfig={}", kubeconfig("admin").display()))
            .args([
                "--namespace=metallb-system",
                "--webhook-mode=disabled",
                "--log-level=info",
            ])
            .arg(format!("--port={CONTROLLER_METRICS_PORT}"))
            .env_remove("KUBECONFIG"),
    )
}

/// Starts (or restarts) `node`'s MetalLB speaker inside its namespace.
pub fn start_speaker(node: &NodeSpec) -> Result<u32> {
    let speaker = install("speaker")?;
    let name = speaker_name(node);
    procs::stop_recorded(&name);
    procs::spawn_recorded(
        &name,
        Some(node.netns),
        Command::new(speaker)
            .arg(format!("--kubeconfig={}", kubeconfig("admin").display()))
            .arg("--namespace=metallb-system")
            .arg(format!("--node-name={}", node.name))
            // The lab's speaker Pod for this node: MetalLB reads it at start.
            .arg(format!("--pod-name=speaker-{}", node.name))
            .arg(format!("--ml-bindaddr={}", node.v4))
            .arg("--ml-bindport=7946")
            .arg(format!("--ml-labels={ML_LABELS}"))
            .arg(format!("--ml-secret-key-path={}", secret_dir().display()))
            // Metrics on the node's address, port 7472 (as in a DaemonSet).
            .arg(format!("--host={}", node.v4))
            .arg("--log-level=info")
            .env_remove("KUBECONFIG"),
    )
}

/// The pid of `node`'s running MetalLB speaker, if any.
pub fn speaker_pid(node: &NodeSpec) -> Option<i32> {
    procs::recorded_pid(&speaker_name(node))
}

/// Controller and the three speakers (Herald must be stopped first: one answerer at a time).
pub fn start() -> Result<()> {
    install("controller")?;
    install("speaker")?;
    write_memberlist_secret()?;
    start_controller()?;
    for node in NODES {
        start_speaker(&node)?;
    }
    Ok(())
}

/// Stops whatever of MetalLB this lab runs (SIGTERM: speakers leave memberlist and withdraw).
pub fn stop() {
    for node in NODES {
        procs::stop_recorded(&speaker_name(&node));
    }
    procs::stop_recorded(CONTROLLER);
}

/// True when any MetalLB process of the lab runs.
pub fn is_running() -> bool {
    procs::recorded_pid(CONTROLLER).is_some()
        || NODES
            .iter()
            .any(|n| procs::recorded_pid(&speaker_name(n)).is_some())
}

/// The log file of `node`'s MetalLB speaker.
pub fn speaker_log(node: &NodeSpec) -> PathBuf {
    run_dir().join(format!("{}.log", speaker_name(node)))
}
