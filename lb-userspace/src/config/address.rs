//! Pool address entries: CIDRs (host bits dropped) and `a-b` ranges (minimal CIDR cover).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// Parses one `addresses` entry into its CIDRs in ascending order.
pub fn parse_entry(entry: &str) -> Result<Vec<IpNet>, String> {
    if let Some((start, end)) = entry.split_once('-') {
        let (start_text, end_text) = (start.trim(), end.trim());
        let start: IpAddr = start_text.parse().map_err(|_| {
            format!("{entry:?} is not a valid range: invalid start address {start_text:?}")
        })?;
        let end: IpAddr = end_text.parse().map_err(|_| {
            format!("{entry:?} is not a valid range: invalid end address {end_text:?}")
        })?;
        return match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
                Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
            }
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Err(format!(
                "{entry:?} is not a valid range: start {start} is after end {end}"
            )),
            _ => Err(format!(
                "{entry:?} is not a valid range: start and end are of different IP families"
            )),
        };
    }
    match entry.parse::<IpNet>() {
        Ok(net) => Ok(vec![net.trunc()]),
        Err(_) => match entry.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => Err(format!(
                "{entry:?} is not a CIDR or range (write a single address as {entry}/32)"
            )),
            Ok(IpAddr::V6(_)) => Err(format!(
                "{entry:?} is not a CIDR or range (write a single address as {entry}/128)"
            )),
            Err(_) => Err(format!(
                "{entry:?} is not a CIDR or range (expected ip/len or start-end)"
            )),
        },
    }
}

/// MetalLB's overlap: one contains the other (same family only).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().expect("test CIDR")).collect()
    }

    #[test]
    fn cidrs_drop_host_bits_and_ranges_become_covers() {
        assert_eq!(parse_entry("10.20.30.40/24"), Ok(nets(&["10.20.30.0/24"])));
        assert_eq!(parse_entry("2001:db8::1/64"), Ok(nets(&["2001:db8::/64"])));
        assert_eq!(
            parse_entry("192.168.1.240 - 192.168.1.250"),
            Ok(nets(&[
                "192.168.1.240/29",
                "192.168.1.248/31",
                "192.168.1.250/32"
            ]))
        );
        assert_eq!(parse_entry("10.0.0.5-10.0.0.5"), Ok(nets(&["10.0.0.5/32"])));
        assert_eq!(
            parse_entry("2001:db8::-2001:db8::ff"),
            Ok(nets(&["2001:db8::/120"]))
        );
    }

    #[test]
    fn bad_entries_say_why() {
        let cases = [
            ("10.0.0.5", "write a single address as 10.0.0.5/32"),
            ("2001:db8::5", "write a single address as 2001:db8::5/128"),
            ("10.0.0.0/33", "is not a CIDR or range"),
            ("banana", "is not a CIDR or range"),
            ("10.0.0.9-10.0.0.1", "start 10.0.0.9 is after end 10.0.0.1"),
            ("10.0.0.1-x", "invalid end address \"x\""),
            ("y-10.0.0.1", "invalid start address \"y\""),
            ("10.0.0.1-2001:db8::1", "different IP families"),
            ("", "is not a CIDR or range"),
        ];
        for (entry, want) in cases {
            let e = parse_entry(entry).expect_err(entry);
            assert!(e.contains(want), "{entry}: {e}");
        }
    }

    #[test]
    fn overlap_is_containment_within_a_family() {
        let [a, b, c, d] = [
            nets(&["10.0.0.0/16"]),
            nets(&["10.0.1.0/24"]),
            nets(&["10.1.0.0/24"]),
            nets(&["::/0"]),
        ]
        .map(|v| v[0]);
        assert!(overlaps(&a, &b) && overlaps(&b, &a) && overlaps(&a, &a));
        assert!(!overlaps(&a, &c));
        assert!(!overlaps(&a, &d), "IPv4 never overlaps IPv6");
    }

    fn check_cover(
        cover: &[IpNet],
        lo: u128,
        hi: u128,
        width: u32,
        as_int: impl Fn(&IpNet) -> (u128, u128),
    ) {
        // Exact: consecutive, starting at lo and ending at hi.
        let mut next = lo;
        for net in cover {
            let (first, last) = as_int(net);
            assert_eq!(first, next, "gap or overlap in {cover:?}");
            next = last.wrapping_add(1);
            // Minimal: no two neighbours could merge into one aligned prefix.
            assert!(u32::from(net.prefix_len()) <= width);
        }
        assert_eq!(next.wrapping_sub(1), hi);
        for pair in cover.windows(2) {
            let merged = pair[0].supernet();
            let mergeable = pair[0].prefix_len() == pair[1].prefix_len()
                && merged.is_some_and(|m| m.contains(&pair[1]) && m.network() == pair[0].network());
            assert!(
                !mergeable,
                "{:?} and {:?} could be one prefix",
                pair[0], pair[1]
            );
        }
    }

    proptest! {
        #[test]
        fn v4_range_cover_is_exact_minimal_and_ascending(a in any::<u32>(), b in any::<u32>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let entry = format!("{} - {}", Ipv4Addr::from(lo), Ipv4Addr::from(hi));
            let cover = parse_entry(&entry).expect("valid range");
            check_cover(&cover, u128::from(lo), u128::from(hi), 32, |n| match n {
                IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
                IpNet::V6(_) => unreachable!(),
            });
        }

        #[test]
        fn v6_range_cover_is_exact_minimal_and_ascending(a in any::<u128>(), b in any::<u128>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let entry = format!("{}-{}", Ipv6Addr::from(lo), Ipv6Addr::from(hi));
            let cover = parse_entry(&entry).expect("valid range");
            check_cover(&cover, lo, hi, 128, |n| match n {
                IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
                IpNet::V4(_) => unreachable!(),
            });
        }

        #[test]
        fn reversed_ranges_are_rejected(a in any::<u32>(), b in any::<u32>()) {
            prop_assume!(a != b);
            let (lo, hi) = (a.min(b), a.max(b));
            let entry = format!("{}-{}", Ipv4Addr::from(hi), Ipv4Addr::from(lo));
            prop_assert!(parse_entry(&entry).is_err());
        }

        #[test]
        fn overlap_is_symmetric(a in any::<u32>(), la in 0u8..=32, b in any::<u32>(), lb in 0u8..=32) {
            let x = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), la).expect("len").trunc());
            let y = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(b), lb).expect("len").trunc());
            prop_assert_eq!(overlaps(&x, &y), overlaps(&y, &x));
        }
    }
}
