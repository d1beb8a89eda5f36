//! The tables `bench dataplane` prints and writes: one run's full report (headline figures per
//! responder and protocol, every step with where its frames went, the bad-input flood), and the
//! median and spread of the headline figures over repeated runs.

use std::fmt::Write as _;

use super::args::Args;
use super::flood_guard::FloodGuardOverStep;
use super::measure::{self, StepResult};
use super::repeat::Spread;
use super::results::{Mode, ModeRun, Proto};
use super::stats::us;
use super::{lab, stats, svg, windows};
use speed::{each_run, flood_slowness, speed_line};

/// The largest loss of a step and where it happened, after what kept the step from being the
/// measurement it asked for.
fn main_loss(step: &StepResult) -> String {
    let short = step.shortfalls();
    let loss = match &step.path {
        Ok(Some(p)) => p
            .losses()
            .first()
            .map_or("-".into(), |(at, n)| format!("{at} ({n})")),
        Ok(None) | Err(_) => "-".into(),
    };
    if short.is_empty() {
        loss
    } else {
        format!("{loss}; not as asked: {}", short.join(", "))
    }
}

fn ratio_text(a: f64, b: f64) -> String {
    stats::ratio(a, b).map_or("-".to_string(), |r| format!("{r:.2}×"))
}

pub(super) fn machine() -> String {
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
pub(super) fn saturation(steps: &[StepResult]) -> Option<&StepResult> {
    stats::saturation_index(&steps.iter().map(|s| s.replies).collect::<Vec<_>>()).map(|i| &steps[i])
}

/// What the generator was, when the kernel refused live frames (`refused`: its error).
pub(super) fn generator_note(refused: Option<&str>) -> Option<String> {
    refused.map(|why| {
        format!(
            "Generator: this kernel refused XDP live frames ({why}). The saturation step is \
             reflected instead: an XDP program on the client end sends every reply back as the \
             next request ({} requests in flight, seeded by AF_PACKET). The flood circles \
             {} frames between the two ends of a second veth pair in the client namespace, \
             whose XDP program rewrites each into the next junk frame and broadcasts it to the \
             client's veth, paced in the program (the rate reached is in the flood table). The \
             generator ceiling is the AF_PACKET sender alone.",
            super::measure::REFLECT_IN_FLIGHT,
            super::floodloop::FLOOD_IN_FLIGHT
        )
    })
}

pub(super) fn report(
    runs: &[ModeRun],
    ceiling: f64,
    args: &Args,
    machine: &str,
    note: Option<&str>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n# cargo xtask bench dataplane — {machine}");
    if let Some(note) = note {
        let _ = writeln!(s, "{note}");
    }
    let _ = writeln!(
        s,
        "veth between two namespaces; generator + receiver on CPU {}, responder on CPU {}; {} ms per step, {} ms at the lowest rate, {} ms side by side per XDP mode and protocol; \
         generator ceiling {}/s (unpaced requests nobody answers). NAPI threads run SCHED_FIFO; bench threads, ksoftirqd and \
         the fallback process run at nice -20 (anything else on the machine yields to them); responder CPU = node-CPU \
         softirq time + the responder's own threads, in % of one core.",
        lab::CLIENT_CPU,
        lab::NODE_CPU,
        args.step_ms,
        args.tail_ms.max(args.step_ms),
        args.beside_ms.max(args.step_ms),
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
            // A floor where the generator was the limit or the reflected loop stalled.
            let bound = if sat.is_floor() { "≥ " } else { "" };
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
            "| responder | target/s | offered/s | refused/s | replies/s | loss | p50 | p99 | probes answered | send path p50 / p99 | flight p50 / p99 | responder CPU | node CPU (softirq) | client CPU | ring drops | most frames lost at |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in runs.iter().filter(|r| r.skipped.is_none()) {
            for st in r.steps(proto) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.1}% | {} | {} | {}/{} | {} / {} | {} / {} | {:.0}% | {:.0}% ({:.0}%) | {:.0}% | {} | {} |",
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
                    us(st.split_us(50.0).map(|s| s.0)),
                    us(st.split_us(99.0).map(|s| s.0)),
                    us(st.split_us(50.0).map(|s| s.1)),
                    us(st.split_us(99.0).map(|s| s.1)),
                    st.responder_cpu,
                    st.node_cpu.busy,
                    st.node_cpu.softirq,
                    st.client_cpu.busy,
                    st.ring_drops,
                    main_loss(st)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\n## Bad input: flood of 8 kinds of malformed / non-announced ARP and NDP in turn, {}, {} ms, with valid ARP probes; Herald's flood guard set to {} (the table reads it back from the program's map)\n",
        match args.flood_rate {
            0 => "unpaced".to_string(),
            r => format!("{}/s asked of every responder", svg::si(r as f64)),
        },
        args.flood_ms,
        args.flood_limit.as_deref().unwrap_or("its default")
    );
    let _ = writeln!(
        s,
        "| responder | offered/s | wrong answers | probes answered | refused at the node's full ring | answered of those that reached the node | probe p99 | responder CPU | node CPU (softirq) | fallback process CPU | `herald xdp list` | Herald's flood guard: limit, frames dropped | machine speed before / after |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for r in runs {
        let Some(f) = &r.flood else {
            let _ = writeln!(
                s,
                "| {} | {} | | | | | | | | | | | |",
                r.mode.label(),
                r.skipped.as_deref().unwrap_or("-")
            );
            continue;
        };
        let st = &f.step;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {} | {}/{} | {} | {:.0}% | {:.0}% ({:.0}%) | {} | {} | {} | {} |",
            r.mode.label(),
            svg::si(st.offered),
            st.to_generator + st.wrong_address,
            st.probes_answered(),
            st.probes_sent,
            st.probes_refused,
            st.probes_answered(),
            st.probes_reached(),
            us(st.p99_us()),
            st.responder_cpu,
            st.node_cpu.busy,
            st.node_cpu.softirq,
            f.responder_cpu_pct
                .map_or("-".into(), |c| format!("{c:.0}%")),
            f.list_time
                .map_or("-".into(), |d| format!("{} ms", d.as_millis())),
            f.guard
                .as_ref()
                .map_or("-".into(), FloodGuardOverStep::text),
            st.speed_text(),
        );
    }
    let beside: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.beside
                .iter()
                .map(move |b| format!("- {}, {}: {}", r.mode.label(), b.proto.file(), b.text()))
        })
        .collect();
    if let Some(text) = turns::run_text(runs) {
        s.push_str(&text);
    }
    if !beside.is_empty() {
        let _ = writeln!(
            s,
            "\n## Side by side: Herald's program and the kernel in one step\n\nThe kernel answers for {} and {} on the same interface while Herald answers for the VIPs; load and probes alternate between them, so both tails see the same host load (the kernel's requests pass through Herald's program first).\n\n{}",
            lab::BESIDE_V4,
            lab::BESIDE_V6,
            beside.join("\n")
        );
    }
    s
}

/// One headline figure of one responder in every run (`None` where a run did not measure it).
fn per_run(
    all: &[Vec<ModeRun>],
    mode: Mode,
    figure: impl Fn(&ModeRun, Option<&ModeRun>) -> Option<f64>,
) -> Vec<Option<f64>> {
    all.iter()
        .map(|runs| {
            let kernel = runs
                .iter()
                .find(|r| r.mode == Mode::Kernel && r.skipped.is_none());
            let r = runs
                .iter()
                .find(|r| r.mode == mode && r.skipped.is_none())?;
            figure(r, kernel)
        })
        .collect()
}

/// Median and spread of the values, or why there are none (a run without the figure is named:
/// a median over fewer runs would hide it).
fn spread_text(values: &[Option<f64>], fmt: impl Fn(f64) -> String) -> String {
    let missing = values.iter().filter(|v| v.is_none()).count();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    match Spread::of(&present) {
        None => "not measured".into(),
        Some(s) if missing > 0 => format!("{} — missing in {missing} run(s)", s.text(fmt)),
        Some(s) => s.text(fmt),
    }
}

/// The peak rate of the unpaced step among `steps` ([`windows::peak`]).
fn unpaced_peak(steps: &[StepResult]) -> Option<f64> {
    windows::peak(&steps.iter().find(|st| st.target.is_none())?.windows)
}

/// The modes of `modes` that `has` something in some run, or `None` when none does.
fn modes_with(
    all: &[Vec<ModeRun>],
    modes: &[Mode],
    has: impl Fn(&ModeRun) -> bool,
) -> Option<Vec<Mode>> {
    let with: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|&m| all.iter().flatten().any(|r| r.mode == m && has(r)))
        .collect();
    (!with.is_empty()).then_some(with)
}

/// The side-by-side tails over the runs: Herald's p99, the kernel's beside it, and their
/// ratio, per XDP mode and protocol (`None` when no run had a side-by-side step).
fn side_by_side(all: &[Vec<ModeRun>], modes: &[Mode], low: &str) -> Option<String> {
    let side = modes_with(all, modes, |r| !r.beside.is_empty())?;
    let mut s = format!(
        "\n## p99 at {low} side by side: Herald and the kernel in the same step\n\nThe kernel answers for a second address on the same interface while Herald answers for the VIP; load ({low} in all) and probes alternate between the two, so both tails are taken under the same host load (the kernel's requests pass through Herald's program first).\n\n| responder | protocol | Herald p99 | kernel p99, beside | Herald ÷ kernel |\n|---|---|---|---|---|\n"
    );
    let micros = |v: f64| format!("{v:.0}µs");
    let times = |v: f64| format!("{v:.2}×");
    for &mode in &side {
        for proto in [Proto::Arp, Proto::Ndp] {
            let herald = per_run(all, mode, |r, _| r.beside_of(proto)?.p99_us().0);
            let kernel = per_run(all, mode, |r, _| r.beside_of(proto)?.p99_us().1);
            let ratio = per_run(all, mode, |r, _| r.beside_of(proto)?.p99_ratio());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                mode.label(),
                proto.file(),
                spread_text(&herald, micros),
                spread_text(&kernel, micros),
                spread_text(&ratio, times)
            );
        }
    }
    Some(s)
}

/// The headline figures over repeated runs: median, range and spread, flagged over ±30 %.
pub(super) fn summary(all: &[Vec<ModeRun>], args: &Args, note: Option<&str>) -> String {
    let mut s = String::new();
    let modes: Vec<Mode> = all
        .first()
        .map(|runs| runs.iter().map(|r| r.mode).collect())
        .unwrap_or_default();
    let low = args
        .rates
        .first()
        .map_or("-".into(), |r| format!("{}/s", svg::si(*r as f64)));
    let _ = writeln!(
        s,
        "\n# Median of {} runs (range, largest distance from the median)\n",
        all.len()
    );
    let _ = writeln!(
        s,
        "Targets: XDP driver ≥ 5× the kernel's replies/s; p99 at {low} no worse than the kernel's \
         (≤ 1.00×); valid probes answered under the flood ≥ 99%; every figure within ±30% across runs."
    );
    if let Some(note) = note {
        let _ = writeln!(s, "\n{note}");
    }
    let pct = |v: f64| format!("{v:.1}%");
    let times = |v: f64| format!("{v:.2}×");
    let rate = |v: f64| format!("{}/s", svg::si(v));
    let micros = |v: f64| format!("{v:.0}µs");
    for proto in [Proto::Arp, Proto::Ndp] {
        let _ = writeln!(s, "\n## {}\n", proto.title());
        let _ = writeln!(
            s,
            "| responder | replies/s at saturation | replies ×kernel | peak replies/s (unpaced step's fastest tenth of {} ms windows) | peak ×kernel | p99 at {low} | p99 at {low} ×kernel |",
            windows::WINDOW.as_millis()
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for &mode in &modes {
            let sat = per_run(all, mode, |r, _| {
                saturation(r.steps(proto)).map(|st| st.replies)
            });
            let sat_ratio = per_run(all, mode, |r, k| {
                stats::ratio(
                    saturation(r.steps(proto))?.replies,
                    saturation(k?.steps(proto))?.replies,
                )
            });
            let peak = per_run(all, mode, |r, _| unpaced_peak(r.steps(proto)));
            let peak_ratio = per_run(all, mode, |r, k| {
                stats::ratio(
                    unpaced_peak(r.steps(proto))?,
                    unpaced_peak(k?.steps(proto))?,
                )
            });
            let p99 = per_run(all, mode, |r, _| r.steps(proto).first()?.p99_us());
            let p99_ratio = per_run(all, mode, |r, k| {
                stats::ratio(
                    r.steps(proto).first()?.p99_us()?,
                    k?.steps(proto).first()?.p99_us()?,
                )
            });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                mode.label(),
                spread_text(&sat, rate),
                spread_text(&sat_ratio, times),
                spread_text(&peak, rate),
                spread_text(&peak_ratio, times),
                spread_text(&p99, micros),
                spread_text(&p99_ratio, times),
            );
        }
        for &mode in &modes {
            let n = all
                .iter()
                .filter_map(|runs| runs.iter().find(|r| r.mode == mode && r.skipped.is_none()))
                .filter_map(|r| saturation(r.steps(proto)))
                .filter(|sat| sat.is_floor())
                .count();
            if n > 0 {
                let _ = writeln!(
                    s,
                    "\n{}: a floor in {n} of {} runs (nothing lost, or the client's CPU saturated while the responder's was a fifth idle or more, or the reflected loop ran under {:.0}% of its step): its replies/s and ratios there are at least what is shown.",
                    mode.label(),
                    all.len(),
                    100.0 * super::measure::LOOP_SHARE_MIN
                );
            }
        }
    }
    if let Some(table) = turns::summary(all, &modes) {
        s.push_str(&table);
    }
    if let Some(table) = side_by_side(all, &modes, &low) {
        s.push_str(&table);
    }
    if let Some(line) = speed_line(all) {
        let _ = writeln!(s, "\n{line}");
    }
    let _ = writeln!(
        s,
        "\n## Bad input: valid ARP probes answered under the flood\n\n| responder | junk frames/s sent ({} asked) | probes answered | answered of those that reached the node | answered in each run (the host's speed then: its slower probe ÷ the fastest probe of the invocation, as in the machine-speed line) |\n|---|---|---|---|---|",
        if args.flood_rate > 0 {
            rate(args.flood_rate as f64)
        } else {
            "unpaced".into()
        }
    );
    for &mode in &modes {
        let answered = per_run(all, mode, |r, _| {
            let f = r.flood.as_ref()?;
            (f.step.probes_sent > 0)
                .then(|| 100.0 * f.step.probes_answered() as f64 / f.step.probes_sent as f64)
        });
        let reached = per_run(all, mode, |r, _| {
            let f = r.flood.as_ref()?;
            let n = f.step.probes_reached();
            (n > 0).then(|| 100.0 * f.step.probes_answered() as f64 / n as f64)
        });
        let junk = per_run(all, mode, |r, _| Some(r.flood.as_ref()?.step.offered));
        let slowness = flood_slowness(all, mode);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            mode.label(),
            spread_text(&junk, rate),
            spread_text(&answered, pct),
            spread_text(&reached, pct),
            each_run(&answered, &slowness)
        );
    }
    s
}

mod speed;
#[cfg(test)]
mod tests;
mod turns;
