//! The userspace responder's rules, apart from its socket: what one frame counts (as the XDP
//! program counts it), which frames are ARP or Neighbor Solicitations, which socket errors end
//! the loop, and how repeated failures are logged.

use std::time::{Duration, Instant};

use lb_common::maps::Counter;
use lb_common::respond::{Announced, Outcome, respond};
use lb_common::wire::{
    ETH_HLEN, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV6, ICMP6_NS, ICMP6_TYPE, IP6_NEXT_HEADER,
    IPPROTO_ICMPV6,
};

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
        // Claims are recorded by the XDP program only; here they pass like other ARP.
        Outcome::Ignored
        | Outcome::ForeignClaim
        | Outcome::NotAnnounced
        | Outcome::NotAddressed => {
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
}
