//! The host's speed beside the figures: the speed probes of every run, the fastest of them as
//! the host at its best, and how slow the host was around each flood.

use super::super::machine;
use super::super::measure::StepResult;
use super::super::results::{Mode, ModeRun};
use super::per_run;

/// How slow the host was around each run's flood: its slower speed probe over the fastest
/// probe of the invocation ([`fastest`] of [`speed_probes`]).
pub fn flood_slowness(all: &[Vec<ModeRun>], mode: Mode) -> Vec<Option<f64>> {
    let fastest = fastest(&speed_probes(all));
    per_run(all, mode, |r, _| {
        let slowest = r.flood.as_ref()?.step.speed?.measured().reduce(f64::max)?;
        Some(slowest / fastest?)
    })
}

/// Each run's share answered beside how slow the host was around it, "99.8% (1.02×)", so a
/// run that fell short can be told apart from one the host slowed.
pub fn each_run(answered: &[Option<f64>], slowness: &[Option<f64>]) -> String {
    let each: Vec<String> = answered
        .iter()
        .zip(slowness)
        .map(|(a, s)| match (a, s) {
            (Some(a), Some(s)) => format!("{a:.1}% ({s:.2}×)"),
            (Some(a), None) => format!("{a:.1}% (speed unknown: its probes failed)"),
            (None, _) => "-".into(),
        })
        .collect();
    each.join(", ")
}

/// Every speed probe of every run: around each responder's unpaced steps and its flood (the
/// turns' probes are printed as they run, not kept).
fn speed_probes(all: &[Vec<ModeRun>]) -> Vec<f64> {
    all.iter()
        .flatten()
        .flat_map(|r| {
            r.arp
                .iter()
                .chain(&r.ndp)
                .chain(r.flood.iter().map(|f| &f.step))
        })
        .flat_map(StepResult::speed_probes)
        .collect()
}

/// The fastest of the speed probes, the host at its best.
fn fastest(probes: &[f64]) -> Option<f64> {
    probes
        .iter()
        .copied()
        .reduce(f64::min)
        .filter(|&v| v.is_finite() && v > 0.0)
}

/// The machine's speed probes over every run: how far the host moved while the figures above
/// were taken.
pub fn speed_line(all: &[Vec<ModeRun>]) -> Option<String> {
    let probes = speed_probes(all);
    let fastest = fastest(&probes)?;
    let slowest = probes.iter().copied().fold(0.0, f64::max);
    Some(format!(
        "Machine speed: the same {} system calls on the node CPU took {fastest:.1}–{slowest:.1} ms ({:.2}×) in the {} probes around the unpaced steps and the floods; the host's load moves every replies/s by as much (the peak columns take the fastest tenth of each unpaced step's windows).",
        machine::WORK_CALLS,
        slowest / fastest,
        probes.len()
    ))
}
