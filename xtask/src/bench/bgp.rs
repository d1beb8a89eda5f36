//! `cargo xtask bench bgp`: Herald's native BGP speaker beside MetalLB v0.15.2's, in one run, in
//! the lab's BGP mode (FRR between the client and the three nodes), both as pods on the same
//! real nodes — MetalLB installed from its own manifest over Herald's (`lab switch`) — on the
//! same routers and objects (MetalLB runs on Herald's CRDs: its own v0.15.2 BGPPeer CRD is
//! refused by kube-apiserver 1.37).
//!
//! Per implementation, as the router's kernel sees it ([`routes`]):
//! - **burst**: `--services` Services (4 per address, so 1,000 make 250 prefixes) created at
//!   once; the time from the first create until every prefix is in the router's table, first
//!   with one next hop and then with all three; the UPDATE messages FRR counted; the speakers'
//!   CPU time over the burst and their resident memory afterwards; then the time until every
//!   prefix is withdrawn once the Services are deleted;
//! - **create-to-route**: `--singles` Services created one by one, each on its own address:
//!   p50/p99 from its create request to its route, split where the first UPDATE carrying it
//!   reaches the router ([`wire`]): the cluster's share before, the router's after; and, with
//!   extra peers, to its route in the first BIRD's kernel table (a router that queues nothing);
//! - **failover**: node-a's speaker frozen (SIGSTOP), and node-a's port on the switch set down
//!   (the router's own port stays up), until the router drops node-a's next hop of the probe
//!   address, with the default hold time (90 s) and with `holdTime: 3s`. A speaker frozen longer
//!   than its liveness probe allows (3 × 10 s) is killed and restarted by the kubelet, which
//!   closes its sessions: with the default hold time the freeze figure is that probe's;
//! - **IPv6, Herald alone** (MetalLB's native speaker refuses IPv6 pools): `--v6-services`
//!   Services at once, one /128 each, to the router and every extra peer over IPv6 sessions,
//!   with the burst's figures.

mod burst;
pub mod failover;
mod report;
mod routes;
mod wire;
mod workload;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::{self, LabMode, NODES, Speakers};
use report::{Burst, Figures, percentile, print_report};
use routes::{Change, Monitor, PATIENCE, frr_json, wait_table};
use wire::Wire;
use workload::{Creator, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// Services in the burst (4 per address: at most 1,012).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Services created one at a time for create-to-route percentiles (at most 253; with 200,
    /// p99 is the third slowest, not the slowest alone).
    #[arg(long, default_value_t = 200)]
    pub singles: usize,
    /// Failover trials per fault with `holdTime: 3s`.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Failover trials per fault with the default hold time (90 s each).
    #[arg(long, default_value_t = 1)]
    pub default_timer_trials: usize,
    /// BGP peers besides the lab's FRR router (BIRD, one address and AS each, in namespace
    /// `hl-peers`): every node opens a session to each, so each speaker announces every prefix
    /// to 1 + this many peers.
    #[arg(long, default_value_t = 2)]
    pub extra_peers: usize,
    /// Herald alone, after its IPv4 figures: this many IPv6 Services, one address each, to every
    /// peer over IPv6 (MetalLB's native speaker refuses IPv6 pools); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub v6_services: usize,
    /// Requests in flight while creating.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Leave a lab this command started running.
    #[arg(long)]
    pub keep_lab: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Freeze,
    LinkCut,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::Freeze => "speaker frozen (SIGSTOP)",
            Fault::LinkCut => "node link to the switch cut",
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if args.services > 253 * workload::PER_IP || args.singles > 253 {
        bail!("at most 1,012 Services and 253 singles fit 198.51.100.1-253");
    }
    if args.v6_services > workload::V6_ADDRESSES {
        bail!(
            "at most {} IPv6 Services fit the IPv6 phase's pool",
            workload::V6_ADDRESSES
        );
    }
    let started = bgp_lab()?;
    println!(
        "bench bgp: {} Services in a burst, {} one by one, {} + {} failover trials per fault; {} BGP peers per node (FRR + {} BIRD); both as pods (Herald's image, MetalLB {}'s)",
        args.services,
        args.singles,
        args.trials,
        args.default_timer_trials,
        1 + args.extra_peers,
        args.extra_peers,
        crate::image::METALLB_VERSION
    );
    workload::install()?;
    let peers = lab::peers::peers(args.extra_peers);
    let mut monitor = Monitor::start(lab::ROUTER_NS)?;
    let mut figures = Vec::new();
    let mut v6 = None;
    let outcome = (|| -> Result<()> {
        lab::peers::start(&peers)?;
        // The first BIRD's kernel table: a second FIB, of a router that adds no queue of its own.
        let mut bird = peers
            .first()
            .map(|_| Monitor::start(lab::PEERS_NS))
            .transpose()?;
        workload::add_peers(&peers)?;
        for speakers in [Speakers::Herald, Speakers::Metallb] {
            switch_to(speakers)?;
            lab::peers::wait_established(&peers, lab::peers::Family::V4, PATIENCE)?;
            figures.push(measure(speakers, args, &mut monitor, bird.as_mut())?);
            if speakers == Speakers::Herald && args.v6_services > 0 {
                v6 = Some(v6_burst(args, &peers, &mut monitor)?);
            }
        }
        Ok(())
    })();
    let removed = workload::remove_peers(&peers);
    lab::peers::stop(&peers);
    // Whatever happened, the lab goes back to Herald and its own configuration.
    let restored = switch_to(Speakers::Herald).and_then(|()| workload::uninstall());
    outcome?;
    removed?;
    restored?;
    print_report(&figures, v6.as_ref());
    if started && !args.keep_lab {
        lab::down()?;
    }
    Ok(())
}

/// Brings the lab up in BGP mode unless it is; whether it was started here. A lab up in layer
/// 2 mode is refused.
fn bgp_lab() -> Result<bool> {
    if lab::is_up() {
        if lab::recorded_mode() != LabMode::Bgp {
            bail!("the lab is up in layer 2 mode: `cargo xtask lab down` first");
        }
        return Ok(false);
    }
    lab::up(&lab::UpArgs {
        no_build: false,
        no_speakers: false,
        mode: LabMode::Bgp,
    })?;
    Ok(true)
}

/// Rolls the nodes over to `speakers` (a no-op rollout when they run it already).
fn switch_to(speakers: Speakers) -> Result<()> {
    lab::switch(match speakers {
        Speakers::Herald => lab::Implementation::Herald,
        Speakers::Metallb => lab::Implementation::Metallb,
    })
}

fn node_hops() -> BTreeSet<IpAddr> {
    NODES.iter().map(|n| IpAddr::V4(n.v4)).collect()
}

/// The nodes' IPv6 addresses: the next hops of an IPv6 prefix every node announces.
fn node_v6_hops() -> BTreeSet<IpAddr> {
    NODES.iter().map(|n| IpAddr::V6(n.v6)).collect()
}

fn measure(
    speakers: Speakers,
    args: &Args,
    monitor: &mut Monitor,
    mut bird: Option<&mut Monitor>,
) -> Result<Figures> {
    let name = speakers.label();
    println!("==> {name}");
    let creator = Creator::new()?;
    workload::clean()?;
    workload::set_hold_time(None)?;
    let probe = workload::probe();
    creator.slices(std::slice::from_ref(&probe), 1)?;
    creator.services(std::slice::from_ref(&probe), 1)?;
    let probe_ip = probe.ip.to_string();
    wait_table(monitor, "the probe address via all three nodes", |t| {
        t.get(&probe_ip) == Some(&node_hops())
    })?;

    let burst = burst::run(
        speakers,
        &creator,
        &workload::burst(args.services),
        &node_hops(),
        args.concurrency,
        monitor,
    )?;
    workload::clean()?;

    // One by one.
    creator.slices(std::slice::from_ref(&probe), 1)?;
    creator.services(std::slice::from_ref(&probe), 1)?;
    let singles = workload::singles(args.singles);
    creator.slices(&singles, args.concurrency)?;
    // The burst's withdrawals reach BIRD as they reached FRR; its table is waited on too, so
    // no single meets its address still routed there.
    if let Some(bird) = bird.as_deref_mut() {
        wait_table(bird, "the burst withdrawn from BIRD's kernel table", |t| {
            singles.iter().all(|s| !t.contains_key(&s.ip.to_string()))
        })?;
    }
    let mut wire = Wire::start(lab::ROUTER_NS, ROUTER_IF)?;
    let mut timed: Vec<(&str, Single)> = Vec::new();
    for single in &singles {
        let times = create_to_route(&creator, single, monitor, bird.as_deref_mut(), &mut wire)?;
        timed.push((&single.name, times));
    }
    drop(wire);
    // Each figure's values, sorted for percentiles.
    let sorted = |value: &dyn Fn(&Single) -> Option<f64>| {
        let mut values: Vec<f64> = timed.iter().filter_map(|(_, t)| value(t)).collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let singles_ms = sorted(&|t| Some(t.routed));
    let addressed_ms = sorted(&|t| Some(t.addressed));
    let updated_ms = sorted(&|t| t.updated);
    let router_ms = sorted(&|t| t.updated.map(|u| t.routed - u));
    let bird_ms = sorted(&|t| t.bird_routed);
    // The tail, split: where the slowest few spent their time.
    timed.sort_by(|a, b| b.1.routed.total_cmp(&a.1.routed));
    for (name, t) in timed.iter().take(3) {
        println!(
            "   slow: {name}: address {:.1} ms, first UPDATE at the router {}, FRR's FIB {:.1} ms, BIRD's {}",
            t.addressed,
            t.updated.map_or("unseen".into(), |u| format!("{u:.1} ms")),
            t.routed,
            t.bird_routed.map_or("-".into(), |b| format!("{b:.1} ms")),
        );
    }
    println!(
        "   create-to-route: p50 {:.1} ms, p99 {:.1} ms over {} (create-to-address p50 {:.1} ms, p99 {:.1} ms; create to the first UPDATE at the router p50 {:.1} ms, p99 {:.1} ms over {})",
        percentile(&singles_ms, 50.0),
        percentile(&singles_ms, 99.0),
        singles_ms.len(),
        percentile(&addressed_ms, 50.0),
        percentile(&addressed_ms, 99.0),
        percentile(&updated_ms, 50.0),
        percentile(&updated_ms, 99.0),
        updated_ms.len(),
    );
    if !bird_ms.is_empty() {
        println!(
            "   create-to-route at the first BIRD's kernel table: p50 {:.1} ms, p99 {:.1} ms over {}",
            percentile(&bird_ms, 50.0),
            percentile(&bird_ms, 99.0),
            bird_ms.len()
        );
    }
    for single in &singles {
        lab::kubectl(&[
            "-n",
            workload::NAMESPACE,
            "delete",
            "service",
            &single.name,
            "--wait=false",
        ])?;
    }
    wait_table(monitor, "the singles withdrawn", |t| {
        singles.iter().all(|s| !t.contains_key(&s.ip.to_string()))
    })?;

    // Failover.
    let mut failover = Vec::new();
    for (hold, agreed, label, trials) in [
        (
            Some("3s"),
            Duration::from_secs(3),
            "holdTime 3s",
            args.trials,
        ),
        (
            None,
            Duration::from_secs(90),
            "default hold time",
            args.default_timer_trials,
        ),
    ] {
        if trials == 0 {
            continue;
        }
        workload::set_hold_time(hold)?;
        // The sessions restart with the new hold time: wait until all three agreed on it.
        wait_sessions(agreed)?;
        for fault in [Fault::Freeze, Fault::LinkCut] {
            let mut times = Vec::new();
            for _ in 0..trials {
                times.push(failover_trial(speakers, fault, &probe_ip, monitor)?);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "   {} ({label}): p50 {:.0} ms, max {:.0} ms over {}",
                fault.label(),
                percentile(&times, 50.0),
                times.last().copied().unwrap_or_default(),
                times.len()
            );
            failover.push((fault, label, times));
        }
    }
    workload::set_hold_time(None)?;
    workload::clean()?;
    Ok(Figures {
        name,
        burst,
        singles_ms,
        addressed_ms,
        updated_ms,
        router_ms,
        bird_ms,
        failover,
    })
}

/// Herald alone: `--v6-services` IPv6 Services at once, one address each, announced to the
/// router and every extra peer over IPv6 sessions, until every prefix is in the router's FIB via
/// every node. The IPv6 configuration is there only for this phase.
fn v6_burst(args: &Args, peers: &[lab::peers::Peer], monitor: &mut Monitor) -> Result<Burst> {
    println!("==> Herald, IPv6");
    workload::clean()?;
    workload::install_v6(peers)?;
    let measured = (|| {
        // The hold time was just set back, which restarted the router's sessions.
        wait_sessions_at(Duration::from_secs(90), |n| IpAddr::V6(n.v6))?;
        lab::peers::wait_established(peers, lab::peers::Family::V6, PATIENCE)?;
        let creator = Creator::new()?;
        burst::run(
            Speakers::Herald,
            &creator,
            &workload::v6_services(args.v6_services),
            &node_v6_hops(),
            args.concurrency,
            monitor,
        )
    })();
    let cleaned = workload::clean();
    let removed = workload::uninstall_v6(peers);
    let measured = measured?;
    cleaned?;
    removed?;
    Ok(measured)
}

/// One Service's times from its create request (ms).
struct Single {
    /// Its address in the Service's status (the controller's share).
    addressed: f64,
    /// The first UPDATE announcing it reaching the router, when tcpdump saw it.
    updated: Option<f64>,
    /// Its route's first appearance in the router's FIB.
    routed: f64,
    /// Its route's first appearance in the first BIRD's kernel table, when there is one.
    bird_routed: Option<f64>,
}

/// The router's port on the lab bridge (where the nodes' UPDATEs arrive).
const ROUTER_IF: &str = "eth0";

/// Creates `single` and times it ([`Single`]).
fn create_to_route(
    creator: &Creator,
    single: &Workload,
    monitor: &mut Monitor,
    mut bird: Option<&mut Monitor>,
    wire: &mut Wire,
) -> Result<Single> {
    let ip = single.ip.to_string();
    monitor.drain();
    if monitor.table.contains_key(&ip) {
        bail!("{ip} is in the router's FIB before its Service exists");
    }
    if let Some(bird) = bird.as_deref_mut() {
        bird.drain();
        if bird.table.contains_key(&ip) {
            bail!("{ip} is in BIRD's kernel table before its Service exists");
        }
    }
    wire.drain();
    let start = Instant::now();
    creator.services(std::slice::from_ref(single), 1)?;
    let changes = wait_table(monitor, &format!("a route to {ip}"), |t| {
        t.contains_key(&ip)
    })?;
    let at = first_route(&changes, &ip).context("the router's route was never announced")?;
    // Each monitor stamps a line when it arrives, so waiting for one after the other loses
    // nothing.
    let bird_at = match bird {
        Some(bird) => {
            let changes = wait_table(bird, &format!("BIRD's route to {ip}"), |t| {
                t.contains_key(&ip)
            })?;
            Some(first_route(&changes, &ip).context("BIRD's route was never announced")?)
        }
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let addressed = loop {
        let seen = creator
            .addressed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&single.name)
            .copied();
        if let Some(t) = seen {
            break t;
        }
        if Instant::now() > deadline {
            bail!("the watch never showed {} with an address", single.name);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1000.0;
    // tcpdump's line for the UPDATE may trail the route's by a moment.
    std::thread::sleep(Duration::from_millis(50));
    wire.collect();
    // The workload is IPv4 (MetalLB's native mode refuses IPv6 pools): host routes are /32s.
    let prefix = format!("{ip}/32");
    Ok(Single {
        addressed: ms(addressed),
        updated: wire.first.get(&prefix).map(|t| ms(*t)),
        routed: ms(at),
        bird_routed: bird_at.map(ms),
    })
}

/// When `changes` first gave `prefix` a route.
fn first_route(changes: &[Change], prefix: &str) -> Option<Instant> {
    changes
        .iter()
        .find(|c| c.prefix == prefix && !c.next_hops.is_empty())
        .map(|c| c.at)
}

/// Waits until FRR has every node's IPv4 session Established with `hold` agreed.
fn wait_sessions(hold: Duration) -> Result<()> {
    wait_sessions_at(hold, |n| IpAddr::V4(n.v4))
}

/// Waits until FRR has every node's session to `address(node)` Established with `hold`
/// agreed.
fn wait_sessions_at(hold: Duration, address: impl Fn(&lab::NodeSpec) -> IpAddr) -> Result<()> {
    let want = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let json = frr_json("show bgp neighbors json")?;
        let ready = NODES.iter().all(|n| {
            let peer = &json[address(n).to_string()];
            peer["bgpState"] == "Established"
                && peer["bgpTimerHoldTimeMsecs"].as_u64() == Some(want)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the nodes' sessions never came up with hold time {hold:?}: {json}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One fault on node-a: its time (ms) until the router no longer routes the probe via node-a;
/// then the fault is undone and the next hop awaited back.
fn failover_trial(
    speakers: Speakers,
    fault: Fault,
    probe_ip: &str,
    monitor: &mut Monitor,
) -> Result<f64> {
    let node = NODES[0];
    let hop = IpAddr::V4(node.v4);
    monitor.drain();
    wait_table(monitor, "the probe via all three nodes", |t| {
        t.get(probe_ip) == Some(&node_hops())
    })?;
    // The speaker is found before the clock starts: the time is the router's, not the lookup's.
    let pid = speakers.running_pid(&node)?;
    let start = Instant::now();
    match fault {
        Fault::Freeze => lab::freeze_pid(pid)?,
        Fault::LinkCut => switch_port(node.switch_port, "down")?,
    }
    let changes = wait_table(monitor, "node-a's next hop gone", |t| {
        !t.get(probe_ip).is_some_and(|h| h.contains(&hop))
    });
    match fault {
        Fault::Freeze => speakers.thaw(&node, pid)?,
        Fault::LinkCut => switch_port(node.switch_port, "up")?,
    }
    let changes = changes?;
    let gone = changes.last().map_or(start, |c| c.at);
    wait_table(monitor, "node-a's next hop back", |t| {
        t.get(probe_ip).is_some_and(|h| h.contains(&hop))
    })?;
    Ok(gone.saturating_duration_since(start).as_secs_f64() * 1000.0)
}

fn switch_port(port: &str, state: &str) -> Result<()> {
    let status = Command::new("ip")
        .args(["-n", lab::SWITCH_NS, "link", "set", port, state])
        .status()
        .context("running ip link set")?;
    if !status.success() {
        bail!("ip -n {} link set {port} {state}: {status}", lab::SWITCH_NS);
    }
    Ok(())
}
