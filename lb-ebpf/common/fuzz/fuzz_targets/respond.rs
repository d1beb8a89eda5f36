//! Any bytes through the whole answering decision (`lb_common::respond`), as the XDP program
//! runs it: never panics; a frame that is not answered comes back unchanged; an answer is a
//! well-formed reply (checked with etherparse) for an announced address, sent to the ARP sender
//! hardware address whatever the Ethernet source; a foreign claim names an announced address
//! for another MAC.
#![no_main]

use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use lb_common::ndp::NA_LEN;
use lb_common::respond::{Announced, Outcome, respond};
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const V4: [u8; 4] = [198, 51, 100, 10];
const V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

struct One;

impl Announced for One {
    fn ipv4(&self, addr: [u8; 4]) -> Option<[u8; 6]> {
        (addr == V4).then_some(MAC)
    }
    fn ipv6(&self, addr: [u8; 16]) -> Option<[u8; 6]> {
        (addr == V6).then_some(MAC)
    }
}

fuzz_target!(|frame: &[u8]| {
    let mut buf = frame.to_vec();
    buf.resize(frame.len().max(NA_LEN), 0);
    match respond(&mut buf, frame.len(), &One) {
        Outcome::ArpReply => {
            assert_eq!(frame[38..42], V4);
            let reply = SlicedPacket::from_ethernet(&buf[..frame.len()]).expect("ARP reply parses");
            let Some(NetSlice::Arp(arp)) = reply.net else {
                panic!("reply is not ARP")
            };
            assert_eq!(arp.sender_hw_addr(), MAC);
            assert_eq!(arp.sender_protocol_addr(), V4);
            assert_eq!(arp.target_hw_addr(), &frame[22..28]);
            assert_eq!(buf[..6], frame[22..28], "the reply goes to the sender hardware address");
            assert_eq!(arp.target_protocol_addr(), &frame[28..32]);
        }
        Outcome::NaReply => {
            assert_eq!(frame[62..78], V6);
            let na = SlicedPacket::from_ethernet(&buf[..NA_LEN]).expect("NA parses");
            let Some(NetSlice::Ipv6(ip)) = na.net else {
                panic!("reply is not IPv6")
            };
            let (src, dst) = (ip.header().source(), ip.header().destination());
            assert_eq!(src, V6);
            let Some(TransportSlice::Icmpv6(icmp)) = na.transport else {
                panic!("reply is not ICMPv6")
            };
            assert!(icmp.is_checksum_valid(src, dst));
            assert!(matches!(
                icmp.icmp_type(),
                Icmpv6Type::NeighborAdvertisement(_)
            ));
        }
        Outcome::ForeignClaim => {
            assert_eq!(&buf[..frame.len()], frame, "a claim is passed unchanged");
            if frame[12..14] == [0x08, 0x06] {
                assert_eq!(frame[28..32], V4, "claims name an announced address");
                assert_ne!(frame[22..28], MAC, "for another MAC");
            } else {
                assert_eq!(frame[62..78], V6, "claims name an announced address");
                assert_eq!(frame[54], 136, "from a Neighbor Advertisement");
            }
        }
        _ => assert_eq!(
            &buf[..frame.len()],
            frame,
            "an unanswered frame must stay unchanged"
        ),
    }
});
