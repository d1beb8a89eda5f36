//! IPv6 Neighbor Discovery (RFC 4861): validating Neighbor Solicitations (§7.1.1) and building
//! the Neighbor Advertisements that answer them (§7.2.4) or announce an address (§7.2.6), and
//! validating the advertisements of others (§7.1.2), which may claim an announced address.
//!
//! Solicitations carry options of variable length, so the logic works on a fixed-size, zero-filled
//! copy of the frame ([`NsWindow`]): every read has a constant bound the BPF verifier accepts.
//! The checksum is summed in 8-byte blocks up to the message's end (a valid message is a whole
//! number of 8-byte units), by a loop of constant bound whose offsets stay constants once
//! unrolled: a loop indexed by the message's length would put a variable offset into the
//! window, which the verifier refuses without CAP_PERFMON, and the speaker runs without it.

use crate::Skip;
use crate::checksum;
use crate::wire::{
    ALL_NODES_IP, ALL_NODES_MAC, ETH_HLEN, ETH_TYPE, ETHERTYPE_IPV6, ICMP6_CODE, ICMP6_CSUM,
    ICMP6_NA, ICMP6_NS, ICMP6_TYPE, IP6_DST, IP6_HOP_LIMIT, IP6_NEXT_HEADER, IP6_PAYLOAD,
    IP6_PAYLOAD_LEN, IP6_SRC, IPPROTO_ICMPV6, NA_FLAG_OVERRIDE, NA_FLAG_SOLICITED,
    ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL, ND_OPTIONS, ND_TARGET, is_group_mac, read, write,
};

/// Bytes up to the first option of a Neighbor Solicitation (Ethernet + IPv6 + 24-byte NS).
pub const NS_HEAD_LEN: usize = ND_OPTIONS;
pub type NsHead = [u8; NS_HEAD_LEN];
/// Option units a solicitation may carry and still be answered (real ones carry 0 to 2).
pub const NS_MAX_OPTION_UNITS: usize = 16;
/// Longest ICMPv6 solicitation answered; longer ones go to the kernel unanswered.
pub const NS_MAX_ICMP_LEN: usize = 24 + 8 * NS_MAX_OPTION_UNITS;
/// Size of the copy of a solicitation [`check_ns`] validates.
pub const NS_WINDOW: usize = IP6_PAYLOAD + NS_MAX_ICMP_LEN;
pub type NsWindow = [u8; NS_WINDOW];
/// Length of the advertisements Herald writes: NA with one target link-layer option.
pub const NA_LEN: usize = ND_OPTIONS + 8;
pub type NaFrame = [u8; NA_LEN];
const NA_ICMP_LEN: u16 = (NA_LEN - IP6_PAYLOAD) as u16;

/// A valid Neighbor Solicitation, with what the answer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// The address asked for.
    pub target: [u8; 16],
    /// IPv6 source; all zeros for duplicate address detection.
    pub source: [u8; 16],
    /// Ethernet source of the solicitation: where a solicited answer goes.
    pub requester_mac: [u8; 6],
    /// Ethernet destination the solicitation was sent to.
    pub eth_dst: [u8; 6],
    /// IPv6 destination the solicitation was sent to.
    pub ip_dst: [u8; 16],
}

impl Solicitation {
    /// Duplicate address detection: the solicitor has no address yet (source `::`).
    #[inline(always)]
    pub fn is_dad(&self) -> bool {
        self.source == [0; 16]
    }

    /// True if sent to a group address (the solicited-node group) or to `mac`, and in IPv6 to
    /// the target's solicited-node group or to the target itself (RFC 4861 §7.1.1, §7.2.2): a
    /// unicast solicitation for another host seen in promiscuous mode, or one sent to another
    /// group or address, is not ours to answer.
    #[inline(always)]
    pub fn addressed_to(&self, mac: &[u8; 6]) -> bool {
        (is_group_mac(&self.eth_dst) || self.eth_dst == *mac)
            && (self.ip_dst == self.target || is_solicited_node_of(&self.ip_dst, &self.target))
    }
}

/// A valid Neighbor Advertisement: someone says `target` is at `mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub target: [u8; 16],
    /// The target link-layer address option when present, else the Ethernet source.
    pub mac: [u8; 6],
}

impl Advertisement {
    /// True when the advertisement contradicts an announcement of `target` at `ours`.
    #[inline(always)]
    pub fn is_foreign(&self, ours: &[u8; 6]) -> bool {
        self.mac != *ours
    }
}

/// From the first [`NS_HEAD_LEN`] bytes of a frame of `frame_len` bytes, decides whether it is a
/// Neighbor Solicitation or Advertisement and how many bytes (IPv6 header + payload, no
/// Ethernet padding) to copy into the zero-filled [`NsWindow`] for [`check_ns`] or
/// [`check_na`] (the two messages share their 24-byte head).
///
/// `Skip::Ignore`: not IPv6, not ICMPv6 right after the IPv6 header, neither message, or longer
/// than [`NS_MAX_ICMP_LEN`]. `Skip::Malformed`: wrong IP version, ICMP length under 24, or a
/// payload length running past the frame.
#[inline(always)]
pub fn nd_copy_len(head: &NsHead, frame_len: usize) -> Result<usize, Skip> {
    if read::<2, NS_HEAD_LEN>(head, ETH_TYPE) != ETHERTYPE_IPV6
        || head[IP6_NEXT_HEADER] != IPPROTO_ICMPV6
        || (head[ICMP6_TYPE] != ICMP6_NS && head[ICMP6_TYPE] != ICMP6_NA)
    {
        return Err(Skip::Ignore);
    }
    if head[ETH_HLEN] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let icmp_len = usize::from(u16::from_be_bytes(read(head, IP6_PAYLOAD_LEN)));
    if icmp_len < NS_HEAD_LEN - IP6_PAYLOAD || IP6_PAYLOAD + icmp_len > frame_len {
        return Err(Skip::Malformed);
    }
    if icmp_len > NS_MAX_ICMP_LEN {
        return Err(Skip::Ignore);
    }
    Ok(IP6_PAYLOAD + icmp_len)
}

/// [`nd_copy_len`] for solicitations only: anything else is `Skip::Ignore`.
#[inline(always)]
pub fn ns_copy_len(head: &NsHead, frame_len: usize) -> Result<usize, Skip> {
    if head[ICMP6_TYPE] != ICMP6_NS {
        return Err(Skip::Ignore);
    }
    nd_copy_len(head, frame_len)
}

/// Validates a solicitation per RFC 4861 §7.1.1. `win` holds the first [`ns_copy_len`] bytes of
/// the frame and zeros after them.
///
/// Checks: hop limit 255, code 0, ICMP length 24..=[`NS_MAX_ICMP_LEN`], target not multicast,
/// every option of non-zero length and inside the message, a valid checksum, and when the source
/// is `::` a solicited-node destination and no source link-layer option. Any failure is
/// `Skip::Malformed`.
#[inline(always)]
pub fn check_ns(win: &NsWindow) -> Result<Solicitation, Skip> {
    check_ns_with(win, &FromWindow)
}

/// [`check_ns`] over any `N` bytes holding the frame's first bytes (the window, or a frame of
/// exactly one advertisement's length checked in place), reading the options' type and length
/// bytes through `headers`. A message running past the `N` bytes is `Skip::Malformed`.
#[inline(always)]
pub fn check_ns_with<const N: usize>(
    win: &[u8; N],
    headers: &impl OptionHeaders,
) -> Result<Solicitation, Skip> {
    let icmp_len = usize::from(u16::from_be_bytes(read(win, IP6_PAYLOAD_LEN)));
    if !(NS_HEAD_LEN - IP6_PAYLOAD..=NS_MAX_ICMP_LEN).contains(&icmp_len)
        || IP6_PAYLOAD + icmp_len > N
        || win[IP6_HOP_LIMIT] != 255
        || win[ICMP6_CODE] != 0
    {
        return Err(Skip::Malformed);
    }
    let sol = Solicitation {
        target: read(win, ND_TARGET),
        source: read(win, IP6_SRC),
        requester_mac: read(win, 6),
        eth_dst: read(win, 0),
        ip_dst: read(win, IP6_DST),
    };
    let dst = sol.ip_dst;
    let dad = sol.is_dad();
    if sol.target[0] == 0xff
        || (dad && !is_solicited_node(&dst))
        || (!dad && is_group_mac(&sol.requester_mac))
    {
        return Err(Skip::Malformed);
    }
    let end = IP6_PAYLOAD + icmp_len;
    if !walk_options(win, end, headers, |kind, _| dad && kind == ND_OPT_SOURCE_LL) {
        return Err(Skip::Malformed);
    }
    let sum = checksum::icmpv6_pseudo_header(&sol.source, &dst, icmp_len as u32);
    let sum = checksum::add_blocks(sum, &win[IP6_PAYLOAD..], icmp_len);
    if checksum::fold(sum) != 0xffff {
        return Err(Skip::Malformed);
    }
    Ok(sol)
}

/// Validates an advertisement per RFC 4861 §7.1.2. `win` holds the first [`nd_copy_len`] bytes
/// of the frame and zeros after them.
///
/// Checks: type 136, hop limit 255, code 0, ICMP length 24..=[`NS_MAX_ICMP_LEN`], target not
/// multicast, Solicited clear when sent to a multicast address, every option of non-zero length
/// and inside the message, and a valid checksum. Any failure is `Skip::Ignore`: advertisements
/// are never answered, so one the kernel would discard anyway is simply not looked at.
#[inline(always)]
pub fn check_na(win: &NsWindow) -> Result<Advertisement, Skip> {
    check_na_with(win, &FromWindow)
}

/// [`check_na`] reading the options' type and length bytes through `headers`.
#[inline(always)]
pub fn check_na_with(win: &NsWindow, headers: &impl OptionHeaders) -> Result<Advertisement, Skip> {
    let icmp_len = usize::from(u16::from_be_bytes(read(win, IP6_PAYLOAD_LEN)));
    if win[ICMP6_TYPE] != ICMP6_NA
        || !(NS_HEAD_LEN - IP6_PAYLOAD..=NS_MAX_ICMP_LEN).contains(&icmp_len)
        || win[IP6_HOP_LIMIT] != 255
        || win[ICMP6_CODE] != 0
    {
        return Err(Skip::Ignore);
    }
    let target: [u8; 16] = read(win, ND_TARGET);
    let dst: [u8; 16] = read(win, IP6_DST);
    if target[0] == 0xff || (dst[0] == 0xff && win[ICMP6_CSUM + 2] & NA_FLAG_SOLICITED != 0) {
        return Err(Skip::Ignore);
    }
    // The target link-layer address is read where every stack puts it, as the first (and only
    // defined) option, at a constant offset the verifier can follow; an advertisement with it
    // elsewhere is taken at its Ethernet source.
    let end = IP6_PAYLOAD + icmp_len;
    // Both read at their constant offsets, then one chosen: choosing the offset first would
    // make one load from two offsets, which the verifier refuses without CAP_PERFMON.
    let option_mac: [u8; 6] = read(win, ND_OPTIONS + 2);
    let source_mac: [u8; 6] = core::hint::black_box(read(win, 6));
    let mac =
        if end >= ND_OPTIONS + 8 && win[ND_OPTIONS] == ND_OPT_TARGET_LL && win[ND_OPTIONS + 1] == 1
        {
            option_mac
        } else {
            source_mac
        };
    // An Ethernet link-layer address option is one unit long (RFC 2464 §6).
    if !walk_options(win, end, headers, |kind, units| {
        kind == ND_OPT_TARGET_LL && units != 1
    }) {
        return Err(Skip::Ignore);
    }
    let source: [u8; 16] = read(win, IP6_SRC);
    let sum = checksum::icmpv6_pseudo_header(&source, &dst, icmp_len as u32);
    let sum = checksum::add_blocks(sum, &win[IP6_PAYLOAD..], icmp_len);
    if checksum::fold(sum) != 0xffff {
        return Err(Skip::Ignore);
    }
    Ok(Advertisement { target, mac })
}

/// Where an option's type and length bytes (at a data-dependent offset) are read from. The
/// window's bytes up to the message's end are the frame's, so reading either gives the same
/// answer for every offset the option walk asks about (it stops at the end).
pub trait OptionHeaders {
    /// The two bytes at `off` and `off + 1`, or `None` when they are not there.
    fn at(&self, win: &[u8], off: usize) -> Option<(u8, u8)>;
}

/// Walks the options from [`NS_HEAD_LEN`] to `end` (the ICMPv6 message's end in the window):
/// each must have a non-zero length, end inside the message and not be `refused(kind, units)`.
/// The first option is read from the window at its constant offset — the usual solicitation has
/// just one, so it costs no helper call in the XDP program — and later ones through `headers`.
/// On success the options end exactly at `end`, so the message is a whole number of 8-byte
/// units long.
#[inline(always)]
fn walk_options<const N: usize>(
    win: &[u8; N],
    end: usize,
    headers: &impl OptionHeaders,
    mut refused: impl FnMut(u8, u8) -> bool,
) -> bool {
    let mut off = NS_HEAD_LEN;
    if off < end {
        let (kind, units) = (win[NS_HEAD_LEN], win[NS_HEAD_LEN + 1]);
        off += usize::from(units) * 8;
        if units == 0 || off > end || refused(kind, units) {
            return false;
        }
    }
    // Each option is at least 8 bytes, so this many steps always reach `end`.
    for _ in 1..NS_MAX_OPTION_UNITS {
        if off >= end {
            break;
        }
        let Some((kind, units)) = headers.at(win, off) else {
            return false;
        };
        off += usize::from(units) * 8;
        if units == 0 || off > end || refused(kind, units) {
            return false;
        }
    }
    true
}

/// Reads the window: what host tests, the fuzzer and the userspace responder use.
pub struct FromWindow;

impl OptionHeaders for FromWindow {
    #[inline(always)]
    fn at(&self, win: &[u8], off: usize) -> Option<(u8, u8)> {
        Some((*win.get(off)?, *win.get(off + 1)?))
    }
}

/// ff02::1:ffXX:XXXX (RFC 4291 §2.7.1).
#[inline(always)]
pub fn is_solicited_node(addr: &[u8; 16]) -> bool {
    addr[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// `addr` is the solicited-node group of `target`: ff02::1:ff followed by its last 24 bits.
#[inline(always)]
pub fn is_solicited_node_of(addr: &[u8; 16], target: &[u8; 16]) -> bool {
    is_solicited_node(addr)
        && addr[13] == target[13]
        && addr[14] == target[14]
        && addr[15] == target[15]
}

/// Writes the advertisement answering `sol` from `mac` (§7.2.4): source = the target; to the
/// solicitor with Solicited set, or to ff02::1 with Solicited clear for duplicate address
/// detection; Override set, Router clear, target link-layer option = `mac`, hop limit 255.
#[inline(always)]
pub fn write_na(out: &mut NaFrame, sol: &Solicitation, mac: &[u8; 6]) {
    if sol.is_dad() {
        build_na(
            out,
            &ALL_NODES_MAC,
            mac,
            &sol.target,
            &ALL_NODES_IP,
            &sol.target,
            NA_FLAG_OVERRIDE,
        );
    } else {
        let flags = NA_FLAG_OVERRIDE | NA_FLAG_SOLICITED;
        build_na(
            out,
            &sol.requester_mac,
            mac,
            &sol.target,
            &sol.source,
            &sol.target,
            flags,
        );
    }
}

/// Writes an unsolicited advertisement of `target` at `mac` (§7.2.6) into `buf`: from `src` (the
/// interface's link-local address) to ff02::1, Override set, Solicited clear. Returns the frame
/// length, or `None` if `buf` is shorter than [`NA_LEN`].
pub fn write_unsolicited_na(
    buf: &mut [u8],
    mac: [u8; 6],
    src: [u8; 16],
    target: [u8; 16],
) -> Option<usize> {
    let out: &mut NaFrame = buf.get_mut(..NA_LEN)?.try_into().ok()?;
    build_na(
        out,
        &ALL_NODES_MAC,
        &mac,
        &src,
        &ALL_NODES_IP,
        &target,
        NA_FLAG_OVERRIDE,
    );
    Some(NA_LEN)
}

#[inline(always)]
fn build_na(
    out: &mut NaFrame,
    eth_dst: &[u8; 6],
    mac: &[u8; 6],
    ip_src: &[u8; 16],
    ip_dst: &[u8; 16],
    target: &[u8; 16],
    flags: u8,
) {
    write(out, 0, eth_dst);
    write(out, 6, mac);
    write(out, ETH_TYPE, &ETHERTYPE_IPV6);
    write(out, ETH_HLEN, &[0x60, 0, 0, 0]);
    write(out, IP6_PAYLOAD_LEN, &NA_ICMP_LEN.to_be_bytes());
    out[IP6_NEXT_HEADER] = IPPROTO_ICMPV6;
    out[IP6_HOP_LIMIT] = 255;
    write(out, IP6_SRC, ip_src);
    write(out, IP6_DST, ip_dst);
    write(out, ICMP6_TYPE, &[ICMP6_NA, 0, 0, 0, flags, 0, 0, 0]);
    write(out, ND_TARGET, target);
    write(out, ND_OPTIONS, &[ND_OPT_TARGET_LL, 1]);
    write(out, ND_OPTIONS + 2, mac);
    let sum = checksum::icmpv6_pseudo_header(ip_src, ip_dst, u32::from(NA_ICMP_LEN));
    let sum = checksum::add(sum, &out[IP6_PAYLOAD..]);
    write(out, ICMP6_CSUM, &(!checksum::fold(sum)).to_be_bytes());
}
