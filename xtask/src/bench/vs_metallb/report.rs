//! The figures of one implementation and the side-by-side table with ratios and the targets
//! (pure: no I/O, tested below).

use std::fmt::Write as _;

use crate::bench::dataplane::repeat::Spread;

/// ARP or NDP replies at the saturation step (the step with the most replies/s).
#[derive(Clone, Debug, PartialEq)]
pub struct Saturation {
    pub replies: f64,
    /// What the generator really offered at that step (load + probes), frames/s.
    pub offered: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Latency at the first (lowest) paced step, where both keep up: the unloaded reply time.
    pub low_rate: f64,
    pub low_p50_us: Option<f64>,
    pub low_p99_us: Option<f64>,
    /// The most the generator offered in any step (its unpaced step).
    pub generator_max: f64,
    /// The best step measured less than the responder's limit (nearly nothing lost, the
    /// generator's CPU full while the responder's was not, or a reflected loop that stalled):
    /// its figure is a floor.
    pub generator_limited: bool,
    /// The responder's CPU at that step in % of one core (direct links only).
    pub responder_cpu: Option<f64>,
    /// Replies/s at saturation of every run of the series, in run order (this figure is the
    /// median run's).
    pub runs: Vec<f64>,
    /// Runs that failed or measured nothing.
    pub failed_runs: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pub trials: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Services {
    pub count: usize,
    /// First create request → every Service has a status IP.
    pub all_ms: f64,
}

/// A measurement, or why it is missing.
pub type Figure<T> = Result<T, String>;

#[derive(Clone, Debug)]
pub struct Figures {
    /// From the client on the lab segment (every node sees each request).
    pub arp: Figure<Saturation>,
    pub ndp: Figure<Saturation>,
    /// On the direct link to the announcing node.
    pub direct_arp: Figure<Saturation>,
    pub direct_ndp: Figure<Saturation>,
    /// Herald only: the XDP mode of the direct series (`driver` or `skb`).
    pub direct_mode: Option<String>,
    /// Herald only: the direct series in skb mode too, when the main one ran in driver mode.
    pub direct_skb_arp: Figure<Saturation>,
    pub direct_skb_ndp: Figure<Saturation>,
    pub failover: Figure<Failover>,
    pub services: Figure<Services>,
}

impl Figures {
    pub fn skipped(why: &str) -> Figures {
        Figures {
            arp: Err(why.into()),
            ndp: Err(why.into()),
            direct_arp: Err(why.into()),
            direct_ndp: Err(why.into()),
            direct_mode: None,
            direct_skb_arp: Err(why.into()),
            direct_skb_ndp: Err(why.into()),
            failover: Err(why.into()),
            services: Err(why.into()),
        }
    }
}

/// Nearest-rank percentile (p in 0..=100) of unsorted `values`; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Index of the median of `values` (the lower of the two middle ones for an even count), so
/// the figure shown is one run's, never a mean; `None` when empty or not all finite.
pub fn median_index(values: &[f64]) -> Option<usize> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    Some(order[(order.len() - 1) / 2])
}

/// Whether Herald's figure meets a target relative to MetalLB's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Herald ≥ k × MetalLB (more is better).
    AtLeastTimes(f64),
    /// Herald ≤ k × MetalLB (less is better).
    AtMostTimes(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeastTimes(k) => format!("≥ {}× MetalLB", trim(k)),
            Target::AtMostTimes(k) if (k - 1.0).abs() < 1e-9 => "≤ MetalLB (no slower)".into(),
            Target::AtMostTimes(k) if (k - 1.0 / 3.0).abs() < 1e-9 => "≤ ⅓ of MetalLB".into(),
            Target::AtMostTimes(k) => format!("≤ {}× MetalLB", trim(k)),
        }
    }

    /// `Some(met)` when both figures exist and the ratio is defined.
    pub fn met(self, herald: f64, metallb: f64) -> Option<bool> {
        if !(herald.is_finite() && metallb.is_finite()) || metallb <= 0.0 {
            return None;
        }
        Some(match self {
            Target::AtLeastTimes(k) => herald >= k * metallb,
            Target::AtMostTimes(k) => herald <= k * metallb,
        })
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One row: a figure for both, the ratio Herald ÷ MetalLB, the target when there is one.
struct Row {
    what: String,
    herald: Option<f64>,
    metallb: Option<f64>,
    unit: Unit,
    target: Option<Target>,
    /// The figure is a floor (the responder kept up with all the generator offered).
    herald_floor: bool,
    metallb_floor: bool,
    /// One side's runs disagree by more than the spread limit.
    unstable: bool,
}

impl Row {
    fn new(what: String, herald: Option<f64>, metallb: Option<f64>, unit: Unit) -> Row {
        Row {
            what,
            herald,
            metallb,
            unit,
            target: None,
            herald_floor: false,
            metallb_floor: false,
            unstable: false,
        }
    }

    fn with_target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    /// The verdict column, flagged when a side's runs disagree.
    fn verdict(&self) -> String {
        let verdict = self.plain_verdict();
        if self.unstable && !verdict.is_empty() {
            format!("{verdict} (UNSTABLE: runs disagree by more than ±30%)")
        } else {
            verdict.to_string()
        }
    }

    fn plain_verdict(&self) -> &'static str {
        let Some(target) = self.target else {
            return "";
        };
        let (Some(h), Some(m)) = (self.herald, self.metallb) else {
            return "not measured";
        };
        match (target.met(h, m), target) {
            (None, _) => "–",
            // Only a floor for MetalLB: its real figure may be higher.
            (Some(true), Target::AtLeastTimes(_)) if self.metallb_floor => {
                "open (MetalLB not saturated)"
            }
            (Some(true), _) => "**yes**",
            // Herald's figure is only a floor: the target may still hold.
            (Some(false), Target::AtLeastTimes(_)) if self.herald_floor => {
                "open (Herald not saturated)"
            }
            (Some(false), _) => "**no**",
        }
    }
}

#[derive(Clone, Copy)]
enum Unit {
    PerSecond,
    Percent,
    /// Two decimals (CPU time per reply).
    MicrosPrecise,
    Micros,
    Millis,
    Seconds,
}

fn format_value(v: Option<f64>, unit: Unit, floor: bool) -> String {
    let Some(v) = v else {
        return "–".into();
    };
    let at_least = if floor { "≥ " } else { "" };
    at_least.to_string()
        + &match unit {
            Unit::PerSecond => format!("{}/s", si(v)),
            Unit::Percent => format!("{v:.0}%"),
            Unit::MicrosPrecise => format!("{v:.2} µs"),
            Unit::Micros if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::Millis => format!("{v:.0} ms"),
            Unit::Seconds => format!("{:.1} s", v / 1000.0),
        }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ratio(row: &Row) -> String {
    match (row.herald, row.metallb) {
        (Some(h), Some(m)) if m > 0.0 => {
            let r = h / m;
            let bound = match (row.herald_floor, row.metallb_floor) {
                (false, false) => "",
                (true, false) => "≥ ",
                (false, true) => "≤ ",
                (true, true) => "~ ",
            };
            if r >= 10.0 {
                format!("{bound}{r:.1}×")
            } else {
                format!("{bound}{r:.2}×")
            }
        }
        _ => "–".into(),
    }
}

fn saturation_rows(
    proto: &str,
    h: &Figure<Saturation>,
    m: &Figure<Saturation>,
    rows: &mut Vec<Row>,
) {
    let (h, m) = (h.as_ref().ok(), m.as_ref().ok());
    let row = |what: String, f: fn(&Saturation) -> Option<f64>, unit| {
        Row::new(what, h.and_then(f), m.and_then(f), unit)
    };
    let mut replies = row(
        format!("{proto} replies/s at saturation"),
        |s| Some(s.replies),
        Unit::PerSecond,
    )
    .with_target(Target::AtLeastTimes(10.0));
    replies.herald_floor = h.is_some_and(|s| s.generator_limited);
    replies.metallb_floor = m.is_some_and(|s| s.generator_limited);
    replies.unstable = [h, m]
        .into_iter()
        .flatten()
        .any(|s| Spread::of(&s.runs).is_some_and(|sp| sp.flagged()));
    rows.push(replies);
    rows.push(row(
        format!("{proto}: offered at that step"),
        |s| Some(s.offered),
        Unit::PerSecond,
    ));
    rows.push(row(
        format!("{proto} reply latency p50 at saturation"),
        |s| s.p50_us,
        Unit::Micros,
    ));
    rows.push(row(
        format!("{proto} reply latency p99 at saturation"),
        |s| s.p99_us,
        Unit::Micros,
    ));
    let low = h.or(m).map(|s| si(s.low_rate)).unwrap_or_default();
    rows.push(row(
        format!("{proto} reply latency p50 at {low}/s offered"),
        |s| s.low_p50_us,
        Unit::Micros,
    ));
    rows.push(row(
        format!("{proto} reply latency p99 at {low}/s offered"),
        |s| s.low_p99_us,
        Unit::Micros,
    ));
    if h.is_some_and(|s| s.responder_cpu.is_some()) || m.is_some_and(|s| s.responder_cpu.is_some())
    {
        rows.push(row(
            format!("{proto}: responder CPU at saturation (% of one core)"),
            |s| s.responder_cpu,
            Unit::Percent,
        ));
        rows.push(row(
            format!("{proto}: responder CPU per reply"),
            |s| {
                s.responder_cpu
                    .filter(|_| s.replies > 0.0)
                    .map(|cpu| cpu / 100.0 / s.replies * 1e6)
            },
            Unit::MicrosPrecise,
        ));
    }
    rows.push(row(
        format!("{proto}: generator's highest offered rate"),
        |s| Some(s.generator_max),
        Unit::PerSecond,
    ));
}

/// Every run's replies/s at saturation, per path: median (min–max, largest distance from the
/// median), and how many runs failed. Empty when every series ran once.
fn spreads(herald: &Figures, metallb: &Figures) -> String {
    let side = |f: &Figure<Saturation>| match f {
        Ok(s) => {
            let spread = Spread::of(&s.runs)
                .map_or_else(|| "–".to_string(), |sp| sp.text(|v| format!("{}/s", si(v))));
            if s.failed_runs > 0 {
                format!("{spread}; {} run(s) failed", s.failed_runs)
            } else {
                spread
            }
        }
        Err(_) => "–".into(),
    };
    let sections = replies_sections(herald, metallb);
    let runs = sections
        .iter()
        .flat_map(|(_, h, m)| [h, m])
        .filter_map(|f| f.as_ref().ok())
        .map(|s| s.runs.len() + s.failed_runs)
        .max()
        .unwrap_or(0);
    if runs <= 1 {
        return String::new();
    }
    let mut out = format!(
        "\nReplies/s at saturation over {runs} back-to-back runs (the rows above are each path's median run): median (min–max, largest distance from the median)\n"
    );
    for (label, h, m) in sections {
        let _ = writeln!(out, "- {label}: Herald {}; MetalLB {}", side(h), side(m));
    }
    out
}

/// Label of the direct-link rows: the path and Herald's XDP mode there.
fn direct_label(proto: &str, mode: Option<&str>) -> String {
    match mode {
        Some(mode) => format!("{proto}, direct link (Herald XDP {mode} mode)"),
        None => format!("{proto}, direct link"),
    }
}

/// The replies sections: label, Herald's figure, MetalLB's.
fn replies_sections<'a>(
    herald: &'a Figures,
    metallb: &'a Figures,
) -> Vec<(String, &'a Figure<Saturation>, &'a Figure<Saturation>)> {
    let mode = herald.direct_mode.as_deref();
    let mut sections = vec![
        ("ARP, segment".to_string(), &herald.arp, &metallb.arp),
        ("NDP, segment".to_string(), &herald.ndp, &metallb.ndp),
        (
            direct_label("ARP", mode),
            &herald.direct_arp,
            &metallb.direct_arp,
        ),
        (
            direct_label("NDP", mode),
            &herald.direct_ndp,
            &metallb.direct_ndp,
        ),
    ];
    // Herald's skb mode on the same link, against the same MetalLB figures.
    if herald.direct_skb_arp.is_ok() || herald.direct_skb_ndp.is_ok() {
        sections.push((
            direct_label("ARP", Some("skb")),
            &herald.direct_skb_arp,
            &metallb.direct_arp,
        ));
        sections.push((
            direct_label("NDP", Some("skb")),
            &herald.direct_skb_ndp,
            &metallb.direct_ndp,
        ));
    }
    sections
}

/// The side-by-side table (Markdown), then why any figure is missing.
pub fn table(herald: &Figures, metallb: &Figures) -> String {
    let mut rows = Vec::new();
    for (label, h, m) in replies_sections(herald, metallb) {
        saturation_rows(&label, h, m, &mut rows);
    }
    let (hf, mf) = (
        herald.failover.as_ref().ok(),
        metallb.failover.as_ref().ok(),
    );
    let trials = hf.or(mf).map_or(0, |f| f.trials);
    let failover = |what: &str, f: fn(&Failover) -> f64| {
        Row::new(
            format!("failover on speaker frozen (SIGSTOP), {what}"),
            hf.map(f),
            mf.map(f),
            Unit::Millis,
        )
    };
    // A part measured for neither (not selected, or failed for both: listed below) has no rows.
    if hf.is_some() || mf.is_some() {
        rows.push(failover(&format!("p50 ({trials} trials)"), |f| f.p50_ms));
        rows.push(
            failover(&format!("p99 ({trials} trials)"), |f| f.p99_ms)
                .with_target(Target::AtMostTimes(1.0 / 3.0)),
        );
        rows.push(failover("max", |f| f.max_ms));
    }
    let (hs, ms) = (
        herald.services.as_ref().ok(),
        metallb.services.as_ref().ok(),
    );
    if let Some(count) = hs.or(ms).map(|s| s.count) {
        rows.push(
            Row::new(
                format!("{count} Services → all have their IPs"),
                hs.map(|s| s.all_ms),
                ms.map(|s| s.all_ms),
                Unit::Seconds,
            )
            .with_target(Target::AtMostTimes(1.0)),
        );
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| figure | Herald | MetalLB v0.15.2 | Herald ÷ MetalLB | target | met |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            format_value(r.herald, r.unit, r.herald_floor),
            format_value(r.metallb, r.unit, r.metallb_floor),
            ratio(r),
            r.target.map(Target::describe).unwrap_or_default(),
            r.verdict()
        );
    }
    if rows.iter().any(|r| r.herald_floor || r.metallb_floor) {
        let _ = writeln!(
            out,
            "\n\"≥\": at its best step the responder answered (nearly) everything offered, or (where measured) the client's CPU was full while the responder's was not, or a reflected loop ran under {:.0}% of its step: the figure is a floor.",
            100.0 * crate::bench::dataplane::measure::LOOP_SHARE_MIN
        );
    }
    out.push_str(&spreads(herald, metallb));
    let mut missing = Vec::new();
    for (who, f) in [("Herald", herald), ("MetalLB", metallb)] {
        for (what, why) in [
            ("ARP (segment)", f.arp.as_ref().err()),
            ("NDP (segment)", f.ndp.as_ref().err()),
            ("ARP (direct link)", f.direct_arp.as_ref().err()),
            ("NDP (direct link)", f.direct_ndp.as_ref().err()),
            ("failover", f.failover.as_ref().err()),
            ("Services", f.services.as_ref().err()),
        ] {
            if let Some(why) = why {
                missing.push(format!("- {who} {what}: {why}"));
            }
        }
    }
    if !missing.is_empty() {
        let _ = writeln!(out, "\nNot measured:\n{}", missing.join("\n"));
    }
    out
}

#[cfg(test)]
mod tests;
