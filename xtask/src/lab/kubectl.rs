//! kubectl as the lab's admin, and waiting on what it shows.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::spec::{kubeconfig, run_dir};

/// Runs the built kubectl as admin; returns stdout.
pub fn kubectl(args: &[&str]) -> Result<String> {
    kubectl_owned(
        &args
            .iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>(),
    )
}

fn kubectl_owned(args: &[String]) -> Result<String> {
    let out = Command::new(crate::kube::binaries().kubectl())
        .arg(format!("--kubeconfig={}", kubeconfig("admin").display()))
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 200 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what} (logs: {}/*.log)",
                run_dir().display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The LoadBalancer ingress IPs of a Service (status order).
pub fn service_ips(namespace: &str, name: &str) -> Vec<IpAddr> {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "service",
        name,
        "-o",
        "jsonpath={range .status.loadBalancer.ingress[*]}{.ip}{\"\\n\"}{end}",
    ])
    .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    .unwrap_or_default()
}
