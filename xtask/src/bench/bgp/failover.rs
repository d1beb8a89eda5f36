//! `cargo xtask bench bgp-failover`: how soon the router stops sending a failed node traffic,
//! Herald with BFD beside MetalLB v0.15.2's native speaker with its shortest hold time, in one
//! run, in the lab's BGP mode (FRR's `bgpd` and `bfdd` between the client and the nodes), both
//! as pods on the same real nodes; then whether a restart of Herald's speakers costs anything.
//!
//! - **Failover**: node-a fails without closing its TCP session — its speaker frozen (SIGSTOP),
//!   or its port on the switch set down while the router's own port stays up — and the time
//!   until the router's kernel no longer routes the probe address via node-a. Herald runs as in
//!   MetalLB's FRR mode (`METALLB_BGP_TYPE=frr`) with a BFDProfile of 100 ms × 3 on the
//!   BGPPeers (the router's profile is the same); MetalLB runs native (it has no BFD there)
//!   with `holdTime: 3s`, the shortest both allow.
//! - **Graceful restart**: with `enableGracefulRestart` on the BGPPeers, rolling restarts of
//!   Herald's speaker DaemonSet while the client connects to the probe address through the
//!   router every `--probe-ms`: the next hops the router's kernel lost (target 0) and the
//!   client's failed connections (target 0).
//! - **Soak**: BFD at 100 ms × 3 for `--soak-mins` with every CPU kept busy by spinning threads:
//!   sessions the router declared Down (target 0).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::report::percentile;
use super::routes::Monitor;
use super::routes::{PATIENCE, frr_json, wait_table};
use super::{Fault, bgp_lab, failover_trial, node_hops, switch_to};
use super::{wait_sessions, workload};
use crate::lab::{self, NODES, Speakers};

#[derive(clap::Args)]
pub struct Args {
    /// Failover trials per fault and implementation.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Rolling restarts of Herald's speakers under graceful restart.
    #[arg(long, default_value_t = 2)]
    pub restarts: usize,
    /// The client's interval between connections during the restarts (ms).
    #[arg(long, default_value_t = 20)]
    pub probe_ms: u64,
    /// Minutes of BFD with every CPU busy (0 skips the soak).
    #[arg(long, default_value_t = 10)]
    pub soak_mins: u64,
    /// Leave a lab this command started running.
    #[arg(long)]
    pub keep_lab: bool,
}

/// The Service the bench watches and connects to: the lab's backends, on the probe address.
const SERVICE: &str = "bgp-failover";
const SERVICE_PORT: u16 = 8080;
/// The BFDProfile Herald's BGPPeers get: the router's timers.
const PROFILE: &str = lab::router::BFD_PROFILE;
/// The hold time MetalLB's native speaker runs with.
const METALLB_HOLD: &str = "3s";

/// One implementation's failover times (ms) per fault.
struct Failover {
    name: String,
    detection: String,
    times: Vec<(Fault, Vec<f64>)>,
}

/// What the rolling restarts cost.
struct Restarts {
    speakers: usize,
    lost_hops: usize,
    connects: Connects,
}

/// What the soak saw.
struct Soak {
    minutes: u64,
    cpus: usize,
    downs: u64,
    lost_hops: usize,
}

pub fn run(args: &Args) -> Result<()> {
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let started = bgp_lab()?;
    println!(
        "bench bgp-failover: {} trials per fault; Herald (FRR mode, BFD {} ms × {}) beside MetalLB {} native (holdTime {METALLB_HOLD}); {} rolling restarts probed every {} ms; {} min soak",
        args.trials,
        lab::router::BFD_INTERVAL_MS,
        lab::router::BFD_MULTIPLIER,
        crate::image::METALLB_VERSION,
        args.restarts,
        args.probe_ms,
        args.soak_mins
    );
    workload::install()?;
    let mut monitor = Monitor::start(lab::ROUTER_NS)?;
    let mut failovers = Vec::new();
    let mut restarts = None;
    let mut soak = None;
    let outcome = (|| -> Result<()> {
        install_service()?;
        switch_to(Speakers::Herald)?;
        herald_fast(true)?;
        wait_bfd_up()?;
        failovers.push(trials(Speakers::Herald, args.trials, &mut monitor)?);
        restarts = Some(rolling_restarts(args, &mut monitor)?);
        if args.soak_mins > 0 {
            soak = Some(soak_busy(args.soak_mins, &mut monitor)?);
        }
        herald_fast(false)?;
        switch_to(Speakers::Metallb)?;
        workload::set_hold_time(Some(METALLB_HOLD))?;
        wait_sessions(Duration::from_secs(3))?;
        failovers.push(trials(Speakers::Metallb, args.trials, &mut monitor)?);
        Ok(())
    })();
    // Whatever happened, the lab goes back to Herald, native mode, and its own configuration.
    let restored = herald_fast(false)
        .and_then(|()| switch_to(Speakers::Herald))
        .and_then(|()| remove_service())
        .and_then(|()| workload::uninstall());
    outcome?;
    restored?;
    print_report(&failovers, restarts.as_ref(), soak.as_ref());
    if started && !args.keep_lab {
        lab::down()?;
    }
    Ok(())
}

/// A LoadBalancer Service on the probe address in front of the lab's backend pods.
fn install_service() -> Result<()> {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: default\n  annotations:\n    metallb.io/loadBalancerIPs: {}\nspec:\n  type: LoadBalancer\n  ipFamilies: [IPv4]\n  ipFamilyPolicy: SingleStack\n  selector:\n    app: web\n  ports:\n    - port: {SERVICE_PORT}\n      targetPort: 8080\n      protocol: TCP\n",
        workload::PROBE_IP
    );
    let path = lab::run_dir().join("bench-bgp-failover.yaml");
    std::fs::write(&path, yaml)?;
    lab::kubectl(&["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

fn remove_service() -> Result<()> {
    lab::kubectl(&[
        "-n",
        "default",
        "delete",
        "service",
        SERVICE,
        "--ignore-not-found",
    ])?;
    Ok(())
}

/// Herald in MetalLB's FRR mode with BFD and graceful restart on the lab's BGPPeers (`on`), or
/// back to native mode without them. Nothing happens to what already is so.
fn herald_fast(on: bool) -> Result<()> {
    let env = if on {
        "METALLB_BGP_TYPE=frr"
    } else {
        "METALLB_BGP_TYPE-"
    };
    if on {
        apply_profile()?;
    }
    // Peers first on the way back: native mode refuses a bfdProfile.
    let patch = if on {
        format!("{{\"spec\":{{\"bfdProfile\":\"{PROFILE}\",\"enableGracefulRestart\":true}}}}")
    } else {
        "{\"spec\":{\"bfdProfile\":null,\"enableGracefulRestart\":null}}".to_string()
    };
    if !on {
        workload::patch_lab_peers(&patch)?;
    }
    for what in ["daemonset/speaker", "deployment/controller"] {
        lab::kubectl(&["-n", "metallb-system", "set", "env", what, env])?;
    }
    lab::wait_rolled_out()?;
    if on {
        workload::patch_lab_peers(&patch)?;
    } else {
        lab::kubectl(&[
            "-n",
            "metallb-system",
            "delete",
            "bfdprofile",
            PROFILE,
            "--ignore-not-found",
        ])?;
    }
    Ok(())
}

fn apply_profile() -> Result<()> {
    let ms = lab::router::BFD_INTERVAL_MS;
    let yaml = format!(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: {PROFILE}\n  namespace: metallb-system\nspec:\n  receiveInterval: {ms}\n  transmitInterval: {ms}\n  detectMultiplier: {}\n",
        lab::router::BFD_MULTIPLIER
    );
    let path = lab::run_dir().join("bench-bfd-profile.yaml");
    std::fs::write(&path, yaml)?;
    lab::kubectl(&["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

/// One row of FRR's `show bfd peers json`.
fn bfd_peers() -> Result<Vec<serde_json::Value>> {
    Ok(frr_json("show bfd peers json")?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Waits until the router has BFD Up with every node's IPv4 address, the node's speaker at the
/// profile's rate (after its Poll Sequence from the slow start rate).
fn wait_bfd_up() -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    let want = u64::from(lab::router::BFD_INTERVAL_MS);
    loop {
        let peers = bfd_peers()?;
        let up = NODES.iter().all(|n| {
            peers.iter().any(|p| {
                p["peer"] == n.v4.to_string().as_str()
                    && p["status"] == "up"
                    && p["remote-receive-interval"].as_u64() == Some(want)
                    && p["remote-transmit-interval"].as_u64() == Some(want)
            })
        });
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("BFD never came up with every node at {want} ms: {peers:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `trials` of each fault on node-a.
fn trials(speakers: Speakers, trials: usize, monitor: &mut Monitor) -> Result<Failover> {
    let probe = workload::PROBE_IP.to_string();
    let (name, detection) = match speakers {
        Speakers::Herald => (
            "Herald (FRR mode)".to_string(),
            format!(
                "BFD {} ms × {}",
                lab::router::BFD_INTERVAL_MS,
                lab::router::BFD_MULTIPLIER
            ),
        ),
        Speakers::Metallb => (
            format!("MetalLB {} native", crate::image::METALLB_VERSION),
            format!("holdTime {METALLB_HOLD}"),
        ),
    };
    println!("==> {name}, {detection}");
    let mut times = Vec::new();
    for fault in [Fault::Freeze, Fault::LinkCut] {
        let mut ms = Vec::new();
        for _ in 0..trials {
            ms.push(failover_trial(speakers, fault, &probe, monitor)?);
            if speakers == Speakers::Herald {
                // The next trial starts from a BFD session as Up as the first one's.
                wait_bfd_up()?;
            }
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "   {}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {}",
            fault.label(),
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            ms.last().copied().unwrap_or_default(),
            ms.len()
        );
        times.push((fault, ms));
    }
    Ok(Failover {
        name,
        detection,
        times,
    })
}

/// The client's connections through the probe address.
#[derive(Default)]
struct Connects {
    ok: usize,
    /// When (ms after the start) and why each failed one did.
    failed: Vec<(f64, String)>,
}

/// Connects from the client namespace to `addr` every `interval` until `stop`; one HTTP
/// exchange each, one second allowed.
fn start_connects(
    addr: SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<Connects>>> {
    lab::probe::spawn_in_netns(lab::CLIENT_NS, move || {
        let start = Instant::now();
        let mut connects = Connects::default();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match lab::probe::tcp_hello(addr, Duration::from_secs(1)) {
                Ok(_) => connects.ok += 1,
                Err(e) => connects
                    .failed
                    .push((start.elapsed().as_secs_f64() * 1000.0, format!("{e:#}"))),
            }
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        Ok(connects)
    })
}

/// Every change of the router's table for `period`.
fn watch(monitor: &mut Monitor, period: Duration) -> Vec<super::routes::Change> {
    monitor.until(Instant::now() + period, |_| false)
}

/// Routes to the probe address that left out a node's next hop, in `changes`.
fn lost_hops(changes: &[super::routes::Change], probe: &str) -> usize {
    let all = node_hops();
    changes
        .iter()
        .filter(|c| c.prefix == probe && c.next_hops != all)
        .count()
}

/// `--restarts` rolling restarts of Herald's speakers while the client connects.
fn rolling_restarts(args: &Args, monitor: &mut Monitor) -> Result<Restarts> {
    let probe = workload::PROBE_IP.to_string();
    wait_table(monitor, "the probe address via all three nodes", |t| {
        t.get(&probe) == Some(&node_hops())
    })?;
    println!(
        "==> Herald, graceful restart: {} rolling restarts",
        args.restarts
    );
    let stop = Arc::new(AtomicBool::new(false));
    let addr = SocketAddr::new(IpAddr::V4(workload::PROBE_IP), SERVICE_PORT);
    let probing = start_connects(
        addr,
        Duration::from_millis(args.probe_ms.max(1)),
        stop.clone(),
    )?;
    monitor.drain();
    let mut changes = Vec::new();
    let restarted = (|| -> Result<()> {
        for _ in 0..args.restarts {
            lab::kubectl(&[
                "-n",
                "metallb-system",
                "rollout",
                "restart",
                "daemonset/speaker",
            ])?;
            lab::wait_rolled_out()?;
            // The last speaker's new session: Established, its routes and End-of-RIB sent.
            wait_sessions(Duration::from_secs(90))?;
            wait_bfd_up()?;
            changes.extend(watch(monitor, Duration::from_secs(3)));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let connects = probing
        .join()
        .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))??;
    restarted?;
    let lost = lost_hops(&changes, &probe);
    println!(
        "   {} speaker restarts: next hops lost at the router {lost}; connections {} ok, {} failed",
        args.restarts * NODES.len(),
        connects.ok,
        connects.failed.len()
    );
    for (at, why) in connects.failed.iter().take(5) {
        println!("     failed at {at:.0} ms: {why}");
    }
    Ok(Restarts {
        speakers: args.restarts * NODES.len(),
        lost_hops: lost,
        connects,
    })
}

/// BFD Down events the router counted, over the nodes' sessions.
fn bfd_downs() -> Result<u64> {
    let counters = frr_json("show bfd peers counters json")?;
    let nodes: BTreeSet<String> = NODES
        .iter()
        .flat_map(|n| [n.v4.to_string(), n.v6.to_string()])
        .collect();
    Ok(counters
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer"].as_str().is_some_and(|a| nodes.contains(a)))
        .filter_map(|p| p["session-down"].as_u64())
        .sum())
}

/// BFD left running for `minutes` with every CPU spinning.
fn soak_busy(minutes: u64, monitor: &mut Monitor) -> Result<Soak> {
    let probe = workload::PROBE_IP.to_string();
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    println!("==> Herald, BFD for {minutes} min with {cpus} CPUs busy");
    let before = bfd_downs()?;
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    monitor.drain();
    let changes = watch(monitor, Duration::from_secs(minutes * 60));
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        let _ = spinner.join();
    }
    let downs = bfd_downs()?.saturating_sub(before);
    let lost = lost_hops(&changes, &probe);
    println!("   BFD sessions the router declared Down: {downs}; next hops lost: {lost}");
    Ok(Soak {
        minutes,
        cpus,
        downs,
        lost_hops: lost,
    })
}

fn print_report(failovers: &[Failover], restarts: Option<&Restarts>, soak: Option<&Soak>) {
    println!();
    println!("| implementation | detection | fault | p50 ms | p99 ms | max ms | trials |");
    println!("|---|---|---|---|---|---|---|");
    for f in failovers {
        for (fault, ms) in &f.times {
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                f.name,
                f.detection,
                fault.label(),
                percentile(ms, 50.0),
                percentile(ms, 99.0),
                ms.last().copied().unwrap_or_default(),
                ms.len()
            );
        }
    }
    if let [herald, metallb] = failovers {
        for ((fault, h), (_, m)) in herald.times.iter().zip(&metallb.times) {
            let (h50, h99) = (percentile(h, 50.0), percentile(h, 99.0));
            let (m50, m99) = (percentile(m, 50.0), percentile(m, 99.0));
            println!(
                "{}: MetalLB ÷ Herald {:.1}× at p50, {:.1}× at p99 (target ≥ 5×: {}); Herald p99 {h99:.0} ms (target ≤ 400 ms: {})",
                fault.label(),
                m50 / h50.max(f64::EPSILON),
                m99 / h99.max(f64::EPSILON),
                met(m99 / h99.max(f64::EPSILON) >= 5.0 && m50 / h50.max(f64::EPSILON) >= 5.0),
                met(h99 <= 400.0)
            );
        }
    }
    if let Some(r) = restarts {
        println!(
            "graceful restart: {} speaker restarts; next hops lost at the router {} (target 0: {}); client connections {} ok, {} failed (target 0: {})",
            r.speakers,
            r.lost_hops,
            met(r.lost_hops == 0),
            r.connects.ok,
            r.connects.failed.len(),
            met(r.connects.failed.is_empty())
        );
    }
    if let Some(s) = soak {
        println!(
            "soak: {} min of BFD with {} CPUs spinning; BFD Down at the router {} (target 0: {}); next hops lost {}",
            s.minutes,
            s.cpus,
            s.downs,
            met(s.downs == 0),
            s.lost_hops
        );
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

#[cfg(test)]
mod tests {
    use super::super::routes::Change;
    use super::*;

    #[test]
    fn a_lost_hop_is_a_change_of_the_probe_without_every_node() {
        let at = Instant::now();
        let change = |prefix: &str, hops: &[IpAddr]| Change {
            at,
            prefix: prefix.into(),
            next_hops: hops.iter().copied().collect(),
            polled: false,
        };
        let all: Vec<IpAddr> = node_hops().into_iter().collect();
        let probe = workload::PROBE_IP.to_string();
        let changes = [
            change(&probe, &all),
            change(&probe, &all[1..]),
            change("198.51.100.7", &all[..1]),
            change(&probe, &[]),
            change(&probe, &all),
        ];
        assert_eq!(lost_hops(&changes, &probe), 2);
        assert_eq!(lost_hops(&changes[..1], &probe), 0);
    }
}
