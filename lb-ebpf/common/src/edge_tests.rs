//! Edge cases of the answering decision: ARP whose Ethernet source is not its sender hardware
//! address, and frames claiming an announced address for another MAC (gratuitous ARP, ARP
//! replies, Neighbor Advertisements). Shares the helpers of `tests`.

extern crate std;
use std::vec::Vec;

use etherparse::Icmpv6Type;
use etherparse::icmpv6::NeighborAdvertisementHeader;
use proptest::prelude::*;

use crate::Skip;
use crate::arp::{ARP_FRAME_LEN, Arp, ArpClaim, ArpFrame, ArpRequest, check_arp};
use crate::respond::Outcome;
use crate::tests::{
    CLIENT_MAC, CLIENT4, CLIENT6, NODE_MAC, OTHER_MAC, UNKNOWN6, VIP4, VIP6, arp_frame,
    arp_request, assert_arp_reply, check_invariants, icmpv6_frame, run,
};

const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn arp_head(frame: &[u8]) -> ArpFrame {
    frame[..ARP_FRAME_LEN].try_into().expect("an ARP frame")
}

/// A Neighbor Advertisement for `target` from CLIENT6, Ethernet source `eth_src`, with a target
/// link-layer option when `tlla` is given; to CLIENT6's peer unicast when `solicited`, else to
/// all nodes.
pub(crate) fn na_frame(
    eth_src: [u8; 6],
    target: [u8; 16],
    tlla: Option<[u8; 6]>,
    solicited: bool,
) -> Vec<u8> {
    let mut payload = target.to_vec();
    if let Some(mac) = tlla {
        payload.extend_from_slice(&[2, 1]);
        payload.extend_from_slice(&mac);
    }
    let (eth_dst, dst) = if solicited {
        (NODE_MAC, VIP6)
    } else {
        ([0x33, 0x33, 0, 0, 0, 1], ALL_NODES)
    };
    let na = Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
        router: false,
        solicited,
        r#override: true,
    });
    let mut frame = icmpv6_frame(eth_dst, CLIENT6, dst, 255, na, &payload);
    frame[6..12].copy_from_slice(&eth_src);
    frame
}

/// The kernel's choice, kept on purpose: a request whose Ethernet source differs from its
/// sender hardware address is answered to the sender hardware address (Ethernet destination and
/// target hardware address), never to the Ethernet source. `check_arp` flags it so the XDP
/// program can count it.
#[test]
fn arp_whose_ethernet_source_is_not_sha_is_answered_to_sha() {
    let mut request = arp_request(VIP4);
    request[6..12].copy_from_slice(&OTHER_MAC);
    assert_eq!(
        check_arp(&arp_head(&request)),
        Ok(Arp::Request(ArpRequest {
            target: VIP4,
            requester: CLIENT_MAC,
            sha_mismatch: true,
        }))
    );
    let (outcome, reply) = run(&request);
    assert_eq!(outcome, Outcome::ArpReply);
    assert_eq!(reply[..6], CLIENT_MAC, "Ethernet destination = sha");
    assert_eq!(reply[32..38], CLIENT_MAC, "target hardware address = sha");
    assert_arp_reply(&request, &reply, NODE_MAC, VIP4);

    let plain = arp_request(VIP4);
    assert_eq!(
        check_arp(&arp_head(&plain)),
        Ok(Arp::Request(ArpRequest {
            target: VIP4,
            requester: CLIENT_MAC,
            sha_mismatch: false,
        }))
    );
}

#[test]
fn gratuitous_arp_and_replies_are_claims_of_the_sender() {
    let claim = |mac, addr| Ok(Arp::Claim(ArpClaim { addr, mac }));
    for (name, frame, want) in [
        (
            "gratuitous request",
            arp_frame([0xff; 6], 1, OTHER_MAC, VIP4, VIP4),
            claim(OTHER_MAC, VIP4),
        ),
        (
            "gratuitous reply",
            arp_frame([0xff; 6], 2, OTHER_MAC, VIP4, VIP4),
            claim(OTHER_MAC, VIP4),
        ),
        (
            "reply to someone",
            arp_frame(CLIENT_MAC, 2, OTHER_MAC, VIP4, CLIENT4),
            claim(OTHER_MAC, VIP4),
        ),
        (
            "request",
            arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4),
            Ok(Arp::Request(ArpRequest {
                target: VIP4,
                requester: CLIENT_MAC,
                sha_mismatch: false,
            })),
        ),
        (
            "RARP",
            {
                let mut f = arp_frame([0xff; 6], 3, OTHER_MAC, VIP4, VIP4);
                f[20..22].copy_from_slice(&[0, 3]);
                f
            },
            Err(Skip::Ignore),
        ),
    ] {
        assert_eq!(check_arp(&arp_head(&frame)), want, "{name}");
    }
    assert!(
        ArpClaim {
            addr: VIP4,
            mac: OTHER_MAC
        }
        .is_foreign(&NODE_MAC)
    );
    assert!(
        !ArpClaim {
            addr: VIP4,
            mac: NODE_MAC
        }
        .is_foreign(&NODE_MAC)
    );
}

#[test]
fn claims_on_announced_addresses_for_another_mac_are_foreign_and_pass_unchanged() {
    let cases: Vec<(&str, Vec<u8>, Outcome)> = std::vec![
        (
            "ARP reply for an announced address",
            arp_frame(CLIENT_MAC, 2, OTHER_MAC, VIP4, CLIENT4),
            Outcome::ForeignClaim,
        ),
        (
            "ARP reply for an announced address at our MAC",
            arp_frame(CLIENT_MAC, 2, NODE_MAC, VIP4, CLIENT4),
            Outcome::Ignored,
        ),
        (
            "ARP reply for another address",
            arp_frame(NODE_MAC, 2, OTHER_MAC, CLIENT4, VIP4),
            Outcome::Ignored,
        ),
        (
            "gratuitous ARP with a group sender MAC (multicast cluster IPs do this)",
            arp_frame([0xff; 6], 1, [0x03, 0xbf, 1, 2, 3, 4], VIP4, VIP4),
            Outcome::ForeignClaim,
        ),
        (
            "unsolicited NA with another target link-layer address",
            na_frame(OTHER_MAC, VIP6, Some(OTHER_MAC), false),
            Outcome::ForeignClaim,
        ),
        (
            "solicited NA without the option, from another MAC",
            na_frame(OTHER_MAC, VIP6, None, true),
            Outcome::ForeignClaim,
        ),
        (
            "NA whose option is our MAC, relayed from another Ethernet source",
            na_frame(OTHER_MAC, VIP6, Some(NODE_MAC), false),
            Outcome::Ignored,
        ),
        (
            "NA from our MAC without the option",
            na_frame(NODE_MAC, VIP6, None, false),
            Outcome::Ignored,
        ),
        (
            "NA for an address not announced",
            na_frame(OTHER_MAC, UNKNOWN6, Some(OTHER_MAC), false),
            Outcome::Ignored,
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(run(&frame), (want, frame.clone()), "{name}");
        check_invariants(&frame);
    }
}

/// RFC 4861 §7.1.2: an advertisement the kernel would discard is no claim.
#[test]
fn advertisements_that_fail_validation_claim_nothing() {
    let good = na_frame(OTHER_MAC, VIP6, Some(OTHER_MAC), false);
    assert_eq!(run(&good).0, Outcome::ForeignClaim);
    let with = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    // Solicited set on an advertisement to ff02::1 (a valid checksum: etherparse computes it).
    let solicited_to_group = {
        let na = Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: false,
            solicited: true,
            r#override: true,
        });
        let mut payload = VIP6.to_vec();
        payload.extend_from_slice(&[2, 1]);
        payload.extend_from_slice(&OTHER_MAC);
        icmpv6_frame(
            [0x33, 0x33, 0, 0, 0, 1],
            CLIENT6,
            ALL_NODES,
            255,
            na,
            &payload,
        )
    };
    let two_unit_tlla = {
        let na = Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: false,
            solicited: false,
            r#override: true,
        });
        let mut payload = VIP6.to_vec();
        payload.extend_from_slice(&[2, 2]);
        payload.extend_from_slice(&OTHER_MAC);
        payload.extend_from_slice(&[0; 8]);
        icmpv6_frame(
            [0x33, 0x33, 0, 0, 0, 1],
            CLIENT6,
            ALL_NODES,
            255,
            na,
            &payload,
        )
    };
    let mut long_payload = good.clone();
    long_payload[19] += 8;
    let cases: Vec<(&str, Vec<u8>)> = std::vec![
        ("hop limit 64", with(21, &[64])),
        ("bad checksum", with(56, &[0xde, 0xad])),
        ("code 1", with(55, &[1])),
        ("zero-length option", with(78, &[2, 0])),
        ("option past the end", with(78, &[2, 2])),
        ("multicast target", with(62, &[0xff])),
        ("solicited to a group", solicited_to_group),
        ("target link-layer option two units long", two_unit_tlla),
        ("payload length past the frame", long_payload),
        ("truncated", good[..70].to_vec()),
    ];
    for (name, frame) in cases {
        assert_eq!(run(&frame), (Outcome::Ignored, frame.clone()), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the Ethernet source, a request is answered to its sender hardware address.
    #[test]
    fn replies_go_to_sha_whatever_the_ethernet_source(eth_src in any::<[u8; 6]>(), sha in any::<[u8; 6]>()) {
        let mut sha = sha;
        sha[0] &= 0xfe;
        let mut request = arp_frame([0xff; 6], 1, sha, CLIENT4, VIP4);
        request[6..12].copy_from_slice(&eth_src);
        let (outcome, reply) = run(&request);
        prop_assert_eq!(outcome, Outcome::ArpReply);
        prop_assert_eq!(&reply[..6], &sha[..]);
        prop_assert_eq!(&reply[32..38], &sha[..]);
        let Ok(Arp::Request(parsed)) = check_arp(&arp_head(&request)) else {
            panic!("a request")
        };
        prop_assert_eq!(parsed.sha_mismatch, eth_src != sha);
    }

    /// A gratuitous ARP or reply for an announced address is foreign exactly when its sender
    /// hardware address is not the announced MAC, and is never changed.
    #[test]
    fn claims_are_foreign_exactly_for_other_macs(
        mac in prop_oneof![Just(NODE_MAC), any::<[u8; 6]>()],
        reply in any::<bool>(),
        target in prop_oneof![Just(VIP4), Just(CLIENT4)],
    ) {
        let op = if reply { 2 } else { 1 };
        // A request is a claim only when gratuitous; a reply always claims its sender IP.
        let frame = arp_frame([0xff; 6], op, mac, VIP4, if reply { target } else { VIP4 });
        let want = if mac == NODE_MAC { Outcome::Ignored } else { Outcome::ForeignClaim };
        prop_assert_eq!(run(&frame), (want, frame.clone()));
        let na = na_frame(CLIENT_MAC, VIP6, Some(mac), false);
        prop_assert_eq!(run(&na), (want, na.clone()));
    }
}
