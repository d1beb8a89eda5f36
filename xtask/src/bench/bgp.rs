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
//!   reaches the router ([`wire`]): the cluster's share before, the router's after;
//! - **failover**: node-a's speaker frozen (SIGSTOP), and node-a's port on the switch set down
//!   (the router's own port stays up), until the router drops node-a's next hop of the probe
//!   address, with the default hold time (90 s) and with `holdTime: 3s`. A speaker frozen longer
//!   than its liveness probe allows (3 × 10 s) is killed and restarted by the kubelet, which
//!   closes its sessions: with the default hold time the freeze figure is that probe's.

pub mod failover;
mod report;
mod routes;
mod wire;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::dataplane::cpu;
use crate::lab::{self, LabMode, NODES, Speakers};
use report::{Figures, percentile, print_report};
use routes::{Change, Monitor};
use wire::Wire;
use workload::{Creator, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// Services in the burst (4 per address: at most 1,012).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Services created one at a time for create-to-route percentiles (at most 253).
    #[arg(long, default_value_t = 50)]
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
    /// Requests in flight while creating.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Leave a lab this command started running.
    #[arg(long)]
    pub keep_lab: bool,
}

/// How long any one wait may take before the bench gives up.
const PATIENCE: Duration = Duration::from_mins(5);

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
    let outcome = (|| -> Result<()> {
        lab::peers::start(&peers)?;
        workload::add_peers(&peers)?;
        for speakers in [Speakers::Herald, Speakers::Metallb] {
            switch_to(speakers)?;
            lab::peers::wait_established(&peers, PATIENCE)?;
            figures.push(measure(speakers, args, &mut monitor)?);
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
    print_report(&figures);
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

fn speaker_pids(speakers: Speakers) -> Vec<i32> {
    NODES.iter().filter_map(|n| speakers.pid(n)).collect()
}

fn node_hops() -> BTreeSet<IpAddr> {
    NODES.iter().map(|n| IpAddr::V4(n.v4)).collect()
}

fn measure(speakers: Speakers, args: &Args, monitor: &mut Monitor) -> Result<Figures> {
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

    // Burst.
    let burst = workload::burst(args.services);
    let prefixes: BTreeSet<String> = burst.iter().map(|w| w.ip.to_string()).collect();
    creator.slices(&burst, args.concurrency)?;
    let updates_before = updates_received()?;
    let cpu_before = cpu_ticks(speakers);
    monitor.drain();
    let start = Instant::now();
    let created = creator.services(&burst, args.concurrency)?;
    let changes = wait_table(monitor, "every burst prefix via all three nodes", |t| {
        prefixes.iter().all(|p| t.get(p) == Some(&node_hops()))
    })?;
    let first_hop = when_all(&changes, &prefixes, |hops| !hops.is_empty()).unwrap_or(start);
    let all_hops = when_all(&changes, &prefixes, |hops| *hops == node_hops()).unwrap_or(start);
    std::thread::sleep(Duration::from_secs(2));
    let cpu_s =
        (cpu_ticks(speakers).saturating_sub(cpu_before)) as f64 / cpu::ticks_per_second() as f64;
    let updates = updates_received()?.saturating_sub(updates_before);
    let rss_mib: Vec<f64> = speaker_pids(speakers).into_iter().map(rss_mib).collect();
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1000.0;
    println!(
        "   burst: created in {:.0} ms; every prefix in the router's FIB after {:.0} ms, via all three nodes after {:.0} ms; {updates} UPDATEs received by the router; speakers' CPU {cpu_s:.2} s; RSS {rss_mib:.1?} MiB",
        ms(created),
        ms(first_hop),
        ms(all_hops)
    );
    let polled = changes.iter().filter(|c| c.polled).count();

    // Withdraw.
    // One request deletes them all (the probe too: it is made again below).
    monitor.drain();
    let start_delete = Instant::now();
    lab::kubectl(&[
        "-n",
        workload::NAMESPACE,
        "delete",
        "services",
        "--all",
        "--wait=false",
    ])?;
    let changes = wait_table(monitor, "every burst prefix withdrawn", |t| {
        prefixes.iter().all(|p| !t.contains_key(p))
    })?;
    let withdrawn = changes.last().map_or(start_delete, |c| c.at);
    let withdrawn_ms = withdrawn
        .saturating_duration_since(start_delete)
        .as_secs_f64()
        * 1000.0;
    println!("   withdraw: every prefix gone {withdrawn_ms:.0} ms after the delete");
    workload::clean()?;

    // One by one.
    creator.slices(std::slice::from_ref(&probe), 1)?;
    creator.services(std::slice::from_ref(&probe), 1)?;
    let singles = workload::singles(args.singles);
    creator.slices(&singles, args.concurrency)?;
    let mut wire = Wire::start(lab::ROUTER_NS, ROUTER_IF)?;
    let mut singles_ms = Vec::new();
    let mut addressed_ms = Vec::new();
    let mut updated_ms = Vec::new();
    let mut router_ms = Vec::new();
    for single in &singles {
        let times = create_to_route(&creator, single, monitor, &mut wire)?;
        addressed_ms.push(times.addressed);
        singles_ms.push(times.routed);
        if let Some(updated) = times.updated {
            updated_ms.push(updated);
            router_ms.push(times.routed - updated);
        }
    }
    drop(wire);
    singles_ms.sort_by(f64::total_cmp);
    addressed_ms.sort_by(f64::total_cmp);
    updated_ms.sort_by(f64::total_cmp);
    router_ms.sort_by(f64::total_cmp);
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
        created_ms: ms(created),
        first_hop_ms: ms(first_hop),
        all_hops_ms: ms(all_hops),
        withdrawn_ms,
        updates,
        polled,
        cpu_s,
        rss_mib,
        singles_ms,
        addressed_ms,
        updated_ms,
        router_ms,
        failover,
    })
}

/// One Service's times from its create request (ms).
struct Single {
    /// Its address in the Service's status (the controller's share).
    addressed: f64,
    /// The first UPDATE announcing it reaching the router, when tcpdump saw it.
    updated: Option<f64>,
    /// Its route's first appearance in the router's FIB.
    routed: f64,
}

/// The router's port on the lab bridge (where the nodes' UPDATEs arrive).
const ROUTER_IF: &str = "eth0";

/// Creates `single` and times it ([`Single`]).
fn create_to_route(
    creator: &Creator,
    single: &Workload,
    monitor: &mut Monitor,
    wire: &mut Wire,
) -> Result<Single> {
    let ip = single.ip.to_string();
    monitor.drain();
    wire.drain();
    let start = Instant::now();
    creator.services(std::slice::from_ref(single), 1)?;
    let changes = wait_table(monitor, &format!("a route to {ip}"), |t| {
        t.contains_key(&ip)
    })?;
    let at = changes
        .iter()
        .find(|c| c.prefix == ip && !c.next_hops.is_empty())
        .map_or(start, |c| c.at);
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
    })
}

/// Waits until FRR has every node's IPv4 session Established with `hold` agreed.
fn wait_sessions(hold: Duration) -> Result<()> {
    let want = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let json = frr_json("show bgp neighbors json")?;
        let ready = NODES.iter().all(|n| {
            let peer = &json[n.v4.to_string()];
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

fn wait_table(
    monitor: &mut Monitor,
    what: &str,
    done: impl FnMut(&BTreeMap<String, BTreeSet<IpAddr>>) -> bool,
) -> Result<Vec<Change>> {
    let mut done = done;
    let changes = monitor.until(Instant::now() + PATIENCE, &mut done);
    if !done(&monitor.table) {
        bail!("waited {PATIENCE:?} for {what}");
    }
    Ok(changes)
}

/// The moment every prefix in `prefixes` first satisfied `ok` together, replaying `changes`.
fn when_all(
    changes: &[Change],
    prefixes: &BTreeSet<String>,
    ok: impl Fn(&BTreeSet<IpAddr>) -> bool,
) -> Option<Instant> {
    let mut good: BTreeSet<&str> = BTreeSet::new();
    for change in changes {
        if !prefixes.contains(&change.prefix) {
            continue;
        }
        if ok(&change.next_hops) {
            good.insert(&change.prefix);
        } else {
            good.remove(change.prefix.as_str());
        }
        if good.len() == prefixes.len() {
            return Some(change.at);
        }
    }
    None
}

/// One FRR show command's JSON.
fn frr_json(command: &str) -> Result<serde_json::Value> {
    let out = Command::new("vtysh")
        .args(["-N", lab::router::FRR_PATHSPACE, "-c", command])
        .output()
        .context("running vtysh")?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing {command}"))
}

/// UPDATE messages FRR received from all neighbors so far.
fn updates_received() -> Result<u64> {
    let json = frr_json("show bgp neighbors json")?;
    Ok(json.as_object().map_or(0, |peers| {
        peers
            .values()
            .filter_map(|p| p["messageStats"]["updatesRecv"].as_u64())
            .sum()
    }))
}

fn cpu_ticks(speakers: Speakers) -> u64 {
    speaker_pids(speakers)
        .into_iter()
        .filter_map(|pid| cpu::process_ticks(u32::try_from(pid).ok()?))
        .sum()
}

fn rss_mib(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ms: u64, prefix: &str, hops: &[&str], base: Instant) -> Change {
        Change {
            at: base + Duration::from_millis(ms),
            prefix: prefix.into(),
            next_hops: hops.iter().map(|h| h.parse().unwrap()).collect(),
            polled: false,
        }
    }

    #[test]
    fn when_all_replays_changes_until_every_prefix_holds_together() {
        let base = Instant::now();
        let prefixes: BTreeSet<String> = ["198.51.100.1", "198.51.100.2"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        let changes = [
            change(10, "198.51.100.1", &["203.0.113.11"], base),
            change(20, "198.51.100.9", &["203.0.113.11"], base),
            change(30, "198.51.100.1", &[], base),
            change(40, "198.51.100.2", &["203.0.113.11"], base),
            change(50, "198.51.100.1", &["203.0.113.12"], base),
        ];
        let any = when_all(&changes, &prefixes, |h| !h.is_empty());
        assert_eq!(any, Some(base + Duration::from_millis(50)));
        let two = when_all(&changes, &prefixes, |h| h.len() == 2);
        assert_eq!(two, None);
    }
}
