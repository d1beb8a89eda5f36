//! `cargo xtask bench xdp` runs this: ns per packet of the real XDP object through
//! BPF_PROG_TEST_RUN (kernel-measured duration), beside the empty XDP_PASS program `herald_pass`
//! from the same object, measured the same way in the same run.
//!
//! Frames the program leaves unchanged (ARP for an unknown IP, plain TCP) run with `repeat = N`
//! and the kernel's per-run average. Answered frames cannot: with `repeat > 1` the kernel re-runs
//! the program on the rewritten buffer, so every run after the first would measure the reply
//! being passed. Those are measured with `repeat = 1` per call (trimmed mean of many calls), which
//! includes the kernel's fixed per-call timing overhead; the empty program is measured the same
//! way beside them, so the ratio compares like with like, and the table also shows the cost the
//! answer adds over the empty program.
//!
//! Usage: bench_xdp [OBJECT] [--repeat N] [--calls N] [--rounds N]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::maps::{Array, PerCpuHashMap, PerCpuValues};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::util::nr_cpus;
use etherparse::{Icmpv6Type, PacketBuilder};
use lb_common::maps::{
    Announcement, Guard, Ipv4Key, Ipv6Key, MAP_GUARD, MAP_V4, MAP_V6, PROG_BASELINE, PROG_NAME,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LOOPBACK: u32 = 1;
const NODE_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const VIP4: [u8; 4] = [198, 51, 100, 10];
const UNKNOWN4: [u8; 4] = [198, 51, 100, 99];
const CLIENT4: [u8; 4] = [198, 51, 100, 2];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];

struct Settings {
    object: PathBuf,
    repeat: u32,
    calls: usize,
    rounds: usize,
}

fn settings() -> Result<Settings> {
    let mut s = Settings {
        object: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/herald.bpf.o"),
        repeat: 1_000_000,
        calls: 20_000,
        rounds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--repeat" => s.repeat = value("--repeat")?.parse().context("--repeat: a number")?,
            "--calls" => s.calls = value("--calls")?.parse().context("--calls: a number")?,
            "--rounds" => s.rounds = value("--rounds")?.parse().context("--rounds: a number")?,
            path if !path.starts_with('-') => s.object = PathBuf::from(path),
            other => bail!("unknown argument {other}"),
        }
    }
    if s.repeat == 0 || s.calls == 0 || s.rounds == 0 {
        bail!("--repeat, --calls and --rounds must be at least 1");
    }
    Ok(s)
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// One syscall with `repeat` runs; the kernel reports the average.
    Repeat,
    /// `calls` syscalls with one run each; the trimmed mean of the kernel-reported durations.
    Single,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    method: Method,
}

fn main() -> Result<()> {
    let s = settings()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench xdp needs root (CAP_BPF) for BPF_PROG_TEST_RUN");
    }
    let mut bpf = Ebpf::load_file(&s.object).with_context(|| {
        format!(
            "loading {} (run `cargo xtask build-ebpf`)",
            s.object.display()
        )
    })?;
    for name in [PROG_NAME, PROG_BASELINE] {
        let prog: &mut Xdp = bpf
            .program_mut(name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    announce(&mut bpf)?;

    let cases = [
        Case {
            name: "ARP request, announced IP",
            frame: arp_request(VIP4),
            action: XDP_TX,
            method: Method::Single,
        },
        Case {
            name: "ARP request, unknown IP",
            frame: arp_request(UNKNOWN4),
            action: XDP_PASS,
            method: Method::Repeat,
        },
        Case {
            name: "NS, announced IP",
            frame: neighbor_solicitation(),
            action: XDP_TX,
            method: Method::Single,
        },
        Case {
            name: "IPv4 TCP",
            frame: tcp_frame(),
            action: XDP_PASS,
            method: Method::Repeat,
        },
        // Same requests with a stale guard: the whole answering path (parse, lookup, counters,
        // clock, guard) except the rewrite, and the frame stays as it is, so it can loop.
        Case {
            name: "ARP announced, guard stale",
            frame: arp_request(VIP4),
            action: XDP_PASS,
            method: Method::Repeat,
        },
        Case {
            name: "NS announced, guard stale",
            frame: neighbor_solicitation(),
            action: XDP_PASS,
            method: Method::Repeat,
        },
    ];
    println!(
        "XDP ns/packet via BPF_PROG_TEST_RUN, kernel-measured, best of {} rounds (herald_xdp beside the empty herald_pass)",
        s.rounds
    );
    println!(
        "  in-loop:  one call with repeat={} (only for frames the program leaves unchanged)",
        s.repeat
    );
    println!(
        "  per-call: mean of the middle 80% of {} calls with repeat=1 each (includes the kernel's fixed per-call timing overhead)",
        s.calls
    );
    println!();
    println!(
        "{:<27} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} {:>7}",
        "case", "in-loop", "empty", "ratio", "per-call", "empty", "ratio", "added"
    );
    let mut rows = Vec::new();
    for case in &cases {
        if case.name.ends_with("guard stale") {
            set_guard(
                &mut bpf,
                Guard {
                    heartbeat_ns: 1,
                    timeout_ns: 1,
                },
            )?;
        }
        let mut looped = (Vec::new(), Vec::new());
        let mut single = (Vec::new(), Vec::new());
        for _ in 0..s.rounds {
            if case.method == Method::Repeat {
                looped
                    .0
                    .push(measure(&mut bpf, PROG_NAME, case, Method::Repeat, &s)?);
                looped
                    .1
                    .push(measure(&mut bpf, PROG_BASELINE, case, Method::Repeat, &s)?);
            }
            single
                .0
                .push(measure(&mut bpf, PROG_NAME, case, Method::Single, &s)?);
            single
                .1
                .push(measure(&mut bpf, PROG_BASELINE, case, Method::Single, &s)?);
        }
        let (sh, se) = (best(&single.0), best(&single.1));
        let in_loop = if case.method == Method::Repeat {
            let (lh, le) = (best(&looped.0), best(&looped.1));
            format!("{lh:>8.1} {le:>8.1} {:>5.2}x", lh / le)
        } else {
            format!("{:>8} {:>8} {:>6}", "rewrites", "-", "-")
        };
        println!(
            "{:<27} | {in_loop} | {sh:>8.1} {se:>8.1} {:>5.2}x {:>7.1}",
            case.name,
            sh / se,
            sh - se
        );
        rows.push((case.name, looped, sh, se));
        set_guard(
            &mut bpf,
            Guard {
                heartbeat_ns: 0,
                timeout_ns: 0,
            },
        )?;
    }
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .with_context(|| format!("row {name}"))
    };
    let tcp = row("IPv4 TCP")?;
    let (tcp_h, tcp_e) = (best(&tcp.1.0), best(&tcp.1.1));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "target: IPv4 TCP <= 1.2x empty (in-loop): {:.2}x, {}",
        tcp_h / tcp_e,
        verdict(tcp_h <= 1.2 * tcp_e)
    );
    // An answered request cannot loop. Its in-loop cost is estimated from the stale-guard run of
    // the same request (identical up to the guard check, and loopable) plus the per-call
    // difference between answering and being silenced.
    for (answered, stale, target) in [
        (
            "ARP request, announced IP",
            "ARP announced, guard stale",
            Some(100.0),
        ),
        ("NS, announced IP", "NS announced, guard stale", None),
    ] {
        let (a, st) = (row(answered)?, row(stale)?);
        let estimate = best(&st.1.0) + (a.2 - st.2);
        let goal = match target {
            Some(ns) => format!(", target <= {ns} ns: {}", verdict(estimate <= ns)),
            None => String::new(),
        };
        println!(
            "{answered}: ~{estimate:.0} ns in-loop (estimated: stale-guard {:.1} + answer-vs-silence per call {:.1}), {:.1} ns per call{goal}",
            best(&st.1.0),
            a.2 - st.2,
            a.2
        );
    }
    Ok(())
}

/// ns per packet for one round of `case` on program `name`.
fn measure(bpf: &mut Ebpf, name: &str, case: &Case, method: Method, s: &Settings) -> Result<f64> {
    let prog: &mut Xdp = bpf.program_mut(name).context("program")?.try_into()?;
    let mut out = vec![0u8; 512];
    let ctx: Vec<u8> = [0u32, case.frame.len() as u32, 0, LOOPBACK, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let expected = if name == PROG_NAME {
        case.action
    } else {
        XDP_PASS
    };
    let mut run = |repeat: u32| -> Result<f64> {
        let result = prog.test_run(TestRunOptions {
            data_in: Some(&case.frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })?;
        if result.return_value != expected {
            bail!(
                "{name} on {}: action {} instead of {expected}",
                case.name,
                result.return_value
            );
        }
        Ok(result.duration.as_nanos() as f64)
    };
    match method {
        Method::Repeat => run(s.repeat),
        Method::Single => {
            let mut samples = (0..s.calls).map(|_| run(1)).collect::<Result<Vec<_>>>()?;
            Ok(trimmed_mean(&mut samples))
        }
    }
}

/// Lowest of the rounds: other work on the machine only ever adds time.
fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Mean of the middle 80% of the samples. The kernel's per-call durations come in clock steps
/// (tens of ns here), so a median moves in whole steps; the mean of many samples resolves
/// differences below one step, and trimming drops interrupts and cold-cache outliers.
fn trimmed_mean(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let cut = values.len() / 10;
    let middle = &values[cut..values.len() - cut];
    middle.iter().sum::<f64>() / middle.len().max(1) as f64
}

fn announce(bpf: &mut Ebpf) -> Result<()> {
    let cpus = nr_cpus()
        .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
        .get() as usize;
    let entry = Announcement {
        mac: NODE_MAC,
        ..Announcement::default()
    };
    let key4 = Ipv4Key {
        ifindex: LOOPBACK,
        addr: VIP4,
    };
    let key6 = Ipv6Key {
        ifindex: LOOPBACK,
        addr: VIP6,
    };
    let every_cpu = || PerCpuValues::try_from(vec![entry; cpus]);
    PerCpuHashMap::<_, Ipv4Key, Announcement>::try_from(bpf.map_mut(MAP_V4).context(MAP_V4)?)?
        .insert(&key4, every_cpu()?, 0)?;
    PerCpuHashMap::<_, Ipv6Key, Announcement>::try_from(bpf.map_mut(MAP_V6).context(MAP_V6)?)?
        .insert(&key6, every_cpu()?, 0)?;
    Ok(())
}

fn set_guard(bpf: &mut Ebpf, guard: Guard) -> Result<()> {
    Array::<_, Guard>::try_from(bpf.map_mut(MAP_GUARD).context(MAP_GUARD)?)?.set(0, &guard, 0)?;
    Ok(())
}

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT4);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// Multicast solicitation with a source link-layer option, as Linux sends to resolve an address.
fn neighbor_solicitation() -> Vec<u8> {
    let group = [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, VIP6[13], VIP6[14], VIP6[15],
    ];
    let eth_dst = [0x33, 0x33, 0xff, VIP6[13], VIP6[14], VIP6[15]];
    let mut payload = VIP6.to_vec();
    payload.extend_from_slice(&[1, 1]);
    payload.extend_from_slice(&CLIENT_MAC);
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, eth_dst)
        .ipv6(CLIENT6, group, 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation);
    let mut f = Vec::new();
    builder.write(&mut f, &payload).expect("writing to a Vec");
    f
}

fn tcp_frame() -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(CLIENT4, VIP4, 64)
        .tcp(40000, 443, 1, 65535);
    let mut f = Vec::new();
    builder.write(&mut f, &[0u8; 64]).expect("writing to a Vec");
    f
}
