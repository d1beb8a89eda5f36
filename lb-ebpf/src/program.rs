//! The XDP program proper (compiled for bpfel-unknown-none only): maps, the two entry points,
//! and the glue between the verifier-checked frame and the shared logic in `lb-common`.

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
use aya_ebpf::btf_maps::{Array, PerCpuArray, PerCpuHashMap};
use aya_ebpf::helpers::generated::{
    bpf_ktime_get_coarse_ns, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
    bpf_xdp_store_bytes,
};
use aya_ebpf::macros::{btf_map, xdp};
use aya_ebpf::programs::XdpContext;
use lb_common::Skip;
use lb_common::arp::{
    ARP_FRAME_LEN, Arp, ArpClaim, ArpFrame, arp_addressed_to, check_arp, write_arp_reply,
};
use lb_common::maps::{
    Announcement, COUNTER_SLOTS, Counter, ExtraCounter, Guard, Ipv4Key, Ipv6Key, MAX_ANNOUNCED,
};
use lb_common::ndp::{
    NA_LEN, NS_HEAD_LEN, NS_WINDOW, NaFrame, NsHead, NsWindow, OptionHeaders, Solicitation,
    check_na_with, check_ns_with, nd_copy_len, write_na,
};
use lb_common::wire::{
    ETH_HLEN, ETH_SRC, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NA, ICMP6_NS, ICMP6_TYPE,
    IP6_NEXT_HEADER, IPPROTO_ICMPV6,
};

use crate::edges::{count_extra, flood_allows, rate_allows, record_claim4, record_claim6};

const ANNOUNCED: usize = MAX_ANNOUNCED as usize;

/// Announced addresses: per-CPU, so one lookup yields the MAC and this CPU's counters.
#[btf_map]
static HERALD_V4: PerCpuHashMap<Ipv4Key, Announcement, ANNOUNCED> = PerCpuHashMap::new();
#[btf_map]
static HERALD_V6: PerCpuHashMap<Ipv6Key, Announcement, ANNOUNCED> = PerCpuHashMap::new();
#[btf_map]
static HERALD_COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();
#[btf_map]
static HERALD_GUARD: Array<Guard, 1> = Array::new();

/// Empty program: the baseline for `cargo xtask bench xdp`.
#[xdp]
pub fn herald_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[xdp]
pub fn herald_xdp(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    // Fast path: anything but ARP and IPv6 leaves after one bounds check and one compare, with
    // no map access (not even a counter: it would cost ~15% on a busy node's plain traffic).
    if data + ETH_HLEN > end {
        return XDP_PASS;
    }
    // SAFETY: the 14-byte Ethernet header is inside the frame (checked above).
    let ethertype = unsafe { *((data + ETH_TYPE) as *const [u8; 2]) };
    if ethertype == ETHERTYPE_ARP {
        arp(&ctx, data, end)
    } else if ethertype == ETHERTYPE_IPV6 {
        ipv6(&ctx, data, end)
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn arp(ctx: &XdpContext, data: usize, end: usize) -> u32 {
    let source = ethernet_source(data);
    if data + ARP_FRAME_LEN > end {
        return malformed(source);
    }
    // SAFETY: the first ARP_FRAME_LEN bytes are inside the frame (checked above), and nothing else
    // refers to them while this reference lives.
    let frame = unsafe { &mut *(data as *mut ArpFrame) };
    let request = match check_arp(frame) {
        Ok(Arp::Request(request)) => request,
        Ok(Arp::Claim(claim)) => {
            arp_claim(ctx, &claim);
            return pass(source);
        }
        Err(skip) => return skipped(skip, source),
    };
    let key = Ipv4Key {
        ifindex: ctx.ingress_ifindex() as u32,
        addr: request.target,
    };
    let Some(entry) = HERALD_V4.get_ptr_mut(&key) else {
        return pass(source);
    };
    // SAFETY: this CPU's copy of the value; the MAC is copied out at once (userspace may
    // replace the entry concurrently).
    let mac = unsafe { (*entry).mac };
    if !arp_addressed_to(frame, &mac) {
        return pass(source);
    }
    bump_requests(entry);
    if request.sha_mismatch {
        count_extra(ExtraCounter::ShaMismatch);
    }
    let now = coarse_now();
    if !guard_allows(now) {
        return silenced(source);
    }
    if !rate_allows(request.requester, now) {
        return rate_limited(source);
    }
    write_arp_reply(frame, &mac);
    answered(entry, Counter::ArpReplies)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, data: usize, end: usize) -> u32 {
    if data + ICMP6_TYPE + 1 > end {
        return XDP_PASS;
    }
    // SAFETY: both bytes are below ICMP6_TYPE + 1, inside the frame (checked above).
    let (next_header, icmp_type) = unsafe {
        (
            *((data + IP6_NEXT_HEADER) as *const u8),
            *((data + ICMP6_TYPE) as *const u8),
        )
    };
    // Other IPv6 traffic is as hot as IPv4: pass it uncounted too.
    if next_header != IPPROTO_ICMPV6 || (icmp_type != ICMP6_NS && icmp_type != ICMP6_NA) {
        return XDP_PASS;
    }
    neighbor(ctx, data, end, icmp_type == ICMP6_NA)
}

/// Neighbor Solicitations and Advertisements. A solicitation exactly as long as its answer (one
/// source link-layer option, the usual case) is checked and answered in place. Anything else is
/// copied into a zero-filled window (options have variable length, which the verifier only
/// accepts with constant bounds) and validated there; a solicitation is then answered with an
/// NA built over the window and written back, and an advertisement is only looked at for a
/// foreign claim, and passed uncounted whatever it is.
#[inline(always)]
fn neighbor(ctx: &XdpContext, data: usize, end: usize, advertisement: bool) -> u32 {
    let source = ethernet_source(data);
    let unchecked = |skip: Skip| {
        if advertisement {
            XDP_PASS
        } else {
            skipped(skip, source)
        }
    };
    if data + NS_HEAD_LEN > end {
        return unchecked(Skip::Malformed);
    }
    // SAFETY: the first NS_HEAD_LEN bytes are inside the frame (checked above).
    let head = unsafe { &*(data as *const NsHead) };
    // The length from the kernel, not `end - data`: subtracting packet pointers is refused by
    // the verifier without CAP_PERFMON, and the speaker runs without it.
    // SAFETY: a plain helper call on this program's context.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let copy_len = match nd_copy_len(head, frame_len) {
        Ok(len) => len,
        Err(skip) => return unchecked(skip),
    };
    if !advertisement && frame_len == NA_LEN && data + NA_LEN <= end {
        return solicitation_in_place(ctx, data, source);
    }
    let Some(scratch) = HERALD_SCRATCH.get_ptr_mut(0) else {
        return unchecked(Skip::Ignore);
    };
    let storage = zero_in_place(scratch);
    let Some(window) = storage.0.first_chunk_mut::<NS_WINDOW>() else {
        return unchecked(Skip::Ignore);
    };
    // Re-state the bound where the verifier can see it.
    if copy_len > NS_WINDOW {
        return pass(source);
    }
    // SAFETY: copy_len <= NS_WINDOW bytes into the window; the helper checks the frame side.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, window.as_mut_ptr().cast(), copy_len as u32) } != 0 {
        return unchecked(Skip::Malformed);
    }
    if advertisement {
        advertised(ctx, window);
        return XDP_PASS;
    }
    let solicitation = match check_ns_with(window, &FromFrame(ctx)) {
        Ok(s) => s,
        Err(skip) => return skipped(skip, source),
    };
    let (entry, mac) = match answerable(ctx, &solicitation, source) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    // The NA is built over the start of the window (the solicitation was copied out), which
    // keeps the stack within the 512 bytes BPF allows.
    let Some(na) = window.first_chunk_mut::<NA_LEN>() else {
        return pass(source);
    };
    write_na(na, &solicitation, &mac);
    let delta = NA_LEN as i32 - frame_len as i32;
    // SAFETY: plain helper calls on this program's context; `na` is NA_LEN bytes.
    unsafe {
        if delta != 0 && bpf_xdp_adjust_tail(ctx.ctx, delta) != 0 {
            return pass(source);
        }
        if bpf_xdp_store_bytes(ctx.ctx, 0, na.as_mut_ptr().cast(), NA_LEN as u32) != 0 {
            return pass(source);
        }
    }
    answered(entry, Counter::NaReplies)
}

/// A solicitation exactly as long as the advertisement that answers it (the usual one: a single
/// source link-layer option), checked where it lies and answered over itself: no copy into the
/// window, no helper to write the answer back, no change of the frame's length. Its check and
/// vetting repeat the window path's two calls on purpose: one generic helper for both cost about
/// 6 ns per answer (`bench xdp`, two interleaved pairs).
#[inline(always)]
fn solicitation_in_place(ctx: &XdpContext, data: usize, source: [u8; 6]) -> u32 {
    // SAFETY: the caller checked NA_LEN bytes inside the frame, and no other reference to them
    // is used while this one lives.
    let frame = unsafe { &mut *(data as *mut NaFrame) };
    let solicitation = match check_ns_with(frame, &FromFrame(ctx)) {
        Ok(s) => s,
        Err(skip) => return skipped(skip, source),
    };
    let (entry, mac) = match answerable(ctx, &solicitation, source) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    write_na(frame, &solicitation, &mac);
    answered(entry, Counter::NaReplies)
}

/// Whether a valid solicitation is Herald's to answer now: its target announced on this
/// interface, sent to this node, the guard open and the requester within its rate. `Ok` with the
/// entry and the MAC to answer with, or the verdict for the frame.
#[inline(always)]
fn answerable(
    ctx: &XdpContext,
    solicitation: &Solicitation,
    source: [u8; 6],
) -> Result<(*mut Announcement, [u8; 6]), u32> {
    let key = Ipv6Key {
        ifindex: ctx.ingress_ifindex() as u32,
        addr: solicitation.target,
    };
    let Some(entry) = HERALD_V6.get_ptr_mut(&key) else {
        return Err(pass(source));
    };
    // SAFETY: this CPU's copy of the value; the MAC is copied out at once.
    let mac = unsafe { (*entry).mac };
    if !solicitation.addressed_to(&mac) {
        return Err(pass(source));
    }
    bump_requests(entry);
    let now = coarse_now();
    if !guard_allows(now) {
        return Err(silenced(source));
    }
    if !rate_allows(solicitation.requester_mac, now) {
        return Err(rate_limited(source));
    }
    Ok((entry, mac))
}

/// Reads an option's type and length from the frame with a helper call: the offset depends on
/// the packet, and a pointer into the window at such an offset is refused by the verifier
/// without CAP_PERFMON (Spectre v1 sanitation), where a helper's offset argument is a plain
/// number. Up to the message's end the frame's bytes are the window's.
struct FromFrame<'a>(&'a XdpContext);

impl OptionHeaders for FromFrame<'_> {
    #[inline(always)]
    fn at(&self, _win: &[u8], off: usize) -> Option<(u8, u8)> {
        let mut pair = [0u8; 2];
        let off = u32::try_from(off).ok()?;
        // SAFETY: two bytes into `pair`; the helper checks the frame side.
        let read = unsafe { bpf_xdp_load_bytes(self.0.ctx, off, pair.as_mut_ptr().cast(), 2) };
        (read == 0).then_some((pair[0], pair[1]))
    }
}

const WINDOW_WORDS: usize = NS_WINDOW.div_ceil(8);

/// The Neighbor Discovery window, 8-byte aligned.
#[repr(C, align(8))]
pub struct Window([u8; WINDOW_WORDS * 8]);

/// Where the Neighbor Discovery window lives: one per CPU (XDP does not nest on a CPU), in a
/// map rather than on the stack, which leaves the program's 512 bytes of stack to the rest of
/// the answering path (the rate limit's bucket among them). Not pinned: each loaded program has
/// its own.
#[btf_map]
static HERALD_SCRATCH: PerCpuArray<Window, 1> = PerCpuArray::new();

/// Zeroes the window with volatile 8-byte stores (LLVM would otherwise call the linker's
/// byte-at-a-time memset): the shared logic is written for a zero-filled window, as the host
/// gives it, so no byte of an earlier frame is ever in view (the checksum itself stops at the
/// message's end).
#[inline(always)]
fn zero_in_place<'a>(storage: *mut Window) -> &'a mut Window {
    let first = storage.cast::<u64>();
    for i in 0..WINDOW_WORDS {
        // SAFETY: i < WINDOW_WORDS: inside the 8-byte aligned value of WINDOW_WORDS * 8 bytes.
        unsafe { first.add(i).write_volatile(0) };
    }
    // SAFETY: this CPU's value of the scratch map, valid until the program returns, and no
    // other reference to it exists (XDP does not nest on a CPU).
    unsafe { &mut *storage }
}

/// A gratuitous ARP or ARP reply: recorded when it claims an address announced on this
/// interface for another MAC.
#[inline(always)]
fn arp_claim(ctx: &XdpContext, claim: &ArpClaim) {
    let key = Ipv4Key {
        ifindex: ctx.ingress_ifindex() as u32,
        addr: claim.addr,
    };
    let Some(entry) = HERALD_V4.get_ptr(&key) else {
        return;
    };
    // SAFETY: this CPU's copy of the value, the MAC copied out at once.
    let ours = unsafe { (*entry).mac };
    if claim.is_foreign(&ours) {
        record_claim4(&key, claim.mac, coarse_now());
    }
}

/// A Neighbor Advertisement: recorded when valid and claiming an address announced on this
/// interface for another MAC.
#[inline(always)]
fn advertised(ctx: &XdpContext, window: &NsWindow) {
    let Ok(na) = check_na_with(window, &FromFrame(ctx)) else {
        return;
    };
    let key = Ipv6Key {
        ifindex: ctx.ingress_ifindex() as u32,
        addr: na.target,
    };
    let Some(entry) = HERALD_V6.get_ptr(&key) else {
        return;
    };
    // SAFETY: this CPU's copy of the value, the MAC copied out at once.
    let ours = unsafe { (*entry).mac };
    if na.is_foreign(&ours) {
        record_claim6(&key, na.mac, coarse_now());
    }
}

/// Coarse monotonic clock: tick resolution is plenty for timeouts of seconds and refill rates,
/// and it is a plain memory read where bpf_ktime_get_ns reads the clock source.
#[inline(always)]
fn coarse_now() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn guard_allows(now: u64) -> bool {
    HERALD_GUARD.get(0).is_some_and(|guard| guard.allows(now))
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = HERALD_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption disabled.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn bump_requests(entry: *mut Announcement) {
    // SAFETY: this CPU's copy of the value; XDP runs with preemption disabled.
    unsafe { (*entry).requests += 1 };
}

#[inline(always)]
fn answered(entry: *mut Announcement, counter: Counter) -> u32 {
    // SAFETY: this CPU's copy of the value.
    unsafe { (*entry).replies += 1 };
    count(counter);
    XDP_TX
}

/// An ARP or Neighbor Solicitation frame from Ethernet `source` handed to the kernel
/// unanswered, unless the flood guard says that source had enough: then it is dropped.
#[inline(always)]
fn pass(source: [u8; 6]) -> u32 {
    if !flood_allows(source, coarse_now()) {
        count_extra(ExtraCounter::FloodDropped);
        return XDP_DROP;
    }
    count(Counter::Passed);
    XDP_PASS
}

#[inline(always)]
fn malformed(source: [u8; 6]) -> u32 {
    count(Counter::Malformed);
    pass(source)
}

#[inline(always)]
fn silenced(source: [u8; 6]) -> u32 {
    count(Counter::Silenced);
    pass(source)
}

#[inline(always)]
fn rate_limited(source: [u8; 6]) -> u32 {
    count_extra(ExtraCounter::RateLimited);
    pass(source)
}

#[inline(always)]
fn skipped(skip: Skip, source: [u8; 6]) -> u32 {
    match skip {
        Skip::Ignore => pass(source),
        Skip::Malformed => malformed(source),
    }
}

/// The Ethernet source of the frame at `data`, read before any helper that may move the packet.
#[inline(always)]
fn ethernet_source(data: usize) -> [u8; 6] {
    // SAFETY: the Ethernet header is inside the frame (herald_xdp checked ETH_HLEN bytes).
    unsafe { *((data + ETH_SRC) as *const [u8; 6]) }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
