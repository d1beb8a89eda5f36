//! What one run of the bench measured: the responders and protocols it compares, and the steps
//! and flood figures of each responder, and its side-by-side steps (Herald and the kernel in one
//! step, told apart by probe tag).

use std::time::Duration;

use super::lab;
use super::measure::StepResult;
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
}

impl ModeRun {
    /// The side-by-side step of `proto`, if this run had one.
    pub fn beside_of(&self, proto: Proto) -> Option<&Beside> {
        self.beside.iter().find(|b| b.proto == proto)
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
