//! What the XDP program records besides answering, as userspace reads it: foreign claims on
//! announced addresses (someone else says an address we announce is at their MAC), the counters
//! of unusual requests, the per-source rate limit and the flood guard. [`ClaimTracker`] turns the claims maps'
//! running counts into "new since the last look" for the speaker.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::maps::{
    ExtraCounter, MAP_CLAIMS4, MAP_CLAIMS6, MAP_EXTRA, MAP_FLOOD_LIMIT, MAP_LIMIT,
};
use lb_common::ratelimit::RateLimit;
use serde::Serialize;

use super::error::map_err;
use super::keys::Mac;
use super::{Dataplane, Result};

/// Counters of requests and claims out of the ordinary, summed over CPUs (`HERALD_EXTRA`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EdgeCounters {
    /// ARP requests for announced addresses whose Ethernet source is not the sender hardware
    /// address (answered to the sender hardware address).
    pub sha_mismatch: u64,
    /// Requests for announced addresses passed unanswered by the per-source rate limit.
    pub rate_limited: u64,
    /// Frames claiming an announced address for another MAC.
    pub foreign_claims: u64,
    /// ARP and Neighbor Solicitation frames the flood guard dropped (their source had more
    /// passed to the kernel unanswered than the guard allows).
    pub flood_dropped: u64,
}

/// One entry of the claims maps: the running count since the entry was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClaimInfo {
    pub ifindex: u32,
    pub ip: IpAddr,
    /// The MAC of the latest claim.
    pub mac: Mac,
    pub count: u64,
    /// CLOCK_MONOTONIC ns (coarse) of the latest claim; compare with [`super::monotonic_ns`].
    pub last_ns: u64,
}

/// Claims on one announced address seen since the previous [`ClaimTracker::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignClaim {
    /// Interface the claims arrived on.
    pub ifindex: u32,
    /// The announced address claimed.
    pub ip: IpAddr,
    /// The claiming MAC (of the latest claim, when several MACs claimed it).
    pub mac: Mac,
    /// Claims since the previous look (at least 1).
    pub count: u64,
}

impl Dataplane {
    /// The counters of `HERALD_EXTRA`.
    pub fn edge_counters(&self) -> Result<EdgeCounters> {
        let read = |counter: ExtraCounter| -> Result<u64> {
            let values = self
                .extra
                .get(&(counter as u32), 0)
                .map_err(map_err(MAP_EXTRA))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(EdgeCounters {
            sha_mismatch: read(ExtraCounter::ShaMismatch)?,
            rate_limited: read(ExtraCounter::RateLimited)?,
            foreign_claims: read(ExtraCounter::ForeignClaims)?,
            flood_dropped: read(ExtraCounter::FloodDropped)?,
        })
    }

    /// Every recorded foreign claim, IPv4 then IPv6, by interface and address.
    pub fn claims(&self) -> Result<Vec<ClaimInfo>> {
        let mut out = Vec::new();
        for entry in &self.claims4 {
            let (key, claim) = entry.map_err(map_err(MAP_CLAIMS4))?;
            out.push(ClaimInfo {
                ifindex: key.ifindex,
                ip: IpAddr::V4(Ipv4Addr::from(key.addr)),
                mac: Mac(claim.mac),
                count: claim.count,
                last_ns: claim.last_ns,
            });
        }
        for entry in &self.claims6 {
            let (key, claim) = entry.map_err(map_err(MAP_CLAIMS6))?;
            out.push(ClaimInfo {
                ifindex: key.ifindex,
                ip: IpAddr::V6(Ipv6Addr::from(key.addr)),
                mac: Mac(claim.mac),
                count: claim.count,
                last_ns: claim.last_ns,
            });
        }
        out.sort_by_key(|c| (c.ifindex, c.ip));
        Ok(out)
    }

    /// The per-source rate limit the program applies.
    pub fn rate_limit(&self) -> Result<RateLimit> {
        self.limit.get(&0, 0).map_err(map_err(MAP_LIMIT))
    }

    /// Sets the per-source rate limit ([`RateLimit::OFF`] turns it off); takes effect at once.
    pub fn set_rate_limit(&mut self, limit: RateLimit) -> Result<()> {
        self.limit.set(0, &limit, 0).map_err(map_err(MAP_LIMIT))
    }

    /// The flood guard: frames per source passed to the kernel unanswered.
    pub fn flood_limit(&self) -> Result<RateLimit> {
        self.flood_limit
            .get(&0, 0)
            .map_err(map_err(MAP_FLOOD_LIMIT))
    }

    /// Sets the flood guard ([`RateLimit::OFF`] turns it off); takes effect at once.
    pub fn set_flood_limit(&mut self, limit: RateLimit) -> Result<()> {
        self.flood_limit
            .set(0, &limit, 0)
            .map_err(map_err(MAP_FLOOD_LIMIT))
    }
}

/// Remembers the running count of every claim entry, so each look reports only what is new.
#[derive(Clone, Debug, Default)]
pub struct ClaimTracker {
    seen: BTreeMap<(u32, IpAddr), u64>,
}

impl ClaimTracker {
    /// A tracker for which everything in `current` is already seen: claims recorded before this
    /// process started are not reported again (a conflict that goes on claims again soon).
    pub fn starting_from(current: &[ClaimInfo]) -> ClaimTracker {
        let mut tracker = ClaimTracker::default();
        tracker.update(current);
        tracker
    }

    /// The claims new in `current` since the previous call. An entry whose count went down was
    /// evicted and recorded afresh: all of its count is new. Entries gone are forgotten.
    pub fn update(&mut self, current: &[ClaimInfo]) -> Vec<ForeignClaim> {
        let mut seen = BTreeMap::new();
        let mut new = Vec::new();
        for claim in current {
            let key = (claim.ifindex, claim.ip);
            let before = self.seen.get(&key).copied().unwrap_or(0);
            let count = if claim.count >= before {
                claim.count - before
            } else {
                claim.count
            };
            if count > 0 {
                new.push(ForeignClaim {
                    ifindex: claim.ifindex,
                    ip: claim.ip,
                    mac: claim.mac,
                    count,
                });
            }
            seen.insert(key, claim.count);
        }
        self.seen = seen;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ip: &str, mac: u8, count: u64) -> ClaimInfo {
        ClaimInfo {
            ifindex: 2,
            ip: ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            mac: Mac([2, 0, 0, 0, 0, mac]),
            count,
            last_ns: 0,
        }
    }

    fn claim(ip: &str, mac: u8, count: u64) -> ForeignClaim {
        let i = info(ip, mac, count);
        ForeignClaim {
            ifindex: i.ifindex,
            ip: i.ip,
            mac: i.mac,
            count,
        }
    }

    #[test]
    fn reports_only_what_is_new() {
        let mut tracker = ClaimTracker::starting_from(&[info("198.51.100.1", 7, 5)]);
        assert_eq!(tracker.update(&[info("198.51.100.1", 7, 5)]), []);
        assert_eq!(
            tracker.update(&[info("198.51.100.1", 8, 7), info("2001:db8::1", 9, 1)]),
            [claim("198.51.100.1", 8, 2), claim("2001:db8::1", 9, 1)]
        );
        assert_eq!(
            tracker.update(&[info("198.51.100.1", 8, 7), info("2001:db8::1", 9, 1)]),
            []
        );
    }

    #[test]
    fn an_evicted_entry_counts_afresh() {
        let mut tracker = ClaimTracker::default();
        assert_eq!(
            tracker.update(&[info("198.51.100.1", 7, 9)]),
            [claim("198.51.100.1", 7, 9)]
        );
        // Recreated with a lower count: everything in it is new.
        assert_eq!(
            tracker.update(&[info("198.51.100.1", 7, 2)]),
            [claim("198.51.100.1", 7, 2)]
        );
        // Gone, then back.
        assert_eq!(tracker.update(&[]), []);
        assert_eq!(
            tracker.update(&[info("198.51.100.1", 7, 4)]),
            [claim("198.51.100.1", 7, 4)]
        );
    }
}
