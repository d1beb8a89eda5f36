//! `cargo xtask bench controller`: the real `herald controller` (release build) against a real
//! kube-apiserver started here (dual-stack Service CIDR, so the Services are IPv6 and a
//! 2001:db8::/104 pool holds them all). Reports creation→status latency p50/p99 for N Services,
//! the time until all N have their IP, the API server's requests per Service, and the time of a
//! full resync (controller restart) over M Services. Unless `--no-metallb`, MetalLB v0.15.2's own
//! controller (`go install`, out of cluster, webhooks disabled) runs the same N-Service
//! measurement against the same CRDs first (that it works at all checks drop-in compatibility),
//! and both are printed with their ratios.

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
}

/// Services created concurrently by the bench client.
const CREATE_CONCURRENCY: usize = 16;

pub fn run(args: &Args) -> Result<()> {
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
    let plane = Plane::start()?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(&plane, args, metallb.as_deref()));
    plane.stop();
    result
}

async fn bench(plane: &Plane, args: &Args, metallb: Option<&Path>) -> Result<()> {
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

    let mut metallb_result = None;
    if let Some(controller) = metallb {
        let n = args.metallb_services.unwrap_or(args.services);
        println!(
            "==> MetalLB v0.15.2 controller (out of cluster, webhooks disabled, Herald's CRDs), {n} Services"
        );
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
        let measured = measure(plane, &client, "bench-metallb", n).await;
        stop(&mut child);
        let measured = measured?;
        measured.print("MetalLB v0.15.2");
        // No namespace controller runs here: delete the Services themselves so Herald starts on
        // an empty cluster.
        plane.kubectl(&["delete", "services", "--all", "-n", "bench-metallb"])?;
        metallb_result = Some(measured);
    }

    println!("==> herald controller, {} Services", args.services);
    let mut herald = start_herald(plane)?;
    wait_start_pass(&herald)?;
    let measured = measure(plane, &client, "bench-herald", args.services).await?;
    measured.print("Herald");
    if let Some(m) = &metallb_result {
        m.compare(&measured);
    }

    let extra = args.resync_services.saturating_sub(args.services);
    let total = args.services + extra;
    println!("==> full resync: {total} Services holding addresses, controller restarted");
    if extra > 0 {
        create_and_wait(&client, "bench-herald", args.services, extra).await?;
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
    Ok(())
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
    all_done: Duration,
    requests_per_service: f64,
    by_kind: BTreeMap<String, f64>,
}

impl Measured {
    /// Latency quantile `q` in milliseconds (nearest rank).
    fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies, q)
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
        println!(
            "  last IP {:.0} ms after the last create returned; load average {}",
            self.tail.as_secs_f64() * 1000.0,
            self.load
        );
    }

    /// Prints Herald (`self` is MetalLB's run) against MetalLB with ratios and the targets.
    fn compare(&self, herald: &Measured) {
        let (m, h) = (self, herald);
        let (mn, hn) = (m.latencies.len(), h.latencies.len());
        let target = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("==> Herald vs MetalLB v0.15.2");
        println!(
            "creation→status p50: Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x)",
            h.quantile_ms(0.5),
            m.quantile_ms(0.5),
            m.quantile_ms(0.5) / h.quantile_ms(0.5)
        );
        println!(
            "creation→status p99: Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x); target < 50 ms: {}",
            h.quantile_ms(0.99),
            m.quantile_ms(0.99),
            m.quantile_ms(0.99) / h.quantile_ms(0.99),
            target(h.quantile_ms(0.99) < 50.0)
        );
        let ratio = if mn == hn {
            let r = m.all_done.as_secs_f64() / h.all_done.as_secs_f64().max(1e-9);
            println!(
                "all {hn} IPs: Herald {:.2} s, MetalLB {:.2} s = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                m.all_done.as_secs_f64()
            );
            r
        } else {
            let per = |d: Duration, n: usize| d.as_secs_f64() * 1000.0 / n.max(1) as f64;
            let r = per(m.all_done, mn) / per(h.all_done, hn).max(1e-9);
            println!(
                "all IPs, per Service (MetalLB ran {mn} Services, Herald {hn}): Herald {:.2} s for {hn} = {:.3} ms/Service, MetalLB {:.2} s for {mn} = {:.3} ms/Service = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                per(h.all_done, hn),
                m.all_done.as_secs_f64(),
                per(m.all_done, mn)
            );
            r
        };
        println!("target >= 10x sooner: {}", target(ratio >= 10.0));
        println!(
            "last IP after the last create returned: Herald {:.0} ms, MetalLB {:.0} ms",
            h.tail.as_secs_f64() * 1000.0,
            m.tail.as_secs_f64() * 1000.0
        );
        println!(
            "API requests per Service: Herald {:.2}, MetalLB {:.2}",
            h.requests_per_service, m.requests_per_service
        );
    }
}

/// Creates `n` Services in `namespace` and measures until each shows an ingress IP.
async fn measure(plane: &Plane, client: &Client, namespace: &str, n: usize) -> Result<Measured> {
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
    ))?;
    let before = request_counts(plane)?;
    let load_before = load_average();
    let (created, assigned, all_done) = create_and_wait(client, namespace, 0, n).await?;
    let load_after = load_average();
    // How long after the last create returned the last IP appeared: the controller's own share
    // of "all IPs" once the API server has accepted every Service.
    let last_created = created.values().map(|(_, responded)| *responded).max();
    let last_assigned = assigned.values().max();
    let tail = match (last_created, last_assigned) {
        (Some(c), Some(a)) => a.saturating_duration_since(c),
        _ => Duration::ZERO,
    };
    let after = request_counts(plane)?;
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
    let mut by_kind = BTreeMap::new();
    let mut total = 0.0;
    for (key, value) in &after {
        let delta = value - before.get(key).copied().unwrap_or(0.0);
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
        requests_per_service: total / n as f64,
        by_kind,
    })
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

/// Creates Services `first..first+n` (IPv6 single stack) and waits until all have an IP.
/// Returns creation start times, first-seen-with-IP times, and the total time.
async fn create_and_wait(
    client: &Client,
    namespace: &str,
    first: usize,
    n: usize,
) -> Result<(Created, Times, Duration)> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let assigned: Arc<Mutex<Times>> = Arc::default();
    let watch = {
        let assigned = assigned.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(svc)) = stream.try_next().await {
                let has_ip = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_some_and(|i| i.iter().any(|x| x.ip.is_some()));
                if has_ip && let Some(name) = svc.metadata.name {
                    assigned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let created: Vec<Result<(String, (Instant, Instant))>> = futures::stream::iter(first..first + n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("svc-{i:05}");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    // No NodePorts: neither controller reads them, and their allocator (one
                    // bitmap object in etcd) would serialize the bench's own creations.
                    "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                             "allocateLoadBalancerNodePorts": false,
                             "ports": [{"port": 80, "protocol": "TCP"}]}
                }))?;
                let requested = Instant::now();
                api.create(&PostParams::default(), &svc).await.with_context(|| format!("creating {name}"))?;
                Ok((name, (requested, Instant::now())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let created: Created = created.into_iter().collect::<Result<_>>()?;
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

/// `apiserver_request_total` summed by "resource[/subresource] VERB".
fn request_counts(plane: &Plane) -> Result<BTreeMap<String, f64>> {
    let text = plane.kubectl(&["get", "--raw", "/metrics"])?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
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
        let resource = label("resource");
        if resource.is_empty() {
            continue;
        }
        let sub = label("subresource");
        let key = if sub.is_empty() {
            format!("{resource} {}", label("verb"))
        } else {
            format!("{resource}/{sub} {}", label("verb"))
        };
        *counts.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
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
    children: Mutex<Vec<Child>>,
}

impl Plane {
    fn start() -> Result<Plane> {
        let dir = workspace_root().join("target/kube/bench");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("certs"))?;
        let plane = Plane {
            dir: dir.clone(),
            children: Mutex::new(Vec::new()),
        };
        let key = dir.join("sa.key");
        let pubkey = dir.join("sa.pub");
        sh(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"))?;
        sh(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pubkey))?;
        let identities = [
            ("admin", "admin", "system:masters"),
            (
                "system:serviceaccount:metallb-system:controller",
                "controller",
                "system:serviceaccounts,system:serviceaccounts:metallb-system",
            ),
        ];
        let mut tokens = String::new();
        for (user, stem, groups) in identities {
            let token = random_token()?;
            tokens.push_str(&format!("{token},{user},{stem},\"{groups}\"\n"));
            fs::write(dir.join(format!("{stem}.token")), token)?;
        }
        fs::write(dir.join("tokens.csv"), tokens)?;
        let (etcd, peer, port) = (free_port()?, free_port()?, free_port()?);
        plane.spawn_owned(
            "etcd",
            Command::new(bin("server"))
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
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
                    dir.join("tokens.csv").display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", pubkey.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                // The bench itself creates Services fast.
                .arg("--max-requests-inflight=1000")
                .arg("--max-mutating-requests-inflight=500"),
        )?;
        let cert = dir.join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !cert.is_file() {
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver wrote no certificate (log: {})",
                    dir.join("kube-apiserver.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (user, stem, _) in identities {
            let token = fs::read_to_string(dir.join(format!("{stem}.token")))?;
            fs::write(
                plane.kubeconfig(stem),
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: \"{user}\"\n  user:\n    token: {token}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: \"{user}\"\ncurrent-context: bench\n",
                    cert.display()
                ),
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        while !plane
            .kubectl(&["get", "--raw", "/readyz"])
            .is_ok_and(|s| s.trim() == "ok")
        {
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready (log: {})",
                    dir.join("kube-apiserver.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
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
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))
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

    fn stop(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut child) = children.pop() {
            stop(&mut child);
        }
        let _ = fs::remove_dir_all(self.dir.join("etcd"));
    }
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
