//! Userspace fallback responder: for interfaces where XDP cannot attach. Reads the
//! ARP and Neighbor Solicitation frames of one interface from an AF_PACKET socket, decides with
//! the XDP program's own logic (`lb_common::respond`) against the same pinned maps and guard,
//! moves the same counters, and sends the reply back out of the interface.
//!
//! The kernel still sees every frame (a packet socket gets a copy), exactly as with XDP_PASS.
//!
//! Nothing a peer sends can end the loop: a reply the kernel refuses to queue (ENOBUFS under a
//! flood) is a counted drop, transient receive errors are retried, map errors are counted and
//! logged. Only a socket that is gone (interface deleted, descriptor closed) ends [`Fallback::serve`].
//!
//! A process serving an interface this way marks it in the pin directory ([`super::markers`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::PerCpuValues;
use lb_common::maps::{Announcement, COUNTER_SLOTS, Counter, Ipv4Key, Ipv6Key, MAP_COUNTERS};
use lb_common::respond::{Announced, Outcome, respond};
use lb_common::wire::{
    ETH_HLEN, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NS, ICMP6_TYPE, IP6_NEXT_HEADER,
    IPPROTO_ICMPV6,
};
use serde::Serialize;

use super::error::{DataplaneError, Result, map_err};
use super::keys::AddrKey;
use super::netdev::Interface;
use super::{Dataplane, monotonic_ns};

/// How long a receive waits before checking the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// `PACKET_OUTGOING`: our own transmissions, looped back to packet sockets.
const PACKET_OUTGOING: u8 = 4;
/// Room for any Ethernet frame (and for growing a solicitation into an advertisement).
const FRAME_BUF: usize = 65_536 + 128;
/// Counters are written to the maps at least this often while frames keep arriving.
const FLUSH_EVERY_FRAMES: u32 = 256;
/// A repeated failure is logged at most this often (with how many were not logged).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after a receive error that is neither a timeout nor fatal, so it cannot spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// The counters one frame moves, as the XDP program would move them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The request was for an announced address addressed to us (per-address `requests`).
    pub request: bool,
    /// A reply goes out (per-address `replies` and the family's reply counter).
    pub reply: Option<Counter>,
    pub passed: bool,
    pub malformed: bool,
    pub silenced: bool,
}

/// Maps a `respond` outcome to the counters, given whether the guard allows answers. `arp_or_ns`
/// says whether the frame was ARP or a Neighbor Solicitation: other traffic is never counted
/// (the XDP fast path does not count it either).
pub fn tally(outcome: Outcome, guard_allows: bool, arp_or_ns: bool) -> Tally {
    let reply = match outcome {
        Outcome::ArpReply => Some(Counter::ArpReplies),
        Outcome::NaReply => Some(Counter::NaReplies),
        Outcome::Malformed => {
            return Tally {
                passed: true,
                malformed: true,
                ..Tally::default()
            };
        }
        Outcome::Ignored | Outcome::NotAnnounced | Outcome::NotAddressed => {
            return Tally {
                passed: arp_or_ns,
                ..Tally::default()
            };
        }
    };
    if guard_allows {
        Tally {
            request: true,
            reply,
            ..Tally::default()
        }
    } else {
        Tally {
            request: true,
            passed: true,
            silenced: true,
            ..Tally::default()
        }
    }
}

/// True for ARP frames and ICMPv6 Neighbor Solicitations: the frames the XDP program counts
/// (its fast path passes everything else untouched and uncounted). The same three byte tests
/// as that fast path; the decision itself is `lb_common::respond`'s.
pub fn is_arp_or_ns(frame: &[u8]) -> bool {
    match frame.get(ETH_TYPE..ETH_TYPE + 2) {
        Some(t) if t == ETHERTYPE_ARP => true,
        Some(t) if t == ETHERTYPE_IPV6 => {
            frame.get(IP6_NEXT_HEADER) == Some(&IPPROTO_ICMPV6)
                && frame.get(ICMP6_TYPE) == Some(&ICMP6_NS)
        }
        _ => false,
    }
}

/// `respond` on the first `len` bytes of a reused buffer: a frame shorter than an Ethernet
/// header is passed untouched, as XDP's first bounds check does (and the stale bytes of an
/// earlier frame behind it are never read).
pub fn decide(buf: &mut [u8], len: usize, announced: &impl Announced) -> Outcome {
    if len < ETH_HLEN {
        return Outcome::Ignored;
    }
    respond(buf, len, announced)
}

/// What to do after a failed `recv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// Nothing arrived in time, or a signal interrupted the wait: just receive again.
    Retry,
    /// A transient condition (interface down, memory pressure): count, log, receive again.
    Transient,
    /// The socket is gone (interface deleted, descriptor closed): the responder ends.
    Fatal,
}

pub fn classify_receive_error(errno: i32) -> ReceiveError {
    match errno {
        libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT => ReceiveError::Retry,
        libc::ENODEV | libc::ENXIO | libc::EBADF | libc::ENOTSOCK | libc::EFAULT => {
            ReceiveError::Fatal
        }
        _ => ReceiveError::Transient,
    }
}

/// True when a failed `send` means the socket itself is gone. Anything else (ENOBUFS when the
/// queue is full, EAGAIN, EINTR, ENETDOWN, ENXIO while the interface goes away) drops that one
/// reply: the requester asks again, and a vanished interface ends the loop on the receive side.
pub fn send_error_is_fatal(errno: i32) -> bool {
    matches!(errno, libc::EBADF | libc::ENOTSOCK)
}

/// What a responder did, for logs and metrics. Shared with the thread that serves.
#[derive(Debug, Default)]
pub struct FallbackStats {
    /// ARP and NS frames read from the socket.
    pub frames: AtomicU64,
    /// Replies sent.
    pub replies: AtomicU64,
    /// Replies the kernel refused to send (counted as passed in the maps, as unanswered).
    pub send_failures: AtomicU64,
    /// Receive errors that were not fatal.
    pub receive_errors: AtomicU64,
    /// Failed map reads or writes (counter updates lost).
    pub map_errors: AtomicU64,
}

/// A plain copy of [`FallbackStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FallbackCounts {
    pub frames: u64,
    pub replies: u64,
    pub send_failures: u64,
    pub receive_errors: u64,
    pub map_errors: u64,
}

impl FallbackStats {
    pub fn counts(&self) -> FallbackCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FallbackCounts {
            frames: get(&self.frames),
            replies: get(&self.replies),
            send_failures: get(&self.send_failures),
            receive_errors: get(&self.receive_errors),
            map_errors: get(&self.map_errors),
        }
    }
}

/// Logs the first of a repeated event at once, then at most once per `every`, saying how many
/// were not logged in between: a flood must not turn into a flood of log lines.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this event should be logged, `n` = events suppressed since the last line.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The announced entries of one interface, read from the pinned maps per request (so a
/// withdraw stops the answers at once, as with XDP).
struct Lookup<'a> {
    dp: &'a Dataplane,
    ifindex: u32,
}

impl Announced for Lookup<'_> {
    fn ipv4(&self, addr: [u8; 4]) -> Option<[u8; 6]> {
        let key = Ipv4Key {
            ifindex: self.ifindex,
            addr,
        };
        let values = self.dp.v4.get(&key, 0).ok()?;
        values.first().map(|a| a.mac)
    }
    fn ipv6(&self, addr: [u8; 16]) -> Option<[u8; 6]> {
        let key = Ipv6Key {
            ifindex: self.ifindex,
            addr,
        };
        let values = self.dp.v6.get(&key, 0).ok()?;
        values.first().map(|a| a.mac)
    }
}

/// The guard rule of the program: a guard that cannot be read silences, as a missing map entry
/// does in XDP.
fn guard_allows(dp: &Dataplane) -> bool {
    dp.guard
        .get(&0, 0)
        .is_ok_and(|guard| guard.allows(monotonic_ns()))
}

/// Counter increments not yet written to the maps. Written in batches: one read-modify-write
/// per touched slot per batch instead of per frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub counters: [u64; COUNTER_SLOTS as usize],
    /// (requests, replies) per address.
    pub addresses: BTreeMap<AddrKey, (u64, u64)>,
    pub frames: u32,
}

impl Pending {
    pub fn count(&mut self, counter: Counter) {
        self.counters[counter as usize] += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.counters.iter().all(|c| *c == 0) && self.addresses.is_empty()
    }
}

/// An AF_PACKET socket on one interface.
pub struct Fallback {
    fd: OwnedFd,
    iface: Interface,
    stats: Arc<FallbackStats>,
}

/// Classic BPF run by the kernel on every frame before it is queued to the socket: keeps ARP and
/// ICMPv6 Neighbor Solicitations received untagged, drops the rest (our own transmissions,
/// VLAN-tagged frames, every other protocol), so a busy node's traffic never reaches userspace.
/// The same byte tests as the XDP fast path; deciding stays with `lb_common::respond`.
fn socket_filter() -> Vec<libc::sock_filter> {
    const AD_OFF: u32 = (-0x1000i32) as u32; // SKF_AD_OFF
    const AD_PKTTYPE: u32 = 4;
    const AD_VLAN_TAG_PRESENT: u32 = 48;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Jump offsets count instructions after the jump; ACCEPT = 11, DROP = 12.
    vec![
        /* 0 */ op(LD_W_ABS, 0, 0, AD_OFF + AD_PKTTYPE),
        /* 1 */ op(JEQ, 10, 0, u32::from(PACKET_OUTGOING)), // -> DROP
        /* 2 */ op(LD_W_ABS, 0, 0, AD_OFF + AD_VLAN_TAG_PRESENT),
        /* 3 */ op(JEQ, 0, 8, 0), // tagged -> DROP
        /* 4 */ op(LD_H_ABS, 0, 0, ETH_TYPE as u32),
        /* 5 */
        op(JEQ, 5, 0, u32::from(u16::from_be_bytes(ETHERTYPE_ARP))), // -> ACCEPT
        /* 6 */
        op(JEQ, 0, 5, u32::from(u16::from_be_bytes(ETHERTYPE_IPV6))), // else DROP
        /* 7 */ op(LD_B_ABS, 0, 0, IP6_NEXT_HEADER as u32),
        /* 8 */ op(JEQ, 0, 3, u32::from(IPPROTO_ICMPV6)), // else DROP
        /* 9 */ op(LD_B_ABS, 0, 0, ICMP6_TYPE as u32),
        /* 10 */ op(JEQ, 0, 1, u32::from(ICMP6_NS)), // -> ACCEPT, else DROP
        /* 11 ACCEPT */ op(RET, 0, 0, 0x0004_0000),
        /* 12 DROP */ op(RET, 0, 0, 0),
    ]
}

impl Fallback {
    pub fn open(iface: &Interface) -> Result<Fallback> {
        Self::open_with_stats(iface, Arc::default())
    }

    /// Like [`Fallback::open`], adding to `stats` (which outlive a restarted responder).
    pub fn open_with_stats(iface: &Interface, stats: Arc<FallbackStats>) -> Result<Fallback> {
        let fail = |op| {
            move |source| DataplaneError::Netdev {
                iface: iface.name.clone(),
                op,
                source,
            }
        };
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(all),
            )
        };
        if raw < 0 {
            return Err(fail("AF_PACKET socket")(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let filter = socket_filter();
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: program points at `filter`, alive for the call; the kernel copies it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&program as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(fail("attaching the ARP/NS socket filter")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = iface.index as i32;
        // SAFETY: addr is valid for its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(fail("binding AF_PACKET socket")(io::Error::last_os_error()));
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: POLL.as_micros() as libc::suseconds_t,
        };
        // SAFETY: timeout is a valid timeval for SO_RCVTIMEO.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(fail("SO_RCVTIMEO")(io::Error::last_os_error()));
        }
        Ok(Fallback {
            fd,
            iface: iface.clone(),
            stats,
        })
    }

    pub fn iface(&self) -> &Interface {
        &self.iface
    }

    pub fn stats(&self) -> Arc<FallbackStats> {
        self.stats.clone()
    }

    /// Answers until `stop` is set (returns within [`POLL`] of it), reading the maps pinned for
    /// `dp`. Returns an error only when the socket is gone.
    pub fn serve(&self, dp: &mut Dataplane, stop: &AtomicBool) -> Result<()> {
        let mut buf = vec![0u8; FRAME_BUF];
        let mut pending = Pending::default();
        let mut logs = Logs::default();
        while !stop.load(Ordering::Relaxed) {
            // Wait for one frame, then take whatever else is queued without waiting, then write
            // the counters: batches under load, immediate counters when idle.
            let mut flags = 0;
            loop {
                match self.receive(&mut buf, flags) {
                    Received::Frame(len) => {
                        if let Err(e) = self.handle(dp, &mut buf, len, &mut pending, &mut logs) {
                            self.flush(dp, &mut pending, &mut logs);
                            return Err(e);
                        }
                    }
                    Received::Own => {}
                    Received::Nothing => break,
                    Received::Failed(e) => {
                        self.stats.receive_errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(suppressed) = logs.receive.allow(Instant::now()) {
                            tracing::warn!(iface = %self.iface.name, suppressed, "userspace responder: receiving failed, retrying: {e}");
                        }
                        std::thread::sleep(ERROR_BACKOFF);
                        break;
                    }
                    Received::Gone(e) => {
                        self.flush(dp, &mut pending, &mut logs);
                        return Err(DataplaneError::Netdev {
                            iface: self.iface.name.clone(),
                            op: "receiving",
                            source: e,
                        });
                    }
                }
                flags = libc::MSG_DONTWAIT;
                if pending.frames >= FLUSH_EVERY_FRAMES || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            self.flush(dp, &mut pending, &mut logs);
        }
        Ok(())
    }

    fn receive(&self, buf: &mut [u8], flags: i32) -> Received {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match classify_receive_error(e.raw_os_error().unwrap_or(0)) {
                ReceiveError::Retry => Received::Nothing,
                ReceiveError::Transient => Received::Failed(e),
                ReceiveError::Fatal => Received::Gone(e),
            };
        }
        if from.sll_pkttype == PACKET_OUTGOING {
            return Received::Own;
        }
        Received::Frame((n as usize).min(buf.len()))
    }

    fn handle(
        &self,
        dp: &Dataplane,
        buf: &mut [u8],
        len: usize,
        pending: &mut Pending,
        logs: &mut Logs,
    ) -> Result<()> {
        pending.frames += 1;
        let counted = is_arp_or_ns(&buf[..len]);
        if counted {
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = decide(
            buf,
            len,
            &Lookup {
                dp,
                ifindex: self.iface.index,
            },
        );
        let answering = matches!(outcome, Outcome::ArpReply | Outcome::NaReply);
        let t = tally(outcome, answering && guard_allows(dp), counted);
        let key = request_target(outcome, buf, self.iface.index);
        if t.request
            && let Some(key) = key
        {
            pending.addresses.entry(key).or_default().0 += 1;
        }
        for (on, counter) in [
            (t.passed, Counter::Passed),
            (t.malformed, Counter::Malformed),
            (t.silenced, Counter::Silenced),
        ] {
            if on {
                pending.count(counter);
            }
        }
        let Some(counter) = t.reply else {
            return Ok(());
        };
        let reply_len = match outcome {
            Outcome::NaReply => lb_common::ndp::NA_LEN,
            _ => len,
        };
        match self.send(&buf[..reply_len]) {
            Ok(()) => {
                pending.count(counter);
                if let Some(key) = key {
                    pending.addresses.entry(key).or_default().1 += 1;
                }
                self.stats.replies.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Unanswered, and the kernel has its copy: as XDP counts a frame it passes.
                pending.count(Counter::Passed);
                self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                if send_error_is_fatal(e.raw_os_error().unwrap_or(0)) {
                    return Err(DataplaneError::Netdev {
                        iface: self.iface.name.clone(),
                        op: "sending reply",
                        source: e,
                    });
                }
                if let Some(suppressed) = logs.send.allow(Instant::now()) {
                    tracing::warn!(iface = %self.iface.name, suppressed, "userspace responder: reply dropped: {e}");
                }
                Ok(())
            }
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for its length; the socket is bound to the interface.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes the pending increments; a failed write is counted and logged, never fatal.
    fn flush(&self, dp: &mut Dataplane, pending: &mut Pending, logs: &mut Logs) {
        if pending.is_empty() {
            pending.frames = 0;
            return;
        }
        let taken = std::mem::take(pending);
        let mut failed = None;
        for (slot, add) in taken.counters.iter().enumerate() {
            if *add > 0
                && let Err(e) = add_to_counter(dp, slot as u32, *add)
            {
                failed = Some(e);
            }
        }
        for (key, (requests, replies)) in &taken.addresses {
            if let Err(e) = add_to_address(dp, key, *requests, *replies) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            self.stats.map_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = logs.map.allow(Instant::now()) {
                tracing::warn!(iface = %self.iface.name, suppressed, "userspace responder: counters not updated: {e}");
            }
        }
    }
}

enum Received {
    Frame(usize),
    /// Our own transmission, looped back.
    Own,
    /// Timeout or interruption.
    Nothing,
    Failed(io::Error),
    Gone(io::Error),
}

struct Logs {
    send: RateLimit,
    receive: RateLimit,
    map: RateLimit,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            send: RateLimit::new(LOG_EVERY),
            receive: RateLimit::new(LOG_EVERY),
            map: RateLimit::new(LOG_EVERY),
        }
    }
}

/// The announced-address key a reply in `buf` was built for: the reply's sender (ARP) or
/// target (NA). `respond` rewrote the buffer even when the guard then keeps it unsent.
fn request_target(outcome: Outcome, buf: &[u8], ifindex: u32) -> Option<AddrKey> {
    const ARP_SENDER_IP: usize = ETH_HLEN + 14;
    match outcome {
        Outcome::ArpReply => buf
            .get(ARP_SENDER_IP..ARP_SENDER_IP + 4)?
            .try_into()
            .ok()
            .map(|addr| AddrKey::V4(Ipv4Key { ifindex, addr })),
        Outcome::NaReply => buf
            .get(lb_common::wire::ND_TARGET..lb_common::wire::ND_TARGET + 16)?
            .try_into()
            .ok()
            .map(|addr| AddrKey::V6(Ipv6Key { ifindex, addr })),
        _ => None,
    }
}

fn per_cpu<T: aya::Pod>(list: Vec<T>) -> Result<PerCpuValues<T>> {
    PerCpuValues::try_from(list).map_err(|source| DataplaneError::Io {
        op: "per-CPU map values",
        source,
    })
}

/// Userspace has no CPU of its own in the per-CPU values: it counts in CPU 0's copy.
fn add_to_address(dp: &mut Dataplane, key: &AddrKey, requests: u64, replies: u64) -> Result<()> {
    let add = |values: PerCpuValues<Announcement>| {
        let mut list: Vec<Announcement> = values.to_vec();
        if let Some(first) = list.first_mut() {
            first.requests = first.requests.wrapping_add(requests);
            first.replies = first.replies.wrapping_add(replies);
        }
        per_cpu(list)
    };
    // BPF_EXIST: never re-create an entry withdrawn meanwhile (a failed insert is that case).
    const BPF_EXIST: u64 = 2;
    match key {
        AddrKey::V4(key) => {
            if let Ok(values) = dp.v4.get(key, 0) {
                let _ = dp.v4.insert(key, add(values)?, BPF_EXIST);
            }
        }
        AddrKey::V6(key) => {
            if let Ok(values) = dp.v6.get(key, 0) {
                let _ = dp.v6.insert(key, add(values)?, BPF_EXIST);
            }
        }
    }
    Ok(())
}

fn add_to_counter(dp: &mut Dataplane, index: u32, add: u64) -> Result<()> {
    let values = dp.counters.get(&index, 0).map_err(map_err(MAP_COUNTERS))?;
    let mut list = values.to_vec();
    if let Some(first) = list.first_mut() {
        *first = first.wrapping_add(add);
    }
    dp.counters
        .set(index, per_cpu(list)?, 0)
        .map_err(map_err(MAP_COUNTERS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_matches_the_xdp_program() {
        // (outcome, guard allows, ARP/NS frame) -> (request, reply, passed, malformed, silenced),
        // as program.rs counts: answered() / pass() / malformed() / silenced(), and nothing on
        // the fast path.
        let table = [
            (
                Outcome::ArpReply,
                true,
                true,
                (true, Some(Counter::ArpReplies), false, false, false),
            ),
            (
                Outcome::NaReply,
                true,
                true,
                (true, Some(Counter::NaReplies), false, false, false),
            ),
            (
                Outcome::ArpReply,
                false,
                true,
                (true, None, true, false, true),
            ),
            (
                Outcome::NaReply,
                false,
                true,
                (true, None, true, false, true),
            ),
            (
                Outcome::Malformed,
                true,
                true,
                (false, None, true, true, false),
            ),
            (
                Outcome::Malformed,
                false,
                true,
                (false, None, true, true, false),
            ),
            (
                Outcome::NotAnnounced,
                true,
                true,
                (false, None, true, false, false),
            ),
            (
                Outcome::NotAddressed,
                true,
                true,
                (false, None, true, false, false),
            ),
            (
                Outcome::Ignored,
                true,
                true,
                (false, None, true, false, false),
            ),
            (
                Outcome::Ignored,
                true,
                false,
                (false, None, false, false, false),
            ),
        ];
        for (outcome, allows, counted, (request, reply, passed, malformed, silenced)) in table {
            assert_eq!(
                tally(outcome, allows, counted),
                Tally {
                    request,
                    reply,
                    passed,
                    malformed,
                    silenced
                },
                "{outcome:?} allows={allows} counted={counted}"
            );
        }
    }

    #[test]
    fn arp_and_ns_are_recognised() {
        let mut arp = [0u8; 42];
        arp[12..14].copy_from_slice(&ETHERTYPE_ARP);
        assert!(is_arp_or_ns(&arp));
        let mut ns = [0u8; 78];
        ns[12..14].copy_from_slice(&ETHERTYPE_IPV6);
        ns[IP6_NEXT_HEADER] = IPPROTO_ICMPV6;
        ns[ICMP6_TYPE] = ICMP6_NS;
        assert!(is_arp_or_ns(&ns));
        ns[ICMP6_TYPE] = 128;
        assert!(!is_arp_or_ns(&ns));
        assert!(!is_arp_or_ns(&[0u8; 10]));
    }

    struct Nothing;
    impl Announced for Nothing {
        fn ipv4(&self, _: [u8; 4]) -> Option<[u8; 6]> {
            None
        }
        fn ipv6(&self, _: [u8; 16]) -> Option<[u8; 6]> {
            None
        }
    }

    #[test]
    fn short_frames_never_read_stale_bytes() {
        // A previous ARP frame left its ethertype in the buffer; a 10-byte frame follows.
        let mut buf = vec![0u8; 128];
        buf[12..14].copy_from_slice(&ETHERTYPE_ARP);
        assert_eq!(decide(&mut buf, 10, &Nothing), Outcome::Ignored);
        // With a full header, a truncated ARP frame is malformed, as in XDP.
        assert_eq!(decide(&mut buf, 20, &Nothing), Outcome::Malformed);
    }

    #[test]
    fn receive_errors_end_the_loop_only_when_the_socket_is_gone() {
        for errno in [libc::EAGAIN, libc::EINTR, libc::ETIMEDOUT] {
            assert_eq!(classify_receive_error(errno), ReceiveError::Retry);
        }
        for errno in [libc::ENETDOWN, libc::ENOBUFS, libc::ENOMEM, 0] {
            assert_eq!(classify_receive_error(errno), ReceiveError::Transient);
        }
        for errno in [libc::ENODEV, libc::ENXIO, libc::EBADF, libc::ENOTSOCK] {
            assert_eq!(classify_receive_error(errno), ReceiveError::Fatal);
        }
    }

    #[test]
    fn only_a_dead_socket_makes_a_send_failure_fatal() {
        for errno in [
            libc::ENOBUFS,
            libc::EAGAIN,
            libc::EINTR,
            libc::ENETDOWN,
            libc::ENXIO,
            libc::EMSGSIZE,
        ] {
            assert!(!send_error_is_fatal(errno), "errno {errno}");
        }
        assert!(send_error_is_fatal(libc::EBADF));
        assert!(send_error_is_fatal(libc::ENOTSOCK));
    }

    #[test]
    fn rate_limit_logs_first_then_once_per_period_with_the_suppressed_count() {
        let mut limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn the_socket_filter_jumps_stay_inside_the_program() {
        let program = socket_filter();
        for (i, op) in program.iter().enumerate() {
            if op.code == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16 {
                assert!(i + 1 + usize::from(op.jt.max(op.jf)) < program.len(), "{i}");
            }
        }
        assert_eq!(program.last().map(|op| op.k), Some(0), "ends in DROP");
        assert_eq!(
            program[program.len() - 2].k,
            0x0004_0000,
            "ACCEPT before DROP"
        );
    }
}
