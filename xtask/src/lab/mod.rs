//! `cargo xtask lab up | status | failover | down` (issue 11): on one machine, the real control
//! plane (etcd, kube-apiserver, kube-controller-manager from `kube.rs`), a switch namespace with a
//! bridge, three node namespaces each running `herald speaker` with XDP on its uplink, `herald
//! controller`, and a client namespace. The lab plays kubelet, scheduler and kube-proxy (IPVS
//! style: every LoadBalancer IP on each node's `lo`, `arp_ignore`/`arp_announce` so the kernel
//! never answers ARP or NDP for it) — see `agent.rs`.
//!
//! Everything `up` starts is recorded under `target/lab/run` (pids, logs, kubeconfigs), and
//! `down` removes exactly that: the recorded processes, the lab's namespaces and host veth, and
//! the lab's pin directory.

pub mod agent;
pub mod failover;
pub mod metallb;
pub mod probe;
mod procs;
pub mod status;
mod topo;

pub use topo::{DIRECT_IF, DIRECT_NS, DirectLink, direct_link, direct_links};

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::workspace_root;

/// One node namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node object name (also the gossip member name).
    pub name: &'static str,
    pub netns: &'static str,
    /// The bridge port (in the switch namespace) of the node's uplink.
    pub switch_port: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

pub const NODES: [NodeSpec; 3] = [
    NodeSpec {
        name: "node-a",
        netns: "hl-node-a",
        switch_port: "p-node-a",
        v4: Ipv4Addr::new(203, 0, 113, 11),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x11),
    },
    NodeSpec {
        name: "node-b",
        netns: "hl-node-b",
        switch_port: "p-node-b",
        v4: Ipv4Addr::new(203, 0, 113, 12),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x12),
    },
    NodeSpec {
        name: "node-c",
        netns: "hl-node-c",
        switch_port: "p-node-c",
        v4: Ipv4Addr::new(203, 0, 113, 13),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x13),
    },
];

pub const SWITCH_NS: &str = "hl-sw";
pub const BRIDGE: &str = "br0";
pub const CLIENT_NS: &str = "hl-client";
pub const CLIENT_PORT: &str = "p-client";
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
/// Every namespace's uplink is called this (the speakers get `--interfaces-include eth0,eth1`:
/// the uplink and the direct link to the bench client, `topo::DirectLink`).
pub const UPLINK: &str = "eth0";
/// The host's leg on the lab bridge: kube-apiserver binds this address.
pub const HOST_IF: &str = "hl-host";
pub const HOST_PORT: &str = "p-host";
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const APISERVER_PORT: u16 = 6443;
/// LoadBalancer IPs come from these prefixes (on-link from the client).
pub const POOL_V4_PREFIX: &str = "198.51.100.0/24";
pub const POOL_V6_PREFIX: &str = "2001:db8:0:2::/64";
/// Service ClusterIPs: dual stack so IPv6 LoadBalancer IPs exist; never on the wire (no kube-proxy).
pub const SERVICE_CIDR: &str = "10.96.0.0/16,2001:db8:0:96::/112";
/// The backend every node runs (pods' containerPort, the Service's port and targetPort).
pub const BACKEND_PORT: u16 = 8080;
/// Pin directories live below this, one per node: namespaces share one bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/herald-lab";
/// Failure-detection target the speakers are started with (`--detect-ms`).
pub const DEFAULT_DETECT_MS: u64 = 500;
/// The lab's demo Service (from manifests/lab.yaml).
pub const DEMO_SERVICE: (&str, &str) = ("default", "web");

/// The lab's YAML, applied with kubectl after the Herald manifests.
pub const LAB_YAML: &str = include_str!("manifests/lab.yaml");

#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Start the control plane, the namespaces, Herald, and apply the lab's YAML; then show status.
    Up(UpArgs),
    /// Show who announces what, the client's ARP/NDP answers and a TCP connection through the IP.
    Status(StatusArgs),
    /// Kill the announcing speaker, then take a node's link down; time the client's recovery.
    Failover(FailoverArgs),
    /// Stop everything `up` started and remove its namespaces, veth and pins.
    Down,
    /// (internal) The lab's kubelet, scheduler and kube-proxy; started by `up`.
    #[command(hide = true)]
    Agent,
    /// (internal) A backend "container": a TCP server answering with the node's name.
    #[command(hide = true)]
    Backend(BackendArgs),
    /// (internal) Start a node's speaker again (after `failover` or a test killed it).
    #[command(hide = true)]
    StartSpeaker { node: String },
    /// (for tests) ARP requests from the client every interval; prints per-node answer counts
    /// and the unanswered rounds as JSON.
    #[command(hide = true)]
    Probe(ProbeArgs),
}

#[derive(clap::Args, Clone)]
pub struct ProbeArgs {
    /// IPv4 address to resolve from the client namespace.
    #[arg(long)]
    pub ip: Ipv4Addr,
    #[arg(long, default_value_t = 50)]
    pub count: usize,
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// `--detect-ms` for every speaker (failure detection target; the guard timeout derives from it).
    #[arg(long, default_value_t = DEFAULT_DETECT_MS)]
    pub detect_ms: u64,
    /// Do not build anything: fail with the command to run when something is missing.
    #[arg(long)]
    pub no_build: bool,
    /// Start no speakers (only the control plane, namespaces, kubelet and controller).
    #[arg(long)]
    pub no_speakers: bool,
}

#[derive(clap::Args, Clone)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Skip the client's ARP/NDP/TCP checks (only the XDP maps and ServiceL2Status).
    #[arg(long)]
    pub no_client: bool,
}

#[derive(clap::Args, Clone)]
pub struct FailoverArgs {
    /// ARP probe interval from the client, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub probe_ms: u64,
}

#[derive(clap::Args, Clone)]
pub struct BackendArgs {
    #[arg(long)]
    pub node: String,
    #[arg(long, default_value_t = BACKEND_PORT)]
    pub port: u16,
}

pub fn run(command: &LabCommand) -> Result<()> {
    match command {
        LabCommand::Up(args) => up(args),
        LabCommand::Status(args) => status::print(args),
        LabCommand::Failover(args) => failover::run_lab_failover(args),
        LabCommand::Down => down(),
        LabCommand::Agent => agent::run(),
        LabCommand::Backend(args) => backend(args),
        LabCommand::Probe(args) => probe_command(args),
        LabCommand::StartSpeaker { node } => {
            let node = node_by_name(node)?;
            let detect = procs::recorded_detect_ms().unwrap_or(DEFAULT_DETECT_MS);
            start_speaker(&node, detect).map(|_| ())
        }
    }
}

/// Where `up` keeps its state (removed by `down`).
pub fn run_dir() -> PathBuf {
    workspace_root().join("target/lab/run")
}

pub fn kube_run_dir() -> PathBuf {
    run_dir().join("kube")
}

/// The kubeconfig of `identity` (admin, controller, speaker).
pub fn kubeconfig(identity: &str) -> PathBuf {
    kube_run_dir().join(format!("{identity}.kubeconfig"))
}

pub fn pin_dir(node: &NodeSpec) -> PathBuf {
    Path::new(PIN_ROOT).join(node.name)
}

pub fn node_by_name(name: &str) -> Result<NodeSpec> {
    NODES
        .iter()
        .find(|n| n.name == name)
        .copied()
        .with_context(|| {
            format!(
                "no lab node named {name:?} (nodes: {})",
                NODES.map(|n| n.name).join(", ")
            )
        })
}

/// The binary of this xtask (to start the agent and backends from).
fn xtask_exe() -> Result<PathBuf> {
    std::env::current_exe().context("locating the xtask binary")
}

pub fn herald_exe() -> PathBuf {
    workspace_root().join("target/debug/herald")
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (network namespaces, XDP, bpffs): run `sudo -E cargo xtask lab ...`"
        );
    }
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Builds what the lab runs, or says exactly what to run when `--no-build`.
fn ensure_built(no_build: bool) -> Result<()> {
    let root = workspace_root();
    let missing_tools: Vec<&str> = [
        ("arping", "arping"),
        ("ndisc6", "ndisc6"),
        ("ip", "iproute2"),
        ("openssl", "openssl"),
    ]
    .iter()
    .filter(|(cmd, _)| !have(cmd))
    .map(|(_, pkg)| *pkg)
    .collect();
    if !missing_tools.is_empty() {
        if no_build {
            bail!(
                "missing tools; run: apt-get install -y {}",
                missing_tools.join(" ")
            );
        }
        step(&format!("apt-get install {}", missing_tools.join(" ")));
        for args in [
            vec!["update", "-q"],
            [
                vec!["install", "-y", "-q", "--no-install-recommends"],
                missing_tools.clone(),
            ]
            .concat(),
        ] {
            let status = Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .context("running apt-get")?;
            if !status.success() {
                bail!("apt-get {} failed: {status}", args.join(" "));
            }
        }
    }
    let ebpf_object = crate::ebpf::object_path();
    let kube_missing = crate::kube::binaries()
        .require(&herald_control_plane::Binaries::ALL)
        .is_err();
    if no_build {
        let mut todo = Vec::new();
        if !ebpf_object.is_file() {
            todo.push("cargo xtask build-ebpf");
        }
        if !herald_exe().is_file() {
            todo.push("cargo build -p herald");
        }
        if kube_missing {
            todo.push("cargo xtask kube build");
        }
        if !todo.is_empty() {
            bail!("missing builds; run: {}", todo.join(" && "));
        }
        return Ok(());
    }
    step("cargo xtask build-ebpf (the XDP object herald embeds)");
    crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
    step("cargo build -p herald");
    let status = Command::new("cargo")
        .args(["build", "-p", "herald", "--bin", "herald"])
        .current_dir(&root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build -p herald failed: {status}");
    }
    if kube_missing {
        step("cargo xtask kube build (cold: ~15 min on 2 cores, then cached under target/)");
    }
    crate::kube::build()?;
    Ok(())
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}

pub fn up(args: &UpArgs) -> Result<()> {
    require_root()?;
    ensure_built(args.no_build)?;
    if run_dir().exists() || topo::any_present() {
        step("a lab is already up: taking it down first");
        down()?;
    }
    fs::create_dir_all(run_dir())?;
    start(args).with_context(|| {
        format!(
            "lab up stopped half way (logs: {}/*.log); `cargo xtask lab down` removes what it made",
            run_dir().display()
        )
    })
}

/// Everything `up` starts, in order (the caller has checked builds and cleared an old lab).
fn start(args: &UpArgs) -> Result<()> {
    procs::record_detect_ms(args.detect_ms)?;

    step(
        "namespaces: switch hl-sw (bridge br0), nodes hl-node-a/b/c, client hl-client, host leg hl-host, direct links eth1 ↔ hl-direct",
    );
    topo::create()?;

    step(&format!(
        "control plane (etcd, kube-apiserver on https://{HOST_V4}:{APISERVER_PORT}, kube-controller-manager)"
    ));
    crate::kube::up_in(
        &kube_run_dir(),
        &crate::kube::UpArgs {
            bind: HOST_V4.to_string(),
            port: APISERVER_PORT,
            service_cidr: SERVICE_CIDR.to_string(),
        },
    )?;

    step("Herald manifests: CRDs, namespace, service accounts, RBAC (kubectl apply)");
    apply_herald_manifests()?;

    step("lab kubelet/scheduler/kube-proxy agent, one backend per node");
    procs::spawn_recorded(
        "agent",
        None,
        Command::new(xtask_exe()?).args(["lab", "agent"]),
    )?;
    for node in NODES {
        procs::spawn_recorded(
            &format!("backend-{}", node.name),
            Some(node.netns),
            Command::new(xtask_exe()?).args(["lab", "backend", "--node", node.name]),
        )?;
    }
    wait_nodes_ready()?;

    ensure_pin_root()?;

    step("herald controller (as system:serviceaccount:metallb-system:controller)");
    start_herald_controller()?;

    if args.no_speakers {
        step("--no-speakers: no herald speaker started");
    } else {
        step(&format!(
            "herald speaker on each node (XDP in skb mode on eth0 and eth1, --detect-ms {})",
            args.detect_ms
        ));
        wait_memberlist_secret()?;
        for node in NODES {
            start_speaker(&node, args.detect_ms)?;
        }
    }

    step("lab YAML: IPAddressPool, L2Advertisement, Deployment web (3 pods), Service web");
    let lab_yaml = run_dir().join("lab.yaml");
    fs::write(&lab_yaml, LAB_YAML)?;
    kubectl(&["apply", "-f", &lab_yaml.display().to_string()])?;
    wait_service_ready()?;
    println!();
    status::print(&StatusArgs {
        json: false,
        no_client: false,
    })?;
    println!();
    println!(
        "kubectl: {} --kubeconfig {} get svc -A",
        crate::kube::binaries().kubectl().display(),
        kubeconfig("admin").display()
    );
    println!(
        "logs: {}/*.log; next: cargo xtask lab status | failover | down",
        run_dir().display()
    );
    Ok(())
}

const BPFFS: &str = "/sys/fs/bpf";
/// Marker: `up` mounted bpffs at /sys/fs/bpf, so `down` unmounts it.
const MOUNTED_BPFFS: &str = "mounted-bpffs";

/// Mounts bpffs at /sys/fs/bpf when nothing is there (as systemd does at boot) and creates the
/// lab's pin root; the speakers create their per-node directories below it.
fn ensure_pin_root() -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = std::ffi::CString::new(BPFFS)?;
    // SAFETY: statfs into a zeroed struct we own.
    let is_bpffs = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    };
    if !is_bpffs {
        step("mounting bpffs at /sys/fs/bpf");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf", BPFFS])
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t bpf bpf {BPFFS} failed: {status}");
        }
        fs::write(run_dir().join(MOUNTED_BPFFS), "")?;
    }
    fs::create_dir_all(PIN_ROOT).with_context(|| format!("creating {PIN_ROOT}"))
}

/// Starts Herald's controller on the host as the controller service account.
fn start_herald_controller() -> Result<u32> {
    procs::spawn_recorded(
        "controller",
        None,
        Command::new(herald_exe())
            .arg("controller")
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("controller").display()
            ))
            .args([
                "--namespace=metallb-system",
                "--port=19120",
                "--health-probe-port=19121",
                "--bind-address=127.0.0.1",
                "--pod-name=lab-controller",
                "--ml-secret-name=memberlist",
            ])
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG"),
    )
}

/// Which implementation's speakers a fault hits and a repair restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speakers {
    /// `herald speaker`, restarted with this `--detect-ms`.
    Herald { detect_ms: u64 },
    /// MetalLB's speaker (`metallb.rs`).
    Metallb,
}

impl Speakers {
    pub fn label(self) -> &'static str {
        match self {
            Speakers::Herald { .. } => "Herald",
            Speakers::Metallb => "MetalLB",
        }
    }

    /// SIGKILL of `node`'s speaker.
    pub fn kill(self, node: &NodeSpec) -> Result<()> {
        match self {
            Speakers::Herald { .. } => kill_speaker(node),
            Speakers::Metallb => metallb::kill_speaker(node),
        }
    }

    /// Starts (or restarts) `node`'s speaker.
    pub fn start(self, node: &NodeSpec) -> Result<()> {
        match self {
            Speakers::Herald { detect_ms } => start_speaker(node, detect_ms).map(|_| ()),
            Speakers::Metallb => metallb::start_speaker(node).map(|_| ()),
        }
    }
}

/// Stops Herald for a MetalLB run: speakers get SIGTERM (they leave the gossip and withdraw),
/// then each node's XDP program is detached and its pins removed, then the controller stops —
/// so nothing of Herald sees or answers a frame afterwards.
pub fn stop_herald() -> Result<()> {
    for node in NODES {
        procs::stop_recorded(&format!("speaker-{}", node.name));
    }
    detach_herald_xdp()?;
    procs::stop_recorded("controller");
    Ok(())
}

/// Detaches each node's XDP program and removes its pins (the speakers must be stopped).
fn detach_herald_xdp() -> Result<()> {
    for node in NODES {
        let pins = pin_dir(&node);
        if !pins.exists() {
            continue;
        }
        // nsenter keeps the host's mount namespace (and so /sys/fs/bpf); `ip netns exec` would not.
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg(herald_exe())
            .args(["xdp", "detach", "--pin-dir"])
            .arg(&pins)
            .output()
            .context("running nsenter … herald xdp detach")?;
        if !out.status.success() {
            bail!(
                "herald xdp detach on {} failed: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = fs::remove_dir_all(&pins);
    }
    Ok(())
}

/// Restarts the three speakers with XDP in `xdp_mode` (`skb`, the lab's, or `driver`): they
/// stop, XDP is detached (one mode per interface at a time), they start again. `bench
/// vs-metallb` uses driver mode for its direct links, whose client ends accept XDP_TX frames;
/// on the bridge ports (no XDP, no NAPI) driver-mode XDP_TX frames are dropped, so the segment
/// is not answered until the lab's skb mode is back.
pub fn restart_herald_speakers(detect_ms: u64, xdp_mode: &str) -> Result<()> {
    for node in NODES {
        procs::stop_recorded(&format!("speaker-{}", node.name));
    }
    detach_herald_xdp()?;
    ensure_pin_root()?;
    for node in NODES {
        spawn_speaker(&node, detect_ms, xdp_mode)?;
    }
    Ok(())
}

/// Starts Herald's controller and speakers again (after [`stop_herald`]).
pub fn start_herald(detect_ms: u64) -> Result<()> {
    procs::record_detect_ms(detect_ms)?;
    ensure_pin_root()?;
    if procs::recorded_pid("controller").is_none() {
        start_herald_controller()?;
    }
    wait_memberlist_secret()?;
    for node in NODES {
        start_speaker(&node, detect_ms)?;
    }
    Ok(())
}

/// True when Herald's controller or any of its speakers runs.
pub fn herald_running() -> bool {
    procs::recorded_pid("controller").is_some() || NODES.iter().any(|n| speaker_pid(n).is_some())
}

/// Starts (or restarts) `node`'s speaker inside its namespace as the speaker service account.
pub fn start_speaker(node: &NodeSpec, detect_ms: u64) -> Result<u32> {
    spawn_speaker(node, detect_ms, "skb")
}

fn spawn_speaker(node: &NodeSpec, detect_ms: u64, xdp_mode: &str) -> Result<u32> {
    let name = format!("speaker-{}", node.name);
    procs::stop_recorded(&name);
    procs::spawn_recorded(
        &name,
        Some(node.netns),
        Command::new(herald_exe())
            .arg("speaker")
            .arg(format!("--node-name={}", node.name))
            .arg(format!("--kubeconfig={}", kubeconfig("speaker").display()))
            .arg("--namespace=metallb-system")
            .arg(format!("--pin-dir={}", pin_dir(node).display()))
            .arg(format!("--ml-bind-addr={}:7946", node.v4))
            .arg(format!("--metrics-addr={}:7472", node.v4))
            .arg(format!("--interfaces-include={UPLINK},{DIRECT_IF}"))
            .arg(format!("--xdp-mode={xdp_mode}"))
            .arg(format!("--detect-ms={detect_ms}"))
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG")
            .env_remove("HERALD_PIN_DIR"),
    )
}

/// The pid of `node`'s running speaker, if any.
pub fn speaker_pid(node: &NodeSpec) -> Option<i32> {
    procs::recorded_pid(&format!("speaker-{}", node.name))
}

/// Sends SIGKILL to `node`'s speaker (a crash: pinned maps stay).
pub fn kill_speaker(node: &NodeSpec) -> Result<()> {
    procs::kill_recorded(&format!("speaker-{}", node.name), libc::SIGKILL)
}

/// Restarts every speaker with `--detect-ms detect_ms` (and records it).
pub fn restart_speakers(detect_ms: u64) -> Result<()> {
    procs::record_detect_ms(detect_ms)?;
    for node in NODES {
        start_speaker(&node, detect_ms)?;
    }
    Ok(())
}

/// The timing line the first speaker logs at start (`detect_ms=… guard_budget_ms=…
/// earliest_takeover_ms=…`), so benchmarks print the settings in force.
pub fn speaker_timing_line() -> String {
    let log = fs::read_to_string(run_dir().join(format!("speaker-{}.log", NODES[0].name)))
        .unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| l.contains("detect_ms="))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.contains("_ms="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "speaker timing not logged".to_string())
}

/// True when `up` has run and not been taken down.
pub fn is_up() -> bool {
    run_dir().join("pids").is_file()
}

/// The detection setting the running lab's speakers use.
pub fn detect_ms() -> u64 {
    procs::recorded_detect_ms().unwrap_or(DEFAULT_DETECT_MS)
}

fn apply_herald_manifests() -> Result<()> {
    let manifests = workspace_root().join("manifests");
    let kustomization = fs::read_to_string(manifests.join("kustomization.yaml"))
        .context("reading manifests/kustomization.yaml")?;
    // Everything but the workloads: the lab runs the controller and speakers itself, out of
    // cluster, as the same service accounts.
    let resources: Vec<String> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::trim)
        .filter(|r| r.ends_with(".yaml") && !matches!(*r, "controller.yaml" | "speaker.yaml"))
        .map(|r| manifests.join(r).display().to_string())
        .collect();
    let (crds, rest): (Vec<String>, Vec<String>) =
        resources.into_iter().partition(|r| r.contains("/crds/"));
    let mut args = vec!["apply".to_string()];
    for f in &crds {
        args.extend(["-f".to_string(), f.clone()]);
    }
    kubectl_owned(&args)?;
    kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=120s",
        "crd",
        "--all",
    ])?;
    let mut args = vec!["apply".to_string()];
    for f in &rest {
        args.extend(["-f".to_string(), f.clone()]);
    }
    kubectl_owned(&args)?;
    Ok(())
}

/// Runs the built kubectl as admin; returns stdout.
pub fn kubectl(args: &[&str]) -> Result<String> {
    kubectl_owned(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
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

fn wait_nodes_ready() -> Result<()> {
    wait_for(
        "the agent to register nodes node-a/b/c Ready",
        Duration::from_secs(60),
        || {
            let out = kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])
        .ok()?;
            NODES
                .iter()
                .all(|n| out.lines().any(|l| l == format!("{}=True", n.name)))
                .then_some(())
        },
    )
}

fn wait_memberlist_secret() -> Result<()> {
    wait_for(
        "the controller to create Secret metallb-system/memberlist",
        Duration::from_secs(60),
        || {
            kubectl(&[
                "-n",
                "metallb-system",
                "get",
                "secret",
                "memberlist",
                "-o",
                "name",
            ])
            .ok()
            .map(|_| ())
        },
    )
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

fn wait_service_ready() -> Result<()> {
    let (ns, name) = DEMO_SERVICE;
    wait_for(
        "Service default/web to get an IPv4 and an IPv6 address",
        Duration::from_secs(60),
        || {
            let ips = service_ips(ns, name);
            (ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6)).then_some(())
        },
    )?;
    wait_for(
        "EndpointSlices of default/web with 3 ready endpoints",
        Duration::from_secs(60),
        || {
            let out = kubectl(&[
                "-n",
                ns,
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={name}"),
                "-o",
                "jsonpath={range .items[*].endpoints[*]}{.conditions.ready}{\"\\n\"}{end}",
            ])
            .ok()?;
            (out.lines().filter(|l| *l == "true").count() >= 6).then_some(())
        },
    )
}

pub fn down() -> Result<()> {
    require_root()?;
    step("stopping the lab's processes");
    procs::stop_all();
    step("stopping the control plane");
    crate::kube::down_in(&kube_run_dir())?;
    step("removing namespaces, the host veth and the pin directories");
    topo::destroy();
    let _ = fs::remove_dir_all(PIN_ROOT);
    if run_dir().join(MOUNTED_BPFFS).is_file() {
        let _ = Command::new("umount").arg(BPFFS).status();
    }
    let _ = fs::remove_dir_all(run_dir());
    println!("lab down");
    Ok(())
}

fn probe_command(args: &ProbeArgs) -> Result<()> {
    let (ip, count, interval) = (args.ip, args.count, Duration::from_millis(args.interval_ms));
    let rounds = probe::in_netns(CLIENT_NS, move || {
        probe::probe_arp_rounds(
            UPLINK,
            CLIENT_V4,
            ip,
            interval,
            Duration::from_secs(3600),
            |r| r.len() >= count,
        )
    })?;
    let macs = status::node_macs();
    let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
    let mut multiple = 0;
    let mut unanswered = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        let round_macs = round.macs();
        if round_macs.is_empty() {
            unanswered.push(i);
        }
        if round_macs.len() > 1 {
            multiple += 1;
        }
        for mac in round_macs {
            *per_node
                .entry(status::node_of_mac(&macs, &probe::format_mac(&mac)))
                .or_default() += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "ip": ip.to_string(),
            "rounds": rounds.len(),
            "interval_ms": args.interval_ms,
            "answers_by_node": per_node,
            "rounds_with_several_macs": multiple,
            "unanswered_rounds": unanswered,
        })
    );
    Ok(())
}

/// A backend "container": accepts TCP connections on [::]:port (IPv4 too) and writes
/// `<node>\n`, so the client sees which node served it.
fn backend(args: &BackendArgs) -> Result<()> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind(("::", args.port))
        .with_context(|| format!("binding [::]:{}", args.port))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.write_all(format!("{}\n", args.node).as_bytes());
    }
    Ok(())
}
