//! The speaker's two guard heartbeats, each on its own thread with its own map handle
//! ([`crate::dataplane::heartbeat`]): the restart bridge, which keeps pinned answers alive
//! while a quickly restarted speaker reconnects, and the regular guard, which beats only while
//! the gossip hears peers (see [`super::timing`] for the bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::heartbeat::{Beat, Guard, Heartbeat, OnError};
use crate::dataplane::{self, Result};
use crate::speaker::gossip::Health;
use crate::speaker::timing::{GuardInput, Timing, guard_timeout};

/// Beats the guard during start-up after a quick restart, until the regular guard thread takes
/// over; never longer than `startup_grace` (the same bound the regular thread's grace has).
pub fn restart_bridge<G: Guard>(guard: G, timing: Timing) -> Result<Heartbeat> {
    let started = Instant::now();
    Heartbeat::spawn(
        "guard-bridge",
        guard,
        timing.heartbeat_every,
        true,
        OnError::Retry,
        move || {
            if started.elapsed() < timing.startup_grace {
                Beat::Refresh(timing.guard_budget)
            } else {
                Beat::Stop
            }
        },
    )
}

/// The regular guard: beats once `armed` (after the first plan removed stale claims), with the
/// timeout [`guard_timeout`] gives for what the gossip last heard; lets the guard run out while
/// no peer is heard.
pub fn regular<G: Guard>(
    guard: G,
    timing: Timing,
    health: Option<Arc<Health>>,
    armed: Arc<AtomicBool>,
    quick_restart: bool,
) -> Result<Heartbeat> {
    let start_ns = dataplane::monotonic_ns();
    let grace_until = quick_restart.then(|| Duration::from_nanos(start_ns) + timing.startup_grace);
    // Why the guard is let run out, while it is: logged once per change of reason.
    let mut silent: Option<&'static str> = None;
    Heartbeat::spawn(
        "guard",
        guard,
        timing.heartbeat_every,
        false,
        OnError::Retry,
        move || {
            if !armed.load(Ordering::Relaxed) {
                return Beat::Skip;
            }
            let input = guard_input(
                Duration::from_nanos(dataplane::monotonic_ns()),
                health.as_deref(),
                grace_until,
            );
            if let Some(timeout) = guard_timeout(&timing, &input) {
                if silent.take().is_some() {
                    tracing::info!("peers heard again, or alone: answering");
                }
                Beat::Refresh(timeout)
            } else {
                let reason = if input.peers_in_view {
                    "no contact with any peer: letting the guard run out (stop answering)"
                } else {
                    "isolated: no peer heard while the API server shows other speakers Ready; letting the guard run out (stop answering)"
                };
                if silent.replace(reason) != Some(reason) {
                    tracing::warn!("{reason}");
                }
                Beat::Skip
            }
        },
    )
}

/// What the guard decision reads: now, and the gossip's last contact (none without memberlist).
fn guard_input(
    now: Duration,
    health: Option<&Health>,
    grace_until: Option<Duration>,
) -> GuardInput {
    match health {
        None => GuardInput {
            now,
            last_contact: None,
            peers_in_view: false,
            others_ready: false,
            grace_until: None,
        },
        Some(h) => {
            let contact = h.last_contact_ns.load(Ordering::Relaxed);
            GuardInput {
                now,
                last_contact: (contact != 0).then(|| Duration::from_nanos(contact)),
                peers_in_view: h.peers_in_view.load(Ordering::Relaxed),
                others_ready: h.others_ready.load(Ordering::Relaxed),
                grace_until,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::{FakePlane, Op};

    fn timing() -> Timing {
        Timing::from_detect_ms(500).unwrap()
    }

    fn beats(plane: &FakePlane) -> usize {
        plane
            .take_ops()
            .iter()
            .filter(|op| matches!(op, Op::Heartbeat(_)))
            .count()
    }

    #[test]
    fn the_regular_guard_stays_silent_until_armed() {
        let plane = FakePlane::default();
        let armed = Arc::new(AtomicBool::new(false));
        let guard = regular(plane.clone(), timing(), None, armed.clone(), false).unwrap();
        std::thread::sleep(timing().heartbeat_every * 4);
        assert_eq!(beats(&plane), 0, "no heartbeat before the first plan");
        armed.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while beats(&plane) == 0 {
            assert!(Instant::now() < deadline, "armed guard never beat");
            std::thread::sleep(timing().heartbeat_every);
        }
        guard.stop().unwrap();
    }

    #[test]
    fn the_bridge_beats_at_once_with_the_guard_budget() {
        let plane = FakePlane::default();
        let bridge = restart_bridge(plane.clone(), timing()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ops = plane.state().ops.clone();
            if let Some(Op::Heartbeat(timeout)) = ops.first() {
                assert_eq!(*timeout, timing().guard_budget);
                break;
            }
            assert!(Instant::now() < deadline, "the bridge never beat");
            std::thread::sleep(Duration::from_millis(5));
        }
        bridge.stop().unwrap();
    }

    #[test]
    fn without_memberlist_the_input_has_no_contact() {
        let input = guard_input(Duration::from_secs(3), None, Some(Duration::from_secs(9)));
        assert_eq!(input.last_contact, None);
        assert!(!input.peers_in_view);
        assert_eq!(input.grace_until, None);
    }
}
