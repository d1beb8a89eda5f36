//! The bench's own control plane, one per controller measured: etcd (in /dev/shm unless
//! `--etcd-on-disk`) and kube-apiserver with a dual-stack Service CIDR, and the CPU time of
//! every process it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use herald_control_plane::ControlPlane;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::bench::dataplane::cpu as cpu_stat;
use crate::paths::workspace_root;

/// Starts a fresh plane under `target/kube/bench-<name>` (anything left there is removed).
fn start(name: &str, etcd_in_memory: bool) -> Result<ControlPlane> {
    ControlPlane::builder()
        .binaries(crate::kube::binaries())
        .run_dir(workspace_root().join(format!("target/kube/bench-{name}")))
        .etcd_in_memory(etcd_in_memory)
        .etcd_args(["--quota-backend-bytes=8589934592"])
        // The bench itself creates Services fast.
        .apiserver_args([
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
        ])
        .service_cidrs(["10.96.0.0/16", "fd00:96::/108"])
        .stop_grace(Duration::from_secs(20))
        .start()
}

/// A fresh control plane with Herald's manifests and the bench pool, and an admin client.
pub(super) async fn prepare(name: &str, etcd_in_memory: bool) -> Result<(ControlPlane, Client)> {
    // Each run starts on a quiet disk: the previous plane's (or the build's) dirty pages would
    // otherwise be written back during this run, slowing its etcd's fsyncs.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let plane = start(name, etcd_in_memory)?;
    plane.apply_kustomization(&workspace_root().join("manifests"))?;
    plane.apply(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: bench\n  namespace: metallb-system\nspec:\n  addresses:\n    - 2001:db8:ff::/104\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: bench\n  namespace: metallb-system\n",
    )?;
    let client = client(&plane).await?;
    Ok((plane, client))
}

/// An admin client of `plane` that waits up to 10 minutes for a response.
async fn client(plane: &ControlPlane) -> Result<Client> {
    let file = Kubeconfig::read_from(plane.kubeconfig(herald_control_plane::ADMIN))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(600));
    Ok(Client::try_from(config)?)
}

/// CPU time (user + system) of process `pid` so far; None once it exited.
fn pid_cpu(pid: u32) -> Option<Duration> {
    let ticks = cpu_stat::process_ticks(pid)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / cpu_stat::ticks_per_second() as f64,
    ))
}

/// CPU time (user + system) this process used so far.
pub(super) fn own_cpu() -> Duration {
    pid_cpu(std::process::id()).unwrap_or_default()
}

/// CPU time (user + system) so far of each process started for or beside `plane` that is
/// still running, by name (a restarted process's name sums its instances).
pub(super) fn processes_cpu(plane: &ControlPlane) -> BTreeMap<String, Duration> {
    let mut by_name = BTreeMap::new();
    for (name, pid) in plane.processes() {
        if let Some(cpu) = pid_cpu(pid) {
            *by_name.entry(name).or_default() += cpu;
        }
    }
    by_name
}
