//! `cargo xtask bench dataplane`: ARP and NDP replies/s at saturation, loss and reply
//! latency for Herald's XDP program (driver and skb mode), Herald's userspace AF_PACKET fallback
//! and the Linux kernel answering for the same address, measured in one run on a veth between two
//! namespaces. Prints one table per protocol with ratios to the kernel, a bad-input flood table,
//! and writes the tables and SVG plots (replies/s against offered load) to `target/bench/`.
//!
//! Placement on a 2-core machine: generator, receiver and client-side softirqs on CPU 0; the
//! responder on CPU 1 (RPS for the node's backlog, threaded NAPI pinned for driver-mode XDP, the
//! fallback process pinned with taskset). Paced load comes from our own AF_PACKET sender
//! (`sendmmsg`, qdisc bypassed), the unpaced saturation step and the flood from the kernel's XDP
//! live-frames test run (`live`), which offers several times what any responder here answers;
//! replies to the load are counted and dropped by an XDP program on the client end; one probe per
//! millisecond carries its own source MAC so its reply is timed (kernel receive timestamp minus
//! send time).

mod args;
pub mod attribution;
mod beside;
pub mod cpu;
// frames, measure, stats and svg are also used by `bench vs-metallb` (the same generator and
// reply measurement, run in the lab's client namespace).
mod flood_guard;
mod floodloop;
pub mod frames;
mod generate;
pub mod lab;
pub mod live;
pub mod machine;
pub mod measure;
pub mod net;
mod pacer;
mod probes;
mod programs;
pub mod repeat;
mod reply;
mod report;
mod requests;
mod results;
mod shield;
pub mod stats;
pub mod svg;
mod sys;
mod turns;
mod txstamp;
pub mod windows;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use args::Args;
use flood_guard::FloodGuardOverStep;
use lab::Lab;
use measure::{Engine, StepResult};
use requests::{ipv4, ipv6, traffic};
use results::{Flood, Mode, ModeRun, Proto};

pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench dataplane needs root (network namespaces, XDP, AF_PACKET)");
    }
    // ethtool reads the veth driver's counters (where each step's frames went).
    crate::paths::apt_install(&crate::paths::missing_packages(&[("ethtool", "ethtool")]))?;
    let root = crate::paths::workspace_root();
    if !args.no_build {
        crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
        println!("bench dataplane: cargo build --release -p herald");
        let status = Command::new("cargo")
            .args(["build", "--release", "-q", "-p", "herald"])
            .current_dir(&root)
            .status()
            .context("cargo build --release -p herald")?;
        if !status.success() {
            bail!("cargo build --release -p herald failed: {status}");
        }
    }
    let herald = root.join("target/release/herald");
    if !herald.is_file() {
        bail!("{} not found: drop --no-build", herald.display());
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let step = Duration::from_millis(args.step_ms);

    let lab = Lab::new(herald.clone(), args.flood_limit.clone())?;
    // The side-by-side step's second addresses stay out: a reply for one of them anywhere else
    // is a wrong answer (that step counts none).
    let announced = vec![IpAddr::V4(ipv4(lab::VIP_V4)), IpAddr::V6(ipv6(lab::VIP_V6))];
    let mut engine = Engine::start(&lab.client_ns, &lab.client_if, announced, args.generator)?;
    engine.node = Some((lab.node_ns.clone(), lab.node_if.clone()));
    engine.flood_circle(&lab.flood_ifs.0, &lab.flood_ifs.1)?;
    engine.responder_pids = lab.node_napi()?;
    lab.client_napi()?;
    let _boost = lab::SoftirqBoost::new();
    let idle_latency = machine::IdleLatency::hold();
    let rt_period = if args.kernel_rt_period {
        Err("--kernel-rt-period".to_string())
    } else {
        machine::RtPeriod::shorten()
    };
    let shield = if args.shared_node_cpu {
        Err("--shared-node-cpu".to_string())
    } else {
        shield::Shield::raise(lab::NODE_CPU)
    };
    // What the run held, in the report itself: outputs must say how they were made.
    let holds = format!(
        "Held for the run: {}; {}; {}.",
        match &idle_latency {
            Ok(_) => "CPUs in their shallowest idle state (/dev/cpu_dma_latency = 0)".to_string(),
            Err(why) =>
                format!("CPUs free to idle deeply (wake-up latency in every figure: {why})"),
        },
        match &rt_period {
            Ok(_) => "real-time throttling in 10 ms periods (9.5 ms real-time)".to_string(),
            Err(why) => format!("real-time throttling not changed ({why})"),
        },
        match &shield {
            Ok(s) => format!(
                "the node CPU ({}) kept for the lab: {} of the machine's other threads moved off it ({} the kernel would not move)",
                lab::NODE_CPU,
                s.moved(),
                s.refused
            ),
            Err(why) => format!("the machine's other threads left where they were ({why})"),
        }
    );
    let note = match report::generator_note(engine.live_refused.as_deref()) {
        Some(generator) => format!("{generator}\n{holds}"),
        None => holds,
    };
    println!("{note}");
    let note = Some(note);

    // The generator alone: unpaced ARP requests for an address nobody answers. The node's
    // kernel looks at each on the node CPU; the client CPU does exactly the sending work of the
    // real steps, so this is the most the generator can offer here.
    let unknown = vec![frames::arp_request(
        frames::GENERATOR_MAC,
        ipv4(lab::CLIENT_V4),
        ipv4("198.51.100.99"),
    )];
    let mut all: Vec<Vec<ModeRun>> = Vec::new();
    let mut text = String::new();
    for run_no in 1..=args.runs.max(1) {
        println!("=== run {run_no} of {}", args.runs.max(1));
        let ceiling = engine.ceiling(&unknown, Duration::from_secs(2))?;
        println!(
            "generator ceiling (unanswered requests, unpaced): {}/s",
            svg::si(ceiling.offered)
        );
        let runs = measure_all(&lab, &mut engine, args, step);
        let one = report::report(
            &runs,
            ceiling.offered,
            args,
            &report::machine(),
            note.as_deref(),
        );
        print!("{one}");
        let _ = write!(text, "\n# Run {run_no} of {}\n{one}", args.runs.max(1));
        all.push(runs);
    }
    drop(engine);

    let summary = report::summary(&all, args, note.as_deref());
    print!("{summary}");
    std::fs::write(out_dir.join("dataplane.txt"), format!("{summary}{text}"))
        .context("writing dataplane.txt")?;
    for proto in [Proto::Arp, Proto::Ndp] {
        let series: Vec<svg::Series> = all
            .iter()
            .enumerate()
            .flat_map(|(i, runs)| {
                runs.iter().map(move |r| svg::Series {
                    name: format!("{} (run {})", r.mode.label(), i + 1),
                    color: r.mode.color(),
                    points: r
                        .steps(proto)
                        .iter()
                        .map(|s| (s.offered, s.replies))
                        .collect(),
                })
            })
            .collect();
        let path = out_dir.join(format!("dataplane-{}.svg", proto.file()));
        std::fs::write(
            &path,
            svg::line_chart(
                &format!("{}: replies/s vs offered load", proto.title()),
                &series,
            ),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    println!("tables: {}", out_dir.join("dataplane.txt").display());
    Ok(())
}

/// Every responder of `args.modes` once; a responder that fails is recorded with why.
fn measure_all(lab: &Lab, engine: &mut Engine, args: &Args, step: Duration) -> Vec<ModeRun> {
    let mut runs = Vec::new();
    for &mode in &args.modes {
        println!("== {}", mode.label());
        let times = StepTimes {
            step,
            tail: Duration::from_millis(args.tail_ms).max(step),
            beside: Duration::from_millis(args.beside_ms).max(step),
            flood: Duration::from_millis(args.flood_ms),
            flood_rate: (args.flood_rate > 0).then_some(args.flood_rate),
            turns: turns::Turns {
                pairs: args.turn_pairs,
                time: Duration::from_millis(args.turn_ms),
                warm_rate: args.rates.first().copied().unwrap_or(25_000),
            },
        };
        let run = measure_mode(lab, engine, mode, &args.rates, &times);
        match run {
            Ok(r) => runs.push(r),
            Err(e) => {
                println!("   failed: {e:#}");
                runs.push(ModeRun {
                    mode,
                    skipped: Some(format!("failed: {e:#}")),
                    arp: vec![],
                    ndp: vec![],
                    flood: None,
                    beside: vec![],
                    turns: vec![],
                });
            }
        }
    }
    runs
}

/// A responder started for one mode, stopped on drop.
enum Responder<'a> {
    /// Lab, node NAPI threads.
    Xdp(&'a Lab, Vec<u32>),
    /// Lab, node NAPI threads.
    Kernel(&'a Lab, Vec<u32>),
    /// Fallback process, node NAPI threads.
    Userspace(Child, Vec<u32>),
}

impl Responder<'_> {
    fn pid(&self) -> Option<u32> {
        match self {
            Responder::Userspace(c, _) => Some(c.id()),
            _ => None,
        }
    }
    /// Threads whose CPU time is the responder's, beyond softirq time on the node CPU.
    fn threads(&self) -> Vec<u32> {
        match self {
            Responder::Xdp(_, napi) | Responder::Kernel(_, napi) => napi.clone(),
            Responder::Userspace(c, napi) => napi.iter().copied().chain([c.id()]).collect(),
        }
    }
}

impl Drop for Responder<'_> {
    fn drop(&mut self) {
        match self {
            Responder::Xdp(lab, _) => {
                if let Err(e) = lab.stop_xdp() {
                    println!("   detach: {e:#}");
                }
            }
            Responder::Kernel(lab, _) => {
                let _ = lab.stop_kernel();
            }
            Responder::Userspace(child, _) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn start_responder(lab: &Lab, mode: Mode) -> Result<std::result::Result<Responder<'_>, String>> {
    Ok(Ok(match mode {
        Mode::Driver => Responder::Xdp(lab, lab.start_xdp("driver")?),
        Mode::Skb => Responder::Xdp(lab, lab.start_xdp("skb")?),
        Mode::Kernel => {
            lab.start_kernel()?;
            Responder::Kernel(lab, lab.node_napi()?)
        }
        Mode::Userspace => {
            if !lab::has_userspace_fallback(&lab.herald) {
                return Ok(Err(
                    "not available yet (`herald xdp run` has no --dataplane)".into(),
                ));
            }
            let child = lab.start_userspace()?;
            Responder::Userspace(child, lab.node_napi()?)
        }
    }))
}

/// How long each kind of step runs (and the flood's rate).
struct StepTimes {
    step: Duration,
    /// The lowest paced rate: its p99 is the headline tail, so it runs longer for more probes.
    tail: Duration,
    /// The side-by-side step, per protocol.
    beside: Duration,
    flood: Duration,
    /// Junk frames/s of the flood (`None`: as fast as the generator goes).
    flood_rate: Option<u64>,
    /// The XDP modes' saturation turns beside the kernel.
    turns: turns::Turns,
}

fn measure_mode(
    lab: &Lab,
    engine: &mut Engine,
    mode: Mode,
    rates: &[u64],
    times: &StepTimes,
) -> Result<ModeRun> {
    let mut run = ModeRun {
        mode,
        skipped: None,
        arp: vec![],
        ndp: vec![],
        flood: None,
        beside: vec![],
        turns: vec![],
    };
    let responder = match start_responder(lab, mode)? {
        Ok(r) => r,
        Err(why) => {
            println!("   {why}");
            run.skipped = Some(why);
            return Ok(run);
        }
    };
    engine.responder_pids = responder.threads();
    for proto in [Proto::Arp, Proto::Ndp] {
        let t = traffic(proto);
        if !engine.wait_answered(&t.probes[0], Duration::from_secs(10))? {
            bail!("{} never answered a {} probe", mode.label(), proto.file());
        }
        engine.warm_up(&t.load, &t.probes, rates.first().copied().unwrap_or(25_000))?;
        let mut results = Vec::new();
        for (i, rate) in rates.iter().map(|&r| Some(r)).chain([None]).enumerate() {
            let time = if i == 0 && rate.is_some() {
                times.tail
            } else {
                times.step
            };
            let r = engine.step(&t.load, &t.probes, rate, time)?;
            println!(
                "   {} {:>6}: offered {:>6}/s replies {:>6}/s loss {:5.1}% p50 {} p99 {} responder CPU {:3.0}%",
                proto.file(),
                rate.map_or("max".to_string(), |r| svg::si(r as f64)),
                svg::si(r.offered),
                svg::si(r.replies),
                100.0 * r.loss(),
                stats::us(r.p50_us()),
                stats::us(r.p99_us()),
                r.responder_cpu
            );
            println!("          {}", r.path_text());
            println!("          probe time split: {}", r.split_text());
            if let Some(w) = windows::text(&r.windows, svg::si) {
                println!("          {w}");
            }
            if rate.is_none() {
                print_speed(&r);
            }
            for why in r.shortfalls() {
                println!("          NOT AS ASKED: {why}");
            }
            results.push(r);
        }
        match proto {
            Proto::Arp => run.arp = results,
            Proto::Ndp => run.ndp = results,
        }
    }
    if matches!(mode, Mode::Driver | Mode::Skb) {
        // Failed turns are said and left out; the series above stand. If the node could not be
        // put back (Herald alone answering), the rest of the mode is not measured.
        let turns =
            (times.turns.pairs > 0).then(|| turns::measure(lab, engine, mode, &times.turns));
        match turns {
            None => {}
            Some(Ok(Ok(t))) => run.turns = t,
            Some(Ok(Err(e))) => println!("   saturation in turns: {e:#}"),
            Some(Err(e)) => {
                println!(
                    "   saturation in turns left the node otherwise than the mode needs ({e:#}): no side-by-side step or flood for this mode"
                );
                engine.responder_pids.clear();
                return Ok(run);
            }
        }
        let rate = rates.first().copied().unwrap_or(25_000);
        // A failed side-by-side step is said and left out; the series above stand.
        match beside::measure(lab, engine, rate, times.beside) {
            Ok(b) => run.beside = b,
            Err(e) => println!("   side by side: {e:#}"),
        }
        for b in &run.beside {
            println!("   {} {}", b.proto.file(), b.text());
        }
    }
    run.flood = Some(flood(lab, engine, mode, responder.pid(), times)?);
    engine.responder_pids.clear();
    drop(responder);
    Ok(run)
}

/// Malformed and non-announced ARP/NDP, every kind in turn, at the flood rate, with valid ARP
/// probes still flowing: nothing but the probes may be answered; reports CPU, how long a
/// control-plane call takes and, for Herald's program, its flood guard as its maps hold it.
fn flood(
    lab: &Lab,
    engine: &mut Engine,
    mode: Mode,
    pid: Option<u32>,
    times: &StepTimes,
) -> Result<Flood> {
    let time = times.flood;
    let bad = frames::bad_input(
        ipv4(lab::CLIENT_V4),
        ipv4(lab::VIP_V4),
        ipv6(lab::CLIENT_V6),
        ipv6(lab::VIP_V6),
    );
    let probes = traffic(Proto::Arp).probes;
    // The flood guard is Herald's program's: the fallback process and the kernel have none.
    let flood_guard_side = match mode {
        Mode::Driver | Mode::Skb => mode.list_side(),
        Mode::Userspace | Mode::Kernel => None,
    };
    let flood_guard_before = flood_guard_side.map(|side| flood_guard::read(lab, side));
    let ticks_before = pid.and_then(cpu::process_ticks);
    let started = Instant::now();
    let (step, list_time) = std::thread::scope(|s| {
        let lister = s.spawn(|| {
            std::thread::sleep(time / 3);
            let side = mode.list_side()?;
            (0..3).filter_map(|_| lab.time_list(side)).max()
        });
        let step = engine.flood(&bad, &probes, times.flood_rate, time);
        (step, lister.join().ok().flatten())
    });
    let step = step?;
    let wall = started.elapsed().as_secs_f64();
    let responder_cpu_pct = match (ticks_before, pid.and_then(cpu::process_ticks)) {
        (Some(a), Some(b)) => Some(100.0 * (b - a) as f64 / cpu::ticks_per_second() as f64 / wall),
        _ => None,
    };
    let flood_guard = flood_guard_side
        .zip(flood_guard_before)
        .map(|(side, before)| FloodGuardOverStep::of(before, flood_guard::read(lab, side)));
    println!(
        "   bad-input flood: offered {}/s, wrong answers {}, probes answered {}/{} ({} refused at the node's full ring: {}/{} of those that reached it), responder CPU {:.0}%",
        svg::si(step.offered),
        step.to_generator + step.wrong_address,
        step.probes_answered(),
        step.probes_sent,
        step.probes_refused,
        step.probes_answered(),
        step.probes_reached(),
        step.responder_cpu
    );
    println!("          {}", step.path_text());
    if let Some(flood_guard) = &flood_guard {
        println!(
            "          Herald's flood guard (its map): {}",
            flood_guard.text()
        );
    }
    print_speed(&step);
    if times.flood_rate.is_some() {
        println!(
            "          generator: {} runs held back by its pacer (early for the rate asked)",
            step.held
        );
    }
    for why in step.shortfalls() {
        println!("          NOT AS ASKED: {why}");
    }
    Ok(Flood {
        step,
        responder_cpu_pct,
        list_time,
        guard: flood_guard,
    })
}

/// The machine's speed probes around a step.
fn print_speed(step: &StepResult) {
    println!(
        "          machine speed (fixed work on the node CPU, before / after): {}",
        step.speed_text()
    );
}
