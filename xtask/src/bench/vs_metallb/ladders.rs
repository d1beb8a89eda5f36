//! The replies part of `bench vs-metallb`: every path's rate ladder (segment, direct link; for
//! Herald the direct link in skb and in driver mode), each run `runs` times back to back. A
//! path's figure is its median run (by replies/s at saturation), which carries every run's
//! replies/s so the report can print the spread.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result};

use super::direct;
use super::replies::{self, Series};
use super::report::{self, Figure, Figures, Saturation};
use super::requests::Proto;
use crate::image::METALLB_VERSION;
use crate::lab::{self, Speakers, failover};

/// One plotted series: protocol, name in the plot, colour, (offered, replies) per step.
pub type Plot = (Proto, String, &'static str, Vec<(f64, f64)>);

/// Everything measured for one implementation (the median runs' steps kept for the plots).
pub struct Run {
    pub figures: Figures,
    pub plots: Vec<Plot>,
    /// Context lines for the report (settings, who announced).
    pub notes: Vec<String>,
}

impl Run {
    pub fn new(figures: Figures) -> Run {
        Run {
            figures,
            plots: vec![],
            notes: vec![],
        }
    }
}

/// The settings of the ladders.
pub struct Ladder<'a> {
    pub rates: &'a [u64],
    pub step: Duration,
    /// Back-to-back repetitions of every series.
    pub runs: usize,
}

/// Every run of one protocol's series on one path (`None`: not measured in that run).
type Runs = Vec<Option<Result<Series>>>;

/// Waits (90 s at most) until one node answers the client's ARP requests for `vip4` steadily;
/// `who` says whom the wait is for.
pub fn wait_answered(vip4: Ipv4Addr, who: &str) -> Result<()> {
    lab::wait_for(&format!("{who} ({vip4})"), Duration::from_secs(90), || {
        failover::stable_answer(vip4, 5).ok()
    })
    .map(|_| ())
}

/// The replies part for `speakers`: the segment ladders, then the direct link's, into `out`'s
/// replies figures, plots and notes.
pub fn measure(speakers: Speakers, ladder: &Ladder, vip4: Ipv4Addr, vip6: Ipv6Addr, out: &mut Run) {
    // The generator's load comes from two source MACs: at Herald's default per-requester limit
    // (1,000/s each) Herald would answer 2k/s, which measures the limit, not the responder.
    // MetalLB has no such limit, so Herald's series run with it off.
    let limit_off = speakers == Speakers::Herald;
    if limit_off {
        println!(
            "-- Herald's speakers rolled out with --rate-limit=off (the load has two source MACs)"
        );
        match lab::set_speaker_flag("rate-limit", Some("off"))
            .and_then(|()| wait_answered(vip4, "Herald to answer ARP for it again"))
        {
            Ok(()) => out.notes.push(
                "Herald's replies series ran with --rate-limit=off: the load comes from two source MACs, and the default limit (1,000/s per requester) would cap the answers at 2k/s".into(),
            ),
            Err(e) => {
                println!("   failed: {e:#}");
                out.notes.push(format!(
                    "Herald's replies series ran with the default --rate-limit (turning it off failed: {e:#}): answers capped at 1,000/s per source MAC"
                ));
            }
        }
    }
    let (seg_color, direct_color) = match speakers {
        Speakers::Herald => ("#d62728", "#9467bd"),
        Speakers::Metallb => ("#1f77b4", "#17becf"),
    };
    let [arp, ndp] = repeat(ladder.runs, "segment", || {
        println!(
            "-- ARP/NDP replies, segment (generator in {} on the bridge):",
            lab::CLIENT_NS
        );
        split(replies::measure_segment(
            vip4,
            vip6,
            ladder.rates,
            ladder.step,
        ))
    });
    let label = match speakers {
        Speakers::Herald => "Herald XDP skb, segment".to_string(),
        Speakers::Metallb => format!("MetalLB {METALLB_VERSION}, segment"),
    };
    out.figures.arp = median(arp, &mut out.plots, Proto::Arp, &label, seg_color);
    out.figures.ndp = median(ndp, &mut out.plots, Proto::Ndp, &label, seg_color);

    match speakers {
        Speakers::Herald => herald_direct(out, ladder, vip4, vip6, direct_color),
        Speakers::Metallb => {
            let who = speakers.label();
            let [arp, ndp] = repeat(ladder.runs, "direct link", || {
                println!("-- ARP/NDP replies, direct link to the announcer ({who}):");
                direct_series(&mut out.notes, speakers, who, vip4, vip6, ladder)
            });
            let label = format!("MetalLB {METALLB_VERSION}, direct link");
            out.figures.direct_arp = median(arp, &mut out.plots, Proto::Arp, &label, direct_color);
            out.figures.direct_ndp = median(ndp, &mut out.plots, Proto::Ndp, &label, direct_color);
        }
    }
    if limit_off {
        println!("-- Herald's speakers back to the manifests' rate limit");
        if let Err(e) = lab::set_speaker_flag("rate-limit", None)
            .and_then(|()| wait_answered(vip4, "Herald to answer ARP for it again"))
        {
            println!("   restoring the rate limit failed: {e:#}");
            out.notes.push(format!(
                "Herald: restoring the manifests' rate limit after the replies series failed: {e:#}"
            ));
        }
    }
}

/// Runs `series` `runs` times (at least once), numbering the runs, and returns every run's ARP
/// and NDP results.
fn repeat(
    runs: usize,
    path: &str,
    mut series: impl FnMut() -> [Option<Result<Series>>; 2],
) -> [Runs; 2] {
    let runs = runs.max(1);
    let (mut arp, mut ndp) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        if runs > 1 {
            println!("   run {i} of {runs} ({path})");
        }
        let [a, n] = series();
        arp.push(a);
        ndp.push(n);
    }
    [arp, ndp]
}

/// The ARP and NDP results of a two-protocol measurement (or its error, for both).
fn split(measured: Result<Vec<Result<Series>>>) -> [Option<Result<Series>>; 2] {
    match measured {
        Ok(series) => {
            let mut it = series.into_iter();
            [it.next(), it.next()]
        }
        Err(e) => {
            println!("   failed: {e:#}");
            [
                Some(Err(anyhow::anyhow!("{e:#}"))),
                Some(Err(anyhow::anyhow!("{e:#}"))),
            ]
        }
    }
}

/// Finds the nodes answering for `vip4`/`vip6` on their direct links and runs the ARP series on
/// the first's link, the NDP series on the second's (one run when it is the same node).
fn direct_series(
    notes: &mut Vec<String>,
    speakers: Speakers,
    who: &str,
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    ladder: &Ladder,
) -> [Option<Result<Series>>; 2] {
    let (link4, link6) = match direct::wait_announcers(vip4, vip6, Duration::from_secs(60)) {
        Ok(links) => links,
        Err(e) => return split(Err(e)),
    };
    println!(
        "   announcers: {vip4} by {} ({} ↔ {}), {vip6} by {}",
        link4.node.name,
        link4.client_if,
        lab::DIRECT_IF,
        link6.node.name
    );
    let note = format!(
        "{who}, direct link: {vip4} answered by {} (generator on {} in {}), {vip6} by {}",
        link4.node.name,
        link4.client_if,
        lab::DIRECT_NS,
        link6.node.name
    );
    if !notes.contains(&note) {
        notes.push(note);
    }
    if let Some(why) = crate::bench::dataplane::live::live_frames_refused() {
        let note = format!(
            "direct link: this kernel refused XDP live frames ({why}); the unpaced step is \
             reflected instead (the client's XDP program sends every reply back as the next \
             request, seeded by AF_PACKET)"
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    // A userspace responder (MetalLB's speaker) is pinned with the node's receive work.
    let responder = |link: &lab::DirectLink| match speakers {
        Speakers::Metallb => speakers.pid(&link.node),
        Speakers::Herald => None,
    };
    let on = |link: &lab::DirectLink, protos: &[Proto]| {
        replies::measure_direct(
            link,
            responder(link),
            protos,
            vip4,
            vip6,
            ladder.rates,
            ladder.step,
        )
    };
    let started = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let silenced_before = guard_silenced(speakers, &[&link4, &link6]);
    let out = if link4 == link6 {
        split(on(&link4, &[Proto::Arp, Proto::Ndp]))
    } else {
        let [arp, _] = split(on(&link4, &[Proto::Arp]));
        let [ndp, _] = split(on(&link6, &[Proto::Ndp]));
        [arp, ndp]
    };
    let silenced_after = guard_silenced(speakers, &[&link4, &link6]);
    for ((node, before), (_, after)) in silenced_before.iter().zip(&silenced_after) {
        let line = match (before, after) {
            (Some(b), Some(a)) if a > b => format!(
                "{who}, direct link: the guard on {node} ran out during the series and left {} requests unanswered (its speaker could not beat it in time)",
                a - b
            ),
            (Some(b), Some(a)) if a < b => format!(
                "{who}, direct link: the guard's silenced counter on {node} went back ({b} → {a}): its program or maps were replaced during the series"
            ),
            (Some(_), Some(_)) => continue,
            _ => format!(
                "{who}, direct link: the guard's silenced counter on {node} could not be read"
            ),
        };
        println!("   {line}");
        notes.push(line);
        // What the speaker said about it during the series.
        if let Some(spec) = lab::NODES.iter().find(|n| n.name == *node) {
            for l in guard_lines(&lab::nodes::speaker_log(spec), &started, 4) {
                println!("     {}", l.chars().take(300).collect::<String>());
            }
        }
    }
    out
}

/// The last `n` lines of a speaker's container log (every run, in any order) about its guard —
/// warnings and "peers heard again" — stamped at or after `since` (RFC 3339, UTC), in time
/// order. Container log lines begin with their RFC 3339 stamp, so text order is time order.
fn guard_lines<'a>(log: &'a str, since: &str, n: usize) -> Vec<&'a str> {
    let mut lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.split(' ').next().is_some_and(|stamp| {
                stamp.starts_with(|c: char| c.is_ascii_digit()) && stamp >= since
            })
        })
        .filter(|l| l.contains(" WARN ") || l.contains("heard again"))
        .collect();
    lines.sort_unstable();
    lines.split_off(lines.len().saturating_sub(n))
}

/// Herald's `silenced` counter on each announcing node (once per node), by node name; empty
/// for MetalLB (no guard).
fn guard_silenced(
    speakers: Speakers,
    links: &[&lab::DirectLink],
) -> Vec<(&'static str, Option<u64>)> {
    let mut out: Vec<(&'static str, Option<u64>)> = Vec::new();
    if speakers == Speakers::Herald {
        for link in links {
            if !out.iter().any(|(n, _)| *n == link.node.name) {
                out.push((link.node.name, direct::silenced(&link.node)));
            }
        }
    }
    out
}

/// Herald on the direct link: in skb mode as the manifests run it on a veth, then with the
/// speakers rolled out with `--xdp-mode=driver` (reported as the main figure when `herald xdp
/// list` shows driver mode on the announcer's `eth1`), then back to the manifests' args.
fn herald_direct(
    out: &mut Run,
    ladder: &Ladder,
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    color: &'static str,
) {
    let [arp, ndp] = repeat(ladder.runs, "direct link, skb", || {
        println!("-- ARP/NDP replies, direct link to the announcer (Herald XDP skb mode):");
        direct_series(
            &mut out.notes,
            Speakers::Herald,
            "Herald (skb)",
            vip4,
            vip6,
            ladder,
        )
    });
    let label = "Herald XDP skb, direct link";
    let skb_arp = median(arp, &mut out.plots, Proto::Arp, label, "#ff7f0e");
    let skb_ndp = median(ndp, &mut out.plots, Proto::Ndp, label, "#ff7f0e");

    println!("-- Herald's speakers rolled out with --xdp-mode=driver");
    let driver = lab::set_speaker_flag("xdp-mode", Some("driver")).and_then(|()| {
        let (link4, _) = direct::wait_announcers(vip4, vip6, Duration::from_secs(60))?;
        direct::herald_mode(&link4).with_context(|| {
            format!(
                "herald xdp list shows no XDP on {} of {}",
                lab::DIRECT_IF,
                link4.node.name
            )
        })
    });
    match driver {
        Ok(mode) if mode == "driver" => {
            let [arp, ndp] = repeat(ladder.runs, "direct link, driver", || {
                println!(
                    "-- ARP/NDP replies, direct link to the announcer (Herald XDP driver mode):"
                );
                direct_series(
                    &mut out.notes,
                    Speakers::Herald,
                    "Herald (driver)",
                    vip4,
                    vip6,
                    ladder,
                )
            });
            let label = "Herald XDP driver, direct link";
            out.figures.direct_arp = median(arp, &mut out.plots, Proto::Arp, label, color);
            out.figures.direct_ndp = median(ndp, &mut out.plots, Proto::Ndp, label, color);
            out.figures.direct_mode = Some("driver".into());
            out.figures.direct_skb_arp = skb_arp;
            out.figures.direct_skb_ndp = skb_ndp;
        }
        other => {
            let why = match other {
                Ok(mode) => format!("the speaker attached in {mode} mode"),
                Err(e) => format!("{e:#}"),
            };
            println!("   driver mode not measured: {why}");
            out.notes.push(format!(
                "Herald, direct link: driver mode not measured ({why}); skb figures reported"
            ));
            out.figures.direct_arp = skb_arp;
            out.figures.direct_ndp = skb_ndp;
            out.figures.direct_mode = Some("skb".into());
        }
    }
    println!("-- Herald's speakers back to the manifests' args (XDP mode auto)");
    let restored = lab::set_speaker_flag("xdp-mode", None)
        .and_then(|()| wait_answered(vip4, "Herald to answer ARP for it on the segment again"));
    if let Err(e) = restored {
        println!("   restoring the XDP mode failed: {e:#}");
        out.notes.push(format!(
            "Herald: restoring the manifests' XDP mode after the direct series failed: {e:#}"
        ));
    }
}

/// The median run of one path's runs, carrying every run's replies/s; its steps are plotted.
/// Runs that failed are printed and counted in the figure; only when none succeeded is the
/// figure missing.
fn median(
    runs: Runs,
    plots: &mut Vec<Plot>,
    proto: Proto,
    label: &str,
    color: &'static str,
) -> Figure<Saturation> {
    let mut measured = Vec::new();
    let mut errors = Vec::new();
    for run in runs {
        match run {
            Some(Ok(s)) => match s.saturation() {
                Some(sat) => measured.push((sat, s)),
                None => errors.push(format!("{}: no steps measured", s.proto.name())),
            },
            Some(Err(e)) => {
                println!("   failed: {e:#}");
                errors.push(format!("{e:#}"));
            }
            None => errors.push("not measured".into()),
        }
    }
    let replies: Vec<f64> = measured.iter().map(|(sat, _)| sat.replies).collect();
    let Some(i) = report::median_index(&replies) else {
        return Err(errors.first().cloned().unwrap_or_else(|| "no runs".into()));
    };
    let (mut sat, series) = measured.swap_remove(i);
    sat.runs = replies;
    sat.failed_runs = errors.len();
    plots.push((
        proto,
        label.to_string(),
        color,
        series
            .steps
            .iter()
            .map(|x| (x.offered, x.replies))
            .collect(),
    ));
    Ok(sat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_lines_are_the_series_own_in_time_order() {
        let log = "\
2026-12-07T00:25:52.400Z stderr F x INFO herald::speaker::guard: peers heard again, or alone: answering
2026-12-07T00:20:00.000Z stderr F x WARN herald::speaker::guard: no contact with any peer: an older series
2026-12-07T00:25:52.300Z stderr F x WARN herald::speaker::guard: no contact with any peer: letting the guard run out
2026-12-07T00:25:53.000Z stderr F x INFO herald::speaker::run: something else
not a log line WARN here
";
        let since = "2026-12-07T00:25:00.000000Z";
        let got = guard_lines(log, since, 4);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("letting the guard run out"));
        assert!(got[1].contains("heard again"));
        assert_eq!(guard_lines(log, since, 1), [got[1]], "the last one");
        assert!(guard_lines(log, "2026-12-07T01:00:00Z", 4).is_empty());
    }
}
