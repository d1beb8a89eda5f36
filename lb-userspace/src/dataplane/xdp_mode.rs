//! Which XDP mode an interface gets, as pure rules.
//!
//! Driver mode answers from the NIC's receive path, but its replies (XDP_TX) leave only through a
//! driver that can transmit XDP frames. A veth can do so only when its peer runs an XDP program
//! itself; otherwise the kernel drops every reply and counts it as a TX drop — a silent node. So
//! under `auto`:
//! - a veth gets skb mode from the start (containers and most lab or virtual nodes sit on one);
//! - any other driver gets driver mode, and is watched ([`TxWatch`]): when the interface's TX
//!   drops grow as fast as the program's replies, the replies are not leaving and the link moves
//!   to skb mode.
//!
//! An explicit `--xdp-mode` is obeyed, also on veth (a peer with an XDP program makes driver mode
//! work there), and a pinned link in another mode is moved to the requested one.

use super::pins::AttachedMode;
use super::types::AttachMode;
pub use super::types::SkbReason;

/// The driver name a veth reports.
pub const VETH: &str = "veth";

/// The modes to try, in order, for a fresh attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tries {
    pub modes: Vec<AttachedMode>,
    /// Set when `auto` skipped driver mode on purpose.
    pub skipped_driver: Option<SkbReason>,
}

/// The modes to try on an interface whose driver is `driver` (None: unknown).
pub fn tries(request: AttachMode, driver: Option<&str>) -> Tries {
    match request {
        AttachMode::Driver => Tries {
            modes: vec![AttachedMode::Driver],
            skipped_driver: None,
        },
        AttachMode::Skb => Tries {
            modes: vec![AttachedMode::Skb],
            skipped_driver: None,
        },
        AttachMode::Auto if driver == Some(VETH) => Tries {
            modes: vec![AttachedMode::Skb],
            skipped_driver: Some(SkbReason::Veth),
        },
        AttachMode::Auto => Tries {
            modes: vec![AttachedMode::Driver, AttachedMode::Skb],
            skipped_driver: None,
        },
    }
}

/// What to do with a live pinned link in mode `pinned`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Reuse it: no gap in answers.
    Keep,
    /// Replace it by a link in this mode.
    MoveTo(AttachedMode, Option<SkbReason>),
}

/// The rule for a pinned link: an explicit request wins; `auto` leaves a veth's driver link
/// (its replies are being dropped) and keeps everything else.
pub fn pinned(request: AttachMode, pinned: AttachedMode, driver: Option<&str>) -> Pinned {
    let wanted = match request {
        AttachMode::Driver => AttachedMode::Driver,
        AttachMode::Skb => AttachedMode::Skb,
        AttachMode::Auto if pinned == AttachedMode::Driver && driver == Some(VETH) => {
            return Pinned::MoveTo(AttachedMode::Skb, Some(SkbReason::Veth));
        }
        AttachMode::Auto => pinned,
    };
    if wanted == pinned {
        Pinned::Keep
    } else {
        Pinned::MoveTo(wanted, None)
    }
}

/// An interface's XDP link changed mode (or started in skb mode) for a reason an operator should
/// see: logged, counted and reported as an Event on the Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChange {
    pub iface: String,
    /// The mode left, when a link was replaced.
    pub from: Option<AttachedMode>,
    pub to: AttachedMode,
    /// Metric label: `veth`, `tx_dropped`, `requested` or `driver_refused`.
    pub reason: &'static str,
    pub message: String,
}

impl ModeChange {
    /// The change an attach made, if it is one to report.
    pub fn of(attached: &super::Attached) -> Option<ModeChange> {
        let from = attached.moved_from.map(|(mode, _)| mode);
        let (reason, why) = match (attached.skb_reason, &attached.driver_refused, from) {
            (Some(r), _, _) => (r.as_str(), r.explain().to_string()),
            (None, Some(refused), _) => (
                "driver_refused",
                format!("the driver refused driver mode ({refused}); using skb mode"),
            ),
            (None, None, Some(_)) => ("requested", "--xdp-mode asks for it".to_string()),
            (None, None, None) => return None,
        };
        let message = match attached.moved_from {
            Some((old, gap)) => format!(
                "XDP on {}: moved from {old} mode to {} mode ({} µs without XDP, {}): {why}",
                attached.iface,
                attached.mode,
                gap.as_micros(),
                if attached.covered {
                    "answered in userspace meanwhile"
                } else {
                    "unanswered meanwhile"
                }
            ),
            None => format!(
                "XDP on {}: attached in {} mode: {why}",
                attached.iface, attached.mode
            ),
        };
        Some(ModeChange {
            iface: attached.iface.clone(),
            from,
            to: attached.mode,
            reason,
            message,
        })
    }
}

/// Replies needed in one look before a driver link can be judged.
pub const MIN_REPLIES: u64 = 3;

/// Watches a driver-mode link: the program's reply count and the interface's TX drops, as
/// running totals read at each look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxWatch {
    last: Option<(u64, u64)>,
}

impl TxWatch {
    /// Takes the newest totals; true when, since the previous look, at least [`MIN_REPLIES`]
    /// replies were sent and the interface dropped at least as many frames on transmit.
    pub fn replies_dropped(&mut self, replies: u64, tx_dropped: u64) -> bool {
        let verdict = match self.last {
            Some((r0, d0)) => {
                let replies = replies.saturating_sub(r0);
                let dropped = tx_dropped.saturating_sub(d0);
                replies >= MIN_REPLIES && dropped >= replies
            }
            None => false,
        };
        self.last = Some((replies, tx_dropped));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttachedMode::{Driver, Skb};

    #[test]
    fn auto_skips_driver_mode_on_veth_only() {
        assert_eq!(
            tries(AttachMode::Auto, Some("veth")),
            Tries {
                modes: vec![Skb],
                skipped_driver: Some(SkbReason::Veth)
            }
        );
        for driver in [Some("mlx5_core"), Some("virtio_net"), Some("ixgbe"), None] {
            assert_eq!(
                tries(AttachMode::Auto, driver),
                Tries {
                    modes: vec![Driver, Skb],
                    skipped_driver: None
                },
                "{driver:?}"
            );
        }
    }

    #[test]
    fn explicit_modes_are_obeyed_on_every_driver() {
        for driver in [Some("veth"), Some("virtio_net"), None] {
            assert_eq!(tries(AttachMode::Driver, driver).modes, vec![Driver]);
            assert_eq!(tries(AttachMode::Skb, driver).modes, vec![Skb]);
            assert_eq!(tries(AttachMode::Driver, driver).skipped_driver, None);
        }
    }

    #[test]
    fn pinned_links_follow_the_request() {
        let drivers = [Some("veth"), Some("virtio_net"), None];
        for driver in drivers {
            assert_eq!(pinned(AttachMode::Driver, Driver, driver), Pinned::Keep);
            assert_eq!(pinned(AttachMode::Skb, Skb, driver), Pinned::Keep);
            assert_eq!(
                pinned(AttachMode::Skb, Driver, driver),
                Pinned::MoveTo(Skb, None)
            );
            assert_eq!(
                pinned(AttachMode::Driver, Skb, driver),
                Pinned::MoveTo(Driver, None)
            );
            // auto never leaves skb mode for driver mode on its own.
            assert_eq!(pinned(AttachMode::Auto, Skb, driver), Pinned::Keep);
        }
        assert_eq!(
            pinned(AttachMode::Auto, Driver, Some("veth")),
            Pinned::MoveTo(Skb, Some(SkbReason::Veth))
        );
        assert_eq!(
            pinned(AttachMode::Auto, Driver, Some("virtio_net")),
            Pinned::Keep
        );
        assert_eq!(pinned(AttachMode::Auto, Driver, None), Pinned::Keep);
    }

    fn attached(
        skb: Option<SkbReason>,
        refused: Option<&str>,
        moved: Option<AttachedMode>,
    ) -> super::super::Attached {
        super::super::Attached {
            iface: "eth0".into(),
            mode: Skb,
            already: false,
            driver_refused: refused.map(str::to_string),
            skb_reason: skb,
            moved_from: moved.map(|m| (m, std::time::Duration::from_micros(42))),
            covered: moved.is_some(),
            program_updated: false,
        }
    }

    #[test]
    fn mode_changes_say_what_and_why() {
        assert_eq!(ModeChange::of(&attached(None, None, None)), None);
        let veth = ModeChange::of(&attached(Some(SkbReason::Veth), None, None)).unwrap();
        assert_eq!((veth.reason, veth.from, veth.to), ("veth", None, Skb));
        assert!(
            veth.message
                .starts_with("XDP on eth0: attached in skb mode: the interface is a veth"),
            "{}",
            veth.message
        );
        let dropped =
            ModeChange::of(&attached(Some(SkbReason::TxDropped), None, Some(Driver))).unwrap();
        assert_eq!(dropped.reason, "tx_dropped");
        assert!(
            dropped
                .message
                .contains("moved from driver mode to skb mode (42 µs without XDP, answered in userspace meanwhile)"),
            "{}",
            dropped.message
        );
        let refused = ModeChange::of(&attached(None, Some("EOPNOTSUPP"), None)).unwrap();
        assert_eq!(refused.reason, "driver_refused");
        assert!(refused.message.contains("EOPNOTSUPP"));
        let requested = ModeChange::of(&attached(None, None, Some(Driver))).unwrap();
        assert_eq!(
            (requested.reason, requested.from),
            ("requested", Some(Driver))
        );
    }

    #[test]
    fn the_watch_needs_two_looks_and_enough_replies() {
        let mut w = TxWatch::default();
        // First look: nothing to compare with.
        assert!(!w.replies_dropped(100, 100));
        // Replies leave: drops do not grow.
        assert!(!w.replies_dropped(110, 100));
        // Too few replies to judge, even all dropped.
        assert!(!w.replies_dropped(112, 102));
        // Every reply dropped.
        assert!(w.replies_dropped(115, 105));
        // Some replies dropped, not all (other traffic's drops included): not judged dropped.
        assert!(!w.replies_dropped(125, 110));
        // Counters that went back (interface re-created): no verdict, new baseline.
        assert!(!w.replies_dropped(3, 0));
        assert!(w.replies_dropped(10, 7));
    }
}
