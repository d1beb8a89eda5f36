//! The figures of one implementation and the side-by-side table with ratios and the issue's
//! targets (pure: no I/O, tested below).

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
    /// Nearly no loss at the best step: the responder was not saturated, its figure is a floor.
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
            "\n\"≥\": that responder answered (nearly) everything offered at its best step: the generator, not the responder, set the figure."
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
mod tests {
    use super::*;

    /// The table row starting with `start`, or "" when there is none.
    fn row<'a>(table: &'a str, start: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_default()
    }

    fn saturation(replies: f64) -> Saturation {
        Saturation {
            replies,
            offered: replies * 2.0,
            p50_us: Some(20.0),
            p99_us: Some(15_000.0),
            low_rate: 5000.0,
            low_p50_us: Some(10.0),
            low_p99_us: None,
            generator_max: 400_000.0,
            generator_limited: false,
            responder_cpu: None,
            runs: vec![replies],
            failed_runs: 0,
        }
    }

    fn figures(replies: f64, p99_ms: f64, all_ms: f64) -> Figures {
        Figures {
            arp: Ok(saturation(replies)),
            ndp: Ok(saturation(replies / 2.0)),
            direct_arp: Ok(saturation(replies * 3.0)),
            direct_ndp: Ok(saturation(replies * 2.0)),
            direct_mode: None,
            direct_skb_arp: Err("not measured".into()),
            direct_skb_ndp: Err("not measured".into()),
            failover: Ok(Failover {
                trials: 20,
                p50_ms: p99_ms / 2.0,
                p99_ms,
                max_ms: p99_ms,
            }),
            services: Ok(Services {
                count: 1000,
                all_ms,
            }),
        }
    }

    #[test]
    fn targets_compare_herald_to_metallb() {
        let ten = Target::AtLeastTimes(10.0);
        assert_eq!(ten.met(310_000.0, 31_000.0), Some(true));
        assert_eq!(ten.met(309_999.0, 31_000.0), Some(false));
        assert_eq!(ten.met(1.0, 0.0), None, "no MetalLB figure to compare with");
        let third = Target::AtMostTimes(1.0 / 3.0);
        assert_eq!(third.met(500.0, 6000.0), Some(true));
        assert_eq!(third.met(2500.0, 6000.0), Some(false));
        let no_slower = Target::AtMostTimes(1.0);
        assert_eq!(no_slower.met(10.0, 10.0), Some(true));
        assert_eq!(no_slower.met(10.5, 10.0), Some(false));
        assert_eq!(no_slower.met(f64::NAN, 10.0), None);
    }

    #[test]
    fn the_median_run_is_one_run_never_a_mean() {
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), Some(2));
        assert_eq!(median_index(&[5.0]), Some(0));
        // Even count: the lower middle run.
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn repeated_runs_print_their_spread_and_flag_disagreement() {
        let single = table(
            &figures(400_000.0, 550.0, 9_000.0),
            &figures(30_000.0, 6_900.0, 12_000.0),
        );
        assert!(
            !single.contains("back-to-back runs"),
            "one run has no spread"
        );
        let mut herald = figures(400_000.0, 550.0, 9_000.0);
        let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
        if let Ok(arp) = herald.arp.as_mut() {
            arp.runs = vec![380_000.0, 400_000.0, 420_000.0];
        }
        if let Ok(arp) = metallb.arp.as_mut() {
            arp.runs = vec![30_000.0, 10_000.0, 31_000.0];
            arp.failed_runs = 1;
        }
        let t = table(&herald, &metallb);
        assert!(t.contains("over 4 back-to-back runs"), "{t}");
        assert!(
            t.contains(
                "- ARP, segment: Herald 400.0k/s (380.0k/s–420.0k/s, ±5%); MetalLB 30.0k/s (10.0k/s–31.0k/s, ±67%) UNSTABLE: runs disagree by more than ±30%; 1 run(s) failed"
            ),
            "{t}"
        );
        let arp = row(&t, "| ARP, segment replies/s");
        assert!(
            arp.ends_with("| **yes** (UNSTABLE: runs disagree by more than ±30%) |"),
            "{arp}"
        );
        let ndp = row(&t, "| NDP, segment replies/s");
        assert!(ndp.ends_with("| **yes** |"), "{ndp}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 99.0), Some(20.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn table_shows_ratios_and_verdicts() {
        let t = table(
            &figures(400_000.0, 550.0, 9_000.0),
            &figures(30_000.0, 6_900.0, 12_000.0),
        );
        let line = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
                .to_string()
        };
        let arp = line("| ARP, segment replies/s at saturation");
        assert!(arp.contains("400.0k/s") && arp.contains("30.0k/s"), "{arp}");
        assert!(
            arp.contains("13.3×") && arp.ends_with("| **yes** |"),
            "{arp}"
        );
        let ndp = line("| NDP, segment replies/s at saturation");
        assert!(ndp.contains("13.3×"), "{ndp}");
        let p99 = line("| failover on speaker frozen (SIGSTOP), p99 (20 trials)");
        assert!(p99.contains("550 ms") && p99.contains("6900 ms"), "{p99}");
        assert!(
            p99.contains("0.08×") && p99.ends_with("| **yes** |"),
            "{p99}"
        );
        let services = line("| 1000 Services → all have their IPs");
        assert!(
            services.contains("9.0 s") && services.contains("12.0 s"),
            "{services}"
        );
        assert!(services.contains("0.75×") && services.ends_with("| **yes** |"));
        let latency = line("| ARP, segment reply latency p99 at saturation");
        assert!(latency.contains("15.0 ms"), "{latency}");
        assert!(line("| ARP, segment reply latency p99 at 5.0k/s offered").contains("| – |"));
        assert!(!t.contains("Not measured"));
    }

    #[test]
    fn a_floor_is_marked_and_a_missed_target_stays_open() {
        let mut herald = figures(100_000.0, 550.0, 9_000.0);
        if let Ok(arp) = herald.arp.as_mut() {
            arp.generator_limited = true;
        }
        let t = table(&herald, &figures(30_000.0, 6_900.0, 12_000.0));
        let arp = row(&t, "| ARP, segment replies/s");
        assert!(
            arp.contains("| ≥ 100.0k/s |") && arp.contains("| ≥ 3.33× |"),
            "{arp}"
        );
        assert!(arp.ends_with("| open (Herald not saturated) |"), "{arp}");
        assert!(t.contains("the generator, not the responder, set the figure"));
        let ndp = row(&t, "| NDP, segment replies/s");
        assert!(
            ndp.ends_with("| **no** |"),
            "an exact figure stays a verdict: {ndp}"
        );
    }

    #[test]
    fn direct_link_rows_name_the_mode_and_compare_skb_with_the_same_metallb_figure() {
        let mut herald = figures(400_000.0, 550.0, 9_000.0);
        herald.direct_mode = Some("driver".into());
        herald.direct_skb_arp = Ok(saturation(250_000.0));
        herald.direct_skb_ndp = Err("probe never answered".into());
        if let Ok(arp) = herald.direct_arp.as_mut() {
            arp.responder_cpu = Some(60.0);
        }
        let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
        if let Ok(arp) = metallb.direct_arp.as_mut() {
            arp.responder_cpu = Some(100.0);
        }
        let t = table(&herald, &metallb);
        let line = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
                .to_string()
        };
        let driver = line("| ARP, direct link (Herald XDP driver mode) replies/s at saturation");
        assert!(
            driver.contains("| 1.20M/s | 90.0k/s | 13.3× |") && driver.ends_with("| **yes** |"),
            "{driver}"
        );
        let skb = line("| ARP, direct link (Herald XDP skb mode) replies/s at saturation");
        assert!(
            skb.contains("| 250.0k/s | 90.0k/s | 2.78× |") && skb.ends_with("| **no** |"),
            "{skb}"
        );
        let cpu = line(
            "| ARP, direct link (Herald XDP driver mode): responder CPU at saturation (% of one core)",
        );
        assert!(cpu.contains("| 60% | 100% | 0.60× |"), "{cpu}");
        let per_reply =
            line("| ARP, direct link (Herald XDP driver mode): responder CPU per reply");
        assert!(per_reply.contains("| 0.50 µs | 11.11 µs |"), "{per_reply}");
        assert!(
            !t.contains("| ARP, segment: responder CPU"),
            "no CPU rows where none was measured"
        );
        let skb_ndp = line("| NDP, direct link (Herald XDP skb mode) replies/s at saturation");
        assert!(skb_ndp.ends_with("| not measured |"), "{skb_ndp}");
        // Without a second mode there is one direct section per protocol.
        let plain = table(&figures(400_000.0, 550.0, 9_000.0), &metallb);
        assert!(plain.contains("| ARP, direct link replies/s at saturation |"));
        assert!(!plain.contains("skb mode"));
        let mut lost = metallb.clone();
        lost.direct_ndp = Err("no node answered NS".into());
        let t = table(&herald, &lost);
        assert!(t.contains("- MetalLB NDP (direct link): no node answered NS"));
    }

    #[test]
    fn parts_measured_for_neither_have_no_rows() {
        let mut herald = figures(400_000.0, 550.0, 9_000.0);
        let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
        for f in [&mut herald, &mut metallb] {
            f.failover = Err("not selected (--parts)".into());
            f.services = Err("not selected (--parts)".into());
        }
        let t = table(&herald, &metallb);
        assert!(!t.contains("| failover on speaker frozen"), "{t}");
        assert!(!t.contains("Services → all have their IPs"), "{t}");
        assert!(
            t.contains("- Herald failover: not selected (--parts)"),
            "{t}"
        );
    }

    #[test]
    fn missing_figures_are_named_with_the_reason() {
        let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
        metallb.failover = Err("no other node answered within 15 s".into());
        let t = table(&figures(400_000.0, 550.0, 9_000.0), &metallb);
        assert!(t.contains("- MetalLB failover: no other node answered within 15 s"));
        let p99 = t
            .lines()
            .find(|l| l.contains("p99 (20 trials)"))
            .unwrap_or_default();
        assert!(p99.ends_with("| not measured |"), "{p99}");
        let slow = table(
            &figures(100_000.0, 3000.0, 13_000.0),
            &figures(30_000.0, 6000.0, 12_000.0),
        );
        let arp = row(&slow, "| ARP, segment replies/s");
        assert!(arp.ends_with("| **no** |"), "{arp}");
    }
}
