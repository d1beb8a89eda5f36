//! The requests the reply measurements send: ARP requests and Neighbor Solicitations for the
//! Service's addresses ([`traffic`]), from [`Sources`] on the link they are sent on. The load
//! comes from one address with the generator's MAC, probes from another (IPv4) or one per tag
//! (IPv6) with their tag MACs — addresses inside the link's subnet that no interface owns.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::bench::dataplane::frames::{self, GENERATOR_MAC, PROBE_TAGS};
use crate::lab::DirectLink;

pub const LOAD_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
pub const PROBE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 201);
pub const LOAD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x200);

/// Addresses the generator's requests come from, on the link they are sent on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    pub load_v4: Ipv4Addr,
    pub probe_v4: Ipv4Addr,
    pub load_v6: Ipv6Addr,
    /// The link's /64 (probe sources are `::be00:<tag>` in it).
    v6_net: [u16; 4],
}

impl Sources {
    /// On the lab segment (203.0.113.0/24, 2001:db8:0:1::/64).
    pub fn segment() -> Sources {
        Sources {
            load_v4: LOAD_V4,
            probe_v4: PROBE_V4,
            load_v6: LOAD_V6,
            v6_net: [0x2001, 0xdb8, 0, 1],
        }
    }

    /// On `link` (hosts 10 and 11 of its /28; `::200` and `::be00:<tag>` of its /64).
    pub fn direct(link: &DirectLink) -> Sources {
        let s = link.v6_net.segments();
        Sources {
            load_v4: link.v4_host(10),
            probe_v4: link.v4_host(11),
            load_v6: link.v6_host([0, 0, 0, 0x200]),
            v6_net: [s[0], s[1], s[2], s[3]],
        }
    }

    /// Source address of the NDP probe with `tag` (one per tag, each with its own neighbour entry).
    pub fn probe_v6(&self, tag: u8) -> Ipv6Addr {
        let [a, b, c, d] = self.v6_net;
        Ipv6Addr::new(a, b, c, d, 0, 0, 0xbe00, u16::from(tag))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp,
    Ndp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Arp => "ARP",
            Proto::Ndp => "NDP",
        }
    }
}

/// Load frame and the tagged probes for `proto` from `src`, asking for `vip`.
pub fn traffic(
    proto: Proto,
    src: &Sources,
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let tags = 0..PROBE_TAGS as u8;
    match proto {
        Proto::Arp => (
            vec![frames::arp_request(GENERATOR_MAC, src.load_v4, vip4)],
            tags.map(|t| frames::arp_request(frames::probe_mac(t), src.probe_v4, vip4))
                .collect(),
        ),
        Proto::Ndp => (
            vec![frames::neighbor_solicitation(
                GENERATOR_MAC,
                src.load_v6,
                vip6,
            )],
            tags.map(|t| {
                frames::neighbor_solicitation(frames::probe_mac(t), src.probe_v6(t), vip6)
            })
            .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::NODES;

    #[test]
    fn traffic_asks_for_the_vip_from_lab_subnet_sources() {
        let vip4 = Ipv4Addr::new(198, 51, 100, 10);
        let vip6: Ipv6Addr = "2001:db8:0:2::10".parse().expect("v6");
        let seg = Sources::segment();
        let (load, probes) = traffic(Proto::Arp, &seg, vip4, vip6);
        assert_eq!(load.len(), 1);
        assert_eq!(probes.len(), PROBE_TAGS);
        assert_eq!(&load[0][28..32], &LOAD_V4.octets(), "sender IP");
        assert_eq!(&load[0][38..42], &vip4.octets(), "target IP");
        assert_eq!(&probes[5][6..12], &frames::probe_mac(5), "source MAC = tag");
        let (load, probes) = traffic(Proto::Ndp, &seg, vip4, vip6);
        assert_eq!(&load[0][22..38], &LOAD_V6.octets(), "IPv6 source");
        assert_eq!(&probes[7][22..38], &seg.probe_v6(7).octets());
        assert_eq!(&probes[7][62..78], &vip6.octets(), "NS target");
        let Some(link) = crate::lab::direct_link(1) else {
            panic!("node-b has a direct link");
        };
        let direct = Sources::direct(&link);
        let (load, probes) = traffic(Proto::Arp, &direct, vip4, vip6);
        assert_eq!(
            &load[0][28..32],
            &[203, 0, 113, 234],
            "load from node-b's link"
        );
        assert_eq!(&probes[0][28..32], &[203, 0, 113, 235]);
        let (load, probes) = traffic(Proto::Ndp, &direct, vip4, vip6);
        assert_eq!(
            &load[0][22..38],
            &Ipv6Addr::new(0x2001, 0xdb8, 0, 0xd2, 0, 0, 0, 0x200).octets()
        );
        assert_eq!(
            &probes[3][22..38],
            &Ipv6Addr::new(0x2001, 0xdb8, 0, 0xd2, 0, 0, 0xbe00, 3).octets()
        );
    }

    #[test]
    fn sources_are_in_the_lab_subnet_and_owned_by_no_lab_interface() {
        let lab_v4 = |ip: Ipv4Addr| ip.octets()[..3] == [203, 0, 113];
        assert!(lab_v4(LOAD_V4) && lab_v4(PROBE_V4));
        for ip in [LOAD_V4, PROBE_V4] {
            assert!(NODES.iter().all(|n| n.v4 != ip) && ip != crate::lab::CLIENT_V4);
        }
        for t in 0..PROBE_TAGS as u8 {
            let ip = Sources::segment().probe_v6(t);
            assert_eq!(ip.segments()[..4], [0x2001, 0xdb8, 0, 1]);
            assert!(NODES.iter().all(|n| n.v6 != ip) && ip != crate::lab::CLIENT_V6);
        }
        for link in crate::lab::direct_links() {
            let src = Sources::direct(&link);
            let owned = [link.node_v4(), link.client_v4()];
            for ip in [src.load_v4, src.probe_v4] {
                assert_eq!(ip.octets()[..3], [203, 0, 113]);
                assert_eq!(
                    ip.octets()[3] & 0xf0,
                    link.v4_net.octets()[3],
                    "in the link's /28"
                );
                assert!(!owned.contains(&ip));
            }
            let owned = [link.node_v6(), link.client_v6()];
            for ip in
                std::iter::once(src.load_v6).chain((0..PROBE_TAGS as u8).map(|t| src.probe_v6(t)))
            {
                assert_eq!(ip.segments()[..4], link.v6_net.segments()[..4]);
                assert!(!owned.contains(&ip));
            }
        }
    }
}
