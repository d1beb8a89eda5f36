//! Failure-detection timing and the data-plane guard derived from it.
//!
//! # The bound
//!
//! With detection target `D` (`--detect-ms`, default 500 ms) the gossip uses a probe period
//! `P = D/5`, a direct-probe wait `R = 2P/5` and a suspicion timeout `S = D/2`. A survivor can
//! only declare a member Down after one of its probes went unanswered for a full period and the
//! suspicion then ran out, so **no survivor takes over earlier than `P + S = 0.7·D` after the
//! last datagram it received from the failed member** (typical detection: `P + S` plus the wait
//! until the member is probed, ≈ `D`).
//!
//! The speaker refreshes the XDP guard every `H` (≤ 100 ms) with a deadline of
//! `last_contact + B`, where `last_contact` is the last authenticated datagram received from
//! any peer and `B = D/2` (the guard budget). So a speaker that is killed, hangs, or is cut off
//! from every peer stops answering at most `B = 0.5·D` after its last contact, which is at
//! least `(P + S) − B = 0.2·D` (100 ms by default) **before** any survivor can take over:
//! `B < P + S` for every `D`, checked by the tests.
//!
//! # Alone or isolated
//!
//! A speaker with no live peer in its view (a one-node cluster, or after it declared every
//! peer Down) is *alone* when the API server shows no other speaker Ready: its deadline is then
//! `now + B`, so the last node standing keeps answering. It is *isolated* when the API server
//! (its last view of it) still shows another speaker Ready: those speakers may well hear each
//! other and have taken its addresses over, so it cannot be sure of anything it answers and
//! lets the guard run out until it hears a peer again or the API server reports the others gone
//! (not Ready, or deleted). MetalLB answers for its own view in that case, which puts two
//! answerers on one address in a partition; Herald answers nowhere instead. The price: when the
//! only other speaker of a two-node cluster dies, the survivor stops answering until
//! Kubernetes marks the dead speaker not Ready (the node's `node-monitor-grace-period`).
//! Members declared Down are re-announced to every `B`, so after a partition heals the views
//! merge within about `2·B` and the losers withdraw at once (virtual-time test in
//! `membership`).
//!
//! In a healthy cluster a member hears a peer at least every gossip period `P/2` (periodic
//! gossip) and every probe, so `B` covers several missed datagrams before a false silence.

use std::time::Duration;

/// The bounds `--detect-ms` accepts: below 50 ms the heartbeat cannot keep up; above a minute
/// failover is no longer the point.
pub const DETECT_MS_RANGE: std::ops::RangeInclusive<u64> = 50..=60_000;

/// Every interval derived from the detection target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub detect: Duration,
    /// SWIM probe period `P`.
    pub probe_period: Duration,
    /// Wait for a direct ack before indirect probes (`R`).
    pub probe_rtt: Duration,
    /// Suspect → Down (`S`).
    pub suspect_to_down: Duration,
    /// Periodic gossip to a few members.
    pub gossip_every: Duration,
    /// Guard refresh cadence `H`.
    pub heartbeat_every: Duration,
    /// Guard budget `B`: the responder stops answering this long after the last contact.
    pub guard_budget: Duration,
    /// After a restart with a live guard, keep answering this long without contact while
    /// rejoining (a crash-restart must not leave a gap).
    pub startup_grace: Duration,
}

impl Timing {
    /// Derives every interval from `detect`; `None` outside [`DETECT_MS_RANGE`].
    pub fn from_detect_ms(detect_ms: u64) -> Option<Timing> {
        if !DETECT_MS_RANGE.contains(&detect_ms) {
            return None;
        }
        let d = detect_ms;
        let probe_period = d / 5;
        let probe_rtt = (probe_period * 2 / 5).max(1);
        let suspect = d / 2;
        let budget = d / 2;
        let heartbeat = (budget / 3).min(100);
        Some(Timing {
            detect: Duration::from_millis(d),
            probe_period: Duration::from_millis(probe_period),
            probe_rtt: Duration::from_millis(probe_rtt),
            suspect_to_down: Duration::from_millis(suspect),
            gossip_every: Duration::from_millis((probe_period / 2).max(1)),
            heartbeat_every: Duration::from_millis(heartbeat),
            guard_budget: Duration::from_millis(budget),
            startup_grace: Duration::from_millis(d),
        })
    }

    /// The earliest a survivor can declare a silent member Down after its last datagram.
    pub fn earliest_takeover(&self) -> Duration {
        self.probe_period + self.suspect_to_down
    }
}

/// What the guard refresh knows at one tick (all times are offsets on one monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardInput {
    pub now: Duration,
    /// Last authenticated datagram from a peer, if any.
    pub last_contact: Option<Duration>,
    /// Whether the membership view holds any live peer besides this node.
    pub peers_in_view: bool,
    /// Whether the API server (as last seen) shows a speaker on another node Ready.
    pub others_ready: bool,
    /// Until when a restart may answer without contact (see [`Timing::startup_grace`]).
    pub grace_until: Option<Duration>,
}

/// The guard timeout to write now (counted from `now`), or `None` to let the guard run out.
pub fn guard_timeout(timing: &Timing, input: &GuardInput) -> Option<Duration> {
    let deadline = if input.peers_in_view {
        let from_contact = input.last_contact.map(|at| at + timing.guard_budget);
        let from_grace = input.grace_until;
        match (from_contact, from_grace) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return None,
        }
    } else if input.others_ready {
        // Isolated: nothing to go by but a restart's grace.
        input.grace_until?
    } else {
        input.now + timing.guard_budget
    };
    // Never beyond one budget from now: a hung process must stop within B of its last beat.
    let deadline = deadline.min(input.now + timing.guard_budget);
    deadline.checked_sub(input.now).filter(|t| !t.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn default_timing() {
        let t = Timing::from_detect_ms(500).unwrap();
        assert_eq!(t.probe_period, ms(100));
        assert_eq!(t.probe_rtt, ms(40));
        assert_eq!(t.suspect_to_down, ms(250));
        assert_eq!(t.gossip_every, ms(50));
        assert_eq!(t.heartbeat_every, ms(83));
        assert_eq!(t.guard_budget, ms(250));
        assert_eq!(t.earliest_takeover(), ms(350));
    }

    #[test]
    fn out_of_range_detect_is_refused() {
        assert_eq!(Timing::from_detect_ms(49), None);
        assert_eq!(Timing::from_detect_ms(60_001), None);
        assert!(Timing::from_detect_ms(50).is_some());
    }

    proptest! {
        /// The guard always expires before the earliest takeover, with a real margin, and the
        /// heartbeat refreshes it several times per budget.
        #[test]
        fn guard_expires_before_takeover(d in DETECT_MS_RANGE) {
            let t = Timing::from_detect_ms(d).unwrap();
            prop_assert!(t.guard_budget < t.earliest_takeover());
            prop_assert!(t.earliest_takeover().checked_sub(t.guard_budget).unwrap() >= Duration::from_millis(d / 5));
            prop_assert!(t.heartbeat_every * 3 <= t.guard_budget);
            prop_assert!(t.probe_rtt < t.probe_period);
            prop_assert!(t.heartbeat_every <= ms(100));
            prop_assert!(!t.probe_rtt.is_zero() && !t.gossip_every.is_zero());
        }

        /// Whatever the inputs, a refreshed guard never runs past last contact + B while peers
        /// are in view (outside the startup grace), and never past now + B.
        #[test]
        fn guard_deadline_bounded(
            d in DETECT_MS_RANGE,
            now in 0u64..1_000_000,
            contact_ago in proptest::option::of(0u64..1_000_000),
            peers in any::<bool>(),
            others_ready in any::<bool>(),
        ) {
            let t = Timing::from_detect_ms(d).unwrap();
            let now = ms(now);
            let last_contact = contact_ago.map(|a| now.saturating_sub(ms(a)));
            let input = GuardInput { now, last_contact, peers_in_view: peers, others_ready, grace_until: None };
            match guard_timeout(&t, &input) {
                Some(timeout) => {
                    prop_assert!(timeout <= t.guard_budget);
                    if peers {
                        let contact = last_contact.unwrap();
                        prop_assert!(now + timeout <= contact + t.guard_budget);
                    }
                }
                // Silent only with peers in view (and no fresh contact), or isolated.
                None => prop_assert!(peers || others_ready),
            }
        }
    }

    #[test]
    fn guard_cases() {
        let t = Timing::from_detect_ms(500).unwrap();
        let input = |now, last: Option<u64>, peers, grace: Option<u64>| GuardInput {
            now: ms(now),
            last_contact: last.map(ms),
            peers_in_view: peers,
            others_ready: false,
            grace_until: grace.map(ms),
        };
        let at = |now, last: Option<u64>, peers, grace: Option<u64>| {
            guard_timeout(&t, &input(now, last, peers, grace))
        };
        let isolated = |now, grace: Option<u64>| {
            let input = GuardInput {
                others_ready: true,
                ..input(now, None, false, grace)
            };
            guard_timeout(&t, &input)
        };
        // Alone: always answer, refreshed for one budget.
        assert_eq!(at(1000, None, false, None), Some(ms(250)));
        // Fresh contact: deadline is contact + B.
        assert_eq!(at(1000, Some(990), true, None), Some(ms(240)));
        // Contact too old: let it run out.
        assert_eq!(at(1000, Some(700), true, None), None);
        assert_eq!(at(1000, Some(750), true, None), None);
        // No contact ever with peers in view: silent unless in the startup grace.
        assert_eq!(at(1000, None, true, None), None);
        assert_eq!(at(1000, None, true, Some(1100)), Some(ms(100)));
        assert_eq!(at(1000, None, true, Some(2000)), Some(ms(250)));
        // Isolated (no peer heard, others Ready per the API server): silent, but for a grace.
        assert_eq!(isolated(1000, None), None);
        assert_eq!(isolated(1000, Some(1100)), Some(ms(100)));
        assert_eq!(isolated(1000, Some(900)), None);
    }
}
