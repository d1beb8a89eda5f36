//! ARP (RFC 826) over Ethernet for IPv4: recognising requests Herald should answer and turning
//! them into replies in place, plus the gratuitous ARP written on announce.

use crate::Skip;
use crate::wire::{BROADCAST_MAC, ETH_HLEN, ETH_TYPE, ETHERTYPE_ARP, is_group_mac, read, write};

/// Length of an Ethernet II + ARP-for-IPv4 frame (without the padding to 60 bytes).
pub const ARP_FRAME_LEN: usize = ETH_HLEN + 28;
/// The part of a frame the ARP logic reads and rewrites.
pub type ArpFrame = [u8; ARP_FRAME_LEN];

const HTYPE: usize = ETH_HLEN;
const PTYPE: usize = ETH_HLEN + 2;
const HLEN: usize = ETH_HLEN + 4;
const PLEN: usize = ETH_HLEN + 5;
const OPER: usize = ETH_HLEN + 6;
const SHA: usize = ETH_HLEN + 8;
const SPA: usize = ETH_HLEN + 14;
const THA: usize = ETH_HLEN + 18;
const TPA: usize = ETH_HLEN + 24;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// What an ARP frame is, for Herald.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arp {
    /// A request worth answering if its target is announced.
    Request(ArpRequest),
    /// The sender says an address is at its MAC: a gratuitous ARP (request or reply, sender IP
    /// = target IP) or any reply. Never answered; a claim on an announced address for another
    /// MAC is recorded.
    Claim(ArpClaim),
}

/// An ARP request worth answering if `target` is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    /// The IPv4 address asked for (network order).
    pub target: [u8; 4],
    /// The sender hardware address: where the reply goes (Ethernet destination and target
    /// hardware address), as the Linux kernel answers.
    pub requester: [u8; 6],
    /// The Ethernet source is not the sender hardware address (relayed or proxied ARP, or a
    /// forgery: both fields are equally forgeable). Answered all the same, and counted.
    pub sha_mismatch: bool,
}

/// A claim: `addr` is at `mac` (sender protocol and hardware addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpClaim {
    pub addr: [u8; 4],
    pub mac: [u8; 6],
}

impl ArpClaim {
    /// True when the claim contradicts an announcement of `addr` at `ours`.
    #[inline(always)]
    pub fn is_foreign(&self, ours: &[u8; 6]) -> bool {
        self.mac != *ours
    }
}

/// Classifies the first [`ARP_FRAME_LEN`] bytes of a frame.
///
/// `Skip::Ignore`: not ARP, or an operation other than request and reply. `Skip::Malformed`:
/// not Ethernet/IPv4 ARP (hardware/protocol type or lengths), or a request whose sender
/// hardware address is a group address (never unicast a reply to it). ARP probes (sender IP
/// 0.0.0.0, RFC 5227) are requests like any other: the reply tells the prober the address is
/// taken, as Linux does. Gratuitous ARP and replies are [`Arp::Claim`]s, whatever their MAC.
#[inline(always)]
pub fn check_arp(frame: &ArpFrame) -> Result<Arp, Skip> {
    if read::<2, ARP_FRAME_LEN>(frame, ETH_TYPE) != ETHERTYPE_ARP {
        return Err(Skip::Ignore);
    }
    if read::<2, ARP_FRAME_LEN>(frame, HTYPE) != [0, 1]
        || read::<2, ARP_FRAME_LEN>(frame, PTYPE) != [0x08, 0x00]
        || frame[HLEN] != 6
        || frame[PLEN] != 4
    {
        return Err(Skip::Malformed);
    }
    let op = u16::from_be_bytes(read(frame, OPER));
    let sender_mac: [u8; 6] = read(frame, SHA);
    let sender_ip: [u8; 4] = read(frame, SPA);
    let target: [u8; 4] = read(frame, TPA);
    if op == OP_REPLY || (op == OP_REQUEST && sender_ip == target) {
        return Ok(Arp::Claim(ArpClaim {
            addr: sender_ip,
            mac: sender_mac,
        }));
    }
    if op != OP_REQUEST {
        return Err(Skip::Ignore);
    }
    if is_group_mac(&sender_mac) {
        return Err(Skip::Malformed);
    }
    Ok(Arp::Request(ArpRequest {
        target,
        requester: sender_mac,
        sha_mismatch: read::<6, ARP_FRAME_LEN>(frame, 6) != sender_mac,
    }))
}

/// True if the request was sent to everyone or to `mac` (a unicast request seen in promiscuous
/// mode for another host is not ours to answer).
#[inline(always)]
pub fn arp_addressed_to(frame: &ArpFrame, mac: &[u8; 6]) -> bool {
    let dst: [u8; 6] = read(frame, 0);
    dst == BROADCAST_MAC || dst == *mac
}

/// Rewrites a request accepted by [`check_arp`] into the reply from `mac`: Ethernet to the
/// requester, operation 2, sender = `mac` + the asked address, target = the requester. Bytes
/// after [`ARP_FRAME_LEN`] (Ethernet padding) are left as they are.
///
/// The requester is the sender hardware address, not the Ethernet source, when the two differ:
/// the Linux kernel answers that way (relayed and proxied ARP depend on it), and refusing such
/// requests would protect nothing, as both fields are equally easy to forge.
#[inline(always)]
pub fn write_arp_reply(frame: &mut ArpFrame, mac: &[u8; 6]) {
    let requester_mac: [u8; 6] = read(frame, SHA);
    let requester_ip: [u8; 4] = read(frame, SPA);
    let asked_ip: [u8; 4] = read(frame, TPA);
    write(frame, 0, &requester_mac);
    write(frame, 6, mac);
    write(frame, OPER, &OP_REPLY.to_be_bytes());
    write(frame, SHA, mac);
    write(frame, SPA, &asked_ip);
    write(frame, THA, &requester_mac);
    write(frame, TPA, &requester_ip);
}

/// Writes a gratuitous ARP (request, or reply when `reply`) announcing `ip` at `mac` into `buf`:
/// broadcast, sender IP = target IP = `ip`, target hardware address broadcast (as MetalLB sends
/// them). Returns the frame length, or `None` if `buf` is shorter than [`ARP_FRAME_LEN`].
pub fn write_gratuitous_arp(
    buf: &mut [u8],
    mac: [u8; 6],
    ip: [u8; 4],
    reply: bool,
) -> Option<usize> {
    let frame: &mut ArpFrame = buf.get_mut(..ARP_FRAME_LEN)?.try_into().ok()?;
    write(frame, 0, &BROADCAST_MAC);
    write(frame, 6, &mac);
    write(frame, ETH_TYPE, &ETHERTYPE_ARP);
    write(frame, HTYPE, &[0, 1]);
    write(frame, PTYPE, &[0x08, 0x00]);
    frame[HLEN] = 6;
    frame[PLEN] = 4;
    let op = if reply { OP_REPLY } else { OP_REQUEST };
    write(frame, OPER, &op.to_be_bytes());
    write(frame, SHA, &mac);
    write(frame, SPA, &ip);
    write(frame, THA, &BROADCAST_MAC);
    write(frame, TPA, &ip);
    Some(ARP_FRAME_LEN)
}
