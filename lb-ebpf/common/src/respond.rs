//! The whole answering decision on a plain byte buffer, composed from the same steps the XDP
//! program runs (`check_arp`/`write_arp_reply`, `ns_copy_len`/`check_ns`/`write_na`). Host tests,
//! proptests and the fuzzer drive this; the XDP program adds only map lookups, the guard and
//! counters around the same calls.

use crate::Skip;
use crate::arp::{ARP_FRAME_LEN, Arp, ArpFrame, arp_addressed_to, check_arp, write_arp_reply};
use crate::ndp::{
    NA_LEN, NS_HEAD_LEN, NS_WINDOW, NsHead, check_na, check_ns, nd_copy_len, write_na,
};
use crate::wire::{
    ETH_HLEN, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NA, ICMP6_NS, ICMP6_TYPE,
    IP6_NEXT_HEADER, IPPROTO_ICMPV6,
};

/// Which addresses are announced, and with which MAC (the maps, on the host).
pub trait Announced {
    fn ipv4(&self, addr: [u8; 4]) -> Option<[u8; 6]>;
    fn ipv6(&self, addr: [u8; 16]) -> Option<[u8; 6]>;
}

/// What happened to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a request Herald answers (other traffic, ARP replies, gratuitous ARP and
    /// advertisements that claim nothing announced for another MAC, other ICMPv6).
    Ignored,
    /// A gratuitous ARP, ARP reply or Neighbor Advertisement saying an announced address is at
    /// another MAC than the announced one. Passed unchanged; the XDP program records it.
    ForeignClaim,
    /// ARP or a Neighbor Solicitation that failed validation (or was truncated).
    Malformed,
    /// A valid request for an address that is not announced.
    NotAnnounced,
    /// A valid request for an announced address, sent unicast to another MAC.
    NotAddressed,
    /// The frame was rewritten into an ARP reply; its length is unchanged.
    ArpReply,
    /// The buffer now holds a Neighbor Advertisement of [`NA_LEN`] bytes.
    NaReply,
}

impl From<Skip> for Outcome {
    fn from(skip: Skip) -> Self {
        match skip {
            Skip::Ignore => Outcome::Ignored,
            Skip::Malformed => Outcome::Malformed,
        }
    }
}

/// Decides about the frame in `buf[..frame_len]` and, when it is answered, rewrites `buf` into
/// the reply (see [`Outcome`] for its length). Answering a solicitation needs [`NA_LEN`] bytes
/// of room in `buf`; with less the frame is `Ignored`. A `frame_len` beyond `buf` is clamped.
pub fn respond(buf: &mut [u8], frame_len: usize, announced: &impl Announced) -> Outcome {
    let frame_len = frame_len.min(buf.len());
    let Some(ethertype) = buf.get(ETH_TYPE..ETH_HLEN) else {
        return Outcome::Ignored;
    };
    if ethertype == ETHERTYPE_ARP {
        let Some(frame) = buf
            .get_mut(..frame_len)
            .and_then(|f| f.get_mut(..ARP_FRAME_LEN))
        else {
            return Outcome::Malformed;
        };
        let frame: &mut ArpFrame = match frame.try_into() {
            Ok(frame) => frame,
            Err(_) => return Outcome::Malformed,
        };
        let request = match check_arp(frame) {
            Ok(Arp::Request(request)) => request,
            Ok(Arp::Claim(claim)) => {
                return match announced.ipv4(claim.addr) {
                    Some(mac) if claim.is_foreign(&mac) => Outcome::ForeignClaim,
                    _ => Outcome::Ignored,
                };
            }
            Err(skip) => return skip.into(),
        };
        let Some(mac) = announced.ipv4(request.target) else {
            return Outcome::NotAnnounced;
        };
        if !arp_addressed_to(frame, &mac) {
            return Outcome::NotAddressed;
        }
        write_arp_reply(frame, &mac);
        return Outcome::ArpReply;
    }
    if ethertype != ETHERTYPE_IPV6 {
        return Outcome::Ignored;
    }
    // Same cheap test as the XDP fast path: only ICMPv6 types 135 and 136 go further.
    if frame_len <= ICMP6_TYPE || buf[IP6_NEXT_HEADER] != IPPROTO_ICMPV6 {
        return Outcome::Ignored;
    }
    let advertisement = buf[ICMP6_TYPE] == ICMP6_NA;
    if buf[ICMP6_TYPE] != ICMP6_NS && !advertisement {
        return Outcome::Ignored;
    }
    // Advertisements are only looked at: one that cannot be checked is simply not a claim.
    let unchecked = |skip: crate::Skip| {
        if advertisement {
            Outcome::Ignored
        } else {
            skip.into()
        }
    };
    let Some(head) = buf.get(..NS_HEAD_LEN).filter(|_| frame_len >= NS_HEAD_LEN) else {
        return unchecked(crate::Skip::Malformed);
    };
    let head: &NsHead = match head.try_into() {
        Ok(head) => head,
        Err(_) => return unchecked(crate::Skip::Malformed),
    };
    let copy_len = match nd_copy_len(head, frame_len) {
        Ok(len) => len,
        Err(skip) => return unchecked(skip),
    };
    let mut window = [0u8; NS_WINDOW];
    window[..copy_len].copy_from_slice(&buf[..copy_len]);
    if advertisement {
        return match check_na(&window) {
            Ok(na) => match announced.ipv6(na.target) {
                Some(mac) if na.is_foreign(&mac) => Outcome::ForeignClaim,
                _ => Outcome::Ignored,
            },
            Err(_) => Outcome::Ignored,
        };
    }
    let solicitation = match check_ns(&window) {
        Ok(s) => s,
        Err(skip) => return skip.into(),
    };
    let Some(mac) = announced.ipv6(solicitation.target) else {
        return Outcome::NotAnnounced;
    };
    if !solicitation.addressed_to(&mac) {
        return Outcome::NotAddressed;
    }
    let Some(out) = buf
        .get_mut(..NA_LEN)
        .and_then(|o| <&mut [u8; NA_LEN]>::try_from(o).ok())
    else {
        return Outcome::Ignored;
    };
    write_na(out, &solicitation, &mac);
    Outcome::NaReply
}
