//! Bringing the lab up and down: builds, namespaces, the control plane, the real nodes (kubelet,
//! containerd, kube-proxy; Herald from its manifests as pods), the lab's YAML; and `down`, which
//! removes exactly that.

use std::fs;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::kubectl::{kubectl, service_ips, wait_for};
use super::procs::is_up;
use super::spec::{
    APISERVER_PORT, BGP_CLIENT_V4, DEFAULT_DETECT_MS, DEMO_SERVICE, HOST_V4, LabMode, NODE_AS,
    NODES, ROUTER_AS, ROUTER_CLIENT_V4, ROUTER_NS, ROUTER_V4, SERVICE_CIDR, herald_exe,
    kube_run_dir, kubeconfig, run_dir,
};
use super::status::{self, StatusArgs};
use super::{install, nodes, procs, router, router_table, topo};
use crate::paths::{apt_install, missing_packages, workspace_root};

/// The lab's layer 2 configuration: a pool and an L2Advertisement.
pub const L2_YAML: &str = include_str!("manifests/l2.yaml");
/// The lab's BGP configuration: a pool, the router as BGPPeers, a BGPAdvertisement.
pub const BGP_YAML: &str = include_str!("manifests/bgp.yaml");

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Do not build anything: fail with the command to run when something is missing.
    #[arg(long)]
    pub no_build: bool,
    /// Start no speakers (only the control plane, namespaces, kubelet and controller).
    #[arg(long)]
    pub no_speakers: bool,
    /// How LoadBalancer IPs reach the nodes: `l2` (ARP/NDP on the client's segment) or `bgp`
    /// (the client behind an FRR router peering with every node, ECMP).
    #[arg(long, value_enum, default_value_t = LabMode::L2)]
    pub mode: LabMode,
}

pub(super) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (network namespaces, XDP, bpffs): run `sudo -E cargo xtask lab ...`"
        );
    }
    Ok(())
}

/// Layer 2 commands (ARP probes, failover trials) refuse a lab up in BGP mode.
pub(super) fn require_l2(what: &str) -> Result<()> {
    let mode = procs::recorded_mode();
    if is_up() && mode != LabMode::L2 {
        bail!(
            "`lab {what}` measures layer 2, and the lab is up in {} mode: `cargo xtask lab down`, then `cargo xtask lab up`",
            mode.name()
        );
    }
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Builds what the lab runs, or says exactly what to run when `--no-build`.
fn ensure_built(no_build: bool, mode: LabMode) -> Result<()> {
    let root = workspace_root();
    let mut tools = vec![
        ("arping", "arping"),
        ("ndisc6", "ndisc6"),
        ("ip", "iproute2"),
        ("openssl", "openssl"),
    ];
    if mode == LabMode::Bgp {
        tools.push(("vtysh", "frr"));
    }
    let missing_tools = missing_packages(&tools);
    if no_build && !missing_tools.is_empty() {
        bail!(
            "missing tools; run: apt-get install -y {}",
            missing_tools.join(" ")
        );
    }
    apt_install(&missing_tools)?;
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
        if !crate::kube::node_runtime_built() {
            todo.push("cargo xtask kube build --nodes");
        }
        if !todo.is_empty() {
            bail!("missing builds; run: {}", todo.join(" && "));
        }
        return Ok(());
    }
    step("cargo xtask build-ebpf (the XDP object herald embeds)");
    crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
    step("cargo build -p herald (the host's `herald xdp` reads the nodes' pins)");
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
    crate::kube::build_node_runtime()?;
    Ok(())
}

pub fn up(args: &UpArgs) -> Result<()> {
    require_root()?;
    ensure_built(args.no_build, args.mode)?;
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

/// Brings the lab up in layer 2 mode unless it is up already; true when it did (the caller
/// takes it down again when done).
pub fn up_unless_running() -> Result<bool> {
    if is_up() {
        require_l2("up (for a layer 2 benchmark)")?;
        return Ok(false);
    }
    up(&UpArgs {
        no_build: false,
        no_speakers: false,
        mode: LabMode::L2,
    })?;
    Ok(true)
}

/// Everything `up` starts, in order (the caller has checked builds and cleared an old lab).
fn start(args: &UpArgs) -> Result<()> {
    procs::record_mode(args.mode)?;

    step(
        "namespaces: switch hl-sw (bridge br0), nodes hl-node-a/b/c, client hl-client, host leg hl-host, direct links eth1 ↔ hl-direct",
    );
    topo::create(args.mode)?;
    if args.mode == LabMode::Bgp {
        step(&format!(
            "router {ROUTER_NS} ({ROUTER_V4} on br0, {ROUTER_CLIENT_V4} toward the client {BGP_CLIENT_V4}): FRR zebra + bgpd + bfdd, AS {ROUTER_AS}, nodes AS {NODE_AS}"
        ));
        router::create()?;
        router::start_frr()?;
    }

    step(&format!(
        "control plane (etcd, kube-apiserver on https://{HOST_V4}:{APISERVER_PORT}, kube-controller-manager, kube-scheduler)"
    ));
    let kubelets: Vec<&str> = NODES.iter().map(|n| n.name).collect();
    crate::kube::up_in(
        &kube_run_dir(),
        &crate::kube::UpArgs {
            bind: HOST_V4.to_string(),
            port: APISERVER_PORT,
            service_cidr: SERVICE_CIDR.to_string(),
        },
        &kubelets,
    )?;

    step("images: herald (static, FROM scratch), pause, backend (cargo xtask image)");
    let images = crate::image::build()?;
    // The speakers' detection time is the DaemonSet's: recorded for `lab failover` and status.
    procs::record_detect_ms(install::manifest_detect_ms()?.unwrap_or(DEFAULT_DETECT_MS))?;
    step("real nodes: containerd, kubelet, kube-proxy in hl-node-a/b/c, each with its own bpffs");
    nodes::start_all(&images)?;
    wait_nodes_ready()?;
    step(&format!(
        "Herald from manifests/ (kubectl apply -k, image {})",
        images.herald.reference
    ));
    install::apply(&images.herald)?;
    if args.no_speakers {
        step("--no-speakers: the speaker DaemonSet is deleted");
        kubectl(&["-n", "metallb-system", "delete", "daemonset", "speaker"])?;
    }
    let config = match args.mode {
        LabMode::L2 => L2_YAML,
        LabMode::Bgp => BGP_YAML,
    };
    step("lab YAML: the mode's configuration, Deployment web (3 real pods), Service web");
    apply_lab_yaml(args, config, install::WORKLOAD_PODS_YAML)
}

/// Applies the mode's configuration and the workload, waits for the demo Service (and in BGP
/// mode the router's ECMP routes), then shows `lab status` and what to do next.
fn apply_lab_yaml(args: &UpArgs, config: &str, workload: &str) -> Result<()> {
    let lab_yaml = run_dir().join("lab.yaml");
    fs::write(&lab_yaml, format!("{config}---\n{workload}"))?;
    kubectl(&["apply", "-f", &lab_yaml.display().to_string()])?;
    let ips = wait_service_ready()?;
    if args.mode == LabMode::Bgp && !args.no_speakers {
        router_table::wait_ecmp(&ips)?;
    }
    println!();
    status::print(&StatusArgs {
        json: false,
        no_client: false,
    })?;
    println!();
    println!(
        "kubectl: {} --kubeconfig {} get pods,svc -A -o wide",
        crate::kube::binaries().kubectl().display(),
        kubeconfig("admin").display()
    );
    println!(
        "logs: {}/*.log, pods' under nodes/<node>/podlogs; next: cargo xtask lab status{} | down",
        run_dir().display(),
        if args.mode == LabMode::L2 {
            " | failover"
        } else {
            ""
        }
    );
    Ok(())
}

fn wait_nodes_ready() -> Result<()> {
    wait_for(
        "the kubelets to register nodes node-a/b/c Ready",
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

/// Waits for the demo Service's two addresses and its ready endpoints; returns the addresses.
fn wait_service_ready() -> Result<Vec<IpAddr>> {
    let (ns, name) = DEMO_SERVICE;
    let ips = wait_for(
        "Service default/web to get an IPv4 and an IPv6 address",
        Duration::from_secs(60),
        || {
            let ips = service_ips(ns, name);
            (ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6)).then_some(ips)
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
    )?;
    Ok(ips)
}

pub fn down() -> Result<()> {
    require_root()?;
    step("stopping the lab's processes");
    nodes::stop_all();
    procs::stop_all();
    step("stopping the control plane");
    crate::kube::down_in(&kube_run_dir())?;
    step("removing namespaces (the router's too) and the host veth");
    topo::destroy();
    router::remove_frr_run_dir();
    let _ = fs::remove_dir_all(run_dir());
    println!("lab down");
    Ok(())
}
