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

pub mod cpu;
// frames, measure, stats and svg are also used by `bench vs-metallb` (the same generator and
// reply measurement, run in the lab's client namespace).
pub mod frames;
pub mod lab;
pub mod live;
pub mod measure;
pub mod net;
pub mod stats;
pub mod svg;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use lab::Lab;
use measure::{Engine, StepResult};

#[derive(clap::Args)]
pub struct Args {
    /// Offered rates (requests/s) of the paced steps; an unpaced step follows them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,100000,200000,400000,800000,1600000"
    )]
    pub rates: Vec<u64>,
    /// Length of each step in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub step_ms: u64,
    /// Length of the bad-input flood per responder in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub flood_ms: u64,
    /// Responders to measure (driver, skb, userspace, kernel).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "driver,skb,userspace,kernel"
    )]
    pub modes: Vec<Mode>,
    /// Load generator: AF_PACKET for paced steps and the kernel's XDP live frames for unpaced
    /// ones (mixed, the default), or one of them for every step.
    #[arg(long, value_enum, default_value_t = measure::Generator::Mixed)]
    pub generator: measure::Generator,
    /// Use the existing target/release/herald instead of building it first.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Driver,
    Skb,
    Userspace,
    Kernel,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Driver => "Herald XDP, driver mode",
            Mode::Skb => "Herald XDP, skb mode",
            Mode::Userspace => "Herald userspace fallback",
            Mode::Kernel => "Linux kernel (address on iface)",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Mode::Driver => "#d62728",
            Mode::Skb => "#ff7f0e",
            Mode::Userspace => "#2ca02c",
            Mode::Kernel => "#1f77b4",
        }
    }
    /// Pin directory side whose `herald xdp list` the flood's control-loop check times.
    fn list_side(self) -> Option<&'static str> {
        match self {
            Mode::Driver | Mode::Skb => Some("node"),
            Mode::Userspace => Some("userspace"),
            Mode::Kernel => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Arp,
    Ndp,
}

impl Proto {
    fn title(self) -> String {
        match self {
            Proto::Arp => format!("ARP (who-has {})", lab::VIP_V4),
            Proto::Ndp => format!("NDP (NS for {} → NA)", lab::VIP_V6),
        }
    }
    fn file(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Ndp => "ndp",
        }
    }
}

/// Load frame and the 64 tagged probes for one protocol.
struct Traffic {
    load: Vec<Vec<u8>>,
    probes: Vec<Vec<u8>>,
}

fn traffic(proto: Proto) -> Traffic {
    let (c4, p4, v4) = (ipv4(lab::CLIENT_V4), ipv4(lab::PROBE_V4), ipv4(lab::VIP_V4));
    let (c6, v6) = (ipv6(lab::CLIENT_V6), ipv6(lab::VIP_V6));
    let tags = 0..frames::PROBE_TAGS as u8;
    match proto {
        Proto::Arp => Traffic {
            load: vec![frames::arp_request(frames::GENERATOR_MAC, c4, v4)],
            probes: tags
                .map(|t| frames::arp_request(frames::probe_mac(t), p4, v4))
                .collect(),
        },
        Proto::Ndp => Traffic {
            load: vec![frames::neighbor_solicitation(frames::GENERATOR_MAC, c6, v6)],
            probes: tags
                .map(|t| {
                    frames::neighbor_solicitation(frames::probe_mac(t), frames::probe_ipv6(t), v6)
                })
                .collect(),
        },
    }
}

fn ipv4(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}
fn ipv6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or(Ipv6Addr::UNSPECIFIED)
}

/// Bad-input flood figures for one responder.
struct Flood {
    step: StepResult,
    responder_cpu_pct: Option<f64>,
    list_time: Option<Duration>,
}

struct ModeRun {
    mode: Mode,
    /// Why the responder was not measured.
    skipped: Option<String>,
    arp: Vec<StepResult>,
    ndp: Vec<StepResult>,
    flood: Option<Flood>,
}

impl ModeRun {
    fn steps(&self, proto: Proto) -> &[StepResult] {
        match proto {
            Proto::Arp => &self.arp,
            Proto::Ndp => &self.ndp,
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench dataplane needs root (network namespaces, XDP, AF_PACKET)");
    }
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

    let lab = Lab::new(herald.clone())?;
    let announced = vec![IpAddr::V4(ipv4(lab::VIP_V4)), IpAddr::V6(ipv6(lab::VIP_V6))];
    let mut engine = Engine::start(&lab.client_ns, &lab.client_if, announced, args.generator)?;
    engine.responder_pids = lab.node_napi()?;
    lab.client_napi()?;

    let _boost = lab::SoftirqBoost::new();

    // The generator alone: unpaced ARP requests for an address nobody answers. The node's
    // kernel looks at each on the node CPU; the client CPU does exactly the sending work of the
    // real steps, so this is the most the generator can offer here.
    let unknown = vec![frames::arp_request(
        frames::GENERATOR_MAC,
        ipv4(lab::CLIENT_V4),
        ipv4("198.51.100.99"),
    )];
    let ceiling = engine.step(&unknown, &[], None, Duration::from_secs(2))?;
    println!(
        "generator ceiling (unanswered requests, unpaced): {}/s",
        svg::si(ceiling.offered)
    );

    let mut runs = Vec::new();
    for &mode in &args.modes {
        println!("== {}", mode.label());
        let run = measure_mode(
            &lab,
            &mut engine,
            mode,
            &args.rates,
            step,
            Duration::from_millis(args.flood_ms),
        );
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
                });
            }
        }
    }
    drop(engine);

    let report = report(&runs, ceiling.offered, args, &machine());
    print!("{report}");
    std::fs::write(out_dir.join("dataplane.txt"), &report).context("writing dataplane.txt")?;
    for proto in [Proto::Arp, Proto::Ndp] {
        let series: Vec<svg::Series> = runs
            .iter()
            .map(|r| svg::Series {
                name: r.mode.label().to_string(),
                color: r.mode.color(),
                points: r
                    .steps(proto)
                    .iter()
                    .map(|s| (s.offered, s.replies))
                    .collect(),
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

fn measure_mode(
    lab: &Lab,
    engine: &mut Engine,
    mode: Mode,
    rates: &[u64],
    step: Duration,
    flood_time: Duration,
) -> Result<ModeRun> {
    let mut run = ModeRun {
        mode,
        skipped: None,
        arp: vec![],
        ndp: vec![],
        flood: None,
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
        // Warm-up (neighbour entries for every probe source, caches): not reported.
        engine.step(
            &t.load,
            &t.probes,
            Some(rates.first().copied().unwrap_or(10_000)),
            Duration::from_millis(300),
        )?;
        let mut results = Vec::new();
        for rate in rates.iter().map(|&r| Some(r)).chain([None]) {
            let r = engine.step(&t.load, &t.probes, rate, step)?;
            println!(
                "   {} {:>6}: offered {:>6}/s replies {:>6}/s loss {:5.1}% p50 {} p99 {} responder CPU {:3.0}%",
                proto.file(),
                rate.map_or("max".to_string(), |r| svg::si(r as f64)),
                svg::si(r.offered),
                svg::si(r.replies),
                100.0 * r.loss(),
                us(r.p50_us()),
                us(r.p99_us()),
                r.responder_cpu
            );
            results.push(r);
        }
        match proto {
            Proto::Arp => run.arp = results,
            Proto::Ndp => run.ndp = results,
        }
    }
    run.flood = Some(flood(lab, engine, mode, responder.pid(), flood_time)?);
    engine.responder_pids.clear();
    drop(responder);
    Ok(run)
}

/// Unpaced malformed and non-announced ARP/NDP, with valid ARP probes still flowing: nothing
/// but the probes may be answered; reports CPU and how long a control-plane call takes.
fn flood(
    lab: &Lab,
    engine: &mut Engine,
    mode: Mode,
    pid: Option<u32>,
    time: Duration,
) -> Result<Flood> {
    let bad = frames::bad_input(
        ipv4(lab::CLIENT_V4),
        ipv4(lab::VIP_V4),
        ipv6(lab::CLIENT_V6),
        ipv6(lab::VIP_V6),
    );
    let probes = traffic(Proto::Arp).probes;
    let ticks_before = pid.and_then(cpu::process_ticks);
    let started = Instant::now();
    let (step, list_time) = std::thread::scope(|s| {
        let lister = s.spawn(|| {
            std::thread::sleep(time / 3);
            let side = mode.list_side()?;
            (0..3).filter_map(|_| lab.time_list(side)).max()
        });
        let step = engine.step(&bad, &probes, None, time);
        (step, lister.join().ok().flatten())
    });
    let step = step?;
    let wall = started.elapsed().as_secs_f64();
    let responder_cpu_pct = match (ticks_before, pid.and_then(cpu::process_ticks)) {
        (Some(a), Some(b)) => Some(100.0 * (b - a) as f64 / cpu::ticks_per_second() as f64 / wall),
        _ => None,
    };
    println!(
        "   bad-input flood: offered {}/s, wrong answers {}, probes answered {}/{}, responder CPU {:.0}%",
        svg::si(step.offered),
        step.to_generator + step.wrong_address,
        step.probes_answered(),
        step.probes_sent,
        step.responder_cpu
    );
    Ok(Flood {
        step,
        responder_cpu_pct,
        list_time,
    })
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.0}µs"))
}

fn ratio_text(a: f64, b: f64) -> String {
    stats::ratio(a, b).map_or("-".to_string(), |r| format!("{r:.2}×"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cores} × {cpu}, Linux {}", kernel.trim())
}

/// The highest paced rate every measured responder kept up with (offered ≥ 95% of the target,
/// loss < 1%): latencies there compare like with like.
fn common_rate(runs: &[ModeRun], proto: Proto) -> Option<u64> {
    let measured: Vec<&ModeRun> = runs.iter().filter(|r| r.skipped.is_none()).collect();
    let first = measured.first()?;
    first
        .steps(proto)
        .iter()
        .filter_map(|st| st.target)
        .filter(|&rate| {
            measured.iter().all(|r| {
                r.steps(proto).iter().any(|st| {
                    st.target == Some(rate) && st.offered >= 0.95 * rate as f64 && st.loss() < 0.01
                })
            })
        })
        .max()
}

/// The saturation step of a run: most replies/s.
fn saturation(steps: &[StepResult]) -> Option<&StepResult> {
    stats::saturation_index(&steps.iter().map(|s| s.replies).collect::<Vec<_>>()).map(|i| &steps[i])
}

fn report(runs: &[ModeRun], ceiling: f64, args: &Args, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n# cargo xtask bench dataplane — {machine}");
    let _ = writeln!(
        s,
        "veth between two namespaces; generator + receiver on CPU {}, responder on CPU {}; {} ms per step; \
         generator ceiling {}/s (unpaced requests nobody answers). NAPI threads run SCHED_FIFO; bench threads, ksoftirqd and \
         the fallback process run at nice -20 (the machine is shared with builds); responder CPU = node-CPU \
         softirq time + the responder's own threads, in % of one core.",
        lab::CLIENT_CPU,
        lab::NODE_CPU,
        args.step_ms,
        svg::si(ceiling)
    );
    let _ = writeln!(
        s,
        "Replies to the load are counted (and dropped) by a small XDP program on the client end, \
         attached in every mode; probe replies pass to a timestamping AF_PACKET ring. That program \
         is also what a veth needs on its peer for driver-mode XDP_TX to be delivered."
    );
    let kernel = runs
        .iter()
        .find(|r| r.mode == Mode::Kernel && r.skipped.is_none());
    for proto in [Proto::Arp, Proto::Ndp] {
        let _ = writeln!(s, "\n## {}\n", proto.title());
        let k_sat = kernel.and_then(|k| saturation(k.steps(proto)));
        let common = common_rate(runs, proto);
        let _ = writeln!(
            s,
            "| responder | replies/s at saturation | offered there | loss there | p50 | p99 | responder CPU | CPU µs/reply | replies ×kernel | CPU/reply ×kernel | p99 ×kernel | p50 / p99 at {} | p50 / p99 at {} (all kept up) |",
            args.rates
                .first()
                .map_or("-".into(), |r| format!("{}/s", svg::si(*r as f64))),
            common.map_or("-".into(), |r| format!("{}/s", svg::si(r as f64)))
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in runs {
            if let Some(why) = &r.skipped {
                let _ = writeln!(s, "| {} | {why} | | | | | | | | | | | |", r.mode.label());
                continue;
            }
            let steps = r.steps(proto);
            let Some(sat) = saturation(steps) else {
                continue;
            };
            // Saturated only if requests went unanswered; otherwise the generator was the limit.
            let bound = if sat.target.is_none() && sat.loss() < 0.01 {
                "≥ "
            } else {
                ""
            };
            let low = steps.first();
            let at_common = common.and_then(|c| steps.iter().find(|st| st.target == Some(c)));
            let _ = writeln!(
                s,
                "| {} | {bound}{} | {} | {:.1}% | {} | {} | {:.0}% | {} | {} | {} | {} | {} / {} | {} / {} |",
                r.mode.label(),
                svg::si(sat.replies),
                svg::si(sat.offered),
                100.0 * sat.loss(),
                us(sat.p50_us()),
                us(sat.p99_us()),
                sat.responder_cpu,
                sat.cpu_us_per_reply()
                    .map_or("-".into(), |c| format!("{c:.2}")),
                k_sat.map_or("-".into(), |k| ratio_text(sat.replies, k.replies)),
                match (
                    sat.cpu_us_per_reply(),
                    k_sat.and_then(measure::StepResult::cpu_us_per_reply)
                ) {
                    (Some(a), Some(b)) => ratio_text(a, b),
                    _ => "-".into(),
                },
                match (sat.p99_us(), k_sat.and_then(measure::StepResult::p99_us)) {
                    (Some(a), Some(b)) => ratio_text(a, b),
                    _ => "-".into(),
                },
                us(low.and_then(measure::StepResult::p50_us)),
                us(low.and_then(measure::StepResult::p99_us)),
                us(at_common.and_then(measure::StepResult::p50_us)),
                us(at_common.and_then(measure::StepResult::p99_us)),
            );
        }
        let driver = runs
            .iter()
            .find(|r| r.mode == Mode::Driver && r.skipped.is_none())
            .and_then(|r| saturation(r.steps(proto)));
        let fallback = runs
            .iter()
            .find(|r| r.mode == Mode::Userspace && r.skipped.is_none())
            .and_then(|r| saturation(r.steps(proto)));
        let _ = writeln!(
            s,
            "\nXDP driver vs userspace fallback: {}",
            match (driver, fallback) {
                (Some(d), Some(f)) => format!(
                    "{} replies/s, p99 {}",
                    ratio_text(d.replies, f.replies),
                    match (d.p99_us(), f.p99_us()) {
                        (Some(a), Some(b)) => ratio_text(a, b),
                        _ => "-".into(),
                    }
                ),
                _ => "not measured".into(),
            }
        );
        let _ = writeln!(s, "\nEvery step ({}):\n", proto.file());
        let _ = writeln!(
            s,
            "| responder | target/s | offered/s | refused/s | replies/s | loss | p50 | p99 | probes answered | responder CPU | node CPU (softirq) | client CPU | ring drops |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in runs.iter().filter(|r| r.skipped.is_none()) {
            for st in r.steps(proto) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.1}% | {} | {} | {}/{} | {:.0}% | {:.0}% ({:.0}%) | {:.0}% | {} |",
                    r.mode.label(),
                    st.target.map_or("max".into(), |t| svg::si(t as f64)),
                    svg::si(st.offered),
                    svg::si(st.refused),
                    svg::si(st.replies),
                    100.0 * st.loss(),
                    us(st.p50_us()),
                    us(st.p99_us()),
                    st.probes_answered(),
                    st.probes_sent,
                    st.responder_cpu,
                    st.node_cpu.busy,
                    st.node_cpu.softirq,
                    st.client_cpu.busy,
                    st.ring_drops
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\n## Bad input: unpaced flood of 8 kinds of malformed / non-announced ARP and NDP, {} ms, with valid ARP probes\n",
        args.flood_ms
    );
    let _ = writeln!(
        s,
        "| responder | offered/s | wrong answers | probes answered | probe p99 | responder CPU | node CPU (softirq) | fallback process CPU | `herald xdp list` |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let Some(f) = &r.flood else {
            let _ = writeln!(
                s,
                "| {} | {} | | | | | | | |",
                r.mode.label(),
                r.skipped.as_deref().unwrap_or("-")
            );
            continue;
        };
        let st = &f.step;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {} | {:.0}% | {:.0}% ({:.0}%) | {} | {} |",
            r.mode.label(),
            svg::si(st.offered),
            st.to_generator + st.wrong_address,
            st.probes_answered(),
            st.probes_sent,
            us(st.p99_us()),
            st.responder_cpu,
            st.node_cpu.busy,
            st.node_cpu.softirq,
            f.responder_cpu_pct
                .map_or("-".into(), |c| format!("{c:.0}%")),
            f.list_time
                .map_or("-".into(), |d| format!("{} ms", d.as_millis())),
        );
    }
    s
}
