//! What one run of the bench measured: the responders and protocols it compares, and the steps
//! and flood figures of each responder, its side-by-side steps (Herald and the kernel in one
//! step, told apart by probe tag) and its saturation turns (Herald and the kernel alternating).

use std::time::Duration;

use super::flood_guard::FloodGuardOverStep;
use super::lab;
use super::measure::StepResult;
use super::repeat::Spread;
use super::{stats, svg};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Driver,
    Skb,
    Userspace,
    Kernel,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Driver => "Herald XDP, driver mode",
            Mode::Skb => "Herald XDP, skb mode",
            Mode::Userspace => "Herald userspace fallback",
            Mode::Kernel => "Linux kernel (address on iface)",
        }
    }
    pub fn color(self) -> &'static str {
        match self {
            Mode::Driver => "#d62728",
            Mode::Skb => "#ff7f0e",
            Mode::Userspace => "#2ca02c",
            Mode::Kernel => "#1f77b4",
        }
    }
    /// Pin directory side whose `herald xdp list` the flood's control-loop check times.
    pub fn list_side(self) -> Option<&'static str> {
        match self {
            Mode::Driver | Mode::Skb => Some("node"),
            Mode::Userspace => Some("userspace"),
            Mode::Kernel => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp,
    Ndp,
}

impl Proto {
    pub fn title(self) -> String {
        match self {
            Proto::Arp => format!("ARP (who-has {})", lab::VIP_V4),
            Proto::Ndp => format!("NDP (NS for {} → NA)", lab::VIP_V6),
        }
    }
    pub fn file(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Ndp => "ndp",
        }
    }
}

/// Bad-input flood figures for one responder.
pub struct Flood {
    pub step: StepResult,
    pub responder_cpu_pct: Option<f64>,
    pub list_time: Option<Duration>,
    /// Herald's flood guard over the step, from its program's maps (XDP modes only).
    pub guard: Option<FloodGuardOverStep>,
}

pub struct ModeRun {
    pub mode: Mode,
    /// Why the responder was not measured.
    pub skipped: Option<String>,
    pub arp: Vec<StepResult>,
    pub ndp: Vec<StepResult>,
    pub flood: Option<Flood>,
    /// Herald's program with the kernel beside it in one step (XDP modes only).
    pub beside: Vec<Beside>,
    /// Herald's program and the kernel at saturation in turns (XDP modes only).
    pub turns: Vec<Alternation>,
}

impl ModeRun {
    /// The side-by-side step of `proto`, if this run had one.
    pub fn beside_of(&self, proto: Proto) -> Option<&Beside> {
        self.beside.iter().find(|b| b.proto == proto)
    }
    /// The saturation turns of `proto`, if this run had them.
    pub fn turns_of(&self, proto: Proto) -> Option<&Alternation> {
        self.turns.iter().find(|a| a.proto == proto)
    }
    pub fn steps(&self, proto: Proto) -> &[StepResult] {
        match proto {
            Proto::Arp => &self.arp,
            Proto::Ndp => &self.ndp,
        }
    }
}

/// One side-by-side step of one protocol.
#[derive(Clone, Debug)]
pub struct Beside {
    pub proto: Proto,
    pub step: StepResult,
}

impl Beside {
    /// Probe times (ns) of Herald's address and of the kernel's.
    pub fn split(&self) -> (Vec<u64>, Vec<u64>) {
        split(&self.step.latencies_ns, &self.step.probe_tags)
    }

    /// p99 (µs) of Herald's probes and of the kernel's.
    pub fn p99_us(&self) -> (Option<f64>, Option<f64>) {
        let (h, k) = self.split();
        (
            stats::percentile_us(&h, 99.0),
            stats::percentile_us(&k, 99.0),
        )
    }

    /// Herald's p99 over the kernel's.
    pub fn p99_ratio(&self) -> Option<f64> {
        let (h, k) = self.p99_us();
        stats::ratio(h?, k?)
    }

    /// `p50 / p99` of Herald's and of the kernel's probes, with their counts.
    pub fn text(&self) -> String {
        let (h, k) = self.split();
        let side = |v: &[u64]| {
            format!(
                "p50 {} p99 {} ({} probes)",
                stats::us(stats::percentile_us(v, 50.0)),
                stats::us(stats::percentile_us(v, 99.0)),
                v.len()
            )
        };
        format!(
            "side by side at {}/s: Herald {}, kernel {}; p99 ×kernel {}",
            self.step.target.map_or("-".into(), |r| svg::si(r as f64)),
            side(&h),
            side(&k),
            self.p99_ratio().map_or("-".into(), |r| format!("{r:.2}×"))
        )
    }
}

/// One unpaced (saturation) step of an alternation: who answered and what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    /// Herald's program answered (else the kernel, the program detached).
    pub herald: bool,
    pub replies: f64,
    /// The step's replies/s is a floor ([`StepResult::is_floor`]).
    pub floor: bool,
    /// Frames the node end's driver sent back by XDP_TX (driver mode's replies), when known.
    pub xdp_tx: Option<u64>,
    /// Why the turn was not answered by whom it should have been, when the counters say so: its
    /// pair is left out of the ratio.
    pub wrong: Option<String>,
}

impl Turn {
    pub fn of(herald: bool, step: &StepResult) -> Turn {
        Turn {
            herald,
            replies: step.replies,
            floor: step.is_floor(),
            xdp_tx: match &step.path {
                Ok(Some(p)) => Some(p.xdp_tx),
                _ => None,
            },
            wrong: None,
        }
    }
    pub fn who(&self) -> &'static str {
        if self.herald { "Herald" } else { "kernel" }
    }
}

/// What a pair's ratio is, given which of its two figures are floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Neither figure is a floor.
    Exact,
    /// Herald's figure is a floor: the ratio is at least this.
    AtLeast,
    /// The kernel's figure is a floor: the ratio is at most this.
    AtMost,
    /// Both are floors: the ratio bounds nothing.
    Neither,
}

impl Bound {
    pub fn of(herald_floor: bool, kernel_floor: bool) -> Bound {
        match (herald_floor, kernel_floor) {
            (false, false) => Bound::Exact,
            (true, false) => Bound::AtLeast,
            (false, true) => Bound::AtMost,
            (true, true) => Bound::Neither,
        }
    }
    pub fn prefix(self) -> &'static str {
        match self {
            Bound::Exact => "",
            Bound::AtLeast => "≥ ",
            Bound::AtMost => "≤ ",
            Bound::Neither => "~ ",
        }
    }
}

/// Herald's program and the kernel at saturation in turns of one run, one protocol: the turns
/// run in pairs, one of each, the order within pairs alternating (ABBA), so a pair's two figures
/// are seconds apart and a slow spell of the host weighs on both of its sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Alternation {
    pub proto: Proto,
    /// In the order run.
    pub turns: Vec<Turn>,
}

impl Alternation {
    /// Herald's replies/s over the kernel's, for each pair of turns that has one of each and
    /// whose responders were the ones asked, with what the ratio bounds.
    pub fn pair_ratios(&self) -> Vec<(f64, Bound)> {
        self.turns
            .as_chunks::<2>()
            .0
            .iter()
            .filter_map(|[a, b]| {
                let (herald, kernel) = match (a.herald, b.herald) {
                    (true, false) => (a, b),
                    (false, true) => (b, a),
                    _ => return None,
                };
                if herald.wrong.is_some() || kernel.wrong.is_some() {
                    return None;
                }
                let r = stats::ratio(herald.replies, kernel.replies)?;
                Some((r, Bound::of(herald.floor, kernel.floor)))
            })
            .collect()
    }
    /// The median of the pairs' ratios.
    pub fn ratio(&self) -> Option<f64> {
        let r: Vec<f64> = self.pair_ratios().iter().map(|p| p.0).collect();
        Spread::of(&r).map(|s| s.median)
    }
    /// The median replies/s of Herald's turns (`true`) or the kernel's.
    pub fn replies(&self, herald: bool) -> Option<f64> {
        let r: Vec<f64> = self
            .turns
            .iter()
            .filter(|t| t.herald == herald)
            .map(|t| t.replies)
            .collect();
        Spread::of(&r).map(|s| s.median)
    }
    /// How many turns of Herald's (`true`) or the kernel's measured a floor.
    pub fn floors(&self, herald: bool) -> usize {
        self.turns
            .iter()
            .filter(|t| t.herald == herald && t.floor)
            .count()
    }
    /// How many turns were answered by the other responder.
    pub fn wrong(&self) -> usize {
        self.turns.iter().filter(|t| t.wrong.is_some()).count()
    }
    /// Every turn in order, the pairs' ratios and their median.
    pub fn text(&self) -> String {
        let turns: Vec<String> = self
            .turns
            .iter()
            .map(|t| {
                format!(
                    "{} {}/s{}{}",
                    t.who(),
                    svg::si(t.replies),
                    if t.floor { " (floor)" } else { "" },
                    t.wrong
                        .as_deref()
                        .map_or(String::new(), |w| format!(" (left out: {w})"))
                )
            })
            .collect();
        let pairs: Vec<String> = self
            .pair_ratios()
            .iter()
            .map(|(r, bound)| format!("{}{r:.2}×", bound.prefix()))
            .collect();
        format!(
            "saturation in turns: {}; Herald ÷ kernel per pair {}, median {}",
            turns.join(", "),
            pairs.join(" "),
            self.ratio().map_or("-".into(), |r| format!("{r:.2}×"))
        )
    }
}

/// Probe times of even tags (Herald's address) and of odd ones (the kernel's); `tags` runs
/// beside `latencies` (a missing tag counts for neither).
pub fn split(latencies: &[u64], tags: &[u8]) -> (Vec<u64>, Vec<u64>) {
    let (mut herald, mut kernel) = (Vec::new(), Vec::new());
    for (&ns, &tag) in latencies.iter().zip(tags) {
        if tag % 2 == 0 {
            herald.push(ns);
        } else {
            kernel.push(ns);
        }
    }
    (herald, kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(herald: bool, replies: f64, floor: bool) -> Turn {
        Turn {
            herald,
            replies,
            floor,
            xdp_tx: None,
            wrong: None,
        }
    }

    #[test]
    fn turns_pair_up_one_of_each() {
        let a = Alternation {
            proto: Proto::Arp,
            turns: vec![
                turn(true, 6.0e6, false),
                turn(false, 5.0e5, false),
                turn(false, 4.0e5, false),
                turn(true, 4.0e6, true),
                turn(true, 6.6e6, false),
                turn(false, 6.0e5, true),
            ],
        };
        let pairs = a.pair_ratios();
        assert_eq!(pairs.len(), 3);
        assert!((pairs[0].0 - 12.0).abs() < 1e-9 && pairs[0].1 == Bound::Exact);
        assert!((pairs[1].0 - 10.0).abs() < 1e-9 && pairs[1].1 == Bound::AtLeast);
        assert!((pairs[2].0 - 11.0).abs() < 1e-9 && pairs[2].1 == Bound::AtMost);
        assert_eq!(a.ratio(), Some(11.0));
        assert_eq!(a.replies(true), Some(6.0e6));
        assert_eq!(a.replies(false), Some(5.0e5));
        assert_eq!((a.floors(true), a.floors(false)), (1, 1));
        let text = a.text();
        assert!(text.contains("12.00× ≥ 10.00× ≤ 11.00×"), "{text}");
        assert!(text.contains("median 11.00×"), "{text}");
        assert!(text.contains("Herald 4.0M/s (floor)"), "{text}");
        assert_eq!(Bound::of(true, true).prefix(), "~ ");
    }

    #[test]
    fn pairs_are_consecutive_turns_not_overlapping_ones() {
        // H K H K: two pairs (4× and 2×), not the three a sliding window would make.
        let a = Alternation {
            proto: Proto::Arp,
            turns: vec![
                turn(true, 4.0, false),
                turn(false, 1.0, false),
                turn(true, 4.0, false),
                turn(false, 2.0, false),
            ],
        };
        let r: Vec<f64> = a.pair_ratios().iter().map(|p| p.0).collect();
        assert_eq!(r, [4.0, 2.0]);
        assert_eq!(a.ratio(), Some(3.0));
    }

    #[test]
    fn a_pair_without_one_of_each_a_silent_kernel_or_a_wrong_responder_gives_no_ratio() {
        let mut wrong = turn(true, 9.0e6, false);
        wrong.wrong = Some("the kernel answered".into());
        let a = Alternation {
            proto: Proto::Ndp,
            // Two of Herald's turns in one pair, a kernel turn with no replies, a pair whose
            // Herald turn the kernel answered, a turn left over.
            turns: vec![
                turn(true, 1.0e6, false),
                turn(true, 1.0e6, false),
                turn(true, 1.0e6, false),
                turn(false, 0.0, false),
                turn(false, 1.0e5, false),
                wrong,
                turn(false, 1.0e5, false),
            ],
        };
        assert!(a.pair_ratios().is_empty());
        assert_eq!(a.ratio(), None);
        assert_eq!(a.wrong(), 1);
        assert!(
            a.text().contains("(left out: the kernel answered)"),
            "{}",
            a.text()
        );
    }

    #[test]
    fn even_tags_are_heralds_and_odd_ones_the_kernels() {
        let (h, k) = split(&[10, 20, 30, 40, 50], &[0, 1, 2, 63, 4]);
        assert_eq!(h, [10, 30, 50]);
        assert_eq!(k, [20, 40]);
        // A latency without its tag counts for neither.
        let (h, k) = split(&[10, 20, 30], &[0, 1]);
        assert_eq!((h.len(), k.len()), (1, 1));
    }
}
