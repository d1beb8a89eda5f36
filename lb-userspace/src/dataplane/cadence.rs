//! When to send gratuitous ARP / unsolicited NA, as MetalLB does: at once when an address is
//! (re)applied and not already in its window, then on a shared ticker every `interval` while
//! the window (until `window` after the latest apply) lasts. Pure: time is an offset the caller
//! supplies, so the schedule is tested without a clock.

use std::collections::BTreeMap;
use std::time::Duration;

/// Gratuitous cadence. `window == 0` (or `interval == 0`) means one packet round per apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    pub interval: Duration,
    pub window: Duration,
}

impl Default for Cadence {
    /// MetalLB's: every 1.1 s until 5 s after the last change.
    fn default() -> Self {
        Cadence {
            interval: Duration::from_millis(1100),
            window: Duration::from_secs(5),
        }
    }
}

impl Cadence {
    /// True when only the immediate round is sent.
    pub fn is_once(&self) -> bool {
        self.window.is_zero() || self.interval.is_zero()
    }

    /// Offsets (from a single apply at 0, ticker started then) of every round: 0, then each
    /// tick up to and including `window`. Lazy, so a long window costs no memory.
    pub fn single_apply_rounds(&self) -> impl Iterator<Item = Duration> + use<> {
        let Cadence { interval, window } = *self;
        let once = self.is_once();
        std::iter::successors(Some(Duration::ZERO), move |at| {
            if once {
                return None;
            }
            at.checked_add(interval).filter(|next| *next <= window)
        })
    }
}

/// Addresses in their gratuitous window, keyed by whatever identifies an announcement.
#[derive(Clone, Debug)]
pub struct Windows<K: Ord + Clone> {
    cadence: Cadence,
    deadlines: BTreeMap<K, Duration>,
}

impl<K: Ord + Clone> Windows<K> {
    pub fn new(cadence: Cadence) -> Self {
        Windows {
            cadence,
            deadlines: BTreeMap::new(),
        }
    }

    /// Records an apply of `key` at `now`; true when a round must be sent at once (the key was
    /// not already in its window). Re-applying extends the window.
    pub fn apply(&mut self, key: K, now: Duration) -> bool {
        let in_window = self
            .deadlines
            .get(&key)
            .is_some_and(|deadline| now <= *deadline);
        if self.cadence.is_once() {
            self.deadlines.remove(&key);
            return true;
        }
        self.deadlines.insert(key, now + self.cadence.window);
        !in_window
    }

    /// A tick of the shared ticker at `now`: the keys to send a round for. Keys whose window
    /// has ended are dropped.
    pub fn tick(&mut self, now: Duration) -> Vec<K> {
        self.deadlines.retain(|_, deadline| now <= *deadline);
        self.deadlines.keys().cloned().collect()
    }

    /// Stops sending for `key` (withdrawn).
    pub fn forget(&mut self, key: &K) {
        self.deadlines.remove(key);
    }

    /// True when no key is in its window (the ticker may sleep).
    pub fn is_idle(&self) -> bool {
        self.deadlines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_is_metallb_five_rounds() {
        let rounds: Vec<_> = Cadence::default().single_apply_rounds().collect();
        assert_eq!(rounds, vec![ms(0), ms(1100), ms(2200), ms(3300), ms(4400)]);
    }

    #[test]
    fn zero_window_or_interval_is_once() {
        for c in [
            Cadence {
                interval: ms(1100),
                window: ms(0),
            },
            Cadence {
                interval: ms(0),
                window: ms(5000),
            },
        ] {
            assert!(c.is_once());
            assert_eq!(c.single_apply_rounds().collect::<Vec<_>>(), vec![ms(0)]);
        }
    }

    #[test]
    fn round_exactly_at_window_end_is_sent() {
        let c = Cadence {
            interval: ms(1000),
            window: ms(2000),
        };
        assert_eq!(
            c.single_apply_rounds().collect::<Vec<_>>(),
            vec![ms(0), ms(1000), ms(2000)]
        );
    }

    /// Replays a ticker of `interval` from 0 to `until` with applies at given offsets (each
    /// applied just before the tick at the same instant) and returns when `key` got a round.
    fn replay(c: Cadence, applies: &[Duration], until: Duration) -> Vec<Duration> {
        let mut w = Windows::new(c);
        let mut sent = Vec::new();
        let mut applies = applies.to_vec();
        applies.sort();
        let mut next_apply = 0;
        let mut tick = c.interval;
        loop {
            while next_apply < applies.len() && applies[next_apply] < tick.min(until + ms(1)) {
                let at = applies[next_apply];
                if w.apply("a", at) {
                    sent.push(at);
                }
                next_apply += 1;
            }
            if tick > until {
                break;
            }
            if w.tick(tick).contains(&"a") {
                sent.push(tick);
            }
            tick += c.interval;
        }
        sent
    }

    #[test]
    fn shared_ticker_matches_single_apply_schedule() {
        let c = Cadence::default();
        assert_eq!(
            replay(c, &[ms(0)], ms(20_000)),
            c.single_apply_rounds().collect::<Vec<_>>()
        );
    }

    #[test]
    fn reapply_inside_window_extends_it_without_extra_immediate_round() {
        let c = Cadence::default();
        // Apply at 0 and at 3000: no immediate round at 3000; window now ends at 8000.
        let sent = replay(c, &[ms(0), ms(3000)], ms(20_000));
        assert_eq!(
            sent,
            vec![
                ms(0),
                ms(1100),
                ms(2200),
                ms(3300),
                ms(4400),
                ms(5500),
                ms(6600),
                ms(7700)
            ]
        );
    }

    #[test]
    fn reapply_after_window_sends_at_once_again() {
        let c = Cadence::default();
        let sent = replay(c, &[ms(0), ms(10_000)], ms(20_000));
        assert_eq!(sent[..5], [ms(0), ms(1100), ms(2200), ms(3300), ms(4400)]);
        assert_eq!(sent[5], ms(10_000));
        assert_eq!(*sent.last().unwrap(), ms(14_300));
    }

    #[test]
    fn forget_stops_rounds_and_idle_reports_empty() {
        let mut w = Windows::new(Cadence::default());
        assert!(w.is_idle());
        assert!(w.apply(1u8, ms(0)));
        assert!(w.apply(2u8, ms(0)));
        w.forget(&1);
        assert_eq!(w.tick(ms(1100)), vec![2]);
        assert!(w.tick(ms(6000)).is_empty());
        assert!(w.is_idle());
    }

    #[test]
    fn once_cadence_never_ticks() {
        let mut w = Windows::new(Cadence {
            interval: ms(1100),
            window: ms(0),
        });
        assert!(w.apply(1u8, ms(0)));
        assert!(w.apply(1u8, ms(1)));
        assert!(w.tick(ms(2)).is_empty());
        assert!(w.is_idle());
    }

    proptest! {
        /// Every round of a key falls within `window` of some apply at or before it, and rounds
        /// never stop while the last apply's window is open.
        #[test]
        fn rounds_stay_within_windows(applies in proptest::collection::vec(0u64..30_000, 1..6),
                                      interval in 100u64..3000, window in 0u64..8000) {
            prop_assume!(window == 0 || window >= interval);
            let c = Cadence { interval: ms(interval), window: ms(window) };
            let applies: Vec<Duration> = applies.into_iter().map(ms).collect();
            let sent = replay(c, &applies, ms(60_000));
            for at in &sent {
                prop_assert!(applies.iter().any(|a| a <= at && *at <= *a + c.window));
            }
            // The latest apply is followed by at least one round.
            let last = *applies.iter().max().unwrap();
            prop_assert!(sent.iter().any(|s| *s >= last));
        }
    }
}
