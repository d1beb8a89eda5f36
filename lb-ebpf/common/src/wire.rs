//! Byte offsets and constants of the frames Herald reads and writes (Ethernet II, no 802.1Q tag:
//! tagged frames have another EtherType at offset 12 and are passed untouched).

pub const ETH_HLEN: usize = 14;
/// Offset of the Ethernet source address.
pub const ETH_SRC: usize = 6;
/// Offset of the EtherType in an untagged Ethernet II frame.
pub const ETH_TYPE: usize = 12;
pub const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
pub const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Ethernet address of the IPv6 all-nodes group ff02::1 (RFC 2464 §7).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// IPv6 all-nodes link-local multicast address.
pub const ALL_NODES_IP: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// IPv6 header fields (offsets from the start of the frame).
pub const IP6_PAYLOAD_LEN: usize = ETH_HLEN + 4;
pub const IP6_NEXT_HEADER: usize = ETH_HLEN + 6;
pub const IP6_HOP_LIMIT: usize = ETH_HLEN + 7;
pub const IP6_SRC: usize = ETH_HLEN + 8;
pub const IP6_DST: usize = ETH_HLEN + 24;
/// Start of the upper-layer header (no extension headers are followed).
pub const IP6_PAYLOAD: usize = ETH_HLEN + 40;
pub const IPPROTO_ICMPV6: u8 = 58;

/// ICMPv6 fields (offsets from the start of the frame).
pub const ICMP6_TYPE: usize = IP6_PAYLOAD;
pub const ICMP6_CODE: usize = IP6_PAYLOAD + 1;
pub const ICMP6_CSUM: usize = IP6_PAYLOAD + 2;
pub const ICMP6_NS: u8 = 135;
pub const ICMP6_NA: u8 = 136;
/// Neighbor Solicitation/Advertisement target address and first option.
pub const ND_TARGET: usize = IP6_PAYLOAD + 8;
pub const ND_OPTIONS: usize = IP6_PAYLOAD + 24;
pub const ND_OPT_SOURCE_LL: u8 = 1;
pub const ND_OPT_TARGET_LL: u8 = 2;
/// NA flags (first byte after the checksum): Router, Solicited, Override.
pub const NA_FLAG_ROUTER: u8 = 0x80;
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

/// True for group (multicast or broadcast) Ethernet addresses: the I/G bit.
#[inline(always)]
pub fn is_group_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// Copies `N` bytes at `at` out of a fixed-size frame window (constant offsets for the verifier).
#[inline(always)]
pub fn read<const N: usize, const L: usize>(frame: &[u8; L], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&frame[at..at + N]);
    out
}

/// Writes `bytes` at `at` into a fixed-size frame window.
#[inline(always)]
pub fn write<const N: usize, const L: usize>(frame: &mut [u8; L], at: usize, bytes: &[u8; N]) {
    frame[at..at + N].copy_from_slice(bytes);
}
