//! Address arithmetic for one CIDR without walking it: addresses are `u128`s, and the usable
//! addresses (avoidBuggyIPs removes IPv4 .0/.255) are numbered densely so that "lowest free
//! address" is the first gap of a set of merged used intervals — O(log n) for any pool size.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::service::Family;

/// An address as (family, number).
pub type Addr = (Family, u128);

pub fn to_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

pub fn from_addr((family, value): Addr) -> IpAddr {
    match family {
        // IPv4 values always fit: they come from a u32 or an IPv4 CIDR.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Disjoint, merged, inclusive intervals of used indices.
#[derive(Clone, Debug, Default)]
pub struct IntervalSet {
    intervals: BTreeMap<u128, u128>,
}

impl IntervalSet {
    pub fn contains(&self, x: u128) -> bool {
        self.intervals
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &end)| end >= x)
    }

    /// Adds `x`; returns false when it was already present.
    pub fn insert(&mut self, x: u128) -> bool {
        if self.contains(x) {
            return false;
        }
        let mut start = x;
        let mut end = x;
        if x > 0
            && let Some((&s, &e)) = self.intervals.range(..x).next_back()
            && e == x - 1
        {
            start = s;
        }
        if let Some(next) = x.checked_add(1)
            && let Some(e) = self.intervals.remove(&next)
        {
            end = e;
        }
        self.intervals.insert(start, end);
        true
    }

    /// Removes `x`; returns false when it was absent.
    pub fn remove(&mut self, x: u128) -> bool {
        let Some((&start, &end)) = self.intervals.range(..=x).next_back() else {
            return false;
        };
        if end < x {
            return false;
        }
        self.intervals.remove(&start);
        if start < x {
            self.intervals.insert(start, x - 1);
        }
        if x < end {
            self.intervals.insert(x + 1, end);
        }
        true
    }

    /// The lowest index not in the set, if any index below 2^128 is free.
    pub fn first_gap(&self) -> Option<u128> {
        match self.intervals.iter().next() {
            Some((&0, &end)) => end.checked_add(1),
            _ => Some(0),
        }
    }
}

/// One CIDR of a pool with its used addresses.
#[derive(Clone, Debug)]
pub struct CidrSpace {
    pub net: IpNet,
    pub family: Family,
    /// Network address.
    pub first: u128,
    /// Broadcast/last address.
    pub last: u128,
    /// IPv4 with avoidBuggyIPs: .0 and .255 are not part of the pool.
    buggy_aware: bool,
    /// Number of usable addresses, `None` when it is 2^128 (an IPv6 /0).
    usable: Option<u128>,
    used: IntervalSet,
    pub used_count: u128,
}

fn is_buggy(addr: u128) -> bool {
    let low = addr & 0xff;
    low == 0 || low == 255
}

impl CidrSpace {
    pub fn new(net: &IpNet, avoid_buggy_ips: bool) -> Self {
        let net = net.trunc();
        let (family, first) = to_addr(net.network());
        let (_, last) = to_addr(net.broadcast());
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
        let buggy_aware = avoid_buggy_ips && family == Family::V4;
        let size = if host_bits >= 128 {
            None
        } else {
            Some(1u128 << host_bits)
        };
        let usable = match size {
            Some(size) if buggy_aware && host_bits >= 8 => Some(size / 256 * 254),
            Some(size) if buggy_aware => {
                Some(size - u128::from(first & 0xff == 0) - u128::from(last & 0xff == 255))
            }
            other => other,
        };
        CidrSpace {
            net,
            family,
            first,
            last,
            buggy_aware,
            usable,
            used: IntervalSet::default(),
            used_count: 0,
        }
    }

    fn whole_blocks(&self) -> bool {
        self.last - self.first >= 255
    }

    /// Leading addresses skipped in a CIDR smaller than a /24 (its .0).
    fn head_skip(&self) -> u128 {
        u128::from(self.buggy_aware && self.first & 0xff == 0)
    }

    /// Dense index of an address of this CIDR, `None` if outside or excluded by avoidBuggyIPs.
    pub fn index_of(&self, (family, addr): Addr) -> Option<u128> {
        if family != self.family || addr < self.first || addr > self.last {
            return None;
        }
        let offset = addr - self.first;
        if !self.buggy_aware {
            return Some(offset);
        }
        if is_buggy(addr) {
            return None;
        }
        if self.whole_blocks() {
            Some((offset >> 8) * 254 + (offset & 0xff) - 1)
        } else {
            Some(offset - self.head_skip())
        }
    }

    pub fn addr_at(&self, index: u128) -> Addr {
        let offset = if !self.buggy_aware {
            index
        } else if self.whole_blocks() {
            (index / 254) * 256 + 1 + index % 254
        } else {
            index + self.head_skip()
        };
        (self.family, self.first + offset)
    }

    pub fn contains(&self, addr: Addr) -> bool {
        self.index_of(addr).is_some()
    }

    /// The lowest usable address nobody uses.
    pub fn first_free(&self) -> Option<Addr> {
        let gap = self.used.first_gap()?;
        match self.usable {
            Some(usable) if gap >= usable => None,
            _ => Some(self.addr_at(gap)),
        }
    }

    pub fn mark_used(&mut self, addr: Addr) {
        if let Some(index) = self.index_of(addr)
            && self.used.insert(index)
        {
            self.used_count += 1;
        }
    }

    pub fn mark_free(&mut self, addr: Addr) {
        if let Some(index) = self.index_of(addr)
            && self.used.remove(index)
        {
            self.used_count -= 1;
        }
    }

    /// Usable addresses as MetalLB counts them (2^63-1 from 62 host bits on).
    pub fn capacity(&self) -> i64 {
        let host_bits = u32::from(self.net.max_prefix_len() - self.net.prefix_len());
        if host_bits >= 62 {
            return i64::MAX;
        }
        self.usable
            .map_or(i64::MAX, |u| i64::try_from(u).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn addr(s: &str) -> Addr {
        to_addr(s.parse().unwrap())
    }

    #[test]
    fn interval_set_merges_and_splits() {
        let mut set = IntervalSet::default();
        assert_eq!(set.first_gap(), Some(0));
        assert!(set.insert(0));
        assert!(set.insert(2));
        assert!(!set.insert(2));
        assert_eq!(set.first_gap(), Some(1));
        assert!(set.insert(1));
        assert_eq!(set.first_gap(), Some(3));
        assert_eq!(set.intervals.len(), 1);
        assert!(set.remove(1));
        assert!(!set.remove(1));
        assert_eq!(set.first_gap(), Some(1));
        assert!(set.contains(0) && set.contains(2) && !set.contains(1));
        assert!(set.insert(u128::MAX));
        assert!(set.contains(u128::MAX));
    }

    #[test]
    fn buggy_indexing_round_trips_and_skips_dot0_dot255() {
        let space = CidrSpace::new(&net("10.0.0.0/23"), true);
        assert_eq!(space.capacity(), 508);
        assert_eq!(space.index_of(addr("10.0.0.0")), None);
        assert_eq!(space.index_of(addr("10.0.0.255")), None);
        assert_eq!(space.index_of(addr("10.0.1.0")), None);
        assert_eq!(space.addr_at(0), addr("10.0.0.1"));
        assert_eq!(space.addr_at(253), addr("10.0.0.254"));
        assert_eq!(space.addr_at(254), addr("10.0.1.1"));
        for i in 0..508 {
            assert_eq!(space.index_of(space.addr_at(i)), Some(i));
        }
        let small = CidrSpace::new(&net("10.0.0.252/30"), true);
        assert_eq!(small.capacity(), 3);
        assert_eq!(small.first_free(), Some(addr("10.0.0.252")));
        let head = CidrSpace::new(&net("10.0.0.0/31"), true);
        assert_eq!(head.capacity(), 1);
        assert_eq!(head.first_free(), Some(addr("10.0.0.1")));
        let none = CidrSpace::new(&net("10.0.0.255/32"), true);
        assert_eq!(none.first_free(), None);
        // IPv6 is never affected.
        let v6 = CidrSpace::new(&net("2001:db8::/127"), true);
        assert_eq!(v6.first_free(), Some(addr("2001:db8::")));
    }

    #[test]
    fn network_address_is_first_without_avoid_buggy() {
        let mut space = CidrSpace::new(&net("10.0.0.0/30"), false);
        for expected in ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            let a = space.first_free().unwrap();
            assert_eq!(a, addr(expected));
            space.mark_used(a);
        }
        assert_eq!(space.first_free(), None);
        space.mark_free(addr("10.0.0.1"));
        assert_eq!(space.first_free(), Some(addr("10.0.0.1")));
        assert_eq!(space.used_count, 3);
    }

    #[test]
    fn huge_ipv6_spaces_do_not_overflow() {
        let mut space = CidrSpace::new(&net("::/0"), false);
        assert_eq!(space.capacity(), i64::MAX);
        assert_eq!(space.first_free(), Some(addr("::")));
        space.mark_used(addr("::"));
        assert_eq!(space.first_free(), Some(addr("::1")));
        let big = CidrSpace::new(&net("2001:db8::/64"), false);
        assert_eq!(big.capacity(), i64::MAX);
        assert_eq!(
            CidrSpace::new(&net("2001:db8::/67"), false).capacity(),
            1i64 << 61
        );
    }
}
