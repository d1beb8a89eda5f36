//! Pure mappings between addresses and the map contract of `lb_common::maps`: keys, MACs and the
//! solicited-node multicast group an IPv6 address needs on the wire.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use lb_common::maps::{Ipv4Key, Ipv6Key};

/// A key of the IPv4 or the IPv6 announced-address map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrKey {
    V4(Ipv4Key),
    V6(Ipv6Key),
}

impl AddrKey {
    /// The key for `ip` on interface `ifindex` (address bytes in network order, as the program
    /// reads them from the frame).
    pub fn new(ifindex: u32, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(Ipv4Key {
                ifindex,
                addr: v4.octets(),
            }),
            IpAddr::V6(v6) => AddrKey::V6(Ipv6Key {
                ifindex,
                addr: v6.octets(),
            }),
        }
    }

    pub fn ifindex(&self) -> u32 {
        match self {
            AddrKey::V4(k) => k.ifindex,
            AddrKey::V6(k) => k.ifindex,
        }
    }

    pub fn ip(&self) -> IpAddr {
        match self {
            AddrKey::V4(k) => IpAddr::V4(Ipv4Addr::from(k.addr)),
            AddrKey::V6(k) => IpAddr::V6(Ipv6Addr::from(k.addr)),
        }
    }
}

/// Why an address can never be announced, or `None` when it can. Multicast, broadcast,
/// unspecified and loopback addresses are never the target of an ARP request or a valid NS.
pub fn unannounceable_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast address"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback address"),
        _ => None,
    }
}

/// The solicited-node multicast group of `addr` (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX with the
/// low 24 bits of the address. Neighbor Solicitations for `addr` are sent there.
pub fn solicited_node_group(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast MAC of an IPv6 multicast group (RFC 2464 §7): 33:33 + low 32 bits.
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The link-layer group a NIC must accept so solicitations for `addr` reach the program.
pub fn solicited_node_mac(addr: Ipv6Addr) -> Mac {
    ipv6_multicast_mac(solicited_node_group(addr))
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Replies must carry a unicast, non-zero MAC or neighbours would cache garbage.
    pub fn is_usable_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MAC address {input:?}: expected six hex octets separated by ':' (e.g. 02:00:5e:00:00:10)")]
pub struct MacParseError {
    pub input: String,
}

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_string(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for slot in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_hold_network_order_bytes_and_round_trip() {
        let k = AddrKey::new(7, "198.51.100.10".parse().unwrap());
        assert_eq!(
            k,
            AddrKey::V4(Ipv4Key {
                ifindex: 7,
                addr: [198, 51, 100, 10]
            })
        );
        assert_eq!(k.ip().to_string(), "198.51.100.10");
        assert_eq!(k.ifindex(), 7);
        let k6 = AddrKey::new(3, "2001:db8::1:2".parse().unwrap());
        let AddrKey::V6(inner) = k6 else {
            panic!("v6 key expected")
        };
        assert_eq!(inner.addr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(inner.addr[14..], [0x00, 0x02]);
        assert_eq!(k6.ip().to_string(), "2001:db8::1:2");
    }

    #[test]
    fn solicited_node_group_and_mac() {
        let table = [
            ("2001:db8::10", "ff02::1:ff00:10", "33:33:ff:00:00:10"),
            (
                "2001:db8::abcd:ef12:3456",
                "ff02::1:ff12:3456",
                "33:33:ff:12:34:56",
            ),
            ("fe80::1", "ff02::1:ff00:1", "33:33:ff:00:00:01"),
        ];
        for (addr, group, mac) in table {
            let a: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(solicited_node_group(a).to_string(), group, "{addr}");
            assert_eq!(solicited_node_mac(a).to_string(), mac, "{addr}");
        }
    }

    #[test]
    fn addresses_sharing_low_24_bits_share_the_group() {
        let a: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::1:0:0:10".parse().unwrap();
        let c: Ipv6Addr = "2001:db8::11".parse().unwrap();
        assert_eq!(solicited_node_mac(a), solicited_node_mac(b));
        assert_ne!(solicited_node_mac(a), solicited_node_mac(c));
    }

    #[test]
    fn unannounceable_addresses() {
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "::",
            "ff02::1",
            "::1",
        ] {
            assert!(
                unannounceable_reason(bad.parse().unwrap()).is_some(),
                "{bad}"
            );
        }
        for good in ["198.51.100.10", "203.0.113.1", "2001:db8::10"] {
            assert_eq!(unannounceable_reason(good.parse().unwrap()), None, "{good}");
        }
    }

    #[test]
    fn mac_parse_table() {
        assert_eq!(
            "02:00:5e:00:00:10".parse(),
            Ok(Mac([2, 0, 0x5e, 0, 0, 0x10]))
        );
        assert_eq!("02-00-5E-00-00-1".parse(), Ok(Mac([2, 0, 0x5e, 0, 0, 1])));
        for bad in [
            "",
            "02:00:5e:00:00",
            "02:00:5e:00:00:10:11",
            "02:00:5e:00:00:1g",
            "002:0:0:0:0:0",
            "02::5e:00:00:10",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert!(Mac([2, 0, 0, 0, 0, 1]).is_usable_unicast());
        assert!(!Mac([1, 0, 0x5e, 0, 0, 1]).is_usable_unicast());
        assert!(!Mac([0; 6]).is_usable_unicast());
    }

    proptest! {
        #[test]
        fn mac_display_parse_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = Mac(bytes);
            prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        }

        #[test]
        fn key_round_trips_any_address(ifindex in any::<u32>(), v6 in any::<u128>(), v4 in any::<u32>()) {
            for ip in [IpAddr::V6(Ipv6Addr::from(v6)), IpAddr::V4(Ipv4Addr::from(v4))] {
                let key = AddrKey::new(ifindex, ip);
                prop_assert_eq!(key.ip(), ip);
                prop_assert_eq!(key.ifindex(), ifindex);
            }
        }

        #[test]
        fn group_depends_only_on_low_24_bits(a in any::<u128>(), b in any::<u128>()) {
            let (x, y) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            let same_low = a & 0xff_ffff == b & 0xff_ffff;
            prop_assert_eq!(solicited_node_group(x) == solicited_node_group(y), same_low);
        }
    }
}
