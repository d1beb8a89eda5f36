//! The frames the benchmark sends (ARP requests, Neighbor Solicitations, and the bad-input mix)
//! and the classification of what comes back. Pure byte work, tested against etherparse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source MAC of the flood. Locally administered and owned by no interface, so the client's
/// kernel drops the replies right after the capture tap (no neighbour work on the client side).
pub const GENERATOR_MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];
/// Latency probes use `02:be:00:00:00:<tag>`: the reply comes back to that MAC, so the tag
/// names the probe it answers.
const PROBE_MAC_PREFIX: [u8; 5] = [0x02, 0xbe, 0x00, 0x00, 0x00];
/// Probes in flight at once (tags are reused round-robin).
pub const PROBE_TAGS: usize = 64;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NS_TYPE: u8 = 135;
const NA_TYPE: u8 = 136;
/// Ethernet frames shorter than this are padded on the wire.
const ETH_MIN_LEN: usize = 60;

pub fn probe_mac(tag: u8) -> [u8; 6] {
    let mut mac = [0u8; 6];
    mac[..5].copy_from_slice(&PROBE_MAC_PREFIX);
    mac[5] = tag;
    mac
}

/// The probe tag a reply sent to `dst_mac` answers, if it answers a probe.
pub fn probe_tag(dst_mac: &[u8]) -> Option<u8> {
    (dst_mac.len() >= 6 && dst_mac[..5] == PROBE_MAC_PREFIX)
        .then(|| dst_mac[5])
        .filter(|tag| usize::from(*tag) < PROBE_TAGS)
}

/// Source address of the NDP probe with `tag`: one solicitor address per tag keeps each of the
/// kernel's neighbour entries at one MAC, so the kernel baseline does no extra neighbour churn.
pub fn probe_ipv6(tag: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xbe00, u16::from(tag))
}

/// A broadcast ARP request (operation 1) from `sender_mac`/`sender_ip` asking for `target`,
/// padded to the Ethernet minimum.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN_LEN);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f.push(6);
    f.push(4);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(ETH_MIN_LEN, 0);
    f
}

pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ])
}

/// A Neighbor Solicitation (RFC 4861 §4.3) from `source` for `target`, sent to the target's
/// solicited-node group with a source link-layer address option, hop limit 255, valid checksum.
pub fn neighbor_solicitation(sender_mac: [u8; 6], source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let d = dst.octets();
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[NS_TYPE, 0, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]); // option: source link-layer address, 8 bytes
    icmp.extend_from_slice(&sender_mac);
    let sum = icmpv6_checksum(&source, &dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, d[12], d[13], d[14], d[15]]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(ICMPV6);
    f.push(255);
    f.extend_from_slice(&source.octets());
    f.extend_from_slice(&d);
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum over the pseudo-header and `icmp` (whose checksum field is zero).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request nobody answers (an address no responder has, from a MAC no step uses): sent
/// to make the node's receive ring move after a step, without an answer to count.
pub fn unanswered_arp() -> Vec<u8> {
    arp_request(
        [0x02, 0xcc, 0x00, 0x00, 0x00, 0x01],
        Ipv4Addr::new(198, 51, 100, 4),
        Ipv4Addr::new(198, 51, 100, 98),
    )
}

/// The bad-input mix: requests for addresses nobody announces and malformed frames for the
/// announced ones. None of them may ever be answered, by any responder.
pub fn bad_input(
    sender_ip4: Ipv4Addr,
    vip4: Ipv4Addr,
    sender_ip6: Ipv6Addr,
    vip6: Ipv6Addr,
) -> Vec<Vec<u8>> {
    let unknown4 = Ipv4Addr::new(198, 51, 100, 99);
    let unknown6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
    let mut hw_len_7 = arp_request(GENERATOR_MAC, sender_ip4, vip4);
    hw_len_7[18] = 7;
    let mut truncated_arp = arp_request(GENERATOR_MAC, sender_ip4, vip4);
    truncated_arp.truncate(34);
    let mut arp_reply_op = arp_request(GENERATOR_MAC, sender_ip4, vip4);
    arp_reply_op[21] = 2;
    let mut bad_checksum = neighbor_solicitation(GENERATOR_MAC, sender_ip6, vip6);
    bad_checksum[56] ^= 0x5a;
    let mut hop_limit_64 = neighbor_solicitation(GENERATOR_MAC, sender_ip6, vip6);
    hop_limit_64[21] = 64;
    let mut truncated_ns = neighbor_solicitation(GENERATOR_MAC, sender_ip6, vip6);
    truncated_ns.truncate(70);
    vec![
        arp_request(GENERATOR_MAC, sender_ip4, unknown4),
        hw_len_7,
        truncated_arp,
        arp_reply_op,
        neighbor_solicitation(GENERATOR_MAC, sender_ip6, unknown6),
        bad_checksum,
        hop_limit_64,
        truncated_ns,
    ]
}

/// What a captured reply says: which address it resolves and to which MAC it was sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub resolves: IpAddr,
    pub to_mac: [u8; 6],
}

/// Reads an ARP reply or a Neighbor Advertisement; anything else is `None`.
pub fn parse_reply(frame: &[u8]) -> Option<Reply> {
    let to_mac: [u8; 6] = frame.get(..6)?.try_into().ok()?;
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    match ethertype {
        ETH_P_ARP => {
            let op = u16::from_be_bytes(frame.get(20..22)?.try_into().ok()?);
            let spa: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
            (op == 2).then(|| Reply {
                resolves: IpAddr::V4(Ipv4Addr::from(spa)),
                to_mac,
            })
        }
        ETH_P_IPV6 => {
            let is_na = *frame.get(20)? == ICMPV6 && *frame.get(54)? == NA_TYPE;
            let target: [u8; 16] = frame.get(62..78)?.try_into().ok()?;
            is_na.then(|| Reply {
                resolves: IpAddr::V6(Ipv6Addr::from(target)),
                to_mac,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpOperation, EtherType, Icmpv6Type, SlicedPacket};

    const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    #[test]
    fn arp_request_is_a_valid_broadcast_request() {
        let f = arp_request(GENERATOR_MAC, CLIENT4, VIP4);
        assert_eq!(f.len(), 60);
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), [0xff; 6]);
        let Some(etherparse::NetSlice::Arp(arp)) = p.net else {
            panic!("not ARP: {:?}", p.net)
        };
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.proto_addr_type(), EtherType::IPV4);
        assert_eq!(arp.sender_hw_addr(), GENERATOR_MAC);
        assert_eq!(arp.sender_protocol_addr(), CLIENT4.octets());
        assert_eq!(arp.target_protocol_addr(), VIP4.octets());
    }

    #[test]
    fn neighbor_solicitation_checksum_and_fields_are_valid() {
        let f = neighbor_solicitation(GENERATOR_MAC, CLIENT6, VIP6);
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().hop_limit(), 255);
        assert_eq!(ip.header().destination_addr(), solicited_node(VIP6));
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::NeighborSolicitation);
        let payload = icmp.payload();
        assert_eq!(&payload[..16], &VIP6.octets());
        assert_eq!(&payload[16..18], &[1, 1]);
        assert_eq!(&payload[18..24], &GENERATOR_MAC);
        let expected = icmp
            .icmp_type()
            .calc_checksum(CLIENT6.octets(), solicited_node(VIP6).octets(), payload)
            .expect("checksum");
        assert_eq!(icmp.checksum(), expected);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0, 0, 0x10]);
    }

    #[test]
    fn bad_input_frames_are_each_broken_or_for_unknown_addresses() {
        let frames = bad_input(CLIENT4, VIP4, CLIENT6, VIP6);
        assert_eq!(frames.len(), 8);
        // The malformed NS variants fail validation: checksum no longer matches, or hop limit.
        let good = neighbor_solicitation(GENERATOR_MAC, CLIENT6, VIP6);
        assert_ne!(frames[5], good);
        assert_eq!(frames[6][21], 64);
        assert!(frames[2].len() < 42 && frames[7].len() < good.len());
        // Index 3 is an ARP reply from the client (never to be answered); the receiver skips
        // it as outgoing. Every other frame must not look like a reply.
        assert!(parse_reply(&frames[3]).is_some());
        for (i, f) in frames.iter().enumerate().filter(|(i, _)| *i != 3) {
            assert_eq!(parse_reply(f), None, "frame {i} looks like a reply");
        }
    }

    #[test]
    fn probe_tags_round_trip_and_reject_foreign_macs() {
        for tag in 0..PROBE_TAGS as u8 {
            assert_eq!(probe_tag(&probe_mac(tag)), Some(tag));
        }
        assert_eq!(probe_tag(&GENERATOR_MAC), None);
        assert_eq!(probe_tag(&[0x02, 0xbe, 0, 0, 0, 200]), None);
        assert_eq!(probe_tag(&[0x02, 0xbe]), None);
    }

    #[test]
    fn replies_are_recognised_with_the_address_they_resolve() {
        let mut arp = arp_request(GENERATOR_MAC, CLIENT4, VIP4);
        // Turn it into the reply a responder would send.
        arp[..6].copy_from_slice(&GENERATOR_MAC);
        arp[21] = 2;
        arp[28..32].copy_from_slice(&VIP4.octets());
        assert_eq!(
            parse_reply(&arp),
            Some(Reply {
                resolves: IpAddr::V4(VIP4),
                to_mac: GENERATOR_MAC
            })
        );
        let mut na = neighbor_solicitation(GENERATOR_MAC, CLIENT6, VIP6);
        na[54] = NA_TYPE;
        assert_eq!(
            parse_reply(&na),
            Some(Reply {
                resolves: IpAddr::V6(VIP6),
                to_mac: [0x33, 0x33, 0xff, 0, 0, 0x10]
            })
        );
        assert_eq!(parse_reply(&arp[..20]), None);
    }
}
