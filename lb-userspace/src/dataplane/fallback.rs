//! Userspace fallback responder (issue 12): for interfaces where XDP cannot attach. Reads the
//! frames of one interface from an AF_PACKET socket, decides with the XDP program's own logic
//! (`lb_common::respond`), against the same pinned maps and guard, bumps the same counters, and
//! sends the reply back out of the interface.
//!
//! The kernel still sees every frame (a packet socket gets a copy), exactly as with XDP_PASS.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aya::maps::PerCpuValues;
use lb_common::maps::{Announcement, Counter, Ipv4Key, Ipv6Key, MAP_COUNTERS};
use lb_common::respond::{Announced, Outcome, respond};
use lb_common::wire::{
    ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NS, ICMP6_TYPE, IP6_NEXT_HEADER, IPPROTO_ICMPV6,
};

use super::error::{DataplaneError, Result, map_err};
use super::netdev::Interface;
use super::{Dataplane, GuardState};

/// How long a receive waits before checking the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// `PACKET_OUTGOING`: our own transmissions, looped back to packet sockets.
const PACKET_OUTGOING: u8 = 4;

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

/// True for ARP frames and ICMPv6 Neighbor Solicitations (the frames XDP counts).
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

/// The announced entries of one interface, read from the pinned maps per request.
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

/// An AF_PACKET socket on one interface.
pub struct Fallback {
    fd: OwnedFd,
    iface: Interface,
}

impl Fallback {
    pub fn open(iface: &Interface) -> Result<Fallback> {
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
        })
    }

    /// Answers until `stop` is set, reading the maps pinned for `dp`.
    pub fn serve(&self, dp: &mut Dataplane, stop: &Arc<AtomicBool>) -> Result<()> {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Some(len) = self.receive(&mut buf)? else {
                continue;
            };
            self.handle(dp, &mut buf, len)?;
        }
        Ok(())
    }

    /// One received frame: `None` on timeout or for our own transmissions.
    fn receive(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(DataplaneError::Netdev {
                    iface: self.iface.name.clone(),
                    op: "receiving",
                    source: e,
                }),
            };
        }
        Ok((from.sll_pkttype != PACKET_OUTGOING).then_some(n as usize))
    }

    fn handle(&self, dp: &mut Dataplane, buf: &mut [u8], len: usize) -> Result<()> {
        let counted = is_arp_or_ns(&buf[..len]);
        let outcome = respond(
            buf,
            len,
            &Lookup {
                dp,
                ifindex: self.iface.index,
            },
        );
        let allows = !matches!(dp.guard_state()?, GuardState::Stale { .. });
        let t = tally(outcome, allows, counted);
        if t.request {
            let target = request_target(outcome, buf);
            bump_address(dp, self.iface.index, target, t.reply.is_some())?;
        }
        if let Some(counter) = t.reply {
            let reply_len = match outcome {
                Outcome::NaReply => lb_common::ndp::NA_LEN,
                _ => len,
            };
            self.send(&buf[..reply_len])?;
            bump(dp, counter)?;
        }
        for (on, counter) in [
            (t.passed, Counter::Passed),
            (t.malformed, Counter::Malformed),
            (t.silenced, Counter::Silenced),
        ] {
            if on {
                bump(dp, counter)?;
            }
        }
        Ok(())
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: frame is valid for its length; the socket is bound to the interface.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(DataplaneError::Netdev {
                iface: self.iface.name.clone(),
                op: "sending reply",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// The address a reply in `buf` was sent for: the reply's sender (ARP) or source (NA).
enum Target {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn request_target(outcome: Outcome, buf: &[u8]) -> Option<Target> {
    // After respond the buffer holds the reply; silenced requests were rewritten too.
    match outcome {
        Outcome::ArpReply => buf.get(28..32)?.try_into().ok().map(Target::V4),
        Outcome::NaReply => buf
            .get(lb_common::wire::ND_TARGET..lb_common::wire::ND_TARGET + 16)?
            .try_into()
            .ok()
            .map(Target::V6),
        _ => None,
    }
}

/// Userspace has no CPU of its own in the per-CPU values: it counts in CPU 0's copy.
fn bump_address(
    dp: &mut Dataplane,
    ifindex: u32,
    target: Option<Target>,
    replied: bool,
) -> Result<()> {
    let add = |values: PerCpuValues<Announcement>| -> Result<PerCpuValues<Announcement>> {
        let mut list: Vec<Announcement> = values.to_vec();
        if let Some(first) = list.first_mut() {
            first.requests += 1;
            first.replies += u64::from(replied);
        }
        PerCpuValues::try_from(list).map_err(|source| DataplaneError::Io {
            op: "per-CPU map values",
            source,
        })
    };
    match target {
        Some(Target::V4(addr)) => {
            let key = Ipv4Key { ifindex, addr };
            if let Ok(values) = dp.v4.get(&key, 0) {
                // BPF_EXIST: never re-create an entry withdrawn meanwhile.
                let _ = dp.v4.insert(&key, add(values)?, 2);
            }
        }
        Some(Target::V6(addr)) => {
            let key = Ipv6Key { ifindex, addr };
            if let Ok(values) = dp.v6.get(&key, 0) {
                let _ = dp.v6.insert(&key, add(values)?, 2);
            }
        }
        None => {}
    }
    Ok(())
}

fn bump(dp: &mut Dataplane, counter: Counter) -> Result<()> {
    let index = counter as u32;
    let values = dp.counters.get(&index, 0).map_err(map_err(MAP_COUNTERS))?;
    let mut list = values.to_vec();
    if let Some(first) = list.first_mut() {
        *first += 1;
    }
    let values = PerCpuValues::try_from(list).map_err(|source| DataplaneError::Io {
        op: "per-CPU counters",
        source,
    })?;
    dp.counters
        .set(index, values, 0)
        .map_err(map_err(MAP_COUNTERS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_matches_the_xdp_program() {
        let reply = tally(Outcome::ArpReply, true, true);
        assert_eq!(reply.reply, Some(Counter::ArpReplies));
        assert!(reply.request && !reply.passed);
        let silenced = tally(Outcome::NaReply, false, true);
        assert!(silenced.request && silenced.passed && silenced.silenced);
        assert_eq!(silenced.reply, None);
        let bad = tally(Outcome::Malformed, true, true);
        assert!(bad.passed && bad.malformed && !bad.request);
        assert!(tally(Outcome::NotAnnounced, true, true).passed);
        assert_eq!(tally(Outcome::Ignored, true, false), Tally::default());
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
}
