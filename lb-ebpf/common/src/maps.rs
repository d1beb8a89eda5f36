//! BPF map names, keys and values. Layouts are `#[repr(C)]` with explicit padding so BTF shows
//! every field and no byte is left uninitialised.

/// Directory under bpffs where the maps and the XDP links are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/herald";

/// Map names as they appear in the object and in `bpftool map list` (max 15 chars).
pub const MAP_V4: &str = "HERALD_V4";
pub const MAP_V6: &str = "HERALD_V6";
pub const MAP_COUNTERS: &str = "HERALD_COUNTERS";
pub const MAP_GUARD: &str = "HERALD_GUARD";
/// Added after the first four: a pin directory written by an older Herald lacks them, and
/// opening it creates them beside the old ones (whose layouts never change: a pinned map is
/// reused only when type, key and value sizes, capacity and flags all match).
pub const MAP_EXTRA: &str = "HERALD_EXTRA";
pub const MAP_CLAIMS4: &str = "HERALD_CLAIMS4";
pub const MAP_CLAIMS6: &str = "HERALD_CLAIMS6";
pub const MAP_LIMIT: &str = "HERALD_LIMIT";
pub const MAP_BUCKETS: &str = "HERALD_BUCKETS";
/// The flood guard: a per-source limit on ARP and Neighbor Solicitation frames passed to the
/// kernel unanswered (frames over it are dropped), and its buckets.
pub const MAP_FLOOD_LIMIT: &str = "HERALD_FLIMIT";
pub const MAP_FLOOD_SOURCES: &str = "HERALD_FSOURCES";

/// Name of the XDP program in the object.
pub const PROG_NAME: &str = "herald_xdp";

/// Name of the empty XDP_PASS program in the same object: the baseline `cargo xtask bench xdp`
/// measures beside `PROG_NAME`. Never attached.
pub const PROG_BASELINE: &str = "herald_pass";

/// Capacity of the announced-address maps (per family).
pub const MAX_ANNOUNCED: u32 = 65_536;

/// An announced IPv4 address on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Key {
    pub ifindex: u32,
    /// Network byte order, as on the wire.
    pub addr: [u8; 4],
}

/// An announced IPv6 address on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Key {
    pub ifindex: u32,
    /// Network byte order, as on the wire.
    pub addr: [u8; 16],
}

/// What to answer with for an announced address, and that address's counters.
///
/// The announced-address maps are per-CPU hashes: one lookup finds both the MAC and the CPU's
/// own counters, which the program bumps without atomics. Userspace writes the same `mac` and
/// `flags` into every CPU's copy and sums the counters over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Announcement {
    /// MAC address put in replies (normally the interface's own).
    pub mac: [u8; 6],
    /// `ANNOUNCE_*` bits.
    pub flags: u16,
    /// ARP requests / Neighbor Solicitations seen for this address (on this CPU).
    pub requests: u64,
    /// Replies sent (on this CPU; not bumped while the guard silences the program).
    pub replies: u64,
}

/// Reserved for future use; no flag is defined yet, userspace writes 0.
pub const ANNOUNCE_FLAGS_NONE: u16 = 0;

/// Slots of the per-CPU global counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    ArpReplies = 0,
    NaReplies = 1,
    /// ARP and Neighbor Solicitation frames passed to the kernel unanswered (for any reason:
    /// unknown address, ignored, malformed, silenced). Other traffic is not counted: it takes
    /// the fast path, which touches no map. Frames the flood guard drops instead are counted in
    /// [`ExtraCounter::FloodDropped`], not here.
    Passed = 2,
    /// ARP or NDP frames that failed validation.
    Malformed = 3,
    /// Requests for announced addresses left unanswered because the guard expired.
    Silenced = 4,
}

pub const COUNTER_SLOTS: u32 = 5;

/// Slots of the second per-CPU counter array ([`MAP_EXTRA`]). [`MAP_COUNTERS`] cannot grow: an
/// older pinned array with fewer slots would no longer match the program's and be refused on
/// upgrade. This one has room to spare, so later counters fit without changing its capacity.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraCounter {
    /// ARP requests for announced addresses whose Ethernet source differs from the sender
    /// hardware address. Answered (to the sender hardware address, as Linux does) and counted.
    ShaMismatch = 0,
    /// Requests for announced addresses passed unanswered by the per-source rate limit.
    RateLimited = 1,
    /// Frames claiming an announced address for another MAC (gratuitous ARP, ARP reply,
    /// Neighbor Advertisement). Recorded in [`MAP_CLAIMS4`] / [`MAP_CLAIMS6`], then passed
    /// (subject to the flood guard, like every frame passed).
    ForeignClaims = 2,
    /// ARP and Neighbor Solicitation frames dropped by the flood guard: their Ethernet source
    /// had more passed to the kernel unanswered than [`MAP_FLOOD_LIMIT`] allows.
    FloodDropped = 3,
}

/// Capacity of [`MAP_EXTRA`]; slots beyond the defined [`ExtraCounter`]s stay zero.
pub const EXTRA_COUNTER_SLOTS: u32 = 16;

/// Capacity of each claims map (LRU: the least recently claimed address makes room). Only
/// announced addresses are recorded, so this bounds the addresses under dispute at once.
pub const MAX_CLAIMS: u32 = 4_096;

/// A foreign claim on an announced address: someone else said the address is at `mac`.
/// Keyed by [`Ipv4Key`] / [`Ipv6Key`] (the interface it arrived on and the address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The MAC of the latest claim (a later claimer with another MAC replaces it).
    pub mac: [u8; 6],
    pub reserved: [u8; 2],
    /// Claims seen since the entry was created (never reset; readers take differences).
    pub count: u64,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC, tick resolution) of the latest claim.
    pub last_ns: u64,
}

/// Capacity of the rate limit's per-source buckets (LRU: the least recently seen source makes
/// room, and comes back with a full bucket).
pub const MAX_SOURCES: u32 = 8_192;

/// A requester's MAC: the key of the rate limit's and the flood guard's buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub reserved: [u8; 2],
}

impl MacKey {
    #[inline(always)]
    pub fn new(mac: [u8; 6]) -> MacKey {
        MacKey {
            mac,
            reserved: [0; 2],
        }
    }
}

/// Data-plane guard: userspace refreshes `heartbeat_ns` (CLOCK_MONOTONIC, the clock of
/// `bpf_ktime_get_ns`); when `now - heartbeat_ns > timeout_ns` the program stops answering.
/// `timeout_ns == 0` disables the guard (standalone `herald xdp` use without a daemon);
/// [`Guard::CLOSED`], the value maps are created with, never allows: nothing is answered until
/// someone arms the guard (or turns it off) on purpose.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Guard {
    pub heartbeat_ns: u64,
    pub timeout_ns: u64,
}

impl Guard {
    /// Never armed: no heartbeat yet, so every answer is refused (`heartbeat_ns` 0 is long
    /// past on any booted machine, and a 1 ns timeout has run out).
    pub const CLOSED: Guard = Guard {
        heartbeat_ns: 0,
        timeout_ns: 1,
    };

    /// True for [`Guard::CLOSED`]: created that way and never armed since.
    #[inline(always)]
    pub fn is_closed(&self) -> bool {
        self.heartbeat_ns == 0 && self.timeout_ns != 0
    }

    /// True while answers are allowed at monotonic time `now_ns`. A heartbeat ahead of `now_ns`
    /// counts as fresh: the program reads the coarse monotonic clock (same clock, tick
    /// resolution, cheaper), which can lag a heartbeat just written from CLOCK_MONOTONIC.
    #[inline(always)]
    pub fn allows(&self, now_ns: u64) -> bool {
        self.timeout_ns == 0 || now_ns.saturating_sub(self.heartbeat_ns) <= self.timeout_ns
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, with no implicit padding and valid for any bit pattern.
    unsafe impl aya::Pod for super::Ipv4Key {}
    unsafe impl aya::Pod for super::Ipv6Key {}
    unsafe impl aya::Pod for super::Announcement {}
    unsafe impl aya::Pod for super::Guard {}
    unsafe impl aya::Pod for super::Claim {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for crate::ratelimit::RateLimit {}
    unsafe impl aya::Pod for crate::ratelimit::Bucket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<Ipv4Key>(), 8);
        assert_eq!(size_of::<Ipv6Key>(), 20);
        assert_eq!(size_of::<Announcement>(), 24);
        assert_eq!(size_of::<Guard>(), 16);
        assert_eq!(size_of::<Claim>(), 24);
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(size_of::<crate::ratelimit::RateLimit>(), 8);
        assert_eq!(size_of::<crate::ratelimit::Bucket>(), 16);
    }

    #[test]
    fn guard_disabled_or_fresh_allows_stale_denies() {
        let off = Guard {
            heartbeat_ns: 0,
            timeout_ns: 0,
        };
        assert!(off.allows(u64::MAX));
        let g = Guard {
            heartbeat_ns: 1_000,
            timeout_ns: 500,
        };
        assert!(g.allows(1_000));
        assert!(g.allows(1_500));
        assert!(!g.allows(1_501));
        // Coarse clock a tick behind a fresh heartbeat.
        assert!(g.allows(900));
    }

    #[test]
    fn a_closed_guard_allows_nothing_past_the_first_nanosecond_of_boot() {
        // The monotonic clock the program reads is past 1 ns on any running system.
        for (now, allowed) in [(0, true), (1, true), (2, false), (1_000_000_000, false)] {
            assert_eq!(Guard::CLOSED.allows(now), allowed, "{now}");
        }
        assert!(!Guard::CLOSED.allows(u64::MAX));
        assert!(Guard::CLOSED.is_closed());
        assert!(!Guard::default().is_closed(), "off is not closed");
        let armed = Guard {
            heartbeat_ns: 5,
            timeout_ns: 10,
        };
        assert!(!armed.is_closed());
    }
}
