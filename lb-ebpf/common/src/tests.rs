//! Packet logic tests. Replies are checked with etherparse, an independent parser; every frame
//! that is not answered must come back byte for byte unchanged.

extern crate std;
use std::vec;
use std::vec::Vec;

use etherparse::{
    ArpOperation, EtherType, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use proptest::prelude::*;

use crate::arp::{ARP_FRAME_LEN, write_gratuitous_arp};
use crate::ndp::{NA_LEN, NS_MAX_ICMP_LEN, write_unsolicited_na};
use crate::respond::{Announced, Outcome, respond};

pub(crate) const NODE_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
pub(crate) const OTHER_MAC: [u8; 6] = [0x02, 0x99, 0x99, 0x99, 0x99, 0x99];
pub(crate) const VIP4: [u8; 4] = [198, 51, 100, 10];
pub(crate) const UNKNOWN4: [u8; 4] = [198, 51, 100, 99];
pub(crate) const CLIENT4: [u8; 4] = [198, 51, 100, 2];
pub(crate) const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub(crate) const UNKNOWN6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
];
pub(crate) const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];
pub(crate) const UNSPECIFIED: [u8; 16] = [0; 16];

pub(crate) struct Table;

impl Announced for Table {
    fn ipv4(&self, addr: [u8; 4]) -> Option<[u8; 6]> {
        (addr == VIP4).then_some(NODE_MAC)
    }
    fn ipv6(&self, addr: [u8; 16]) -> Option<[u8; 6]> {
        (addr == VIP6).then_some(NODE_MAC)
    }
}

pub(crate) fn solicited_node(addr: &[u8; 16]) -> [u8; 16] {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&addr[13..]);
    group
}

pub(crate) fn solicited_node_mac(addr: &[u8; 16]) -> [u8; 6] {
    [0x33, 0x33, 0xff, addr[13], addr[14], addr[15]]
}

/// ARP frame padded to the 60-byte Ethernet minimum, as NICs deliver them.
pub(crate) fn arp_frame(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

pub(crate) fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
    arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, tpa)
}

/// An ICMPv6 message built by etherparse (which computes the checksum).
pub(crate) fn icmpv6_frame(
    eth_dst: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop: u8,
    icmp: Icmpv6Type,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, eth_dst)
        .ipv6(src, dst, hop)
        .icmpv6(icmp);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut f, payload).expect("writing to a Vec");
    f
}

pub(crate) fn ns_payload(target: [u8; 16], options: &[u8]) -> Vec<u8> {
    let mut p = target.to_vec();
    p.extend_from_slice(options);
    p
}

pub(crate) fn source_ll_option(mac: [u8; 6]) -> [u8; 8] {
    [1, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// Multicast NS from CLIENT6 with a source link-layer option, as Linux sends for resolution.
pub(crate) fn ns_multicast(target: [u8; 16]) -> Vec<u8> {
    let payload = ns_payload(target, &source_ll_option(CLIENT_MAC));
    icmpv6_frame(
        solicited_node_mac(&target),
        CLIENT6,
        solicited_node(&target),
        255,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    )
}

/// Runs `respond` with room for an NA and returns the outcome and the resulting frame.
pub(crate) fn run(frame: &[u8]) -> (Outcome, Vec<u8>) {
    let mut buf = frame.to_vec();
    buf.resize(frame.len().max(NA_LEN), 0);
    let outcome = respond(&mut buf, frame.len(), &Table);
    let len = if outcome == Outcome::NaReply {
        NA_LEN
    } else {
        frame.len()
    };
    buf.truncate(len);
    (outcome, buf)
}

/// Checks an ARP reply with etherparse: `mac` owns `ip`, sent back to the requester of `request`.
pub(crate) fn assert_arp_reply(request: &[u8], reply: &[u8], mac: [u8; 6], ip: [u8; 4]) {
    let parsed = SlicedPacket::from_ethernet(reply).expect("reply parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = parsed.link else {
        panic!("not Ethernet II")
    };
    assert_eq!(
        eth.destination(),
        request[22..28],
        "Ethernet destination = requester"
    );
    assert_eq!(eth.source(), mac);
    assert_eq!(eth.ether_type(), EtherType::ARP);
    let Some(NetSlice::Arp(arp)) = parsed.net else {
        panic!("not ARP")
    };
    assert_eq!(arp.operation(), ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), mac);
    assert_eq!(arp.sender_protocol_addr(), ip);
    assert_eq!(arp.target_hw_addr(), &request[22..28]);
    assert_eq!(arp.target_protocol_addr(), &request[28..32]);
    assert_eq!(reply.len(), request.len());
    assert_eq!(
        reply[ARP_FRAME_LEN..],
        request[ARP_FRAME_LEN..],
        "padding kept"
    );
}

/// Checks a Neighbor Advertisement with etherparse.
fn assert_na(
    na: &[u8],
    eth_dst: [u8; 6],
    mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    solicited: bool,
) {
    assert_eq!(na.len(), NA_LEN);
    let parsed = SlicedPacket::from_ethernet(na).expect("NA parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = parsed.link else {
        panic!("not Ethernet II")
    };
    assert_eq!(eth.destination(), eth_dst);
    assert_eq!(eth.source(), mac);
    let Some(NetSlice::Ipv6(ip)) = parsed.net else {
        panic!("not IPv6")
    };
    let header = ip.header();
    assert_eq!(header.hop_limit(), 255);
    assert_eq!(header.source(), src);
    assert_eq!(header.destination(), dst);
    let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
        panic!("not ICMPv6")
    };
    assert!(icmp.is_checksum_valid(src, dst), "ICMPv6 checksum");
    let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
        panic!("not an NA: {:?}", icmp.icmp_type())
    };
    assert!(!flags.router);
    assert!(flags.r#override);
    assert_eq!(flags.solicited, solicited);
    let body = icmp.payload();
    assert_eq!(body[..16], target);
    assert_eq!(
        body[16..],
        [2, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]],
        "target link-layer option"
    );
}

#[test]
fn broadcast_arp_request_for_announced_ip_becomes_reply() {
    let request = arp_request(VIP4);
    let (outcome, reply) = run(&request);
    assert_eq!(outcome, Outcome::ArpReply);
    assert_arp_reply(&request, &reply, NODE_MAC, VIP4);
    let mut expected = arp_frame(CLIENT_MAC, 2, NODE_MAC, VIP4, CLIENT4);
    expected[6..12].copy_from_slice(&NODE_MAC);
    expected[32..38].copy_from_slice(&CLIENT_MAC);
    assert_eq!(reply, expected, "exact reply bytes");
}

#[test]
fn unicast_arp_request_to_announced_mac_is_answered_to_other_mac_is_not() {
    let request = arp_frame(NODE_MAC, 1, CLIENT_MAC, CLIENT4, VIP4);
    let (outcome, reply) = run(&request);
    assert_eq!(outcome, Outcome::ArpReply);
    assert_arp_reply(&request, &reply, NODE_MAC, VIP4);

    let elsewhere = arp_frame(OTHER_MAC, 1, CLIENT_MAC, CLIENT4, VIP4);
    assert_eq!(run(&elsewhere), (Outcome::NotAddressed, elsewhere.clone()));
}

#[test]
fn arp_probe_is_answered_with_target_ip_zero() {
    let probe = arp_frame([0xff; 6], 1, CLIENT_MAC, [0; 4], VIP4);
    let (outcome, reply) = run(&probe);
    assert_eq!(outcome, Outcome::ArpReply);
    assert_arp_reply(&probe, &reply, NODE_MAC, VIP4);
    assert_eq!(reply[38..42], [0, 0, 0, 0]);
}

#[test]
fn arp_frames_not_answered_pass_unchanged() {
    let with = |at: usize, bytes: &[u8]| {
        let mut f = arp_request(VIP4);
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "unknown target",
            arp_request(UNKNOWN4),
            Outcome::NotAnnounced,
        ),
        (
            "gratuitous request from another MAC",
            arp_frame([0xff; 6], 1, CLIENT_MAC, VIP4, VIP4),
            Outcome::ForeignClaim,
        ),
        (
            "gratuitous request from the announced MAC",
            arp_frame([0xff; 6], 1, NODE_MAC, VIP4, VIP4),
            Outcome::Ignored,
        ),
        (
            "gratuitous request for an address not announced",
            arp_frame([0xff; 6], 1, CLIENT_MAC, UNKNOWN4, UNKNOWN4),
            Outcome::Ignored,
        ),
        (
            "reply",
            arp_frame(NODE_MAC, 2, CLIENT_MAC, CLIENT4, VIP4),
            Outcome::Ignored,
        ),
        (
            "gratuitous reply from another MAC",
            arp_frame([0xff; 6], 2, CLIENT_MAC, VIP4, VIP4),
            Outcome::ForeignClaim,
        ),
        ("RARP operation", with(20, &[0, 3]), Outcome::Ignored),
        ("hardware type 6", with(14, &[0, 6]), Outcome::Malformed),
        (
            "protocol type IPv6",
            with(16, &[0x86, 0xdd]),
            Outcome::Malformed,
        ),
        ("hardware length 8", with(18, &[8]), Outcome::Malformed),
        ("protocol length 16", with(19, &[16]), Outcome::Malformed),
        (
            "multicast sender MAC",
            with(22, &[0x01]),
            Outcome::Malformed,
        ),
        (
            "truncated to 41 bytes",
            arp_request(VIP4)[..41].to_vec(),
            Outcome::Malformed,
        ),
        (
            "only an Ethernet header",
            arp_request(VIP4)[..14].to_vec(),
            Outcome::Malformed,
        ),
        (
            "runt frame",
            arp_request(VIP4)[..13].to_vec(),
            Outcome::Ignored,
        ),
        ("802.1Q tagged", with(12, &[0x81, 0x00]), Outcome::Ignored),
    ];
    for (name, frame, want) in cases {
        assert_eq!(run(&frame), (want, frame.clone()), "{name}");
    }
}

#[test]
fn multicast_ns_with_source_ll_gets_solicited_na() {
    let ns = ns_multicast(VIP6);
    let (outcome, na) = run(&ns);
    assert_eq!(outcome, Outcome::NaReply);
    assert_na(&na, CLIENT_MAC, NODE_MAC, VIP6, CLIENT6, VIP6, true);
}

#[test]
fn unicast_ns_without_options_gets_solicited_na() {
    let payload = ns_payload(VIP6, &[]);
    let ns = icmpv6_frame(
        NODE_MAC,
        CLIENT6,
        VIP6,
        255,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    );
    assert_eq!(ns.len(), 78);
    let (outcome, na) = run(&ns);
    assert_eq!(outcome, Outcome::NaReply);
    assert_na(&na, CLIENT_MAC, NODE_MAC, VIP6, CLIENT6, VIP6, true);

    let elsewhere = icmpv6_frame(
        OTHER_MAC,
        CLIENT6,
        VIP6,
        255,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    );
    assert_eq!(run(&elsewhere), (Outcome::NotAddressed, elsewhere.clone()));
}

/// RFC 4861 §7.1.1/§7.2.2: a solicitation is for the target's solicited-node group or the target
/// itself; one sent to another group or another address is not answered, even with a group MAC.
#[test]
fn ns_to_another_ip_destination_is_not_answered() {
    let payload = ns_payload(VIP6, &source_ll_option(CLIENT_MAC));
    let mut other_group = solicited_node(&VIP6);
    other_group[15] ^= 0x01;
    let unrelated = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99, 0x99,
    ];
    for dst in [other_group, unrelated, CLIENT6] {
        let ns = icmpv6_frame(
            solicited_node_mac(&VIP6),
            CLIENT6,
            dst,
            255,
            Icmpv6Type::NeighborSolicitation,
            &payload,
        );
        assert_eq!(run(&ns), (Outcome::NotAddressed, ns.clone()), "{dst:02x?}");
    }
}

#[test]
fn dad_ns_gets_unsolicited_na_to_all_nodes() {
    // DAD with a nonce option (RFC 7527), as Linux sends.
    let payload = ns_payload(VIP6, &[14, 1, 1, 2, 3, 4, 5, 6]);
    let ns = icmpv6_frame(
        solicited_node_mac(&VIP6),
        UNSPECIFIED,
        solicited_node(&VIP6),
        255,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    );
    let (outcome, na) = run(&ns);
    assert_eq!(outcome, Outcome::NaReply);
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_na(
        &na,
        [0x33, 0x33, 0, 0, 0, 1],
        NODE_MAC,
        VIP6,
        all_nodes,
        VIP6,
        false,
    );
}

#[test]
fn ns_that_fail_rfc4861_validation_or_are_not_ours_pass_unchanged() {
    let sllao = source_ll_option(CLIENT_MAC);
    let good = ns_payload(VIP6, &sllao);
    let group = solicited_node(&VIP6);
    let group_mac = solicited_node_mac(&VIP6);
    let ns = |src: [u8; 16], dst: [u8; 16], hop: u8, icmp: Icmpv6Type, payload: &[u8]| {
        icmpv6_frame(group_mac, src, dst, hop, icmp, payload)
    };
    let with = |at: usize, bytes: &[u8]| {
        let mut f = ns_multicast(VIP6);
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let code1 = Icmpv6Type::Unknown {
        type_u8: 135,
        code_u8: 1,
        bytes5to8: [0; 4],
    };
    let mut long_options = Vec::new();
    for _ in 0..=((NS_MAX_ICMP_LEN - 24) / 8) {
        long_options.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
    }
    let mut padded = ns_multicast(VIP6);
    padded[19] += 8; // payload length claims 8 bytes the frame does not have
    let mut trailing = ns_multicast(VIP6);
    trailing.extend_from_slice(&[0xee; 4]); // Ethernet padding after the IPv6 payload: fine
    let mut short_icmp = ns_multicast(VIP6);
    short_icmp.truncate(14 + 40 + 16);
    short_icmp[18..20].copy_from_slice(&16u16.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "unknown target",
            ns_multicast(UNKNOWN6),
            Outcome::NotAnnounced,
        ),
        (
            "hop limit 64",
            ns(CLIENT6, group, 64, Icmpv6Type::NeighborSolicitation, &good),
            Outcome::Malformed,
        ),
        (
            "code 1",
            ns(CLIENT6, group, 255, code1, &good),
            Outcome::Malformed,
        ),
        ("bad checksum", with(56, &[0x12, 0x34]), Outcome::Malformed),
        (
            "multicast target",
            ns(
                CLIENT6,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(group, &sllao),
            ),
            Outcome::Malformed,
        ),
        (
            "zero-length option",
            ns(
                CLIENT6,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(VIP6, &[1, 0, 0, 0, 0, 0, 0, 0]),
            ),
            Outcome::Malformed,
        ),
        (
            "option past the end",
            ns(
                CLIENT6,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(VIP6, &[1, 2, 0, 0, 0, 0, 0, 0]),
            ),
            Outcome::Malformed,
        ),
        (
            "odd trailing bytes",
            ns(
                CLIENT6,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(VIP6, &[1, 1, 0]),
            ),
            Outcome::Malformed,
        ),
        (
            "DAD with source link-layer option",
            ns(
                UNSPECIFIED,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &good,
            ),
            Outcome::Malformed,
        ),
        (
            "DAD not to solicited-node group",
            ns(
                UNSPECIFIED,
                VIP6,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(VIP6, &[]),
            ),
            Outcome::Malformed,
        ),
        ("payload length past the frame", padded, Outcome::Malformed),
        ("ICMP length 16", short_icmp, Outcome::Malformed),
        (
            "truncated NS",
            ns_multicast(VIP6)[..70].to_vec(),
            Outcome::Malformed,
        ),
        (
            "IP version 4 in IPv6 frame",
            with(14, &[0x40]),
            Outcome::Malformed,
        ),
        (
            "multicast solicitor MAC",
            with(6, &[0x01]),
            Outcome::Malformed,
        ),
        (
            "too many options to check",
            ns(
                CLIENT6,
                group,
                255,
                Icmpv6Type::NeighborSolicitation,
                &ns_payload(VIP6, &long_options),
            ),
            Outcome::Ignored,
        ),
        (
            "echo request",
            ns(
                CLIENT6,
                VIP6,
                64,
                Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
                &[0; 8],
            ),
            Outcome::Ignored,
        ),
        (
            "NA for an announced address from another MAC",
            ns(
                CLIENT6,
                VIP6,
                255,
                Icmpv6Type::NeighborAdvertisement(
                    etherparse::icmpv6::NeighborAdvertisementHeader {
                        router: false,
                        solicited: true,
                        r#override: true,
                    },
                ),
                &good,
            ),
            Outcome::ForeignClaim,
        ),
        (
            "hop-by-hop header before ICMPv6",
            with(20, &[0]),
            Outcome::Ignored,
        ),
        (
            "short IPv6 frame",
            ns_multicast(VIP6)[..54].to_vec(),
            Outcome::Ignored,
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(run(&frame), (want, frame.clone()), "{name}");
    }
    let (outcome, na) = run(&trailing);
    assert_eq!(
        outcome,
        Outcome::NaReply,
        "Ethernet padding after the payload is ignored"
    );
    assert_na(&na, CLIENT_MAC, NODE_MAC, VIP6, CLIENT6, VIP6, true);
}

#[test]
fn ns_needs_room_for_the_na() {
    let payload = ns_payload(VIP6, &[]);
    let ns = icmpv6_frame(
        NODE_MAC,
        CLIENT6,
        VIP6,
        255,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    );
    let mut buf = ns.clone();
    assert_eq!(respond(&mut buf, ns.len(), &Table), Outcome::Ignored);
    assert_eq!(buf, ns);
}

#[test]
fn gratuitous_arp_request_and_reply() {
    for (reply, op) in [(false, ArpOperation::REQUEST), (true, ArpOperation::REPLY)] {
        let mut buf = [0u8; 64];
        let len = write_gratuitous_arp(&mut buf, NODE_MAC, VIP4, reply).expect("room");
        assert_eq!(len, ARP_FRAME_LEN);
        let parsed = SlicedPacket::from_ethernet(&buf[..len]).expect("parses");
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = parsed.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), [0xff; 6]);
        assert_eq!(eth.source(), NODE_MAC);
        let Some(NetSlice::Arp(arp)) = parsed.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), op);
        assert_eq!(arp.sender_hw_addr(), NODE_MAC);
        assert_eq!(arp.sender_protocol_addr(), VIP4);
        assert_eq!(arp.target_protocol_addr(), VIP4);
        // Our own responder must treat it as gratuitous.
        assert_eq!(run(&buf[..len]).0, Outcome::Ignored);
    }
    assert_eq!(
        write_gratuitous_arp(&mut [0u8; 41], NODE_MAC, VIP4, false),
        None
    );
}

#[test]
fn unsolicited_na_from_link_local() {
    let link_local = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xff, 0xfe, 0xcc, 0xdd, 0x01,
    ];
    let mut buf = [0u8; 100];
    let len = write_unsolicited_na(&mut buf, NODE_MAC, link_local, VIP6).expect("room");
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_na(
        &buf[..len],
        [0x33, 0x33, 0, 0, 0, 1],
        NODE_MAC,
        link_local,
        all_nodes,
        VIP6,
        false,
    );
    assert_eq!(
        write_unsolicited_na(&mut [0u8; NA_LEN - 1], NODE_MAC, link_local, VIP6),
        None
    );
}

/// The invariant for any input: unanswered frames are untouched; answers are valid replies for an
/// announced address, to whoever asked.
pub(crate) fn check_invariants(frame: &[u8]) {
    let (outcome, out) = run(frame);
    match outcome {
        Outcome::ArpReply => {
            assert_eq!(frame[38..42], VIP4, "only announced addresses are answered");
            assert_arp_reply(frame, &out, NODE_MAC, VIP4);
        }
        Outcome::NaReply => {
            assert_eq!(frame[62..78], VIP6, "only announced addresses are answered");
            let source: [u8; 16] = frame[22..38].try_into().expect("16 bytes");
            if source == UNSPECIFIED {
                let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                assert_na(
                    &out,
                    [0x33, 0x33, 0, 0, 0, 1],
                    NODE_MAC,
                    VIP6,
                    all_nodes,
                    VIP6,
                    false,
                );
            } else {
                let requester: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
                assert_na(&out, requester, NODE_MAC, VIP6, source, VIP6, true);
                // etherparse agrees the solicitation was valid.
                let parsed = SlicedPacket::from_ethernet(frame).expect("answered NS parses");
                let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
                    panic!("answered a non-ICMPv6 frame")
                };
                let dst: [u8; 16] = frame[38..54].try_into().expect("16 bytes");
                assert!(icmp.is_checksum_valid(source, dst));
                assert_eq!(icmp.icmp_type(), Icmpv6Type::NeighborSolicitation);
            }
        }
        Outcome::ForeignClaim => {
            assert_eq!(out, frame, "a claim is passed unchanged");
            if frame[12..14] == [0x08, 0x06] {
                assert_eq!(frame[28..32], VIP4, "only announced addresses are claimed");
                assert_ne!(
                    frame[22..28],
                    NODE_MAC,
                    "a claim for our own MAC is not foreign"
                );
            } else {
                assert_eq!(frame[62..78], VIP6, "only announced addresses are claimed");
                let parsed = SlicedPacket::from_ethernet(frame).expect("a claiming NA parses");
                let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
                    panic!("claim from a non-ICMPv6 frame")
                };
                let src: [u8; 16] = frame[22..38].try_into().expect("16 bytes");
                let dst: [u8; 16] = frame[38..54].try_into().expect("16 bytes");
                assert!(icmp.is_checksum_valid(src, dst));
                assert!(matches!(
                    icmp.icmp_type(),
                    Icmpv6Type::NeighborAdvertisement(_)
                ));
            }
        }
        _ => assert_eq!(out, frame, "{outcome:?} must leave the frame unchanged"),
    }
}

/// Valid requests of every kind, then two claims, for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let dad_payload = ns_payload(VIP6, &[14, 1, 1, 2, 3, 4, 5, 6]);
    vec![
        arp_request(VIP4),
        arp_frame([0xff; 6], 1, CLIENT_MAC, [0; 4], VIP4),
        ns_multicast(VIP6),
        icmpv6_frame(
            NODE_MAC,
            CLIENT6,
            VIP6,
            255,
            Icmpv6Type::NeighborSolicitation,
            &ns_payload(VIP6, &[]),
        ),
        icmpv6_frame(
            solicited_node_mac(&VIP6),
            UNSPECIFIED,
            solicited_node(&VIP6),
            255,
            Icmpv6Type::NeighborSolicitation,
            &dad_payload,
        ),
        arp_frame([0xff; 6], 1, OTHER_MAC, VIP4, VIP4),
        crate::edge_tests::na_frame(OTHER_MAC, VIP6, Some(OTHER_MAC), false),
    ]
}

#[test]
fn seeds_are_answered() {
    for seed in seeds() {
        assert!(matches!(
            run(&seed).0,
            Outcome::ArpReply | Outcome::NaReply | Outcome::ForeignClaim
        ));
        check_invariants(&seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_frames_never_panic_and_keep_invariants(
        ethertype in prop_oneof![Just([0x08u8, 0x06]), Just([0x86, 0xdd]), any::<[u8; 2]>()],
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        if bytes.len() >= 14 {
            bytes[12..14].copy_from_slice(&ethertype);
        }
        check_invariants(&bytes);
    }

    #[test]
    fn mutated_requests_are_answered_correctly_or_passed_unchanged(
        seed in 0usize..7,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut frame = seeds()[seed].clone();
        for (at, byte) in edits {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        if let Some(cut) = cut {
            frame.truncate(cut.index(frame.len() + 1));
        }
        check_invariants(&frame);
    }

    #[test]
    fn valid_requests_from_anyone_are_answered(mac in any::<[u8; 6]>(), ip in any::<[u8; 4]>(), src6 in any::<[u8; 16]>()) {
        let mut mac = mac;
        mac[0] &= 0xfe; // unicast requester
        let arp = arp_frame([0xff; 6], 1, mac, ip, VIP4);
        // Sender IP = target IP: a gratuitous ARP, claiming the address for `mac`.
        let want = match (ip == VIP4, mac == NODE_MAC) {
            (false, _) => Outcome::ArpReply,
            (true, false) => Outcome::ForeignClaim,
            (true, true) => Outcome::Ignored,
        };
        prop_assert_eq!(run(&arp).0, want);
        check_invariants(&arp);
        let mut src6 = src6;
        src6[0] = 0x20; // a unicast global source
        let ns = icmpv6_frame(solicited_node_mac(&VIP6), src6, solicited_node(&VIP6), 255, Icmpv6Type::NeighborSolicitation, &ns_payload(VIP6, &source_ll_option(mac)));
        let mut ns = ns;
        ns[6..12].copy_from_slice(&mac);
        prop_assert_eq!(run(&ns).0, Outcome::NaReply);
        check_invariants(&ns);
    }
}
