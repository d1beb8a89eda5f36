//! The saturation turns in the tables: each run's turns in order, and over the runs the
//! median of each run's pair ratios beside the headline ratio taken minutes apart.

use std::fmt::Write as _;

use super::super::results::{Mode, ModeRun, Proto};
use super::super::svg;
use super::{modes_with, per_run, spread_text};

const ABOUT: &str = "The VIPs stay on the node interface; with Herald's program attached it answers them, detached the kernel does. The two take turns at saturation (unpaced steps) in pairs, one of each, the order alternating from pair to pair (ABBA), so a pair's figures are seconds apart instead of minutes.";

/// One run's turns, every XDP mode and protocol (`None` when the run had none).
pub fn run_text(runs: &[ModeRun]) -> Option<String> {
    let lines: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.turns
                .iter()
                .map(move |a| format!("- {}, {}: {}", r.mode.label(), a.proto.file(), a.text()))
        })
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "\n## Saturation in turns: Herald's program and the kernel seconds apart\n\n{ABOUT}\n\n{}\n",
            lines.join("\n")
        )
    })
}

/// Over the runs: Herald's and the kernel's replies/s in turns (the medians of each run's turns)
/// and the ratio (the median of each run's pair ratios), per XDP mode and protocol.
pub fn summary(all: &[Vec<ModeRun>], modes: &[Mode]) -> Option<String> {
    let with = modes_with(all, modes, |r| !r.turns.is_empty())?;
    let mut s = format!(
        "\n## Saturation in turns: replies/s of Herald and the kernel seconds apart\n\n{ABOUT} Each run's ratio is the median of its pairs'.\n\n| responder | protocol | Herald replies/s | kernel replies/s, in turns | Herald ÷ kernel |\n|---|---|---|---|---|\n"
    );
    let rate = |v: f64| format!("{}/s", svg::si(v));
    let times = |v: f64| format!("{v:.2}×");
    let mut notes = String::new();
    for &mode in &with {
        for proto in [Proto::Arp, Proto::Ndp] {
            let herald = per_run(all, mode, |r, _| r.turns_of(proto)?.replies(true));
            let kernel = per_run(all, mode, |r, _| r.turns_of(proto)?.replies(false));
            let ratio = per_run(all, mode, |r, _| r.turns_of(proto)?.ratio());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                mode.label(),
                proto.file(),
                spread_text(&herald, rate),
                spread_text(&kernel, rate),
                spread_text(&ratio, times)
            );
        }
        let (mut herald, mut kernel, mut wrong) = (0, 0, 0);
        for a in all
            .iter()
            .flatten()
            .filter(|r| r.mode == mode)
            .flat_map(|r| &r.turns)
        {
            herald += a.floors(true);
            kernel += a.floors(false);
            wrong += a.wrong();
        }
        if herald + kernel + wrong > 0 {
            let _ = writeln!(
                notes,
                "\n{}: of its turns, {herald} of Herald's and {kernel} of the kernel's measured a floor (a ratio is then at least, or at most, what it shows: each run's pairs are marked ≥ or ≤), and {wrong} were answered by the other responder (their pairs left out).",
                mode.label()
            );
        }
    }
    s.push_str(&notes);
    Some(s)
}
