//! `cargo xtask bench vs-metallb`: Herald against MetalLB v0.15.2 in one run, on the
//! same lab — same control plane, real nodes (kubelet, containerd), objects (the lab's pool,
//! L2Advertisement and Service `default/web`) and machine — both as pods, one after the other:
//!
//! 1. Herald as installed from `manifests/` (XDP mode `auto`: skb on the nodes' veths);
//! 2. MetalLB from its own `metallb-native.yaml` applied over Herald's install (`lab switch
//!    metallb`: a rolling update of the same DaemonSet and Deployment, images built here;
//!    Herald's XDP detached once its speakers are gone);
//! 3. Herald's manifests applied back (or the lab taken down if this command made it).
//!
//! For each: ARP and NDP replies/s at saturation and reply latency (`replies.rs`, with `bench
//! dataplane`'s generator) twice — from the client on the lab segment (every node sees each
//! request) and on the direct link to the announcing node (`direct.rs`; Herald there in skb mode
//! as the manifests run it, then rolled out with `--xdp-mode=driver`) — failover time over
//! repeated freezes (SIGSTOP) of the announcing speaker (`lab::failover::trial`, the client's
//! view), and the time to give N Services their IPs (`services.rs`). One table with ratios and
//! the targets, written to `target/bench/vs-metallb.txt`, with plots of replies/s against offered
//! load.

mod direct;
mod ladders;
mod replies;
mod report;
mod requests;
mod services;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::dataplane::svg;
use crate::image::METALLB_VERSION;
use crate::lab::{self, Implementation, Speakers, failover};
use ladders::{Ladder, Run, wait_answered};
use report::{Failover, Figure, Figures};
use requests::Proto;

#[derive(clap::Args)]
pub struct Args {
    /// Speaker-freeze trials per implementation (at least 20 for a p99).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Services created per implementation.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Service create requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Offered rates (requests/s) of the paced steps; an unpaced step follows them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5000,10000,20000,50000,100000,200000,400000,800000"
    )]
    pub rates: Vec<u64>,
    /// Length of each rate step in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// Back-to-back runs of every replies series; the table shows the median run and the
    /// spread of all runs.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Client ARP probe interval during failover trials (ms).
    #[arg(long, default_value_t = 10)]
    pub probe_ms: u64,
    /// Only these parts (replies, failover, services).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "replies,failover,services"
    )]
    pub parts: Vec<Part>,
    /// Leave a lab this command started running (with Herald).
    #[arg(long)]
    pub keep_lab: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Replies,
    Failover,
    Services,
}

pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench vs-metallb needs root (the lab: namespaces, XDP, AF_PACKET)");
    }
    let started = Instant::now();
    // ethtool reads the direct link's node-end counters (where each step's frames went).
    crate::paths::apt_install(&crate::paths::missing_packages(&[("ethtool", "ethtool")]))?;
    // Build MetalLB's images first: a failure here should not leave a half-switched lab.
    crate::image::metallb()?;
    let started_lab = lab::up_unless_running()?;
    if !started_lab {
        println!("==> using the running lab (left running afterwards)");
    }
    // An interrupted run may have left MetalLB or a patched DaemonSet: Herald as installed.
    lab::switch(Implementation::Herald)?;
    // Halted vCPUs wake the NAPI threads late and the generator overruns the veth rings: the
    // same hold as `bench dataplane`, for both implementations alike.
    let idle_latency = crate::bench::dataplane::machine::IdleLatency::hold();
    let idle_note = match &idle_latency {
        Ok(_) => "CPUs held in their shallowest idle state for the whole run (/dev/cpu_dma_latency = 0), for both implementations".to_string(),
        Err(why) => format!("CPUs may idle deeply (wake-up latency in every figure): {why}"),
    };
    println!("{idle_note}");
    let (vip4, vip6) = demo_ips()?;
    println!("bench vs-metallb: demo Service default/web = {vip4}, {vip6}");
    let neighbours = replies::Neighbours::add()?;

    println!(
        "\n=== Herald (speakers as pods from manifests/: {})",
        lab::speaker_timing_line()
    );
    let herald = measure(Speakers::Herald, args, vip4, vip6);

    println!("\n=== switching: MetalLB from its own manifest over Herald's (lab switch metallb)");
    let switched = switch_to_metallb(vip4);
    let metallb_run = match &switched {
        Ok(()) => {
            println!("\n=== MetalLB {METALLB_VERSION} (controller + 3 speakers, memberlist)");
            measure(Speakers::Metallb, args, vip4, vip6)
        }
        Err(e) => {
            println!("   switch failed: {e:#}");
            Run::new(Figures::skipped(&format!("MetalLB did not start: {e:#}")))
        }
    };
    if let Ok(()) = &switched {
        print_metallb_log_excerpt();
    }

    println!("\n=== Herald back from its manifests (lab switch herald)");
    drop(neighbours);
    let restored = lab::switch(Implementation::Herald)
        .and_then(|()| wait_answered(vip4, "Herald to answer ARP for it again"));
    if let Err(e) = &restored {
        println!("   restoring Herald failed: {e:#}");
    }
    if args.parts.contains(&Part::Services)
        && let Err(e) = services::remove_pool()
    {
        println!("   removing the bench pool failed: {e:#}");
    }

    let text = render(args, &herald, &metallb_run, &idle_note, started.elapsed());
    drop(idle_latency);
    println!("\n{text}");
    let out_dir = crate::paths::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("vs-metallb.txt"), &text).context("writing vs-metallb.txt")?;
    for proto in [Proto::Arp, Proto::Ndp] {
        let series: Vec<svg::Series> = herald
            .plots
            .iter()
            .chain(&metallb_run.plots)
            .filter(|(p, _, _, points)| *p == proto && !points.is_empty())
            .map(|(_, name, color, points)| svg::Series {
                name: name.clone(),
                color,
                points: points.clone(),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let name = format!("vs-metallb-{}.svg", proto.name().to_lowercase());
        std::fs::write(
            out_dir.join(&name),
            svg::line_chart(
                &format!(
                    "{} replies/s vs offered load, lab: segment (bridge, 3 nodes) and direct link",
                    proto.name()
                ),
                &series,
            ),
        )?;
        println!("plot: {}", out_dir.join(name).display());
    }
    println!("written: {}", out_dir.join("vs-metallb.txt").display());
    restored?;
    if started_lab && !args.keep_lab {
        lab::down()?;
    }
    Ok(())
}

fn demo_ips() -> Result<(Ipv4Addr, Ipv6Addr)> {
    let (ns, name) = lab::DEMO_SERVICE;
    let ips = lab::service_ips(ns, name);
    let v4 = ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let v6 = ips.iter().find_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    });
    match (v4, v6) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("Service {ns}/{name} lacks an IPv4 or IPv6 address: is the lab up?"),
    }
}

/// Rolls the nodes over to MetalLB (Herald's XDP detached once its speakers are gone) and waits
/// until one node answers for the demo IPv4 address.
fn switch_to_metallb(vip4: Ipv4Addr) -> Result<()> {
    let t = Instant::now();
    lab::switch(Implementation::Metallb)?;
    wait_answered(vip4, "MetalLB to answer ARP for it")?;
    println!(
        "   MetalLB answers for {vip4} {:.1} s after the switch began",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn measure(speakers: Speakers, args: &Args, vip4: Ipv4Addr, vip6: Ipv6Addr) -> Run {
    let mut run = Run::new(Figures::skipped("not selected (--parts)"));
    if let Ok(mac) = failover::stable_answer(vip4, 5) {
        let macs = lab::status::node_macs();
        run.notes.push(format!(
            "{}: {vip4} answered by {} before the measurements",
            speakers.label(),
            lab::status::node_of_mac(&macs, &lab::probe::format_mac(&mac))
        ));
    }
    if args.parts.contains(&Part::Replies) {
        let ladder = Ladder {
            rates: &args.rates,
            step: Duration::from_millis(args.step_ms),
            runs: args.runs,
        };
        ladders::measure(speakers, &ladder, vip4, vip6, &mut run);
    }
    if args.parts.contains(&Part::Failover) {
        println!(
            "-- failover: {} trials of the announcing speaker frozen (SIGSTOP); client ARP probe every {} ms",
            args.trials, args.probe_ms
        );
        run.figures.failover = failover_trials(speakers, args);
        if speakers == Speakers::Herald {
            run.notes.push(format!(
                "Herald detection settings: {}",
                lab::speaker_timing_line()
            ));
        }
    }
    if speakers == Speakers::Herald {
        // The XDP counters after the floods: `silenced` > 0 means the guard stopped answers
        // (a speaker's heartbeat came late).
        for node in lab::NODES {
            if let Some(line) = xdp_counters(&node) {
                run.notes
                    .push(format!("Herald XDP on {} after the run: {line}", node.name));
            }
        }
    }
    if args.parts.contains(&Part::Services) {
        println!(
            "-- {} Services (concurrency {}):",
            args.services, args.concurrency
        );
        run.figures.services = services::measure(args.services, args.concurrency).map_err(|e| {
            println!("   failed: {e:#}");
            format!("{e:#}")
        });
    }
    run
}

/// The counters line of `herald xdp list` on `node`'s pins (run inside its namespace).
fn xdp_counters(node: &lab::NodeSpec) -> Option<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.netns))
        .arg(lab::herald_exe())
        .args(["xdp", "list", "--pin-dir"])
        .arg(lab::nodes::pin_dir_in_node(node)?)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("counters: ").map(str::to_string))
}

fn failover_trials(speakers: Speakers, args: &Args) -> Figure<Failover> {
    let mut times = Vec::new();
    for i in 0..args.trials {
        match failover::trial(
            failover::Fault::SpeakerFreeze,
            Duration::from_millis(args.probe_ms),
            speakers,
        ) {
            Ok(t) => {
                print!("  #{:<2}", i + 1);
                failover::print_trial(&t);
                times.push(t.arp.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                println!("  #{:<2} failed: {e:#}", i + 1);
                return Err(format!("trial {} of {} failed: {e:#}", i + 1, args.trials));
            }
        }
    }
    Ok(Failover {
        trials: times.len(),
        p50_ms: report::percentile(&times, 50.0).unwrap_or(f64::NAN),
        p99_ms: report::percentile(&times, 99.0).unwrap_or(f64::NAN),
        max_ms: times.iter().copied().fold(f64::NAN, f64::max),
    })
}

/// Warnings and errors MetalLB's speaker pods logged (first lines), for the record.
fn print_metallb_log_excerpt() {
    let Ok(log) = lab::kubectl(&[
        "-n",
        "metallb-system",
        "logs",
        "-l",
        "component=speaker",
        "--prefix",
        "--tail=-1",
    ]) else {
        return;
    };
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"error\"") || l.contains("\"level\":\"warn\""))
        .take(6)
        .collect();
    if !bad.is_empty() {
        println!("   MetalLB speaker pods' log (warnings/errors, first 6):");
        for l in bad {
            println!("     {}", l.chars().take(300).collect::<String>());
        }
    }
}

fn render(args: &Args, herald: &Run, metallb_run: &Run, idle_note: &str, took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# cargo xtask bench vs-metallb — Herald vs MetalLB {METALLB_VERSION} as pods on the lab's real nodes, one invocation"
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs, kernel {}; run took {:.0} s; load average now {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        took.as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "settings: rates {:?}/s + unpaced, {} ms per step, every replies series {} time(s) back to back (median run shown); {} failover trials (speaker frozen), probe every {} ms; {} Services, {} creates in flight",
        args.rates,
        args.step_ms,
        args.runs.max(1),
        args.trials,
        args.probe_ms,
        args.services,
        args.concurrency
    );
    let _ = writeln!(
        out,
        "Herald: installed from manifests/ (speaker DaemonSet, controller Deployment, their service accounts; XDP mode auto = skb on the nodes' veths; for the driver-mode direct series rolled out with --xdp-mode=driver)"
    );
    let _ = writeln!(
        out,
        "paths: segment = generator in {} behind the lab bridge (every node and the host leg get each request; RPS of the receivers on CPU 1); direct link = generator in {} on a veth to the announcer's {} (node-end NAPI thread on CPU 1, client end's and the generator on CPU 0, NAPI threads at nice -20, not SCHED_FIFO as bench dataplane runs them: the speakers must not starve; MetalLB's announcing speaker pinned to CPU 1 at nice -20)",
        lab::CLIENT_NS,
        lab::DIRECT_NS,
        lab::DIRECT_IF
    );
    let _ = writeln!(
        out,
        "MetalLB: its own metallb-native.yaml applied over Herald's install (Namespace, CRDs and webhook configuration left out, controller --webhook-mode=disabled), images built here from its module; memberlist as its manifest sets it up"
    );
    let _ = writeln!(out, "{idle_note}");
    for note in herald.notes.iter().chain(&metallb_run.notes) {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(out);
    out.push_str(&report::table(&herald.figures, &metallb_run.figures));
    out
}
