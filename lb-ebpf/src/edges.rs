//! What the program watches besides answering: foreign claims on announced addresses, the
//! per-source rate limit on answers, the flood guard on frames passed unanswered, and their
//! counters. These maps came after the first four; a pin
//! directory from an older Herald gets them created beside the old ones (see `lb_common::maps`).

use aya_ebpf::btf_maps::{Array, LruHashMap, PerCpuArray};
use lb_common::maps::{
    Claim, EXTRA_COUNTER_SLOTS, ExtraCounter, Ipv4Key, Ipv6Key, MAX_CLAIMS, MAX_SOURCES, MacKey,
};
use lb_common::ratelimit::{Bucket, RateLimit};

use aya_ebpf::macros::btf_map;

const CLAIMS: usize = MAX_CLAIMS as usize;
const SOURCES: usize = MAX_SOURCES as usize;

/// Per-CPU counters beyond `HERALD_COUNTERS` (`ExtraCounter` slots).
#[btf_map]
static HERALD_EXTRA: PerCpuArray<u64, { EXTRA_COUNTER_SLOTS as usize }> = PerCpuArray::new();
/// Foreign claims on announced addresses, by interface and address. Shared by all CPUs: claims
/// are rare, and two CPUs recording the same address in the same instant lose one count at most
/// (the BPF target has no atomic read-modify-write in `core`).
#[btf_map]
static HERALD_CLAIMS4: LruHashMap<Ipv4Key, Claim, CLAIMS> = LruHashMap::new();
#[btf_map]
static HERALD_CLAIMS6: LruHashMap<Ipv6Key, Claim, CLAIMS> = LruHashMap::new();
/// The rate limit userspace sets; all zeros (no limit) until it does.
#[btf_map]
static HERALD_LIMIT: Array<RateLimit, 1> = Array::new();
/// One token bucket per requester MAC, shared by all CPUs so the limit holds whichever queue a
/// source lands on. Updates are plain stores: two CPUs racing on one bucket can lose one
/// update, which answers one request more, never one fewer.
#[btf_map]
static HERALD_BUCKETS: LruHashMap<MacKey, Bucket, SOURCES> = LruHashMap::new();
/// The flood guard's limit (frames passed unanswered per source); all zeros (off) until
/// userspace sets it.
#[btf_map]
static HERALD_FLIMIT: Array<RateLimit, 1> = Array::new();
/// The flood guard's buckets, by Ethernet source; shared by all CPUs as `HERALD_BUCKETS` is.
#[btf_map]
static HERALD_FSOURCES: LruHashMap<MacKey, Bucket, SOURCES> = LruHashMap::new();

#[inline(always)]
pub fn count_extra(counter: ExtraCounter) {
    if let Some(slot) = HERALD_EXTRA.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption disabled.
        unsafe { *slot += 1 };
    }
}

/// True when the rate limit lets `requester` have one more answer at coarse time `now_ns`. With
/// the limit off this costs one array lookup.
#[inline(always)]
pub fn rate_allows(requester: [u8; 6], now_ns: u64) -> bool {
    match HERALD_LIMIT.get(0) {
        Some(limit) if !limit.is_off() => take(&HERALD_BUCKETS, requester, *limit, now_ns),
        _ => true,
    }
}

/// True when the flood guard lets `source` have one more frame passed to the kernel at coarse
/// time `now_ns`. With the guard off this costs one array lookup.
#[inline(always)]
pub fn flood_allows(source: [u8; 6], now_ns: u64) -> bool {
    match HERALD_FLIMIT.get(0) {
        Some(limit) if !limit.is_off() => take(&HERALD_FSOURCES, source, *limit, now_ns),
        _ => true,
    }
}

/// One credit from `source`'s bucket in `buckets` (a new source starts with a full one).
#[inline(always)]
fn take(
    buckets: &LruHashMap<MacKey, Bucket, SOURCES>,
    source: [u8; 6],
    limit: RateLimit,
    now_ns: u64,
) -> bool {
    let key = MacKey::new(source);
    match buckets.get_ptr_mut(&key) {
        // SAFETY: a value of the map, valid until this program returns.
        Some(bucket) => unsafe { (*bucket).take(&limit, now_ns) },
        None => {
            let mut bucket = Bucket::full(&limit, now_ns);
            let allowed = bucket.take(&limit, now_ns);
            // A failed insert (memory pressure) only forgets this source's use.
            let _ = buckets.insert(&key, &bucket, 0);
            allowed
        }
    }
}

#[inline(always)]
pub fn record_claim4(key: &Ipv4Key, mac: [u8; 6], now_ns: u64) {
    match HERALD_CLAIMS4.get_ptr_mut(key) {
        Some(claim) => bump_claim(claim, mac, now_ns),
        None => {
            let _ = HERALD_CLAIMS4.insert(key, &first_claim(mac, now_ns), 0);
        }
    }
    count_extra(ExtraCounter::ForeignClaims);
}

#[inline(always)]
pub fn record_claim6(key: &Ipv6Key, mac: [u8; 6], now_ns: u64) {
    match HERALD_CLAIMS6.get_ptr_mut(key) {
        Some(claim) => bump_claim(claim, mac, now_ns),
        None => {
            let _ = HERALD_CLAIMS6.insert(key, &first_claim(mac, now_ns), 0);
        }
    }
    count_extra(ExtraCounter::ForeignClaims);
}

#[inline(always)]
fn first_claim(mac: [u8; 6], now_ns: u64) -> Claim {
    Claim {
        mac,
        reserved: [0; 2],
        count: 1,
        last_ns: now_ns,
    }
}

#[inline(always)]
fn bump_claim(claim: *mut Claim, mac: [u8; 6], now_ns: u64) {
    // SAFETY: a value of the map, valid until this program returns; MAC and time are the
    // latest writer's.
    unsafe {
        (*claim).count += 1;
        (*claim).mac = mac;
        (*claim).last_ns = now_ns;
    }
}
