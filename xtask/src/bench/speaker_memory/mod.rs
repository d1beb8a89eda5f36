//! `cargo xtask bench speaker-memory`: the resident memory of one real `herald speaker` (release
//! build, XDP in skb mode on a veth inside a node network namespace) against a real
//! kube-apiserver holding N LoadBalancer Services, each with an address in its status (written
//! directly: no controller runs) and an EndpointSlice with a ready endpoint on the node.
//!
//! Steps, in one run: the speaker idle (configuration and Node only); then `--baseline`
//! Services (1,000 by default) and then `--services` (10,000), each size measured three ways:
//! once it announces all of them (`metallb_speaker_announced` on its metrics page), after every
//! Service was updated once (a resync's worth of events), and as a fresh process started with
//! all of them already there (the DaemonSet restart case: the initial list arrives at once).
//! Each measurement waits until the speaker's CPU is quiet, then reads VmRSS and VmHWM from
//! `/proc/<pid>/status`.
//!
//! Topology: namespace `node` with two veths, one to the root namespace (203.0.113.1/30 on the
//! host, where kube-apiserver listens; 203.0.113.2/30 in the node, where the speaker's metrics
//! listen) and one to namespace `client` (the announcing interface, `--interfaces-include`), so
//! gratuitous packets stay in the bench's namespaces. Service addresses are IPv6 from
//! 2001:db8:100::/112 (a /24 of IPv4 documentation space holds only 256). Pins live in a
//! private bpffs. Everything is removed on exit.

mod net;
mod report;

use std::io::{Read as _, Write as _};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use herald_control_plane::{ControlPlane, terminate};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::bench::dataplane::cpu;
use crate::paths::workspace_root;
use net::{HOST_API, NODE_API, NODE_LAN_IF, Net, PrivateBpffs};
use report::{Row, mib, print_report};

const NODE: &str = "smem-node";
const NAMESPACE: &str = "smem";
const METRICS_PORT: u16 = 7472;
/// The pool's first address; Service i gets `POOL_BASE + i + 1`.
const POOL_BASE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0);
const POOL_CIDR: &str = "2001:db8:100::/112";
const PATIENCE: Duration = Duration::from_mins(15);

#[derive(clap::Args)]
pub struct Args {
    /// Services in the measured (largest) step.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// The smaller step measured first in the same run, for the ratio.
    #[arg(long, default_value_t = 1_000)]
    baseline: usize,
    /// API requests in flight while creating and updating objects.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The `herald` binary to run (default: `cargo build --release -p herald`, then
    /// target/release/herald).
    #[arg(long)]
    herald: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    if args.baseline == 0 || args.baseline >= args.services {
        bail!("--baseline must be at least 1 and below --services");
    }
    if args.services > 65_000 {
        bail!("--services: the pool is a /112 (65,534 addresses here)");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    crate::kube::build()?;
    let herald = if let Some(path) = &args.herald {
        path.clone()
    } else {
        println!("==> cargo build --release -p herald");
        let status = Command::new("cargo")
            .args(["build", "--release", "-p", "herald"])
            .current_dir(workspace_root())
            .status()?;
        if !status.success() {
            bail!("building herald failed");
        }
        workspace_root().join("target/release/herald")
    };
    let net = Net::new()?;
    let bpffs = PrivateBpffs::new()?;
    println!("==> control plane (etcd in memory, kube-apiserver on {HOST_API})");
    let plane = ControlPlane::builder()
        .binaries(crate::kube::binaries())
        .run_dir(workspace_root().join("target/kube/bench-speaker-memory"))
        .bind(HOST_API)
        .etcd_in_memory(true)
        .etcd_args(["--quota-backend-bytes=8589934592"])
        .apiserver_args([
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
        ])
        .service_cidrs(["10.96.0.0/16", "fd00:96::/108"])
        .stop_grace(Duration::from_secs(20))
        .start()?;
    plane.apply_kustomization(&workspace_root().join("manifests"))?;
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: smem\n  namespace: metallb-system\nspec:\n  addresses: [{POOL_CIDR}]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: smem\n  namespace: metallb-system\nspec:\n  ipAddressPools: [smem]\n"
    ))?;
    let bench = Bench {
        plane: &plane,
        herald,
        pin_dir: bpffs.dir.join("herald"),
        net: &net,
        concurrency: args.concurrency,
    };
    let rows = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench.steps(args.baseline, args.services))?;
    print_report(&rows, args.baseline, args.services);
    Ok(())
}

struct Bench<'a> {
    plane: &'a ControlPlane,
    herald: PathBuf,
    pin_dir: PathBuf,
    net: &'a Net,
    concurrency: usize,
}

impl Bench<'_> {
    async fn steps(&self, baseline: usize, services: usize) -> Result<Vec<Row>> {
        let client = admin_client(self.plane).await?;
        let mut rows = Vec::new();
        let mut speaker = Speaker::start(self, "idle")?;
        let started = Instant::now();
        wait_for("the speaker's metrics page", Duration::from_mins(2), || {
            metrics().is_some()
        })?;
        speaker.quiet()?;
        rows.push(speaker.row("idle: configuration and Node, no Service", 0, started)?);

        let mut created = 0;
        let mut round = 0;
        for size in [baseline, services] {
            let started = Instant::now();
            println!("==> Services {}..{size}", created + 1);
            create_services(&client, created, size, self.concurrency).await?;
            println!(
                "    created with status and EndpointSlice in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            created = size;
            speaker.wait_announced(size)?;
            rows.push(speaker.row(&format!("{size} announced"), size, started)?);

            round += 1;
            let started = Instant::now();
            update_services(&client, size, round, self.concurrency).await?;
            speaker.wait_announced(size)?;
            rows.push(speaker.row(
                &format!("{size}, after every Service updated once"),
                size,
                started,
            )?);

            speaker.stop();
            let started = Instant::now();
            speaker = Speaker::start(self, &format!("restart-{size}"))?;
            speaker.wait_announced(size)?;
            rows.push(speaker.row(
                &format!("{size}, fresh process started with them all"),
                size,
                started,
            )?);
        }
        speaker.stop();
        Ok(rows)
    }
}

/// The speaker process (killed on drop) and its log.
struct Speaker {
    child: Option<Child>,
    log: PathBuf,
}

impl Speaker {
    fn start(bench: &Bench<'_>, name: &str) -> Result<Speaker> {
        let log = bench.plane.dir.join(format!("speaker-{name}.log"));
        let file = std::fs::File::create(&log)?;
        // nsenter (network namespace only) execs the speaker: the child's pid is the speaker's,
        // and it keeps the host's mount namespace and so the private bpffs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", bench.net.node_ns))
            .arg(&bench.herald)
            .args([
                "speaker",
                "--node-name",
                NODE,
                "--namespace",
                "metallb-system",
            ])
            .arg(format!(
                "--kubeconfig={}",
                bench.plane.kubeconfig("speaker").display()
            ))
            .arg(format!("--pin-dir={}", bench.pin_dir.display()))
            .arg("--ml-bind-addr=")
            .arg(format!("--interfaces-include={NODE_LAN_IF}"))
            .arg(format!("--metrics-addr={NODE_API}:{METRICS_PORT}"))
            .arg("--xdp-mode=skb")
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG")
            .env_remove("METALLB_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting herald speaker")?;
        Ok(Speaker {
            child: Some(child),
            log,
        })
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("the speaker is not running")
    }

    fn alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the speaker is not running");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "the speaker exited ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until the metrics page shows `n` announced Services, then until the CPU is quiet.
    fn wait_announced(&mut self, n: usize) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = 0;
        loop {
            self.alive()?;
            let announced = metrics().map_or(0, |page| announced(&page));
            if announced == n {
                break;
            }
            if announced != last {
                last = announced;
            }
            if Instant::now() > deadline {
                bail!(
                    "the speaker announced {last} of {n} Services after {} min; its log: {}",
                    PATIENCE.as_secs() / 60,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.quiet()
    }

    /// Waits until the speaker used under 2% of a CPU for three seconds in a row (at most two
    /// minutes): the work the step caused is done.
    fn quiet(&mut self) -> Result<()> {
        let pid = self.pid()?;
        let per_second = cpu::ticks_per_second().max(1);
        let deadline = Instant::now() + Duration::from_mins(2);
        let mut calm = 0;
        let mut before = cpu::process_ticks(pid).unwrap_or(0);
        while calm < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            self.alive()?;
            let now = cpu::process_ticks(pid).unwrap_or(before);
            if (now - before) * 50 <= per_second {
                calm += 1;
            } else {
                calm = 0;
            }
            before = now;
        }
        Ok(())
    }

    fn row(&mut self, step: &str, services: usize, started: Instant) -> Result<Row> {
        self.alive()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} in /proc/<pid>/status"))
        };
        let row = Row {
            step: step.to_string(),
            services,
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            took: started.elapsed(),
        };
        println!(
            "    {:<50} VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB  ({:.1} s)",
            row.step,
            mib(row.rss_kib),
            mib(row.hwm_kib),
            row.took.as_secs_f64()
        );
        Ok(row)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(20));
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The speaker's metrics page, if it answers.
fn metrics() -> Option<String> {
    let addr: SocketAddr = format!("{NODE_API}:{METRICS_PORT}").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {NODE_API}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .starts_with("HTTP/1.1 200")
        .then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))
        .flatten()
}

/// Services announced from this node: `metallb_speaker_announced{...} 1` lines.
fn announced(page: &str) -> usize {
    page.lines()
        .filter(|l| l.starts_with("metallb_speaker_announced{") && l.ends_with("} 1"))
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// An admin client that waits up to 10 minutes for a response.
async fn admin_client(plane: &ControlPlane) -> Result<Client> {
    let file = Kubeconfig::read_from(plane.kubeconfig(herald_control_plane::ADMIN))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(600));
    Ok(Client::try_from(config)?)
}

fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn service_ip(i: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(POOL_BASE) + i as u128 + 1)
}

/// Creates Services `first..last`, each with its ingress address in the status and an
/// EndpointSlice with one ready endpoint on the node, `concurrency` at a time.
async fn create_services(
    client: &Client,
    first: usize,
    last: usize,
    concurrency: usize,
) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let results: Vec<Result<()>> = futures::stream::iter(first..last)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let name = service_name(i);
                // No NodePorts: nothing reads them, and their allocator would serialise the
                // creations.
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {
                        "type": "LoadBalancer", "ipFamilies": ["IPv6"],
                        "ipFamilyPolicy": "SingleStack", "allocateLoadBalancerNodePorts": false,
                        "ports": [{"port": 80, "protocol": "TCP"}]
                    }
                }))?;
                services
                    .create(&PostParams::default(), &svc)
                    .await
                    .with_context(|| format!("creating Service {name}"))?;
                let status = serde_json::json!({
                    "status": {"loadBalancer": {"ingress": [{"ip": service_ip(i).to_string()}]}}
                });
                services
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .with_context(|| format!("writing the status of {name}"))?;
                let endpoint = Ipv6Addr::from(
                    u128::from(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0)) + i as u128 + 1,
                );
                let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                    "metadata": {
                        "name": format!("{name}-1"),
                        "labels": {"kubernetes.io/service-name": name}
                    },
                    "addressType": "IPv6",
                    "endpoints": [{
                        "addresses": [endpoint.to_string()], "nodeName": NODE,
                        "conditions": {"ready": true}
                    }],
                    "ports": [{"port": 80, "protocol": "TCP"}]
                }))?;
                slices
                    .create(&PostParams::default(), &slice)
                    .await
                    .with_context(|| format!("creating the EndpointSlice of {name}"))?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Updates every Service once (an annotation): one watch event per Service for the speaker.
async fn update_services(
    client: &Client,
    count: usize,
    round: usize,
    concurrency: usize,
) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let results: Vec<Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let services = services.clone();
            async move {
                let name = service_name(i);
                let patch = serde_json::json!({
                    "metadata": {"annotations": {"bench.herald/round": round.to_string()}}
                });
                services
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("updating {name}"))?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}
