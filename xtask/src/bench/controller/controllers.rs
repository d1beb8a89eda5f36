//! The controllers under test, run beside the bench's control plane: the release `herald
//! controller` as the controller service account, and MetalLB v0.15.2's controller (out of
//! cluster, webhooks disabled) as admin.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_control_plane::{ControlPlane, free_port, terminate};

use super::metrics::metric_value;
use crate::paths::workspace_root;

/// A running `herald controller`, stopped on drop.
pub(super) struct Herald {
    child: Option<Child>,
    metrics_port: u16,
}

impl Herald {
    /// Its `/metrics` page (empty when it does not answer).
    pub(super) fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub(super) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM, then SIGKILL after 20 s; reaps the child.
pub(super) fn stop(child: &mut Child) {
    terminate(child, Duration::from_secs(20));
}

/// Starts the release `herald controller` as the controller service account; waits for /readyz.
pub(super) fn start_herald(plane: &ControlPlane) -> Result<Herald> {
    let metrics_port = free_port()?;
    let health_port = free_port()?;
    let mut cmd = Command::new(workspace_root().join("target/release/herald"));
    cmd.arg("controller")
        .arg(format!(
            "--kubeconfig={}",
            plane.kubeconfig("controller").display()
        ))
        .arg("--namespace=metallb-system")
        .arg(format!("--port={metrics_port}"))
        .arg(format!("--health-probe-port={health_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--lease-duration=3")
        .env("RUST_LOG", "warn");
    let child = plane.spawn("herald", cmd)?;
    let herald = Herald {
        child: Some(child),
        metrics_port,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if http_get(health_port, "/readyz").is_some_and(|body| body.trim() == "ok") {
            return Ok(herald);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "herald controller not ready in 10 minutes (log: {})",
        plane.dir.join("herald.log").display()
    )
}

/// Waits for the controller's first full pass (the start pass re-claiming every address) and
/// returns its duration (the controller's own histogram) and when it was seen done.
pub(super) fn wait_start_pass(herald: &Herald) -> Result<(Duration, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let metrics = herald.metrics();
        let count = metric_value(&metrics, "herald_controller_full_pass_seconds_count");
        if count.is_some_and(|c| c >= 1.0) {
            let seen = Instant::now();
            let sum =
                metric_value(&metrics, "herald_controller_full_pass_seconds_sum").unwrap_or(0.0);
            // Only the first pass is wanted; with more already done, the mean is an upper bound.
            let first = sum / count.unwrap_or(1.0);
            return Ok((Duration::from_secs_f64(first.max(0.0)), seen));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("herald's start pass did not finish in 10 minutes")
}

/// Starts MetalLB's controller (`controller`, from [`install_metallb`]) as admin against
/// `plane`, out of cluster with its webhooks disabled; fails if it exits within 2 s (flags it
/// refuses).
pub(super) fn start_metallb(plane: &ControlPlane, controller: &Path) -> Result<Child> {
    let mut cmd = Command::new(controller);
    cmd.arg(format!(
        "--kubeconfig={}",
        plane.kubeconfig(herald_control_plane::ADMIN).display()
    ))
    .args(["--namespace=metallb-system", "--webhook-mode=disabled"])
    .arg(format!("--port={}", free_port()?));
    let mut child = plane.spawn("metallb-controller", cmd)?;
    std::thread::sleep(Duration::from_secs(2));
    if let Some(status) = child.try_wait()? {
        bail!(
            "MetalLB's controller exited ({status}); log: {}",
            plane.dir.join("metallb-controller.log").display()
        );
    }
    Ok(child)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// `go install go.universe.tf/metallb/controller@v0.15.2` into target/kube/metallb (cached).
pub(super) fn install_metallb() -> Result<PathBuf> {
    let gobin = workspace_root().join("target/kube/metallb");
    let out = gobin.join("controller");
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&gobin)?;
    println!("==> go install go.universe.tf/metallb/controller@v0.15.2 (about 2 minutes cold)");
    let status = Command::new("go")
        .args(["install", "go.universe.tf/metallb/controller@v0.15.2"])
        .env("GOBIN", &gobin)
        .status()
        .context("running go (is Go installed?)")?;
    if !status.success() {
        bail!("go install of MetalLB's controller failed");
    }
    Ok(out)
}
