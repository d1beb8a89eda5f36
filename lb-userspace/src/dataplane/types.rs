//! The data plane's vocabulary: what callers ask for (attach mode, who answers) and what it
//! reports (who answers where, addresses, counters, the guard), as `herald xdp list`, the
//! speaker's metrics and the tests read them.

use std::net::IpAddr;
use std::path::PathBuf;

use lb_common::maps::Guard;
use lb_common::ratelimit::RateLimit;
use serde::Serialize;

use super::edges::EdgeCounters;
use super::keys::Mac;
use super::markers;
use super::pins::AttachedMode;

/// Requested attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver mode, falling back to skb mode when the driver refuses; skb mode on a veth
    /// ([`super::xdp_mode`]).
    Auto,
    Driver,
    Skb,
}

/// Why driver mode is not used, or was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkbReason {
    /// The interface is a veth: driver-mode replies are dropped unless its peer runs XDP.
    Veth,
    /// The interface dropped as many frames on transmit as the program sent replies.
    TxDropped,
}

impl SkbReason {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkbReason::Veth => "veth",
            SkbReason::TxDropped => "tx_dropped",
        }
    }

    /// What an operator reads in the log and the Event.
    pub fn explain(self) -> &'static str {
        match self {
            SkbReason::Veth => {
                "the interface is a veth, which drops driver-mode XDP replies unless its peer \
                 runs an XDP program; using skb mode (set --xdp-mode=driver if the peer has one)"
            }
            SkbReason::TxDropped => {
                "the interface dropped the driver-mode XDP replies on transmit (its driver \
                 cannot send XDP_TX frames); using skb mode"
            }
        }
    }
}

/// Who answers ARP/NDP (`--dataplane`): the XDP program, a userspace AF_PACKET responder
/// ([`super::fallback`]), or XDP when it can attach and userspace otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataplaneChoice {
    Xdp,
    Userspace,
    Auto,
}

impl std::str::FromStr for DataplaneChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "xdp" => Ok(DataplaneChoice::Xdp),
            "userspace" => Ok(DataplaneChoice::Userspace),
            "auto" => Ok(DataplaneChoice::Auto),
            other => Err(format!("{other:?}: expected xdp, userspace or auto")),
        }
    }
}

/// Who answers on one interface, as `herald xdp list` and the `herald_dataplane_mode` metric
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServedBy {
    #[serde(rename = "xdp-driver")]
    XdpDriver,
    #[serde(rename = "xdp-skb")]
    XdpSkb,
    #[serde(rename = "userspace")]
    Userspace,
}

impl ServedBy {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServedBy::XdpDriver => "xdp-driver",
            ServedBy::XdpSkb => "xdp-skb",
            ServedBy::Userspace => "userspace",
        }
    }
}

impl From<AttachedMode> for ServedBy {
    fn from(mode: AttachedMode) -> Self {
        match mode {
            AttachedMode::Driver => ServedBy::XdpDriver,
            AttachedMode::Skb => ServedBy::XdpSkb,
        }
    }
}

impl std::fmt::Display for ServedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of [`super::Dataplane::attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: String,
    pub mode: AttachedMode,
    /// The link was already pinned: nothing changed.
    pub already: bool,
    /// Why driver mode was not used when `auto` fell back to skb mode.
    pub driver_refused: Option<String>,
    /// Why `auto` chose skb mode without trying driver mode, or left it.
    pub skb_reason: Option<SkbReason>,
    /// A pinned link in this mode was replaced, and how long nothing answered meanwhile
    /// (between detaching it and attaching the new one).
    pub moved_from: Option<(AttachedMode, std::time::Duration)>,
    /// A userspace responder answered from the same maps while the link was replaced.
    pub covered: bool,
    /// The link was kept and given this process's program.
    pub program_updated: bool,
}

/// Result of [`super::Dataplane::announce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub ip: IpAddr,
    pub mac: Mac,
    /// The entry was absent or carried another MAC.
    pub changed: bool,
}

/// Result of [`super::detach`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detached {
    pub links: Vec<(String, AttachedMode)>,
    pub withdrawn: usize,
    /// No link remained, so the maps and the pin directory were removed too.
    pub maps_removed: bool,
    /// A userspace responder is still running, so the maps were kept.
    pub userspace_still_serving: bool,
}

/// Everything `herald xdp list` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub pin_dir: PathBuf,
    pub attachments: Vec<AttachmentInfo>,
    /// Every interface answered on, by XDP link or by a userspace responder.
    pub interfaces: Vec<InterfaceMode>,
    pub addresses: Vec<AddressInfo>,
    pub counters: Counters,
    /// Requests and claims out of the ordinary, and what the flood guard dropped.
    pub edges: EdgeCounters,
    /// The per-source limits the XDP program applies, read back from its maps (none without
    /// maps). A userspace responder applies neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    pub guard: GuardState,
}

/// The per-source limits in the program's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Answers per requester MAC (`--rate-limit`); over it, requests go to the kernel unanswered.
    pub answers: LimitInfo,
    /// Frames per source passed to the kernel unanswered (`--flood-limit`); over it, dropped.
    pub flood_guard: LimitInfo,
}

/// One token bucket: refilled with `per_second` (0: no limit), holding `burst` at most (a
/// `burst` of 0 counts as 1, as in the program).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LimitInfo {
    pub per_second: u32,
    pub burst: u32,
}

impl From<RateLimit> for LimitInfo {
    fn from(limit: RateLimit) -> Self {
        LimitInfo {
            per_second: limit.per_second,
            burst: limit.burst,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AttachmentInfo {
    pub iface: String,
    pub mode: AttachedMode,
    /// False when the interface is gone from this namespace (or was re-created: the link died).
    pub present: bool,
}

/// Who answers on one interface (`herald xdp list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceMode {
    pub iface: String,
    pub dataplane: ServedBy,
    /// The userspace responder's process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// XDP: the interface is present and the link alive; userspace: the process is alive.
    pub active: bool,
}

/// The per-interface view: XDP links, then userspace responders (live ones first).
pub fn interface_modes(
    attachments: &[AttachmentInfo],
    responders: &[markers::UserspaceResponder],
) -> Vec<InterfaceMode> {
    let mut out: Vec<InterfaceMode> = attachments
        .iter()
        .map(|a| InterfaceMode {
            iface: a.iface.clone(),
            dataplane: a.mode.into(),
            pid: None,
            active: a.present,
        })
        .collect();
    out.extend(responders.iter().map(|r| InterfaceMode {
        iface: r.iface.clone(),
        dataplane: ServedBy::Userspace,
        pid: Some(r.pid),
        active: r.alive,
    }));
    out.sort_by(|a, b| (&a.iface, !a.active, a.dataplane).cmp(&(&b.iface, !b.active, b.dataplane)));
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct AddressInfo {
    /// `None` when the interface index has no name in this namespace.
    pub iface: Option<String>,
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Mac,
    pub requests: u64,
    pub replies: u64,
}

/// Global counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub arp_replies: u64,
    pub na_replies: u64,
    pub passed: u64,
    pub malformed: u64,
    pub silenced: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum GuardState {
    /// Timeout 0: answers never stop (standalone use).
    Off,
    /// Created closed and never armed: nothing is answered.
    Closed,
    Fresh {
        age_ms: u64,
        timeout_ms: u64,
    },
    /// The program is silent until the next heartbeat.
    Stale {
        age_ms: u64,
        timeout_ms: u64,
    },
}

impl GuardState {
    /// Classifies `guard` at monotonic time `now_ns` with the program's own rule.
    pub fn of(guard: Guard, now_ns: u64) -> GuardState {
        if guard.timeout_ns == 0 {
            return GuardState::Off;
        }
        if guard.is_closed() {
            return GuardState::Closed;
        }
        let age_ms = now_ns.saturating_sub(guard.heartbeat_ns) / 1_000_000;
        let timeout_ms = guard.timeout_ns / 1_000_000;
        if guard.allows(now_ns) {
            GuardState::Fresh { age_ms, timeout_ms }
        } else {
            GuardState::Stale { age_ms, timeout_ms }
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` that the guard compares against.
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain old data and clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer; CLOCK_MONOTONIC cannot fail here.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_state_table() {
        let ms = 1_000_000u64;
        assert_eq!(
            GuardState::of(
                Guard {
                    heartbeat_ns: 0,
                    timeout_ns: 0
                },
                10 * ms
            ),
            GuardState::Off
        );
        assert_eq!(
            GuardState::of(
                Guard {
                    heartbeat_ns: 10 * ms,
                    timeout_ns: 2000 * ms
                },
                510 * ms
            ),
            GuardState::Fresh {
                age_ms: 500,
                timeout_ms: 2000
            }
        );
        assert_eq!(
            GuardState::of(
                Guard {
                    heartbeat_ns: 10 * ms,
                    timeout_ns: 2000 * ms
                },
                3010 * ms
            ),
            GuardState::Stale {
                age_ms: 3000,
                timeout_ms: 2000
            }
        );
    }

    #[test]
    fn dataplane_choice_parses_and_names_modes() {
        assert_eq!("xdp".parse(), Ok(DataplaneChoice::Xdp));
        assert_eq!("userspace".parse(), Ok(DataplaneChoice::Userspace));
        assert_eq!("auto".parse(), Ok(DataplaneChoice::Auto));
        assert_eq!(
            "XDP".parse::<DataplaneChoice>(),
            Err("\"XDP\": expected xdp, userspace or auto".to_string())
        );
        assert_eq!(ServedBy::from(AttachedMode::Driver).as_str(), "xdp-driver");
        assert_eq!(ServedBy::from(AttachedMode::Skb).as_str(), "xdp-skb");
        assert_eq!(
            serde_json::to_value(ServedBy::Userspace).unwrap(),
            serde_json::json!("userspace")
        );
    }

    #[test]
    fn interface_modes_merge_links_and_responders() {
        let attachments = [
            AttachmentInfo {
                iface: "eth1".into(),
                mode: AttachedMode::Skb,
                present: false,
            },
            AttachmentInfo {
                iface: "eth0".into(),
                mode: AttachedMode::Driver,
                present: true,
            },
        ];
        let responder = |iface: &str, pid, alive| markers::UserspaceResponder {
            iface: iface.into(),
            pid,
            alive,
            path: PathBuf::new(),
        };
        let modes = interface_modes(
            &attachments,
            &[responder("eth1", 7, true), responder("eth2", 9, false)],
        );
        let view: Vec<_> = modes
            .iter()
            .map(|m| (m.iface.as_str(), m.dataplane.as_str(), m.pid, m.active))
            .collect();
        assert_eq!(
            view,
            [
                ("eth0", "xdp-driver", None, true),
                // The live answerer first: a dead link's pin left behind comes after it.
                ("eth1", "userspace", Some(7), true),
                ("eth1", "xdp-skb", None, false),
                ("eth2", "userspace", Some(9), false),
            ]
        );
        assert!(interface_modes(&[], &[]).is_empty());
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
