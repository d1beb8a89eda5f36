//! `cargo xtask bench failover`: repeated faults on the node announcing the lab's demo IPv4
//! address, each timed as the client sees it (ARP probe every `--probe-ms`, TCP connection every
//! 10 ms): p50/p99/max with the speakers' detection settings. The speaker pod's process is
//! frozen (SIGSTOP) and the node's cable cut at the switch (a killed speaker container is
//! restarted by the kubelet at once, so a crash that stays down does not happen on real nodes).
//! Brings the lab up when it is not (and down again afterwards).

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::lab::{self, failover};

#[derive(clap::Args)]
pub struct Args {
    /// Trials per fault kind.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Client ARP probe interval (ms).
    #[arg(long, default_value_t = 10)]
    pub probe_ms: u64,
    /// Speakers' `--detect-ms` for this run (default: the DaemonSet's, from
    /// `manifests/speaker.yaml`): set by a rolling update of the DaemonSet, restored afterwards.
    #[arg(long)]
    pub detect_ms: Option<u64>,
    /// Then the same faults against MetalLB v0.15.2 as pods on the same nodes, installed from
    /// its own manifest over Herald's (`lab switch metallb`), and Herald back afterwards.
    #[arg(long)]
    pub metallb: bool,
    /// Leave a lab this command started running.
    #[arg(long)]
    pub keep_lab: bool,
}

/// Nearest-rank percentile of sorted `values` (p in 0..=100).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

pub fn run(args: &Args) -> Result<()> {
    let started_lab = lab::up_unless_running()?;
    let manifest_detect_ms = lab::detect_ms();
    if let Some(detect_ms) = args.detect_ms.filter(|d| *d != manifest_detect_ms) {
        println!("==> rolling the speakers out with --detect-ms {detect_ms}");
        lab::set_speaker_detect_ms(detect_ms)?;
    }
    let result = measure(args);
    if args.detect_ms.is_some_and(|d| d != manifest_detect_ms) {
        println!("==> rolling the speakers back to --detect-ms {manifest_detect_ms}");
        lab::set_speaker_detect_ms(manifest_detect_ms)?;
    }
    result?;
    if started_lab && !args.keep_lab {
        lab::down()?;
    }
    Ok(())
}

fn measure(args: &Args) -> Result<()> {
    let settings = lab::speaker_timing_line();
    println!(
        "bench failover: {} trials per fault; client ARP probe every {} ms, TCP connect every 10 ms",
        args.trials, args.probe_ms
    );
    println!(
        "detection settings: --detect-ms {} ({settings})",
        lab::detect_ms()
    );
    let mut report = trials(args, lab::Speakers::Herald)?;
    if args.metallb {
        println!(
            "==> MetalLB {} from its own manifest, as pods (lab switch metallb)",
            crate::image::METALLB_VERSION
        );
        lab::switch(lab::Implementation::Metallb)?;
        let metallb = trials(args, lab::Speakers::Metallb);
        println!("==> Herald back from its manifests (lab switch herald)");
        lab::switch(lab::Implementation::Herald)?;
        report.extend(metallb?);
    }
    println!();
    println!(
        "| speakers | fault | trials | ARP p50 | ARP p99 | ARP max | TCP p50 | TCP p99 | target p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &report {
        println!(
            "| {} | {} | {} | {} ms | {} ms | {} ms | {} ms | {} ms | <= 1000 ms: {} |",
            r["speakers"].as_str().unwrap_or("?"),
            r["fault"].as_str().unwrap_or("?"),
            r["trials"],
            show(&r["arp_ms"]["p50"]),
            show(&r["arp_ms"]["p99"]),
            show(&r["arp_ms"]["max"]),
            show(&r["tcp_ms"]["p50"]),
            show(&r["tcp_ms"]["p99"]),
            if r["arp_ms"]["p99"].as_f64().is_some_and(|p| p <= 1000.0) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    for r in report
        .iter()
        .filter(|r| r["speaker_containers_restarted_by_kubelet"].as_u64() > Some(0))
    {
        println!(
            "{} {}: the kubelet restarted {} speaker container(s) during the trials (liveness probe)",
            r["speakers"].as_str().unwrap_or("?"),
            r["fault"].as_str().unwrap_or("?"),
            r["speaker_containers_restarted_by_kubelet"]
        );
    }
    for herald in report.iter().filter(|r| r["speakers"] == "Herald") {
        if let Some(metallb) = report
            .iter()
            .find(|r| r["speakers"] == "MetalLB" && r["fault"] == herald["fault"])
        {
            let ratio = |p: &str| {
                let (h, m) = (herald["arp_ms"][p].as_f64(), metallb["arp_ms"][p].as_f64());
                match (h, m) {
                    (Some(h), Some(m)) if h > 0.0 => format!("{:.1}x", m / h),
                    _ => "-".to_string(),
                }
            };
            println!(
                "{}: MetalLB's ARP failover takes {} Herald's at p50, {} at p99",
                herald["fault"].as_str().unwrap_or("?"),
                ratio("p50"),
                ratio("p99")
            );
        }
    }
    let out = crate::paths::workspace_root().join("target/bench-failover.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "detect_ms": lab::detect_ms(),
            "speaker_timing": settings,
            "probe_ms": args.probe_ms,
            "results": report,
        }))?,
    )?;
    println!("written: {}", out.display());
    Ok(())
}

/// A figure as the table shows it: a number, or a bound such as `> 15000`.
fn show(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

/// `args.trials` trials of each fault against `speakers`, one summary per fault.
fn trials(args: &Args, speakers: lab::Speakers) -> Result<Vec<serde_json::Value>> {
    let mut report = Vec::new();
    for fault in failover::Fault::ALL {
        let restarted_before = kubelet_restarts();
        let mut arp = Vec::new();
        let mut tcp = Vec::new();
        let mut restarts = 0;
        let mut timeouts = 0;
        for i in 0..args.trials {
            print!("  {} #{:<2}", speakers.label(), i + 1);
            match failover::trial(fault, Duration::from_millis(args.probe_ms), speakers) {
                Ok(t) => {
                    failover::print_trial(&t);
                    arp.push(t.arp);
                    if let Some(d) = t.tcp {
                        tcp.push(d);
                    }
                    restarts += usize::from(t.restarted_after_repair);
                }
                // Counted, and taken as slower than every answered trial.
                Err(e) if e.downcast_ref::<failover::NoTakeover>().is_some() => {
                    println!(" {e}");
                    timeouts += 1;
                    arp.push(Duration::MAX);
                }
                Err(e) => return Err(e),
            }
        }
        arp.sort();
        tcp.sort();
        let arp_ms = |d: Duration| {
            if d == Duration::MAX {
                json!(format!("> {}", failover::MAX_WAIT.as_millis()))
            } else {
                json!(ms(d))
            }
        };
        report.push(json!({
            "speakers": speakers.label(),
            "fault": fault.label(),
            "trials": args.trials,
            "no_takeover_within_max_wait": timeouts,
            "arp_ms": {"p50": arp_ms(percentile(&arp, 50.0)), "p99": arp_ms(percentile(&arp, 99.0)), "max": arp_ms(*arp.last().unwrap_or(&Duration::ZERO))},
            "tcp_ms": {"p50": ms(percentile(&tcp, 50.0)), "p99": ms(percentile(&tcp, 99.0)), "max": ms(*tcp.last().unwrap_or(&Duration::ZERO)), "measured": tcp.len()},
            "repairs_needing_restart": restarts,
            "speaker_containers_restarted_by_kubelet": kubelet_restarts().saturating_sub(restarted_before),
        }));
    }
    Ok(report)
}

/// Restarts of the speaker containers so far (a frozen speaker that fails its liveness probe
/// is restarted by the kubelet).
fn kubelet_restarts() -> u64 {
    lab::kubectl(&[
        "-n",
        "metallb-system",
        "get",
        "pods",
        "-l",
        "component=speaker",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ])
    .map_or(0, |out| {
        out.split_whitespace()
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(20));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
