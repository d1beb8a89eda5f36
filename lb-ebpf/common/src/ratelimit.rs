//! The per-source rate limit on answers: a token bucket per requester MAC, kept as time credit
//! so the XDP program needs no floating point and one division per answer.
//!
//! A source is the MAC the answer is sent to: the ARP sender hardware address, the Ethernet
//! source of a Neighbor Solicitation. The limit therefore also bounds how many answers Herald
//! sends towards any one MAC, whoever forged the requests. Requests over the limit are passed to
//! the kernel unanswered (never dropped) and counted.

/// The limit userspace writes into [`crate::maps::MAP_LIMIT`]. `per_second == 0` turns it off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Answers per second one source is refilled with; 0: no limit.
    pub per_second: u32,
    /// Answers one source may get at once (the bucket's size); 0 counts as 1.
    pub burst: u32,
}

impl RateLimit {
    /// No limit: what a map holds before userspace writes it.
    pub const OFF: RateLimit = RateLimit {
        per_second: 0,
        burst: 0,
    };

    /// 1,000 answers/s per source, bursts of 2,000. A host resolves an address with a few
    /// requests and then re-confirms each neighbour it uses about once per reachable time
    /// (15–45 s on Linux): 1,000/s keeps some 30,000 announced addresses resolved for a single
    /// router in front of them, and a burst of 2,000 lets such a router resolve 2,000 addresses
    /// at once after a restart (the rest follow at 1,000/s); a monitoring probe every 10 ms
    /// (100/s) stays far below it. One flooding source, or one MAC others forge requests for,
    /// gets no more than that (about 60 KB/s of answers); the frames over it go to the kernel.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 1_000,
        burst: 2_000,
    };

    /// The flood guard's default: 10,000 frames/s per source passed to the kernel unanswered,
    /// bursts of 1,000 (a tenth of a second at that rate). The kernel answers what Herald does
    /// not (the node's own addresses) and discards the rest; a host resolving neighbours sends a
    /// few requests per address, while one MAC flooding millions of frames per second has the
    /// excess dropped in XDP at a fraction of what the kernel spends on each, which keeps the
    /// receive ring free for everyone else's requests. The burst is what a new source gets
    /// passed at line rate: in the benchmark lab (a veth's 256-slot ring, 1.5M junk frames/s,
    /// 2 vCPUs) a burst of 20,000 kept the node's CPU in the stack for the flood's first ~30 ms,
    /// long enough for the ring to refuse valid requests with the junk.
    pub const FLOOD_DEFAULT: RateLimit = RateLimit {
        per_second: 10_000,
        burst: 1_000,
    };

    /// Reads `PER_SECOND[/BURST]` (the burst defaults to twice the rate), or `0` / `off` for no
    /// limit.
    pub fn parse(text: &str) -> Option<RateLimit> {
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("off") {
            return Some(RateLimit::OFF);
        }
        let (rate, burst) = match text.split_once('/') {
            Some((rate, burst)) => (rate.trim().parse::<u32>().ok()?, Some(burst.trim())),
            None => (text.parse::<u32>().ok()?, None),
        };
        if rate == 0 {
            return None;
        }
        let burst = match burst {
            Some(b) => b.parse::<u32>().ok().filter(|b| *b > 0)?,
            None => rate.saturating_mul(2),
        };
        Some(RateLimit {
            per_second: rate,
            burst,
        })
    }

    #[inline(always)]
    pub fn is_off(&self) -> bool {
        self.per_second == 0
    }

    /// Credit one answer costs, in ns; `None` when the limit is off.
    #[inline(always)]
    pub fn cost_ns(&self) -> Option<u64> {
        1_000_000_000u64.checked_div(u64::from(self.per_second))
    }

    /// Credit a full bucket holds, in ns.
    #[inline(always)]
    fn capacity_ns(&self, cost_ns: u64) -> u64 {
        cost_ns.saturating_mul(u64::from(self.burst.max(1)))
    }
}

/// One source's bucket: credit (ns of refill time) and when it was last refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub credit_ns: u64,
    /// Monotonic time (the coarse clock of the XDP program) of the last refill.
    pub last_ns: u64,
}

impl Bucket {
    /// A source seen for the first time (or again after the LRU dropped it): a full bucket.
    #[inline(always)]
    pub fn full(limit: &RateLimit, now_ns: u64) -> Bucket {
        Bucket {
            credit_ns: limit.cost_ns().map_or(0, |cost| limit.capacity_ns(cost)),
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call (up to the burst), then takes one answer's
    /// credit if there is enough: true when this request may be answered. A limit that is off
    /// always allows. A clock behind `last_ns` (another CPU's tick) refills nothing.
    #[inline(always)]
    pub fn take(&mut self, limit: &RateLimit, now_ns: u64) -> bool {
        let Some(cost) = limit.cost_ns() else {
            return true;
        };
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let credit = self
            .credit_ns
            .saturating_add(elapsed)
            .min(limit.capacity_ns(cost));
        self.last_ns = self.last_ns.max(now_ns);
        if credit >= cost {
            self.credit_ns = credit - cost;
            true
        } else {
            self.credit_ns = credit;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;

    /// Answers allowed for requests at `times` (ns, non-decreasing), from a new source.
    fn allowed(limit: RateLimit, times: &[u64]) -> Vec<bool> {
        let mut bucket = Bucket::full(&limit, times.first().copied().unwrap_or(0));
        times.iter().map(|&t| bucket.take(&limit, t)).collect()
    }

    #[test]
    fn parse_rate_and_burst() {
        let limit = |per_second, burst| Some(RateLimit { per_second, burst });
        assert_eq!(RateLimit::parse("1000/2000"), limit(1000, 2000));
        assert_eq!(RateLimit::parse(" 50 "), limit(50, 100));
        assert_eq!(RateLimit::parse("0"), Some(RateLimit::OFF));
        assert_eq!(RateLimit::parse("off"), Some(RateLimit::OFF));
        for bad in ["", "x", "-1", "0/5", "10/0", "10/", "/10", "5000000000"] {
            assert_eq!(RateLimit::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        // Four at once: the burst of 3, then nothing.
        assert_eq!(
            allowed(limit, &[0, 0, 0, 0]),
            [true, true, true, false],
            "burst"
        );
        // After 100 ms one more answer has refilled, not two.
        assert_eq!(
            allowed(limit, &[0, 0, 0, 0, SECOND / 10, SECOND / 10]),
            [true, true, true, false, true, false]
        );
        // A long pause refills the burst, never more.
        assert_eq!(
            allowed(
                limit,
                &[
                    0,
                    0,
                    0,
                    100 * SECOND,
                    100 * SECOND,
                    100 * SECOND,
                    100 * SECOND
                ]
            ),
            [true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn off_always_allows_and_zero_burst_means_one() {
        assert!(RateLimit::OFF.is_off());
        assert!(allowed(RateLimit::OFF, &[0; 1000]).iter().all(|a| *a));
        let one = RateLimit {
            per_second: 1,
            burst: 0,
        };
        assert_eq!(allowed(one, &[5, 5, 5 + SECOND]), [true, false, true]);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let limit = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let mut bucket = Bucket::full(&limit, 10 * SECOND);
        assert!(bucket.take(&limit, 10 * SECOND));
        assert!(!bucket.take(&limit, 9 * SECOND));
        assert_eq!(bucket.last_ns, 10 * SECOND);
        assert!(bucket.take(&limit, 11 * SECOND));
    }

    #[test]
    fn default_is_documented_values() {
        assert_eq!(RateLimit::DEFAULT.per_second, 1_000);
        assert_eq!(RateLimit::DEFAULT.burst, 2_000);
        assert_eq!(RateLimit::DEFAULT.cost_ns(), Some(1_000_000));
    }

    proptest! {
        /// Over any stretch of time, a source gets at most the burst plus the rate times the
        /// time elapsed, whatever the arrival pattern.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_second in 1u32..10_000,
            burst in 0u32..50,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let limit = RateLimit { per_second, burst };
            let mut now = 1_000 * SECOND;
            let mut bucket = Bucket::full(&limit, now);
            let start = now;
            let mut answers = 0u64;
            for gap in gaps {
                now += gap;
                answers += u64::from(bucket.take(&limit, now));
            }
            let elapsed = now - start;
            let bound = u64::from(burst.max(1)) + elapsed * u64::from(per_second) / SECOND + 1;
            prop_assert!(answers <= bound, "{answers} answers > {bound}");
        }

        /// A source that keeps under the rate is always answered.
        #[test]
        fn a_source_within_the_rate_is_always_answered(
            per_second in 1u32..10_000,
            burst in 0u32..50,
            slack in 0u64..1_000_000,
            n in 1usize..300,
        ) {
            let limit = RateLimit { per_second, burst };
            let cost = limit.cost_ns().expect("on");
            let mut now = 7 * SECOND;
            let mut bucket = Bucket::full(&limit, now);
            for _ in 0..n {
                prop_assert!(bucket.take(&limit, now));
                now += cost + slack;
            }
        }
    }
}
