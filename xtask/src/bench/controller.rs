//! `cargo xtask bench controller`: the real `herald controller` (release build) against a real
//! kube-apiserver started here (dual-stack Service CIDR, so the Services are IPv6 and a
//! 2001:db8::/104 pool holds them all). Reports creation→status latency p50/p99 for N Services,
//! the time until all N have their IP, the API server's requests per Service, and the time of a
//! full resync (controller restart) over M Services. Unless `--no-metallb`, MetalLB v0.15.2's own
//! controller (`go install`, out of cluster, webhooks disabled) runs the same N-Service
//! measurement against the same CRDs first (that it works at all checks drop-in compatibility),
//! each controller on a fresh control plane, and both are printed with their ratios.
//!
//! Each controller sees two phases, identical inputs for both. Steady: `--steady-services`
//! created open loop at `--steady-rate` per second — the latency a controller adds while the
//! API server keeps up. Burst: N Services with `--concurrency` creates in flight, as fast as
//! the API server takes them — the time until all N have their IP; its latencies are printed
//! too, and there they are mostly the saturated API server's and etcd's queueing. The client's
//! own create rate, create latency and CPU time are printed, so a reader can tell whether the
//! generator or the API server bounded "all N IPs". The p99 target is judged in the steady
//! phase, which prints how busy the vCPUs were (flagged above 80%: queueing, not a controller);
//! Herald's burst runs `--bursts` times and its median "all N IPs" is compared.

mod args;
mod controllers;
mod measure;
mod metrics;
mod plane;
mod report;
mod services;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use herald_control_plane::ControlPlane;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};

pub use args::Args;
use args::{ClusterIp, Load, STEADY_FIRST};
use controllers::{install_metallb, start_herald, start_metallb, stop, wait_start_pass};
pub use measure::Figures;
use measure::{Measured, load_average, measure};
use plane::prepare;
use report::{print_latency_target, print_own_share};
pub(crate) use services::watch_assigned;
use services::{clear_namespace, create_and_wait, create_services};

use crate::paths::workspace_root;

/// The steady phase (unless `--steady-services 0`), printed under `who`.
async fn steady_phase(
    plane: &ControlPlane,
    client: &Client,
    args: &Args,
    who: &str,
) -> Result<Option<Measured>> {
    if args.steady_services == 0 {
        return Ok(None);
    }
    println!(
        "-- steady: {} Services at {} creates/s",
        args.steady_services, args.steady_rate
    );
    let measured = measure(
        plane,
        client,
        "steady",
        args.steady_services,
        Load::steady(args),
    )
    .await?;
    measured.print(who);
    let cleared = Instant::now();
    clear_namespace(plane, client, "steady").await?;
    println!(
        "  (the steady phase's Services deleted and their ClusterIP objects gone, controller quiet again, in {:.1} s: the burst starts on an empty cluster)",
        cleared.elapsed().as_secs_f64()
    );
    Ok(Some(measured))
}

fn print_burst_header(services: usize, concurrency: usize) {
    println!("-- burst: {services} Services, {concurrency} creates in flight");
}

/// Everything one `cargo xtask bench controller` run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub herald: Figures,
    pub metallb: Option<Figures>,
    /// The steady phase's figures (`--steady-services` at `--steady-rate`), when run.
    pub herald_steady: Option<Figures>,
    pub metallb_steady: Option<Figures>,
    /// Herald's start pass over `--resync-services` Services (none when that is 0).
    pub resync_pass: Option<Duration>,
}

/// Set to measure with the unoptimized bench client `cargo xtask` builds by default.
const DEBUG_CLIENT_ENV: &str = "HERALD_BENCH_DEBUG_CLIENT";

pub fn run(args: &Args) -> Result<()> {
    // The bench client shares the two cores with the API server: unoptimized, its watch and
    // create encoding took ~25% of a core (7% optimized) and slowed the API server's creates.
    if cfg!(debug_assertions) && std::env::var_os(DEBUG_CLIENT_ENV).is_none() {
        println!(
            "==> the bench client runs optimized: cargo run --release -p xtask (set {DEBUG_CLIENT_ENV}=1 to skip)"
        );
        let status = Command::new("cargo")
            .args(["run", "--release", "-p", "xtask", "--"])
            .args(std::env::args_os().skip(1))
            .current_dir(workspace_root())
            .status()?;
        if !status.success() {
            bail!("the optimized bench client failed ({status})");
        }
        return Ok(());
    }
    let report = measure_all(args)?;
    println!("==> summary (load average at the end: {})", load_average());
    for (who, f) in [
        ("Herald, steady", report.herald_steady.as_ref()),
        ("MetalLB v0.15.2, steady", report.metallb_steady.as_ref()),
        ("Herald, burst", Some(&report.herald)),
        ("MetalLB v0.15.2, burst", report.metallb.as_ref()),
    ] {
        if let Some(f) = f {
            println!(
                "{who}: {} Services, creation→status p50 {:.1} ms / p99 {:.1} ms, all IPs after {:.2} s, {:.2} API requests per Service, bench client created {:.0} Services/s",
                f.services,
                f.p50_ms,
                f.p99_ms,
                f.all_ips.as_secs_f64(),
                f.requests_per_service,
                f.create_rate
            );
        }
    }
    if let Some(pass) = report.resync_pass {
        println!("Herald full resync start pass: {:.3} s", pass.as_secs_f64());
    }
    Ok(())
}

/// Runs the whole bench (printing as it goes) and returns the figures.
pub fn measure_all(args: &Args) -> Result<Report> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.bursts == 0 {
        bail!("--bursts must be at least 1");
    }
    crate::kube::build()?;
    let root = workspace_root();
    println!("==> cargo build --release -p herald");
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "herald"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building herald failed");
    }
    let metallb = if args.no_metallb {
        None
    } else {
        Some(install_metallb()?)
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args, metallb.as_deref()))
}

async fn bench(args: &Args, metallb: Option<&Path>) -> Result<Report> {
    let load = Load::of(args);
    if load.cluster_ip == ClusterIp::Static
        && (args.services.max(args.resync_services) > STEADY_FIRST
            || args.steady_services > 0xe_0000 - STEADY_FIRST)
    {
        bail!("--cluster-ip static names at most 851968 burst/resync and 65536 steady Services");
    }
    if args.steady_services > 0 && !(args.steady_rate.is_finite() && args.steady_rate > 0.0) {
        bail!("--steady-rate must be a positive number of creates per second");
    }
    println!(
        "etcd data: {}",
        if args.etcd_on_disk {
            "under target/kube (on disk, fsync per commit; the disk is shared with other work)"
        } else {
            "in /dev/shm (no disk fsync latency; --etcd-on-disk to include it)"
        }
    );
    println!(
        "bench client: {} create requests in flight, ClusterIPs {}",
        load.concurrency,
        match load.cluster_ip {
            ClusterIp::Static =>
                "named by the bench (kube-apiserver's dynamic allocator serializes creation)",
            ClusterIp::Dynamic => "allocated by kube-apiserver (serialized by its allocator lock)",
        }
    );
    let mut metallb_result = None;
    let mut metallb_steady: Option<Measured> = None;
    // Stopped planes keep their etcd data until the end: deleting ~150 MB right before the
    // next run would load the shared disk (and its discards) during that run.
    let mut finished = Vec::new();
    if let Some(controller) = metallb {
        let n = args.metallb_services.unwrap_or(args.services);
        println!(
            "==> MetalLB v0.15.2 controller (out of cluster, webhooks disabled, Herald's CRDs), {n} Services, fresh control plane"
        );
        let (plane, client) = prepare("metallb", !args.etcd_on_disk).await?;
        let result = async {
            let mut child = start_metallb(&plane, controller)?;
            let measured = async {
                let steady = steady_phase(&plane, &client, args, "MetalLB v0.15.2").await?;
                print_burst_header(n, args.concurrency);
                anyhow::Ok((steady, measure(&plane, &client, "bench", n, load).await?))
            }
            .await;
            stop(&mut child);
            measured
        }
        .await;
        plane.stop();
        finished.push(plane);
        let (steady, measured) = result?;
        measured.print("MetalLB v0.15.2");
        metallb_result = Some(measured);
        metallb_steady = steady;
    }

    println!(
        "==> herald controller, {} Services, fresh control plane",
        args.services
    );
    let (plane, client) = prepare("herald", !args.etcd_on_disk).await?;
    let result = herald_runs(
        &plane,
        &client,
        args,
        metallb_result.as_ref(),
        metallb_steady.as_ref(),
    )
    .await;
    plane.stop();
    let (herald, herald_steady, resync_pass) = result?;
    Ok(Report {
        herald: herald.figures(),
        metallb: metallb_result.map(|m| m.figures()),
        herald_steady: herald_steady.map(|m| m.figures()),
        metallb_steady: metallb_steady.map(|m| m.figures()),
        resync_pass,
    })
}

/// Herald's N-Service run, then (unless `--resync-services 0`) the full resync.
async fn herald_runs(
    plane: &ControlPlane,
    client: &Client,
    args: &Args,
    metallb: Option<&Measured>,
    metallb_steady: Option<&Measured>,
) -> Result<(Measured, Option<Measured>, Option<Duration>)> {
    let mut herald = start_herald(plane)?;
    wait_start_pass(&herald)?;
    let own_before = herald.metrics();
    let steady = steady_phase(plane, client, args, "Herald").await?;
    if steady.is_some() {
        print_own_share(&own_before, &herald.metrics(), "steady");
    }
    match (metallb_steady, steady.as_ref()) {
        (Some(m), Some(h)) => {
            m.compare_latency(h, &format!("steady {} creates/s", args.steady_rate), true);
        }
        (None, Some(h)) => print_latency_target(h),
        _ => {}
    }
    // The same creates with no controller running, right before Herald's bursts.
    herald.stop();
    let floor = creation_floor(plane, client, args).await?;
    herald = start_herald(plane)?;
    wait_start_pass(&herald)?;
    let mut bursts = Vec::new();
    for run in 1..=args.bursts {
        if run > 1 {
            clear_namespace(plane, client, "bench").await?;
        }
        print_burst_header(args.services, args.concurrency);
        if args.bursts > 1 {
            println!("   (Herald's burst {run} of {})", args.bursts);
        }
        let own_before = herald.metrics();
        let measured = measure(plane, client, "bench", args.services, Load::of(args)).await?;
        measured.print("Herald");
        print_own_share(&own_before, &herald.metrics(), "burst");
        bursts.push(measured);
    }
    let measured = median_burst(bursts)?;
    if args.bursts > 1 {
        println!(
            "Herald's median burst: all {} IPs after {:.2} s (p50 {:.1} ms, p99 {:.1} ms)",
            measured.latencies.len(),
            measured.all_done.as_secs_f64(),
            measured.quantile_ms(0.5),
            measured.quantile_ms(0.99)
        );
    }
    if let Some(m) = metallb {
        m.compare(&measured, args.bursts, floor);
    }
    if args.resync_services == 0 {
        return Ok((measured, steady, None));
    }
    let extra = args.resync_services.saturating_sub(args.services);
    let total = args.services + extra;
    println!("==> full resync: {total} Services holding addresses, controller restarted");
    if extra > 0 {
        create_and_wait(client, "bench", args.services, extra, Load::of(args)).await?;
    }
    herald.stop();
    let started = Instant::now();
    let herald = start_herald(plane)?;
    let (pass, done) = wait_start_pass(&herald)?;
    let since_start = done.saturating_duration_since(started);
    let target = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "Herald full resync of {total} Services: start pass {:.3} s (target < 2 s: {}); process start → pass done {:.2} s (listing included)",
        pass.as_secs_f64(),
        target(pass < Duration::from_secs(2)),
        since_start.as_secs_f64(),
    );
    drop(herald);
    Ok((measured, steady, Some(pass)))
}

/// Times the burst's creates on this plane with no controller running (then deletes them): the
/// API server's own share of any controller's "all N IPs" on this machine at this moment.
async fn creation_floor(plane: &ControlPlane, client: &Client, args: &Args) -> Result<Duration> {
    plane.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n")?;
    let api: Api<Service> = Api::namespaced(client.clone(), "bench");
    // The bench's own watch runs as in a measured burst: only the controller is missing.
    let (watch, _) = watch_assigned(&api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = plane::processes_cpu(plane);
    let start = Instant::now();
    let created = create_services(&api, start, 0, args.services, Load::of(args)).await?;
    let cpu = plane::processes_cpu(plane);
    watch.abort();
    let accepted = created
        .values()
        .map(|(_, responded)| responded.saturating_duration_since(start))
        .max()
        .unwrap_or_default();
    let busy: Vec<String> = cpu
        .iter()
        .map(|(name, after)| {
            let spent = after.saturating_sub(cpu_before.get(name).copied().unwrap_or_default());
            format!("{name} {:.2} s", spent.as_secs_f64())
        })
        .collect();
    println!(
        "-- floor: {} creates with no controller running (the bench's watch on), {} in flight: the API server accepted them all in {:.2} s ({:.0} Services/s); CPU meanwhile: {}",
        args.services,
        args.concurrency,
        accepted.as_secs_f64(),
        args.services as f64 / accepted.as_secs_f64().max(1e-9),
        busy.join(", ")
    );
    clear_namespace(plane, client, "bench").await?;
    Ok(accepted)
}

/// The burst whose "all N IPs" time is the median (the later of the middle two for an even count).
fn median_burst(mut bursts: Vec<Measured>) -> Result<Measured> {
    if bursts.is_empty() {
        bail!("--bursts must be at least 1");
    }
    bursts.sort_by_key(|m| m.all_done);
    let middle = bursts.len() / 2;
    Ok(bursts.swap_remove(middle))
}
