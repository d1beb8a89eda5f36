//! Bringing the lab up and down: builds, namespaces, the control plane, then either the
//! played nodes (the agent, Herald as processes) or real nodes (kubelet, containerd, Herald
//! from its manifests as pods), the lab's YAML; and `down`, which removes exactly that.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use herald_control_plane::ControlPlane;

use super::herald::{
    BPFFS, MOUNTED_BPFFS, ensure_pin_root, start_herald_controller, start_speaker,
    wait_memberlist_secret,
};
use super::kubectl::{kubectl, service_ips, wait_for};
use super::procs::is_up;
use super::spec::{
    APISERVER_PORT, BGP_CLIENT_V4, DEFAULT_DETECT_MS, DEMO_SERVICE, HOST_V4, LabMode, NODE_AS,
    NODES, Nodes, PIN_ROOT, ROUTER_AS, ROUTER_CLIENT_V4, ROUTER_NS, ROUTER_V4, SERVICE_CIDR,
    herald_exe_of, kube_run_dir, kubeconfig, run_dir,
};
use super::status::{self, StatusArgs};
use super::{install, nodes, procs, router, router_table, topo};
use crate::paths::{apt_install, missing_packages, workspace_root};

/// The lab's layer 2 configuration: a pool and an L2Advertisement.
pub const L2_YAML: &str = include_str!("manifests/l2.yaml");
/// The lab's BGP configuration: a pool, the router as BGPPeers, a BGPAdvertisement.
pub const BGP_YAML: &str = include_str!("manifests/bgp.yaml");
/// The lab's workload (Deployment and Service `default/web`), applied after the configuration.
pub const WORKLOAD_YAML: &str = include_str!("manifests/workload.yaml");

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
    /// How LoadBalancer IPs reach the nodes: `l2` (ARP/NDP on the client's segment) or `bgp`
    /// (the client behind an FRR router peering with every node, ECMP).
    #[arg(long, value_enum, default_value_t = LabMode::L2)]
    pub mode: LabMode,
    /// Run Herald's optimized build (`cargo build --release`) instead of the debug build, as a
    /// user's image would: for benchmarks.
    #[arg(long)]
    pub release: bool,
    /// `real` (default): kubelet, containerd and kube-proxy on every node, Herald installed from
    /// `manifests/` as pods of its own image, backends as real pods. `played`: the lab's agent
    /// plays kubelet and Herald runs as processes (the benchmarks that restart speakers with
    /// other settings, or run MetalLB's beside them, use it).
    #[arg(long, value_enum, default_value_t = Nodes::Real)]
    pub nodes: Nodes,
}

/// The binary of this xtask (to start the agent and backends from).
fn xtask_exe() -> Result<PathBuf> {
    std::env::current_exe().context("locating the xtask binary")
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
fn ensure_built(no_build: bool, mode: LabMode, release: bool, nodes: Nodes) -> Result<()> {
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
        if !herald_exe_of(release).is_file() {
            todo.push(if release {
                "cargo build --release -p herald"
            } else {
                "cargo build -p herald"
            });
        }
        if kube_missing {
            todo.push("cargo xtask kube build");
        }
        if nodes == Nodes::Real && !crate::kube::node_runtime_built() {
            todo.push("cargo xtask kube build --nodes");
        }
        if !todo.is_empty() {
            bail!("missing builds; run: {}", todo.join(" && "));
        }
        return Ok(());
    }
    step("cargo xtask build-ebpf (the XDP object herald embeds)");
    crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    step(&format!(
        "cargo build {}-p herald",
        if release { "--release " } else { "" }
    ));
    let status = Command::new("cargo")
        .args(["build", "-p", "herald", "--bin", "herald"])
        .args(profile)
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
    if nodes == Nodes::Real {
        crate::kube::build_node_runtime()?;
    }
    Ok(())
}

pub fn up(args: &UpArgs) -> Result<()> {
    require_root()?;
    ensure_built(args.no_build, args.mode, args.release, args.nodes)?;
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

/// Brings the lab up in layer 2 mode on `nodes` with speakers at `detect_ms` unless it is up
/// already (then on those nodes); true when it did (the caller takes it down again when done).
pub fn up_unless_running(detect_ms: u64, nodes: Nodes) -> Result<bool> {
    if is_up() {
        require_l2("up (for a layer 2 benchmark)")?;
        let running = procs::recorded_nodes();
        if running != nodes {
            bail!(
                "the lab is up on {} nodes and this needs {} ones: `cargo xtask lab down` first",
                running.name(),
                nodes.name()
            );
        }
        return Ok(false);
    }
    up(&UpArgs {
        detect_ms,
        no_build: false,
        no_speakers: false,
        mode: LabMode::L2,
        release: false,
        nodes,
    })?;
    Ok(true)
}

/// Everything `up` starts, in order (the caller has checked builds and cleared an old lab).
fn start(args: &UpArgs) -> Result<()> {
    procs::record_detect_ms(args.detect_ms)?;
    procs::record_mode(args.mode)?;
    procs::record_release(args.release)?;
    procs::record_nodes(args.nodes)?;

    step(
        "namespaces: switch hl-sw (bridge br0), nodes hl-node-a/b/c, client hl-client, host leg hl-host, direct links eth1 ↔ hl-direct",
    );
    topo::create(args.mode)?;
    if args.mode == LabMode::Bgp {
        step(&format!(
            "router {ROUTER_NS} ({ROUTER_V4} on br0, {ROUTER_CLIENT_V4} toward the client {BGP_CLIENT_V4}): FRR zebra + bgpd, AS {ROUTER_AS}, nodes AS {NODE_AS}"
        ));
        router::create()?;
        router::start_frr()?;
    }

    let real = args.nodes == Nodes::Real;
    step(&format!(
        "control plane (etcd, kube-apiserver on https://{HOST_V4}:{APISERVER_PORT}, kube-controller-manager{})",
        if real { ", kube-scheduler" } else { "" }
    ));
    let kubelets: Vec<&str> = if real {
        NODES.iter().map(|n| n.name).collect()
    } else {
        Vec::new()
    };
    let plane = crate::kube::up_in(
        &kube_run_dir(),
        &crate::kube::UpArgs {
            bind: HOST_V4.to_string(),
            port: APISERVER_PORT,
            service_cidr: SERVICE_CIDR.to_string(),
        },
        &kubelets,
    )?;
    if real {
        return start_real(args);
    }

    step("Herald manifests: CRDs, namespace, service accounts, RBAC (kubectl apply)");
    apply_herald_manifests(&plane)?;

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

    let config = match args.mode {
        LabMode::L2 => {
            step("lab YAML: IPAddressPool, L2Advertisement, Deployment web (3 pods), Service web");
            L2_YAML
        }
        LabMode::Bgp => {
            step(
                "lab YAML: IPAddressPool, BGPPeers router-v4/v6, BGPAdvertisement, Deployment web (3 pods), Service web",
            );
            BGP_YAML
        }
    };
    apply_lab_yaml(args, config, WORKLOAD_YAML)
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
        "logs: {}/*.log{}; next: cargo xtask lab status{} | down",
        run_dir().display(),
        if args.nodes == Nodes::Real {
            ", pods' under nodes/<node>/podlogs"
        } else {
            ""
        },
        if args.mode == LabMode::L2 {
            " | failover"
        } else {
            ""
        }
    );
    Ok(())
}

/// The rest of `up` on real nodes: images, nodes, Herald from its manifests, the lab's YAML.
fn start_real(args: &UpArgs) -> Result<()> {
    step("images: herald (static, FROM scratch), pause, backend (cargo xtask image)");
    let images = crate::image::build()?;
    // The speakers' detection time is the DaemonSet's: recorded for `lab failover` and status.
    let detect_ms = install::manifest_detect_ms()?.unwrap_or(DEFAULT_DETECT_MS);
    if args.detect_ms != DEFAULT_DETECT_MS && args.detect_ms != detect_ms {
        println!(
            "note: --detect-ms {} applies to played nodes; the speaker pods use the DaemonSet's {detect_ms} ms (manifests/speaker.yaml)",
            args.detect_ms
        );
    }
    procs::record_detect_ms(detect_ms)?;
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

fn apply_herald_manifests(plane: &ControlPlane) -> Result<()> {
    let manifests = workspace_root().join("manifests");
    let kustomization = fs::read_to_string(manifests.join("kustomization.yaml"))
        .context("reading manifests/kustomization.yaml")?;
    // Everything but the workloads: the lab runs the controller and speakers itself, out of
    // cluster, as the same service accounts.
    let resources: Vec<String> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::trim)
        .filter(|r| {
            std::path::Path::new(r)
                .extension()
                .is_some_and(|e| e == "yaml")
                && !matches!(*r, "controller.yaml" | "speaker.yaml")
        })
        .map(|r| manifests.join(r).display().to_string())
        .collect();
    let (crds, rest): (Vec<String>, Vec<String>) =
        resources.into_iter().partition(|r| r.contains("/crds/"));
    let apply = |files: &[String]| {
        let mut args = vec!["apply"];
        for f in files {
            args.extend(["-f", f]);
        }
        plane.kubectl_run(&args)
    };
    apply(&crds)?;
    plane.wait_crds_established()?;
    apply(&rest)?;
    Ok(())
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
    step("removing namespaces (the router's too), the host veth and the pin directories");
    topo::destroy();
    router::remove_frr_run_dir();
    let _ = fs::remove_dir_all(PIN_ROOT);
    if run_dir().join(MOUNTED_BPFFS).is_file() {
        let _ = Command::new("umount").arg(BPFFS).status();
    }
    let _ = fs::remove_dir_all(run_dir());
    println!("lab down");
    Ok(())
}
