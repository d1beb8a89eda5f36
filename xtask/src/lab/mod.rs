//! `cargo xtask lab up | status | failover | down`: on one machine, the real control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler from `herald-control-plane`),
//! a switch namespace with a bridge, three node namespaces, and a client namespace. Every node
//! runs kubelet, containerd, runc, CNI and kube-proxy; Herald is installed from `manifests/` as
//! pods of its own image, the backends are real pods (`nodes.rs`, `install.rs`), and `lab
//! switch` rolls the nodes over to MetalLB's own manifest and back (`switch.rs`).
//!
//! Two modes (`--mode`, recorded for `status` and `down`): layer 2 (the default) puts the client
//! on the nodes' segment; BGP puts it behind a router namespace running FRR, which learns each
//! LoadBalancer IP from every node's speaker and forwards by ECMP — see `router.rs`.
//!
//! Everything `up` starts is recorded under `target/lab/run` (pids, logs, kubeconfigs), and
//! `down` removes exactly that: the recorded processes, the lab's namespaces and host veth, and
//! the host paths real nodes write (`lifecycle.rs`).
//!
//! This file holds the commands; what they share lives in the modules below it (`spec.rs` for
//! names and addresses, `kubectl.rs`, `herald.rs`, `procs.rs`), so that no module imports this
//! one back.

pub mod failover;
mod herald;
mod install;
mod kubectl;
mod lifecycle;
pub mod nodes;
pub mod peers;
pub mod probe;
mod procs;
pub mod router;
pub mod router_table;
mod spec;
pub mod status;
mod switch;
mod topo;

pub use herald::{
    Speakers, freeze_pid, set_speaker_detect_ms, set_speaker_flag, speaker_timing_line,
};
pub use install::wait_rolled_out;
pub use kubectl::{kubectl, service_ips, wait_for};
use lifecycle::require_l2;
pub use lifecycle::{BGP_YAML, UpArgs, down, up, up_unless_running};
pub use procs::{detect_ms, is_up, recorded_mode};
pub use spec::*;
pub use switch::{Implementation, switch};
pub use topo::{DIRECT_IF, DIRECT_NS, DirectLink, direct_link, direct_links};

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;

use failover::FailoverArgs;
use status::StatusArgs;

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
    /// (for tests) ARP requests from the client every interval; prints per-node answer counts
    /// and the unanswered rounds as JSON.
    #[command(hide = true)]
    Probe(ProbeArgs),
    /// (for tests, real nodes) Tag Herald's image anew and import it into every node; prints
    /// the new reference.
    #[command(hide = true)]
    ImportImage {
        #[arg(long)]
        tag: String,
        /// Only into these nodes (default: all).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// (for tests, real nodes) Kill (SIGKILL) or start again a node's containerd.
    #[command(hide = true)]
    Containerd {
        node: String,
        #[arg(long)]
        start: bool,
    },
    /// (for tests, real nodes) Freeze (SIGSTOP) or resume (SIGCONT) a node's kubelet.
    #[command(hide = true)]
    Kubelet {
        node: String,
        #[arg(long)]
        resume: bool,
    },
    /// (real nodes) Roll the nodes over to MetalLB v0.15.2 from its own manifest, or back to
    /// Herald, both as pods.
    Switch {
        #[arg(value_enum)]
        to: switch::Implementation,
    },
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
    /// Go on past `--count` rounds until this node has answered each of the last 10 (at most
    /// 400 s): a probe that must see an address handed back to it.
    #[arg(long)]
    pub until_answered_by: Option<String>,
    /// Go on past `--count` rounds until this file exists: a probe that must cover an operation
    /// of unknown length (the caller creates the file when the operation has returned).
    #[arg(long)]
    pub until_file: Option<std::path::PathBuf>,
}

pub fn run(command: &LabCommand) -> Result<()> {
    match command {
        LabCommand::Up(args) => up(args),
        LabCommand::Status(args) => status::print(args),
        LabCommand::Failover(args) => {
            require_l2("failover")?;
            failover::run_lab_failover(args)
        }
        LabCommand::Down => down(),
        LabCommand::Probe(args) => {
            require_l2("probe")?;
            probe_command(args)
        }
        LabCommand::ImportImage { tag, nodes: only } => {
            let images = crate::image::build()?;
            let image = crate::image::retag(&images.herald, tag)?;
            for node in NODES
                .iter()
                .filter(|n| only.is_empty() || only.iter().any(|o| o == n.name))
            {
                nodes::import_archive(node, &image.archive)?;
            }
            // Imported: the archive of a test's tag is not kept.
            let _ = std::fs::remove_file(&image.archive);
            println!("{}", image.reference);
            Ok(())
        }
        LabCommand::Switch { to } => switch::switch(*to),
        LabCommand::Containerd { node, start } => {
            let node = node_by_name(node)?;
            if *start {
                nodes::start_containerd(&node)
            } else {
                nodes::kill_containerd(&node)
            }
        }
        LabCommand::Kubelet { node, resume } => {
            let node = node_by_name(node)?;
            let signal = if *resume {
                libc::SIGCONT
            } else {
                libc::SIGSTOP
            };
            procs::kill_recorded(&format!("kubelet-{}", node.name), signal)
        }
    }
}

/// Rounds the node named by `--until-answered-by` must have answered at the end.
const SETTLED_ROUNDS: usize = 10;

fn probe_command(args: &ProbeArgs) -> Result<()> {
    let (ip, count, interval) = (args.ip, args.count, Duration::from_millis(args.interval_ms));
    let macs = status::node_macs();
    let until = args.until_answered_by.clone();
    let until_file = args.until_file.clone();
    let node_macs = macs.clone();
    let max = if until.is_some() { 400 } else { 3600 };
    let rounds = probe::in_netns(CLIENT_NS, move || {
        probe::probe_arp_rounds(
            UPLINK,
            CLIENT_V4,
            ip,
            interval,
            Duration::from_secs(max),
            |r| {
                r.len() >= count
                    && until_file.as_ref().is_none_or(|file| file.exists())
                    && until.as_ref().is_none_or(|node| {
                        r.len() >= SETTLED_ROUNDS
                            && r[r.len() - SETTLED_ROUNDS..].iter().all(|round| {
                                round.macs().iter().any(|m| {
                                    status::node_of_mac(&node_macs, &probe::format_mac(m)) == *node
                                })
                            })
                    })
            },
        )
    })?;
    let last_round_nodes: Vec<String> = rounds
        .last()
        .map(|round| {
            round
                .macs()
                .iter()
                .map(|m| status::node_of_mac(&macs, &probe::format_mac(m)))
                .collect()
        })
        .unwrap_or_default();
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
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
            "last_round_nodes": last_round_nodes,
        })
    );
    Ok(())
}
