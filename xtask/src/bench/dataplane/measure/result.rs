//! The figures of one step and what they say about it: loss, percentiles, floors and the
//! ways it fell short of what it asked for.

use super::LOOP_SHARE_MIN;
use crate::bench::dataplane::attribution::Path;
use crate::bench::dataplane::cpu::CpuShare;
use crate::bench::dataplane::machine::Speed;
use crate::bench::dataplane::stats;

/// Figures of one step.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// Requested rate in frames/s (`None`: as fast as the sender goes).
    pub target: Option<u64>,
    /// Frames the veth accepted per second (load + probes).
    pub offered: f64,
    /// Frames the veth refused (full queue / backpressure) per second.
    pub refused: f64,
    pub replies: f64,
    pub probes_sent: u64,
    /// Of `probes_sent`, those refused at send because the node's receive ring was full.
    pub probes_refused: u64,
    /// Runs of a self-pacing live-frames load held back because they came early.
    pub held: u64,
    /// Whether the load was reflected (each reply sent back as the next request).
    pub reflected: bool,
    /// Of a reflected step: the time from the loop's first reflected frame to its last, as a
    /// share of the step's time (it cannot run past the step; short of it, it stalled).
    pub loop_share: Option<f64>,
    /// Of an unpaced step: replies/s in each whole 100 ms window (`windows::WINDOW`) of it.
    pub windows: Vec<f64>,
    /// Of an unpaced step and of the flood: the machine's speed probes on the node CPU just
    /// before and just after it (`None`: not probed).
    pub speed: Option<Speed>,
    pub latencies_ns: Vec<u64>,
    /// The tag of each probe in `latencies_ns` (same order): which address it asked for where
    /// a step's probes ask for two.
    pub probe_tags: Vec<u8>,
    /// Per timed probe with a transmit stamp: (send path, flight) in ns.
    pub splits_ns: Vec<(u64, u64)>,
    pub node_cpu: CpuShare,
    /// Responder CPU in % of one core: node-CPU softirq time plus its threads' time.
    pub responder_cpu: f64,
    pub client_cpu: CpuShare,
    pub ring_drops: u64,
    pub to_generator: u64,
    pub wrong_address: u64,
    /// Where the step's frames went (`Ok(None)`: no node side to read).
    pub path: std::result::Result<Option<Path>, String>,
}

impl StepResult {
    pub fn loss(&self) -> f64 {
        stats::loss(self.offered, self.replies)
    }
    pub fn p50_us(&self) -> Option<f64> {
        stats::percentile_us(&self.latencies_ns, 50.0)
    }
    pub fn p99_us(&self) -> Option<f64> {
        stats::percentile_us(&self.latencies_ns, 99.0)
    }
    /// Responder CPU time per reply in µs (`None` without replies).
    pub fn cpu_us_per_reply(&self) -> Option<f64> {
        (self.replies > 0.0).then(|| self.responder_cpu / 100.0 / self.replies * 1e6)
    }
    pub fn probes_answered(&self) -> usize {
        self.latencies_ns.len()
    }
    /// Probes that entered the node's receive ring (sent, less those it refused).
    pub fn probes_reached(&self) -> u64 {
        self.probes_sent.saturating_sub(self.probes_refused)
    }
    /// Whether an unpaced step measured the generator rather than the responder: (nearly)
    /// nothing was lost, or the client's CPU (generator and reply counter) was saturated while
    /// the responder still had a fifth of its core idle. Its replies/s is then a floor.
    ///
    /// A reflected step keeps a fixed number of requests in flight and loses none, so there the
    /// CPUs tell: the responder's under 80% busy, or the client's full while the responder's was
    /// not (both sides of the loop near their limit: which one held it is not known).
    pub fn generator_bound(&self) -> bool {
        if self.target.is_some() {
            return false;
        }
        if self.reflected {
            return self.responder_cpu < 80.0
                || (self.client_cpu.busy >= 90.0 && self.responder_cpu < 95.0);
        }
        self.loss() < 0.01 || (self.client_cpu.busy >= 90.0 && self.responder_cpu < 80.0)
    }
    /// Whether this step's replies/s is a floor rather than the responder's limit: an unpaced
    /// step that was generator-bound, a reflected loop that ran under 95% of its step, or a
    /// paced step that lost (nearly) nothing.
    pub fn is_floor(&self) -> bool {
        if self.target.is_some() {
            return self.loss() < 0.01;
        }
        self.generator_bound() || self.loop_share.is_some_and(|s| s < LOOP_SHARE_MIN)
    }
    /// Where the step's frames went, or why that is not known.
    pub fn path_text(&self) -> String {
        match &self.path {
            Ok(Some(p)) => p.describe(),
            Ok(None) => "path: not read".into(),
            Err(e) => e.clone(),
        }
    }

    /// The probe time split into the send path (user space → veth driver, the kernel's
    /// transmit stamp) and the flight (veth → responder → reply at the client's receive stamp),
    /// p50 and p99 of each, or why there is none.
    pub fn split_text(&self) -> String {
        match (self.split_us(50.0), self.split_us(99.0)) {
            (Some((s50, f50)), Some((s99, f99))) => format!(
                "send path p50 {s50:.0}µs p99 {s99:.0}µs, flight p50 {f50:.0}µs p99 {f99:.0}µs ({} of {} probes stamped)",
                self.splits_ns.len(),
                self.probes_answered()
            ),
            _ => "no probe had a transmit stamp".into(),
        }
    }

    /// The speed probes that were measured, before and after, in ms.
    pub fn speed_probes(&self) -> impl Iterator<Item = f64> {
        self.speed.iter().flat_map(Speed::measured)
    }

    /// The speed probes, "16.5 ms / 16.6 ms" (before / after), "-" where none was taken.
    pub fn speed_text(&self) -> String {
        self.speed.map_or("-".into(), |s| s.text())
    }

    /// What kept this step from being the measurement it asked for: the generator short of a
    /// paced rate (under 95% of it), frames refused at send, counters that could not be read.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(target) = self.target.filter(|&t| t > 0)
            && self.offered < 0.95 * target as f64
        {
            out.push(format!(
                "generator reached {:.0}/s of {target}/s",
                self.offered
            ));
        }
        if self.refused > 0.0 {
            out.push(format!("{:.0}/s refused at send", self.refused));
        }
        if self.generator_bound() && (self.reflected || self.loss() >= 0.01) {
            out.push(format!(
                "generator-bound (client CPU {:.0}%, responder {:.0}%): replies/s is a floor",
                self.client_cpu.busy, self.responder_cpu
            ));
        }
        if let Some(share) = self.loop_share.filter(|&s| s < LOOP_SHARE_MIN) {
            out.push(format!(
                "the reflected loop ran {:.0}% of the step: replies/s is a floor",
                100.0 * share
            ));
        }
        if let Err(e) = &self.path {
            out.push(e.clone());
        }
        out
    }

    /// The `pct` percentile of the send path and of the flight, in µs (each its own
    /// percentile: they need not add up to the total's).
    pub fn split_us(&self, pct: f64) -> Option<(f64, f64)> {
        let send: Vec<u64> = self.splits_ns.iter().map(|s| s.0).collect();
        let flight: Vec<u64> = self.splits_ns.iter().map(|s| s.1).collect();
        Some((
            stats::percentile_us(&send, pct)?,
            stats::percentile_us(&flight, pct)?,
        ))
    }
}
