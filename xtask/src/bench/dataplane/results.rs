//! What one run of the bench measured: the responders and protocols it compares, and the steps
//! and flood figures of each responder.

use std::time::Duration;

use super::beside::Beside;
use super::lab;
use super::measure::StepResult;

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
    pub fn steps(&self, proto: Proto) -> &[StepResult] {
        match proto {
            Proto::Arp => &self.arp,
            Proto::Ndp => &self.ndp,
        }
    }
}
