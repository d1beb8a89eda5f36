//! Gossip datagram framing: every datagram carries an HMAC-SHA256 under the shared memberlist
//! key (Secret `memberlist`, key `secretkey`), so a member without the secret is ignored, and a
//! stamp (sender epoch, sequence number, send time) inside the tag, so a captured datagram
//! cannot be replayed to make a dead or partitioned speaker look alive ([`ReplayGuard`]), not
//! even to a speaker that restarted and forgot which datagrams it had seen (it refuses those sent
//! before it started).
//! Integrity, origin and freshness only: membership data is not confidential.
//!
//! Layout: `b"HRLD"`, one mode byte (`2` = HMAC-SHA256 with stamp, `0` = unauthenticated, used
//! only when no key is configured, as MetalLB runs without encryption when the secret is
//! missing); in mode 2 the 32-byte tag and the 24-byte stamp (little-endian epoch, sequence,
//! send time in ms since the Unix epoch) follow; then the foca payload. The tag covers stamp and
//! payload.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"HRLD";
const MODE_PLAIN: u8 = 0;
const MODE_HMAC_STAMPED: u8 = 2;
const TAG_LEN: usize = 32;
const STAMP_LEN: usize = 24;
/// Bytes added to every payload with a key.
pub const OVERHEAD: usize = MAGIC.len() + 1 + TAG_LEN + STAMP_LEN;

/// How far a datagram's send time may be from the receiver's clock. Nodes of a cluster keep
/// their clocks within seconds (TLS and tokens need it); five minutes is the usual allowance
/// (Kerberos). Older datagrams are refused, younger ones only once each.
pub const REPLAY_TOLERANCE: Duration = Duration::from_secs(300);

/// How long before a member started a datagram may have been sent and still be accepted: the
/// clock skew allowed between nodes at a restart. A restarted member has forgotten the stamps it
/// saw, so without this horizon a datagram captured up to [`REPLAY_TOLERANCE`] earlier could be
/// replayed to it once; with it, only one captured within this allowance before the restart. A
/// peer whose clock lags by more loses its datagrams for that long after the restart, no more.
pub const START_SKEW_ALLOWANCE: Duration = Duration::from_secs(2);

/// Sequence numbers a sender may arrive out of order by (UDP can reorder) and still count.
const WINDOW: u64 = 64;

/// Who sent an authenticated datagram, and when. Bound into the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Random per sender process: sequence numbers restart with it.
    pub epoch: u64,
    /// Counts up from 0 for every datagram the sender seals.
    pub seq: u64,
    /// Milliseconds since the Unix epoch on the sender's clock.
    pub sent_ms: u64,
}

impl Stamp {
    fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut out = [0u8; STAMP_LEN];
        out[..8].copy_from_slice(&self.epoch.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..].copy_from_slice(&self.sent_ms.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Stamp> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        Some(Stamp {
            epoch: word(0)?,
            seq: word(8)?,
            sent_ms: word(16)?,
        })
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not a Herald gossip datagram")]
    NotGossip,
    #[error("datagram is unauthenticated but this member requires the memberlist secret")]
    Unauthenticated,
    #[error("datagram is authenticated but this member has no memberlist secret")]
    NoKey,
    #[error("authentication tag does not match (different or missing memberlist secret)")]
    BadTag,
    #[error(
        "datagram was sent more than 5 minutes from this node's time (clock skew between nodes, or a replay)"
    )]
    Stale,
    #[error("datagram was already received (a replay)")]
    Replayed,
    #[error(
        "datagram was sent before this speaker started (a replay to a restarted speaker, or a peer clock behind by more than 2 s)"
    )]
    BeforeStart,
}

/// The shared key (or its absence).
#[derive(Clone, Default)]
pub struct GossipKey(Option<Vec<u8>>);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self.0 {
            Some(_) => f.write_str("GossipKey(<set>)"),
            None => f.write_str("GossipKey(<none>)"),
        }
    }
}

impl GossipKey {
    /// `None` or an empty secret: unauthenticated mode.
    pub fn new(secret: Option<&[u8]>) -> Self {
        GossipKey(secret.filter(|s| !s.is_empty()).map(<[u8]>::to_vec))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn mac(key: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    /// Frames `payload` for the wire (the stamp is only sent with a key).
    pub fn seal(&self, payload: &[u8], stamp: Stamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(MAGIC);
        match &self.0 {
            Some(key) => {
                out.push(MODE_HMAC_STAMPED);
                let stamp = stamp.to_bytes();
                let mut mac = Self::mac(key);
                mac.update(&stamp);
                mac.update(payload);
                out.extend_from_slice(&mac.finalize().into_bytes());
                out.extend_from_slice(&stamp);
            }
            None => out.push(MODE_PLAIN),
        }
        out.extend_from_slice(payload);
        out
    }

    /// Checks a datagram's framing and tag; returns its stamp (keyed mode) and payload.
    /// Freshness is the caller's [`ReplayGuard`]'s job.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<(Option<Stamp>, &'a [u8]), AuthError> {
        let rest = datagram
            .strip_prefix(MAGIC.as_slice())
            .ok_or(AuthError::NotGossip)?;
        let (&mode, rest) = rest.split_first().ok_or(AuthError::NotGossip)?;
        match (mode, &self.0) {
            (MODE_PLAIN, None) => Ok((None, rest)),
            (MODE_PLAIN, Some(_)) => Err(AuthError::Unauthenticated),
            (MODE_HMAC_STAMPED, None) => Err(AuthError::NoKey),
            (MODE_HMAC_STAMPED, Some(key)) => {
                if rest.len() < TAG_LEN + STAMP_LEN {
                    return Err(AuthError::NotGossip);
                }
                let (tag, signed) = rest.split_at(TAG_LEN);
                let mut mac = Self::mac(key);
                mac.update(signed);
                // Constant-time comparison.
                mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
                let (stamp, payload) = signed.split_at(STAMP_LEN);
                let stamp = Stamp::from_bytes(stamp).ok_or(AuthError::NotGossip)?;
                Ok((Some(stamp), payload))
            }
            _ => Err(AuthError::NotGossip),
        }
    }
}

/// What one sender epoch has delivered: the highest sequence number and, as bits, which of the
/// [`WINDOW`] numbers below it arrived.
#[derive(Clone, Copy, Debug)]
struct Window {
    highest: u64,
    /// Bit `i` set: `highest - i` arrived.
    seen: u64,
    /// Latest send time seen from this epoch (ms), for forgetting it.
    last_ms: u64,
}

/// Refuses authenticated datagrams that are stale or already delivered. Only stamps whose tag
/// verified may be checked, so a member without the key cannot fill it.
#[derive(Debug)]
pub struct ReplayGuard {
    tolerance_ms: u64,
    /// Stamps sent before this (ms since the Unix epoch) are refused: they predate the member.
    not_before_ms: u64,
    senders: HashMap<u64, Window>,
}

/// Sender epochs remembered before the quiet ones are forgotten.
const MAX_SENDERS: usize = 1024;

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(REPLAY_TOLERANCE)
    }
}

impl ReplayGuard {
    pub fn new(tolerance: Duration) -> Self {
        ReplayGuard {
            tolerance_ms: u64::try_from(tolerance.as_millis()).unwrap_or(u64::MAX),
            not_before_ms: 0,
            senders: HashMap::new(),
        }
    }

    /// The guard of a member started at `started_ms` (ms since the Unix epoch): it also refuses
    /// stamps sent more than [`START_SKEW_ALLOWANCE`] before then.
    pub fn started_at(self, started_ms: u64) -> Self {
        let allowance = u64::try_from(START_SKEW_ALLOWANCE.as_millis()).unwrap_or(u64::MAX);
        ReplayGuard {
            not_before_ms: started_ms.saturating_sub(allowance),
            ..self
        }
    }

    /// Accepts `stamp` once, if it was sent within the tolerance of `now_ms`.
    pub fn check(&mut self, stamp: Stamp, now_ms: u64) -> Result<(), AuthError> {
        if stamp.sent_ms.abs_diff(now_ms) > self.tolerance_ms {
            return Err(AuthError::Stale);
        }
        if stamp.sent_ms < self.not_before_ms {
            return Err(AuthError::BeforeStart);
        }
        if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&stamp.epoch) {
            self.forget_quiet(now_ms);
        }
        let window = self.senders.entry(stamp.epoch).or_insert(Window {
            highest: stamp.seq,
            seen: 0,
            last_ms: stamp.sent_ms,
        });
        if stamp.seq > window.highest {
            let shift = stamp.seq - window.highest;
            window.seen = if shift >= WINDOW {
                0
            } else {
                window.seen << shift
            };
            window.highest = stamp.seq;
        }
        let behind = window.highest - stamp.seq;
        if behind >= WINDOW {
            return Err(AuthError::Replayed);
        }
        let bit = 1u64 << behind;
        if window.seen & bit != 0 {
            return Err(AuthError::Replayed);
        }
        window.seen |= bit;
        window.last_ms = window.last_ms.max(stamp.sent_ms);
        Ok(())
    }

    /// Forgets epochs that can no longer send a fresh datagram (silent for twice the
    /// tolerance); if that frees nothing, the quietest one.
    fn forget_quiet(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.tolerance_ms.saturating_mul(2));
        self.senders.retain(|_, w| w.last_ms >= horizon);
        if self.senders.len() >= MAX_SENDERS
            && let Some(quietest) = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.last_ms)
                .map(|(epoch, _)| *epoch)
        {
            self.senders.remove(&quietest);
        }
    }

    /// Sender epochs remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAMP: Stamp = Stamp {
        epoch: 0x1122_3344_5566_7788,
        seq: 9,
        sent_ms: 1_700_000_000_000,
    };

    fn stamp(epoch: u64, seq: u64, sent_ms: u64) -> Stamp {
        Stamp {
            epoch,
            seq,
            sent_ms,
        }
    }

    #[test]
    fn roundtrip_and_rejections() {
        let a = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
        let b = GossipKey::new(Some(b"another-secret-value00"));
        let none = GossipKey::new(None);
        let sealed = a.seal(b"payload", STAMP);
        assert_eq!(sealed.len(), OVERHEAD + 7);
        assert_eq!(a.open(&sealed), Ok((Some(STAMP), &b"payload"[..])));
        assert_eq!(b.open(&sealed), Err(AuthError::BadTag));
        assert_eq!(none.open(&sealed), Err(AuthError::NoKey));
        let plain = none.seal(b"payload", STAMP);
        assert_eq!(plain.len(), MAGIC.len() + 1 + 7);
        assert_eq!(none.open(&plain), Ok((None, &b"payload"[..])));
        assert_eq!(a.open(&plain), Err(AuthError::Unauthenticated));
        assert_eq!(a.open(b"junk"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD\x02short"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD\x07"), Err(AuthError::NotGossip));
        // The earlier layout (mode 1: tag over the payload only, no stamp) is not gossip.
        let mut old = b"HRLD\x01".to_vec();
        old.extend_from_slice(&sealed[5..]);
        assert_eq!(a.open(&old), Err(AuthError::NotGossip));
        assert!(
            GossipKey::new(Some(b"")).open(&plain).is_ok(),
            "empty = none"
        );
        assert_eq!(format!("{a:?}"), "GossipKey(<set>)");
    }

    #[test]
    fn the_stamp_is_authenticated() {
        let key = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
        let sealed = key.seal(b"payload", STAMP);
        // A replayer rewriting the sequence number or the send time breaks the tag.
        for at in [OVERHEAD - STAMP_LEN + 8, OVERHEAD - STAMP_LEN + 16] {
            let mut forged = sealed.clone();
            forged[at] ^= 1;
            assert_eq!(key.open(&forged), Err(AuthError::BadTag));
        }
    }

    #[test]
    fn replay_guard_accepts_each_stamp_once() {
        let now = 1_700_000_000_000;
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(stamp(1, 5, now), now), Ok(()));
        assert_eq!(guard.check(stamp(1, 5, now), now), Err(AuthError::Replayed));
        // Later numbers, and earlier ones not yet seen (reordering), are fresh.
        assert_eq!(guard.check(stamp(1, 7, now), now), Ok(()));
        assert_eq!(guard.check(stamp(1, 6, now), now), Ok(()));
        assert_eq!(guard.check(stamp(1, 6, now), now), Err(AuthError::Replayed));
        assert_eq!(guard.check(stamp(1, 4, now), now), Ok(()));
        // Another epoch (the same node restarted) has its own numbers.
        assert_eq!(guard.check(stamp(2, 5, now), now), Ok(()));
        // Far behind the window: refused even if never seen.
        assert_eq!(guard.check(stamp(1, 1000, now), now), Ok(()));
        assert_eq!(
            guard.check(stamp(1, 1000 - WINDOW, now), now),
            Err(AuthError::Replayed)
        );
        assert_eq!(guard.check(stamp(1, 1000 - WINDOW + 1, now), now), Ok(()));
        assert_eq!(guard.senders(), 2);
    }

    #[test]
    fn replay_guard_refuses_stale_and_future_stamps() {
        let now = 1_700_000_000_000;
        let tolerance = 300_000;
        let mut guard = ReplayGuard::new(Duration::from_millis(tolerance));
        assert_eq!(
            guard.check(stamp(1, 0, now - tolerance - 1), now),
            Err(AuthError::Stale)
        );
        assert_eq!(
            guard.check(stamp(1, 0, now + tolerance + 1), now),
            Err(AuthError::Stale)
        );
        assert_eq!(guard.check(stamp(1, 0, now - tolerance), now), Ok(()));
        assert_eq!(guard.check(stamp(1, 1, now + tolerance), now), Ok(()));
    }

    #[test]
    fn replay_guard_refuses_stamps_from_before_its_member_started() {
        let started = 1_700_000_000_000;
        let allowance = START_SKEW_ALLOWANCE.as_millis() as u64;
        let mut guard = ReplayGuard::default().started_at(started);
        let now = started + 1_000;
        assert_eq!(
            guard.check(stamp(1, 0, started - allowance - 1), now),
            Err(AuthError::BeforeStart)
        );
        assert_eq!(
            guard.check(stamp(1, 1, started - 60_000), now),
            Err(AuthError::BeforeStart)
        );
        // A peer whose clock is a little behind is still heard right after the start.
        assert_eq!(guard.check(stamp(1, 2, started - allowance), now), Ok(()));
        assert_eq!(guard.check(stamp(1, 3, now), now), Ok(()));
    }

    #[test]
    fn replay_guard_memory_is_bounded() {
        let now = 1_700_000_000_000;
        let mut guard = ReplayGuard::default();
        for epoch in 0..(MAX_SENDERS as u64 * 3) {
            assert_eq!(
                guard.check(stamp(epoch, 0, now + epoch), now + epoch),
                Ok(())
            );
            assert!(guard.senders() <= MAX_SENDERS);
        }
        // The newest epochs are the ones kept: their replays are still refused.
        let last = MAX_SENDERS as u64 * 3 - 1;
        assert_eq!(
            guard.check(stamp(last, 0, now + last), now + last),
            Err(AuthError::Replayed)
        );
    }

    proptest! {
        /// Flipping any bit of an authenticated datagram makes it fail.
        #[test]
        fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<usize>()) {
            let key = GossipKey::new(Some(b"0123456789abcdefghijkl"));
            let mut sealed = key.seal(&payload, STAMP);
            prop_assert_eq!(key.open(&sealed), Ok((Some(STAMP), &payload[..])));
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(key.open(&sealed).is_err());
        }

        /// Whatever order stamps of one epoch arrive in, each number is accepted at most once,
        /// and every number within the window of the highest is accepted the first time.
        #[test]
        fn replay_guard_accepts_each_number_at_most_once(seqs in proptest::collection::vec(0u64..200, 0..400)) {
            let now = 1_700_000_000_000;
            let mut guard = ReplayGuard::default();
            let mut accepted = std::collections::HashSet::new();
            let mut highest = None::<u64>;
            for seq in seqs {
                let fresh_in_window = !accepted.contains(&seq)
                    && highest.is_none_or(|h| seq + WINDOW > h);
                let result = guard.check(stamp(7, seq, now), now);
                prop_assert_eq!(result.is_ok(), fresh_in_window, "seq {}", seq);
                if result.is_ok() {
                    accepted.insert(seq);
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
            }
        }
    }
}
