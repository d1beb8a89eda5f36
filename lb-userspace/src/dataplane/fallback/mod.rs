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
use lb_common::respond::{Announced, Outcome};
use lb_common::wire::{
    ETH_HLEN, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NS, ICMP6_TYPE, IP6_NEXT_HEADER,
    IPPROTO_ICMPV6,
};
use serde::Serialize;

mod rules;

pub use rules::{
    RateLimit, ReceiveError, Tally, classify_receive_error, decide, is_arp_or_ns,
    send_error_is_fatal, tally,
};

use crate::dataplane::error::{DataplaneError, Result, map_err};
use crate::dataplane::keys::AddrKey;
use crate::dataplane::netdev::Interface;
use crate::dataplane::{Dataplane, monotonic_ns};

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
                (&raw const program).cast(),
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
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(fail("binding AF_PACKET socket")(io::Error::last_os_error()));
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: POLL.as_micros() as _,
        };
        // SAFETY: timeout is a valid timeval for SO_RCVTIMEO.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
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
                (&raw mut from).cast(),
                &raw mut from_len,
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

/// `BPF_EXIST`: never re-create an entry withdrawn meanwhile (a failed insert is that case).
const BPF_EXIST: u64 = 2;

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
