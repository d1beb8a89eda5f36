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

use crate::bench_dataplane::cpu as cpu_stat;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};

use crate::kube::bin;
use crate::workspace_root;

#[derive(clap::Args)]
pub struct Args {
    /// Services created for the latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Services present for the full-resync measurement.
    #[arg(long, default_value_t = 10_000)]
    pub resync_services: usize,
    /// Services created for MetalLB's run (default: --services). With fewer, the "all IPs"
    /// ratio is computed per Service and says so.
    #[arg(long)]
    pub metallb_services: Option<usize>,
    /// Skip MetalLB v0.15.2's controller (measured by default; `go install`, ~2 min cold).
    #[arg(long)]
    pub no_metallb: bool,
    /// Create requests the bench client keeps in flight (same for both controllers).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Who picks each Service's ClusterIP (same for both controllers; neither reads it).
    #[arg(long, value_enum, default_value_t = ClusterIp::Static)]
    pub cluster_ip: ClusterIp,
    /// Keep etcd's data under target/ (on this VM's virtual disk, shared with everything else
    /// that writes to it) instead of in /dev/shm. By default both controllers' etcd runs in
    /// memory: a production etcd has a dedicated low-latency disk, and the shared disk's fsync
    /// time is the host's, not a controller's; etcd's CPU work is measured either way.
    #[arg(long)]
    pub etcd_on_disk: bool,
    /// Services created at a steady `--steady-rate` before the burst, for the latency a
    /// controller adds when the API server is not saturated (0 skips that phase).
    #[arg(long, default_value_t = 1000)]
    pub steady_services: usize,
    /// Creations per second in the steady phase, open loop: each create is sent on schedule,
    /// whether or not earlier ones have their IP yet (as a stream of deployments would). The
    /// default keeps this 2-vCPU machine near 60% busy: at 100/s the plane, controller and
    /// client kept it 82–98% busy (the API server's cost per create grows as creates spread
    /// out), and p99 there measures queueing on saturated CPUs, not a controller.
    #[arg(long, default_value_t = 50.0)]
    pub steady_rate: f64,
    /// Herald's bursts, each on an empty cluster; its "all N IPs" is their median. A burst
    /// lasts 2.5–5.5 s and is bound by the API server's create throughput, which moved up to
    /// 1.7× between consecutive bursts on one plane here; MetalLB's single burst is a ~52 s
    /// average over sequential per-Service work (51.7–53.6 s in every run of sessions 3–7).
    #[arg(long, default_value_t = 3)]
    pub bursts: usize,
}

/// Above this share of all vCPUs' time busy, a phase's latencies are CPU queueing.
const SATURATED_BUSY_PERCENT: f64 = 80.0;

/// How the bench's Services get their ClusterIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterIp {
    /// The bench names a distinct address of the Service CIDR per Service. kube-apiserver then
    /// records it without its dynamic allocator, which holds one lock across the synchronous
    /// IPAddress create of every allocation (pkg/registry/core/service/ipallocator,
    /// MetaAllocator.AllocateNextService, v1.37.2) and so admits one Service at a time.
    Static,
    /// kube-apiserver allocates: Service creation is serialized by that lock.
    Dynamic,
}

/// How the bench client generates load.
#[derive(Clone, Copy, Debug)]
struct Load {
    concurrency: usize,
    cluster_ip: ClusterIp,
    /// Open loop at this many creates per second instead of `concurrency` in flight.
    rate: Option<f64>,
}

impl Load {
    /// The burst: `--concurrency` creates in flight, as fast as the API server takes them.
    fn of(args: &Args) -> Load {
        Load {
            concurrency: args.concurrency,
            cluster_ip: args.cluster_ip,
            rate: None,
        }
    }

    fn pace(&self) -> String {
        match self.rate {
            Some(rate) => format!("open loop at {rate} creates/s"),
            None => format!("{} in flight", self.concurrency),
        }
    }

    /// The steady phase: `--steady-rate` creates per second on schedule.
    fn steady(args: &Args) -> Load {
        Load {
            rate: Some(args.steady_rate),
            ..Load::of(args)
        }
    }
}

/// The ClusterIP the bench names for Service number `i` (static mode): inside the plane's
/// IPv6 Service CIDR fd00:96::/108, clear of the addresses near its start.
fn static_cluster_ip(i: usize) -> String {
    let offset = 0x1_0000 + i;
    format!("fd00:96::{:x}:{:x}", offset >> 16, offset & 0xffff)
}

/// Index of the first steady-phase Service (for its static ClusterIP): after the burst's and
/// the resync's.
const STEADY_FIRST: usize = 0xd_0000;

/// The steady phase (unless `--steady-services 0`), printed under `who`.
async fn steady_phase(
    plane: &Plane,
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

/// What one controller's N-Service run measured, for callers that print their own tables.
#[derive(Clone, Debug)]
pub struct Figures {
    pub services: usize,
    /// Create response → IP seen on a watch.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// First create request → last IP seen.
    pub all_ips: Duration,
    /// API server requests per Service made by the controller.
    pub requests_per_service: f64,
    /// The bench client's own create rate (Services per second) over the creation phase.
    pub create_rate: f64,
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

/// A fresh control plane with Herald's manifests and the bench pool, and an admin client.
async fn prepare(name: &str, etcd_in_memory: bool) -> Result<(Plane, Client)> {
    // Each run starts on a quiet disk: the previous plane's (or the build's) dirty pages would
    // otherwise be written back during this run, slowing its etcd's fsyncs.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let plane = Plane::start(name, etcd_in_memory)?;
    plane.kubectl(&[
        "apply",
        "-k",
        &workspace_root().join("manifests").display().to_string(),
    ])?;
    plane.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=120s",
        "crd",
        "--all",
    ])?;
    plane.apply(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: bench\n  namespace: metallb-system\nspec:\n  addresses:\n    - 2001:db8:ff::/104\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: bench\n  namespace: metallb-system\n",
    )?;
    let client = plane.client().await?;
    Ok((plane, client))
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
            let mut child = plane.spawn(
                "metallb-controller",
                Command::new(controller)
                    .arg(format!(
                        "--kubeconfig={}",
                        plane.kubeconfig("admin").display()
                    ))
                    .args(["--namespace=metallb-system", "--webhook-mode=disabled"])
                    .arg(format!("--port={}", free_port()?)),
            )?;
            // A controller that refuses its flags exits at once; say so instead of waiting.
            std::thread::sleep(Duration::from_secs(2));
            if let Some(status) = child.try_wait()? {
                bail!(
                    "MetalLB's controller exited ({status}); log: {}",
                    plane.dir.join("metallb-controller.log").display()
                );
            }
            let measured = async {
                let steady = steady_phase(&plane, &client, args, "MetalLB v0.15.2").await?;
                print_burst_header(n, args.concurrency);
                Ok((steady, measure(&plane, &client, "bench", n, load).await?))
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
    plane: &Plane,
    client: &Client,
    args: &Args,
    metallb: Option<&Measured>,
    metallb_steady: Option<&Measured>,
) -> Result<(Measured, Option<Measured>, Option<Duration>)> {
    let mut herald = start_herald(plane)?;
    wait_start_pass(&herald)?;
    let metrics = |herald: &Herald| http_get(herald.metrics_port, "/metrics").unwrap_or_default();
    let own_before = metrics(&herald);
    let steady = steady_phase(plane, client, args, "Herald").await?;
    if steady.is_some() {
        print_own_share(&own_before, &metrics(&herald), "steady");
    }
    match (metallb_steady, steady.as_ref()) {
        (Some(m), Some(h)) => {
            m.compare_latency(h, &format!("steady {} creates/s", args.steady_rate), true)
        }
        (None, Some(h)) => print_latency_target(h),
        _ => {}
    }
    // The same creates with no controller running, right before Herald's bursts.
    stop(&mut herald.child);
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
        let own_before = metrics(&herald);
        let measured = measure(plane, client, "bench", args.services, Load::of(args)).await?;
        measured.print("Herald");
        print_own_share(&own_before, &metrics(&herald), "burst");
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
    stop(&mut herald.child);
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
async fn creation_floor(plane: &Plane, client: &Client, args: &Args) -> Result<Duration> {
    plane.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n")?;
    let api: Api<Service> = Api::namespaced(client.clone(), "bench");
    // The bench's own watch runs as in a measured burst: only the controller is missing.
    let (watch, _) = watch_assigned(&api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = plane.process_cpu();
    let start = Instant::now();
    let created = create_services(&api, start, 0, args.services, Load::of(args)).await?;
    let cpu = plane.process_cpu();
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

/// Prints whether Herald's steady-phase p99 meets the target, and whether the machine kept up.
fn print_latency_target(herald: &Measured) {
    let p99 = herald.quantile_ms(0.99);
    println!(
        "creation→status p99 target < 50 ms (steady phase): {} ({p99:.1} ms){}",
        if p99 < 50.0 { "met" } else { "MISSED" },
        if herald.saturated() {
            format!(
                "; the vCPUs were {:.0}% busy, so this is CPU queueing: lower --steady-rate",
                herald.busy
            )
        } else {
            String::new()
        }
    );
}

/// Prints Herald's own share of creation→status over a phase, from the deltas of its
/// `herald_controller_service_write_seconds` histogram between two scrapes.
fn print_own_share(before: &str, after: &str, phase: &str) {
    let name = "herald_controller_service_write_seconds";
    let writes = histogram_delta(before, after, name);
    let sum = metric_value(after, &format!("{name}_sum")).unwrap_or(0.0)
        - metric_value(before, &format!("{name}_sum")).unwrap_or(0.0);
    let count = writes.last().map_or(0.0, |(_, n)| *n);
    println!(
        "  Herald's own share, {phase} (its histogram: Service taken up → ingress write acknowledged, {count} writes): mean {:.1} ms, p50 ≤ {:.1} ms, p99 ≤ {:.1} ms (bucket bounds); the rest is watch delivery to Herald and to the bench",
        sum * 1000.0 / count.max(1.0),
        histogram_quantile_ms(&writes, 0.5),
        histogram_quantile_ms(&writes, 0.99),
    );
}

/// Waits for the controller's first full pass (the start pass re-claiming every address) and
/// returns its duration (the controller's own histogram) and when it was seen done.
fn wait_start_pass(herald: &Herald) -> Result<(Duration, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let metrics = http_get(herald.metrics_port, "/metrics").unwrap_or_default();
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

/// What one run measured.
struct Measured {
    /// Create response → IP seen on the watch, sorted.
    latencies: Vec<Duration>,
    /// Create request → IP seen (adds the API server's create latency under the bench's load).
    from_request: Vec<Duration>,
    /// Last create response → last IP seen.
    tail: Duration,
    /// The machine's 1-minute load average before → after (2 cores; other work shares them).
    load: String,
    /// CPU time the hypervisor took from this VM during the phase, % of all vCPUs' time.
    steal: f64,
    /// The machine's vCPUs busy (anything but idle) during the phase, % of their time until
    /// the last IP (like each process's share).
    busy: f64,
    /// CPU time of each control-plane and controller process until all IPs were seen.
    processes: Vec<(String, Duration)>,
    /// The VM's speed right before the phase.
    speed: VmSpeed,
    all_done: Duration,
    requests_per_service: f64,
    by_kind: BTreeMap<String, f64>,
    /// Mean time in the API server per request over the run, by kind (ms).
    server_ms: BTreeMap<String, f64>,
    /// The bench client's own work: how fast it created the Services.
    client: ClientLoad,
}

/// The load generator's side of one run.
#[derive(Clone, Copy, Debug)]
struct ClientLoad {
    /// How the creates were paced.
    load: Load,
    /// First create request → last create response.
    creation: Duration,
    /// Create request → response, p50 and p99 (ms).
    create_p50_ms: f64,
    create_p99_ms: f64,
    /// CPU time of the bench process (creating, watching) over the run, user + system.
    cpu: Duration,
}

impl Measured {
    /// Latency quantile `q` in milliseconds (nearest rank).
    fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies, q)
    }

    /// Whether the machine ran near saturation: latencies are then mostly CPU queueing.
    fn saturated(&self) -> bool {
        self.busy > SATURATED_BUSY_PERCENT
    }

    fn figures(&self) -> Figures {
        Figures {
            services: self.latencies.len(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            all_ips: self.all_done,
            requests_per_service: self.requests_per_service,
            create_rate: self.create_rate(),
        }
    }

    /// Services created per second by the bench client.
    fn create_rate(&self) -> f64 {
        self.latencies.len() as f64 / self.client.creation.as_secs_f64().max(1e-9)
    }

    fn print(&self, who: &str) {
        println!(
            "{who}: creation→status p50 {:.1} ms, p99 {:.1} ms (from the create request: p50 {:.1} ms, p99 {:.1} ms); all {} IPs after {:.2} s; {:.2} API requests per Service",
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            quantile_ms(&self.from_request, 0.5),
            quantile_ms(&self.from_request, 0.99),
            self.latencies.len(),
            self.all_done.as_secs_f64(),
            self.requests_per_service
        );
        let detail: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(_, v)| **v >= 0.01)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!("  per Service by request: {}", detail.join(", "));
        // Where the time goes on the server: the bench's creates (with the ClusterIP objects
        // the API server writes for them) and the controller's requests.
        let server: Vec<String> = self
            .server_ms
            .iter()
            .filter(|(k, _)| {
                self.by_kind.get(*k).is_some_and(|v| *v >= 0.01)
                    || matches!(k.as_str(), "services POST" | "ipaddresses POST")
            })
            .map(|(k, ms)| format!("{k} {ms:.1} ms"))
            .collect();
        println!(
            "  mean time in the API server per request: {}",
            server.join(", ")
        );
        let etcd: Vec<String> = [
            "etcd create services",
            "etcd create ipaddresses",
            "etcd update services",
            "etcd create events",
        ]
        .iter()
        .filter_map(|k| self.server_ms.get(*k).map(|ms| format!("{k} {ms:.1} ms")))
        .collect();
        println!(
            "  of which waiting for etcd (mean per request): {}",
            etcd.join(", ")
        );
        let queued: Vec<String> = self
            .server_ms
            .iter()
            .filter_map(|(k, ms)| Some(format!("{} {ms:.1} ms", k.strip_prefix("APF queue ")?)))
            .collect();
        println!(
            "  before that, queued in API Priority and Fairness (mean per request, by priority level): {}",
            queued.join(", ")
        );
        println!(
            "  last IP {:.0} ms after the last create returned; load average {}; vCPUs busy {:.0}% of their time{}; hypervisor steal {:.1}%",
            self.tail.as_secs_f64() * 1000.0,
            self.load,
            self.busy,
            if self.saturated() { " (saturated)" } else { "" },
            self.steal
        );
        let busy: Vec<String> = self
            .processes
            .iter()
            .map(|(name, cpu)| {
                format!(
                    "{name} {:.2} s ({:.0}% of one core)",
                    cpu.as_secs_f64(),
                    100.0 * cpu.as_secs_f64() / self.all_done.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        println!(
            "  CPU until the last IP (2 vCPUs): {}; VM speed before the phase: {}",
            busy.join(", "),
            self.speed
        );
        let c = &self.client;
        println!(
            "  bench client: {} creates in {:.2} s = {:.0} Services/s, {}; create request p50 {:.1} ms, p99 {:.1} ms; client CPU {:.2} s ({:.0}% of one core)",
            self.latencies.len(),
            c.creation.as_secs_f64(),
            self.create_rate(),
            c.load.pace(),
            c.create_p50_ms,
            c.create_p99_ms,
            c.cpu.as_secs_f64(),
            100.0 * c.cpu.as_secs_f64() / self.all_done.as_secs_f64().max(1e-9),
        );
    }

    /// Prints creation→status p50/p99 of Herald (`self` is MetalLB's run) against MetalLB;
    /// the steady phase's p99 is the one judged against the target.
    fn compare_latency(&self, herald: &Measured, phase: &str, judged: bool) {
        let (m, h) = (self, herald);
        println!(
            "creation→status p50 ({phase}): Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x)",
            h.quantile_ms(0.5),
            m.quantile_ms(0.5),
            m.quantile_ms(0.5) / h.quantile_ms(0.5)
        );
        println!(
            "creation→status p99 ({phase}): Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x){}",
            h.quantile_ms(0.99),
            m.quantile_ms(0.99),
            m.quantile_ms(0.99) / h.quantile_ms(0.99),
            if judged {
                String::new()
            } else {
                format!(
                    " (not judged: {} saturate the API server, whose own create responses took p99 {:.1} ms; the < 50 ms target is the steady phase's)",
                    h.client.load.pace(),
                    h.client.create_p99_ms
                )
            }
        );
        if judged {
            print_latency_target(h);
        }
    }

    /// Prints Herald (`self` is MetalLB's run; `herald` the median of Herald's `bursts`)
    /// against MetalLB with ratios and the targets, and both against `floor`, the creates'
    /// own time with no controller running.
    fn compare(&self, herald: &Measured, bursts: usize, floor: Duration) {
        let (m, h) = (self, herald);
        let which = if bursts > 1 {
            format!(" (median of {bursts} bursts)")
        } else {
            String::new()
        };
        let (mn, hn) = (m.latencies.len(), h.latencies.len());
        let target = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("==> Herald vs MetalLB v0.15.2");
        self.compare_latency(h, &format!("burst, {}", h.client.load.pace()), false);
        let ratio = if mn == hn {
            let r = m.all_done.as_secs_f64() / h.all_done.as_secs_f64().max(1e-9);
            println!(
                "all {hn} IPs: Herald{which} {:.2} s, MetalLB {:.2} s = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                m.all_done.as_secs_f64()
            );
            r
        } else {
            let per = |d: Duration, n: usize| d.as_secs_f64() * 1000.0 / n.max(1) as f64;
            let r = per(m.all_done, mn) / per(h.all_done, hn).max(1e-9);
            println!(
                "all IPs, per Service (MetalLB ran {mn} Services, Herald {hn}): Herald{which} {:.2} s for {hn} = {:.3} ms/Service, MetalLB {:.2} s for {mn} = {:.3} ms/Service = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                per(h.all_done, hn),
                m.all_done.as_secs_f64(),
                per(m.all_done, mn)
            );
            r
        };
        println!("target >= 10x sooner: {}", target(ratio >= 10.0));
        if mn == hn {
            let floor_s = floor.as_secs_f64().max(1e-9);
            println!(
                "the API server alone accepted the {hn} creates in {:.2} s on Herald's plane: Herald's all-IPs is {:.2}x that; no controller could have been more than {:.1}x sooner than MetalLB in this run",
                floor.as_secs_f64(),
                h.all_done.as_secs_f64() / floor_s,
                m.all_done.as_secs_f64() / floor_s
            );
        }
        println!(
            "last IP after the last create returned: Herald {:.0} ms, MetalLB {:.0} ms",
            h.tail.as_secs_f64() * 1000.0,
            m.tail.as_secs_f64() * 1000.0
        );
        println!(
            "API requests per Service: Herald {:.2}, MetalLB {:.2}",
            h.requests_per_service, m.requests_per_service
        );
        println!(
            "bench client create rate: Herald's run {:.0} Services/s, MetalLB's run {:.0} Services/s ({})",
            h.create_rate(),
            m.create_rate(),
            h.client.load.pace()
        );
    }
}

/// Creates `n` Services in `namespace` and measures until each shows an ingress IP.
async fn measure(
    plane: &Plane,
    client: &Client,
    namespace: &str,
    n: usize,
    load: Load,
) -> Result<Measured> {
    let first = match load.rate {
        // Steady-phase Services take ClusterIP numbers after every burst and resync Service.
        Some(_) => STEADY_FIRST,
        None => 0,
    };
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
    ))?;
    let speed = VmSpeed::measure();
    let before = ApiRequests::read(plane)?;
    let load_before = load_average();
    let stat_before = cpu_stat::read_stat()?;
    let cpu_before = process_cpu();
    let processes_before = plane.process_cpu();
    let (created, assigned, all_done) = create_and_wait(client, namespace, first, n, load).await?;
    let cpu = process_cpu().saturating_sub(cpu_before);
    let processes: Vec<(String, Duration)> = plane
        .process_cpu()
        .into_iter()
        .map(|(name, after)| {
            let before = processes_before.get(&name).copied().unwrap_or_default();
            (name, after.saturating_sub(before))
        })
        .collect();
    let load_after = load_average();
    let stat_after = cpu_stat::read_stat()?;
    let steal = cpu_stat::steal_share(&stat_before, &stat_after);
    // Over the same window as each process's share: until the last IP was seen.
    let busy = 100.0 * cpu_stat::busy_ticks(&stat_before, &stat_after) as f64
        / cpu_stat::ticks_per_second() as f64
        / (all_done.as_secs_f64() * stat_after.len().max(1) as f64).max(1e-9);
    let first_request = created.values().map(|(requested, _)| *requested).min();
    // How long after the last create returned the last IP appeared: the controller's own share
    // of "all IPs" once the API server has accepted every Service.
    let last_created = created.values().map(|(_, responded)| *responded).max();
    let last_assigned = assigned.values().max();
    let tail = match (last_created, last_assigned) {
        (Some(c), Some(a)) => a.saturating_duration_since(c),
        _ => Duration::ZERO,
    };
    // Both controllers record Events in the background: count their requests once the API
    // server's counters stop moving (leases aside), so deferred work is not left out.
    let after = settle(plane).await?;
    // From the create response (the Service exists) and, for reference, from the request.
    let since = |pick: fn(&(Instant, Instant)) -> Instant| {
        let mut all: Vec<Duration> = created
            .iter()
            .filter_map(|(name, times)| {
                assigned
                    .get(name)
                    .map(|seen| seen.saturating_duration_since(pick(times)))
            })
            .collect();
        all.sort();
        all
    };
    let latencies = since(|(_, responded)| *responded);
    let from_request = since(|(requested, _)| *requested);
    let mut create_latencies: Vec<Duration> = created
        .values()
        .map(|(requested, responded)| responded.saturating_duration_since(*requested))
        .collect();
    create_latencies.sort();
    let client_load = ClientLoad {
        load,
        creation: match (first_request, last_created) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        },
        create_p50_ms: quantile_ms(&create_latencies, 0.5),
        create_p99_ms: quantile_ms(&create_latencies, 0.99),
        cpu,
    };
    let mut by_kind = BTreeMap::new();
    let mut total = 0.0;
    let mut server_ms = BTreeMap::new();
    for key in after.seconds.keys() {
        if let Some(ms) = after.mean_ms_since(&before, key)
            && !key.ends_with(" WATCH")
        {
            server_ms.insert(key.clone(), ms);
        }
    }
    for (key, value) in &after.total {
        let delta = value - before.total.get(key).copied().unwrap_or(0.0);
        // The bench's own Service creations, and the ClusterIP objects the API server makes
        // for them, are not the controller's.
        let delta = match key.as_str() {
            "services POST" => delta - n as f64,
            "ipaddresses POST" => 0.0,
            _ => delta,
        };
        if delta > 0.0 {
            by_kind.insert(key.clone(), delta / n as f64);
            total += delta;
        }
    }
    Ok(Measured {
        latencies,
        from_request,
        all_done,
        tail,
        load: format!("{load_before} → {load_after}"),
        steal,
        busy,
        speed,
        processes,
        requests_per_service: total / n as f64,
        by_kind,
        server_ms,
        client: client_load,
    })
}

/// Two fixed pieces of work timed on this thread, so that runs can be compared: kube-apiserver's
/// CPU time for the same work varies up to 1.6× between runs here, with next to no steal
/// reported; these show whether the machine itself was slower.
#[derive(Clone, Copy, Debug)]
struct VmSpeed {
    /// SHA-256 over 64 MiB: the CPU alone.
    hash: Duration,
    /// Touching 256 MiB of fresh memory: page faults and zeroing, as a Go heap's growth costs.
    fault: Duration,
}

impl VmSpeed {
    fn measure() -> VmSpeed {
        use sha2::{Digest, Sha256};
        let block = vec![0x5au8; 1 << 20];
        let started = Instant::now();
        let mut hasher = Sha256::new();
        for _ in 0..64 {
            hasher.update(&block);
        }
        std::hint::black_box(hasher.finalize());
        let hash = started.elapsed();
        let started = Instant::now();
        let mut pages = vec![0u8; 256 << 20];
        for page in pages.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&pages);
        drop(pages);
        VmSpeed {
            hash,
            fault: started.elapsed(),
        }
    }
}

impl std::fmt::Display for VmSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SHA-256 of 64 MiB {:.0} ms, 256 MiB of fresh pages {:.0} ms",
            self.hash.as_secs_f64() * 1000.0,
            self.fault.as_secs_f64() * 1000.0
        )
    }
}

/// Waits (up to 2 minutes) until the API server's request counters stop moving for 2 s, leases
/// aside: the controller has finished whatever the last change started. Returns the counters.
async fn settle(plane: &Plane) -> Result<ApiRequests> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = ApiRequests::read(plane)?;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let next = ApiRequests::read(plane)?;
        let moved = next
            .total
            .iter()
            .any(|(k, v)| !k.starts_with("leases ") && last.total.get(k) != Some(v));
        last = next;
        if !moved || Instant::now() > deadline {
            return Ok(last);
        }
    }
}

/// Deletes every Service in `namespace` and waits until kube-apiserver has released their
/// ClusterIP objects and the controller is quiet. A Service create costs kube-apiserver
/// v1.37.2 time in proportion to the IPAddress objects that exist (it recounts them all, twice,
/// for a metric: pkg/registry/core/service/ipallocator/ipallocator.go, createIPAddress), so a
/// phase that follows another starts from the same empty cluster as the first.
async fn clear_namespace(plane: &Plane, client: &Client, namespace: &str) -> Result<()> {
    use k8s_openapi::api::networking::v1::IPAddress;
    use kube::api::{DeleteParams, ListParams};
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|svc| svc.metadata.name)
        .collect();
    let deleted: Vec<Result<()>> = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("deleting {namespace}/{name}")),
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    deleted.into_iter().collect::<Result<()>>()?;
    let addresses: Api<IPAddress> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = addresses
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|a| a.spec.parent_ref.namespace.as_deref() == Some(namespace))
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} ClusterIP objects of namespace {namespace} still exist after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    settle(plane).await?;
    Ok(())
}

/// CPU time (user + system) of process `pid` so far; None once it exited.
fn pid_cpu(pid: u32) -> Option<Duration> {
    let ticks = cpu_stat::process_ticks(pid)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / cpu_stat::ticks_per_second() as f64,
    ))
}

/// CPU time (user + system) this process used so far.
fn process_cpu() -> Duration {
    pid_cpu(std::process::id()).unwrap_or_default()
}

/// The 1-minute load average (context for the figures: the machine is shared).
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Nearest-rank quantile `q` of sorted `values`, in milliseconds.
fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

type Times = HashMap<String, Instant>;
/// Per Service: when its create request was sent and when the response came back.
type Created = HashMap<String, (Instant, Instant)>;

/// Creates Services `first..first+n` (IPv6 single stack) as `load` says, open-loop ones on a
/// schedule from `start`. Returns each one's create request and response times.
async fn create_services(
    api: &Api<Service>,
    start: Instant,
    first: usize,
    n: usize,
    load: Load,
) -> Result<Created> {
    // Open loop: every create is in flight from its scheduled time on.
    let in_flight = if load.rate.is_some() {
        n.max(1)
    } else {
        load.concurrency
    };
    let created: Vec<Result<(String, (Instant, Instant))>> = futures::stream::iter(
        first..first + n,
    )
    .map(|i| {
        let api = api.clone();
        async move {
            if let Some(rate) = load.rate {
                let due = start + Duration::from_secs_f64((i - first) as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let name = format!("svc-{i:05}");
            // No NodePorts: neither controller reads them, and their allocator (one
            // bitmap object in etcd) would serialize the bench's own creations.
            let mut spec = serde_json::json!({
                "type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                "allocateLoadBalancerNodePorts": false,
                "ports": [{"port": 80, "protocol": "TCP"}]
            });
            if load.cluster_ip == ClusterIp::Static {
                spec["clusterIP"] = static_cluster_ip(i).into();
            }
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": spec
            }))?;
            let requested = Instant::now();
            api.create(&PostParams::default(), &svc)
                .await
                .with_context(|| format!("creating {name}"))?;
            Ok((name, (requested, Instant::now())))
        }
    })
    .buffer_unordered(in_flight)
    .collect()
    .await;
    created.into_iter().collect()
}

/// Creates Services `first..first+n` (IPv6 single stack) and waits until all have an IP.
/// Returns creation start times, first-seen-with-IP times, and the total time.
async fn create_and_wait(
    client: &Client,
    namespace: &str,
    first: usize,
    n: usize,
    load: Load,
) -> Result<(Created, Times, Duration)> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let (watch, assigned) = watch_assigned(&api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let created = create_services(&api, start, first, n, load).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let done = {
            let assigned = assigned.lock().unwrap_or_else(|e| e.into_inner());
            created.keys().all(|k| assigned.contains_key(k))
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("not every Service got an IP within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let assigned = assigned.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let last = created
        .keys()
        .filter_map(|k| assigned.get(k))
        .max()
        .copied()
        .unwrap_or(start);
    Ok((created, assigned, last.saturating_duration_since(start)))
}

/// Watches the Services of `api` and records when each first shows an ingress IP (shared with
/// `bench vs-metallb`).
pub(crate) fn watch_assigned(
    api: &Api<Service>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Times>>) {
    let assigned: Arc<Mutex<Times>> = Arc::default();
    let watch = {
        let assigned = assigned.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(svc)) = stream.try_next().await {
                if has_ip(&svc)
                    && let Some(name) = svc.metadata.name
                {
                    assigned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    (watch, assigned)
}

/// Whether the Service's status shows an ingress IP.
fn has_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| i.iter().any(|x| x.ip.is_some()))
}

/// The API server's request counters, keyed by "resource[/subresource] VERB".
#[derive(Default)]
struct ApiRequests {
    /// `apiserver_request_total`.
    total: BTreeMap<String, f64>,
    /// `apiserver_request_duration_seconds` sum and count (time spent in the API server).
    seconds: BTreeMap<String, (f64, f64)>,
}

impl ApiRequests {
    fn read(plane: &Plane) -> Result<ApiRequests> {
        let text = plane.kubectl(&["get", "--raw", "/metrics"])?;
        let mut requests = ApiRequests::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once('{') else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            if let Some(part) =
                name.strip_prefix("apiserver_flowcontrol_request_wait_duration_seconds_")
                && label("execute") == "true"
            {
                // Time requests queued in API Priority and Fairness before being served: not
                // part of apiserver_request_duration_seconds.
                let key = format!("APF queue {}", label("priority_level"));
                let value = value.parse::<f64>().unwrap_or(0.0);
                let entry = requests.seconds.entry(key).or_insert((0.0, 0.0));
                match part {
                    "sum" => entry.0 += value,
                    "count" => entry.1 += value,
                    _ => {}
                }
                continue;
            }
            let resource = label("resource");
            if resource.is_empty() {
                continue;
            }
            let sub = label("subresource");
            let key = if name.starts_with("etcd_") {
                // The API server's requests to etcd: "etcd <operation> <resource>".
                format!("etcd {} {resource}", label("operation"))
            } else if sub.is_empty() {
                format!("{resource} {}", label("verb"))
            } else {
                format!("{resource}/{sub} {}", label("verb"))
            };
            let value = value.parse::<f64>().unwrap_or(0.0);
            match name {
                "etcd_request_duration_seconds_sum" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).0 += value
                }
                "etcd_request_duration_seconds_count" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).1 += value
                }
                "apiserver_request_total" => *requests.total.entry(key).or_insert(0.0) += value,
                "apiserver_request_duration_seconds_sum" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).0 += value
                }
                "apiserver_request_duration_seconds_count" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).1 += value
                }
                _ => {}
            }
        }
        Ok(requests)
    }

    /// Mean time in the API server per request of `key` between `before` and `self`, in ms.
    fn mean_ms_since(&self, before: &ApiRequests, key: &str) -> Option<f64> {
        let (sum, count) = self.seconds.get(key).copied()?;
        let (sum0, count0) = before.seconds.get(key).copied().unwrap_or((0.0, 0.0));
        let n = count - count0;
        (n > 0.0).then(|| (sum - sum0) * 1000.0 / n)
    }
}

/// Cumulative buckets (upper bound in seconds, count) of histogram `name` gained between two
/// scrapes of a Prometheus text page, ending with +Inf.
fn histogram_delta(before: &str, after: &str, name: &str) -> Vec<(f64, f64)> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    };
    let old: HashMap<u64, f64> = buckets(before)
        .into_iter()
        .map(|(le, n)| (le.to_bits(), n))
        .collect();
    buckets(after)
        .into_iter()
        .map(|(le, n)| (le, n - old.get(&le.to_bits()).copied().unwrap_or(0.0)))
        .collect()
}

/// The upper bound (ms) of the bucket holding quantile `q` of cumulative `buckets`.
fn histogram_quantile_ms(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return f64::NAN;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

struct Herald {
    child: Child,
    metrics_port: u16,
}

impl Drop for Herald {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own unreaped child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the release `herald controller` as the controller service account; waits for /readyz.
fn start_herald(plane: &Plane) -> Result<Herald> {
    let metrics_port = free_port()?;
    let health_port = free_port()?;
    let child = plane.spawn(
        "herald",
        Command::new(workspace_root().join("target/release/herald"))
            .arg("controller")
            .arg(format!(
                "--kubeconfig={}",
                plane.kubeconfig("controller").display()
            ))
            .arg("--namespace=metallb-system")
            .arg(format!("--port={metrics_port}"))
            .arg(format!("--health-probe-port={health_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--lease-duration=3")
            .env("RUST_LOG", "warn"),
    )?;
    let herald = Herald {
        child,
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

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `go install go.universe.tf/metallb/controller@v0.15.2` into target/kube/metallb (cached).
fn install_metallb() -> Result<PathBuf> {
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

/// A private control plane for the bench (etcd + kube-apiserver with a dual-stack Service CIDR).
struct Plane {
    dir: PathBuf,
    /// etcd's data directory (under `dir`, or in /dev/shm).
    etcd_dir: PathBuf,
    children: Mutex<Vec<Child>>,
    /// Every process started through [`Plane::spawn`], by name, for the CPU breakdown.
    started: Mutex<Vec<(String, u32)>>,
}

impl Plane {
    /// Starts a fresh plane under `target/kube/bench-<name>` (anything left there is removed).
    fn start(name: &str, etcd_in_memory: bool) -> Result<Plane> {
        let dir = workspace_root().join(format!("target/kube/bench-{name}"));
        let _ = fs::remove_dir_all(&dir);
        let etcd_dir = if etcd_in_memory {
            PathBuf::from(format!(
                "/dev/shm/herald-bench-{name}-{}",
                std::process::id()
            ))
        } else {
            dir.join("etcd")
        };
        let _ = fs::remove_dir_all(&etcd_dir);
        let credentials = crate::kube::write_credentials(&dir)?;
        let plane = Plane {
            dir: dir.clone(),
            etcd_dir: etcd_dir.clone(),
            children: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
        };
        let (etcd, peer, port) = (free_port()?, free_port()?, free_port()?);
        plane.spawn_owned(
            "etcd",
            Command::new(bin("server"))
                .arg(format!("--data-dir={}", etcd_dir.display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
                .arg("--quota-backend-bytes=8589934592"),
        )?;
        plane.spawn_owned(
            "kube-apiserver",
            Command::new(bin("kube-apiserver"))
                .arg("--endpoint-reconciler-type=none")
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg("--service-cluster-ip-range=10.96.0.0/16,fd00:96::/108")
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!(
                    "--token-auth-file={}",
                    credentials.tokens.display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!(
                    "--service-account-key-file={}",
                    credentials.pubkey.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    credentials.key.display()
                ))
                // The bench itself creates Services fast.
                .arg("--max-requests-inflight=1000")
                .arg("--max-mutating-requests-inflight=500"),
        )?;
        crate::kube::write_kubeconfigs(&dir, &format!("https://127.0.0.1:{port}"))?;
        crate::kube::wait_ready(&plane.kubeconfig("admin"))?;
        Ok(plane)
    }

    fn kubeconfig(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.kubeconfig"))
    }

    async fn client(&self) -> Result<Client> {
        let file = Kubeconfig::read_from(self.kubeconfig("admin"))?;
        let mut config =
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
        config.read_timeout = Some(Duration::from_secs(600));
        Ok(Client::try_from(config)?)
    }

    /// Starts a process the caller owns (stops), logging to `<name>.log`.
    fn spawn(&self, name: &str, cmd: &mut Command) -> Result<Child> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        // SAFETY: prctl in the forked child before exec; async-signal-safe. The bench's
        // processes die with it, even when it is interrupted.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), child.id()));
        Ok(child)
    }

    /// CPU time (user + system) so far of each process started here that is still running,
    /// by name (a restarted process's name sums its instances).
    fn process_cpu(&self) -> BTreeMap<String, Duration> {
        let mut by_name = BTreeMap::new();
        for (name, pid) in self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Some(cpu) = pid_cpu(*pid) {
                *by_name.entry(name.clone()).or_default() += cpu;
            }
        }
        by_name
    }

    /// Starts a control-plane process that [`Plane::stop`] stops.
    fn spawn_owned(&self, name: &str, cmd: &mut Command) -> Result<()> {
        let child = self.spawn(name, cmd)?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(())
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("kubectl"))
            .arg(format!(
                "--kubeconfig={}",
                self.kubeconfig("admin").display()
            ))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&self, yaml: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new(bin("kubectl"))
            .arg(format!(
                "--kubeconfig={}",
                self.kubeconfig("admin").display()
            ))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Stops the plane's processes (its data goes when the plane is dropped).
    fn stop(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut child) = children.pop() {
            stop(&mut child);
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.etcd_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_cluster_ips_are_distinct_and_inside_the_service_cidr() {
        assert_eq!(static_cluster_ip(0), "fd00:96::1:0");
        assert_eq!(static_cluster_ip(10_000), "fd00:96::1:2710");
        let cidr_end: std::net::Ipv6Addr = "fd00:96::f:ffff".parse().unwrap();
        let reserved_end: std::net::Ipv6Addr = "fd00:96::ffff".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in (0..0xe_0000).step_by(997).chain([0xe_0000]) {
            let ip: std::net::Ipv6Addr = static_cluster_ip(i).parse().unwrap();
            assert!(ip <= cidr_end && ip > reserved_end, "{ip}");
            assert!(seen.insert(ip), "{ip} twice");
        }
    }

    #[test]
    fn histogram_delta_and_quantile() {
        let name = "h";
        let before = "h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.01\"} 2\nh_bucket{le=\"+Inf\"} 2\n";
        let after =
            "h_bucket{le=\"0.001\"} 3\nh_bucket{le=\"0.01\"} 10\nh_bucket{le=\"+Inf\"} 12\n";
        let delta = histogram_delta(before, after, name);
        assert_eq!(
            delta,
            vec![(0.001, 2.0), (0.01, 8.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(histogram_quantile_ms(&delta, 0.2), 1.0);
        assert_eq!(histogram_quantile_ms(&delta, 0.5), 10.0);
        assert_eq!(histogram_quantile_ms(&delta, 0.99), f64::INFINITY);
        assert!(histogram_quantile_ms(&[], 0.5).is_nan());
    }
}
