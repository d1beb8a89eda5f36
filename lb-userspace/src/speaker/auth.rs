//! Gossip datagram framing: every datagram carries an HMAC-SHA256 under the shared memberlist
//! key (Secret `memberlist`, key `secretkey`), so a member without the secret is ignored, and a
//! stamp (sender epoch, sequence number, send time) inside the tag, so a captured datagram
//! cannot be replayed to make a dead or partitioned speaker look alive ([`ReplayGuard`]), not
//! even to a speaker that restarted and forgot which datagrams it had seen (it refuses those sent
//! before it started). The tag also covers the destination's node name, which is not sent: a
//! datagram captured on its way to one member fails authentication at every other member, so
//! traffic between two peers can never pass for contact with a third.
//! Integrity, origin and freshness only: membership data is not confidential.
//!
//! Layout: `b"HRLD"`, one mode byte (`3` = HMAC-SHA256 with stamp and destination, `0` =
//! unauthenticated, used only when no key is configured, as MetalLB runs without encryption
//! when the secret is missing); in mode 3 the 32-byte tag and the 24-byte stamp (little-endian
//! epoch, sequence, send time in ms since the Unix epoch) follow; then the foca payload. The
//! tag covers the destination node name (length-prefixed), the stamp and the payload.
//!
//! A changed secret is rolled over by a [`Keyring`]: for [`ROTATION_OVERLAP`] after the change
//! both keys are accepted, and the old one is still used to send for the first half of it, so
//! members that see the new Secret up to half the overlap apart never refuse each other.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"HRLD";
const MODE_PLAIN: u8 = 0;
/// Mode 1 (tag over the payload only) and mode 2 (no destination in the tag) were earlier
/// layouts; both are refused as not gossip.
const MODE_HMAC_STAMPED: u8 = 3;
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

/// How long the previous key is still accepted after the memberlist secret changed; it is
/// used to send for the first half. A Secret change reaches every speaker's watch within a
/// second as a rule; half a minute covers a speaker whose watch is reconnecting.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(60);

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
    #[error(
        "authentication tag does not match (a different memberlist secret, or a datagram meant for another member)"
    )]
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

impl AuthError {
    /// Every reason, in [`AuthError::index`] order.
    pub const ALL: [AuthError; 7] = [
        AuthError::NotGossip,
        AuthError::Unauthenticated,
        AuthError::NoKey,
        AuthError::BadTag,
        AuthError::Stale,
        AuthError::Replayed,
        AuthError::BeforeStart,
    ];

    /// A short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::NotGossip => "not_gossip",
            AuthError::Unauthenticated => "unauthenticated",
            AuthError::NoKey => "no_key",
            AuthError::BadTag => "bad_tag",
            AuthError::Stale => "stale",
            AuthError::Replayed => "replayed",
            AuthError::BeforeStart => "before_start",
        }
    }

    /// Position in [`AuthError::ALL`].
    pub fn index(self) -> usize {
        match self {
            AuthError::NotGossip => 0,
            AuthError::Unauthenticated => 1,
            AuthError::NoKey => 2,
            AuthError::BadTag => 3,
            AuthError::Stale => 4,
            AuthError::Replayed => 5,
            AuthError::BeforeStart => 6,
        }
    }

    /// Whether the drop is what a clock offset between nodes causes (as well as a replay).
    pub fn is_clock(self) -> bool {
        matches!(self, AuthError::Stale | AuthError::BeforeStart)
    }
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

    /// The MAC state with the destination already fed in (length-prefixed, so no name is a
    /// prefix of another's input).
    fn mac_to(key: &[u8], to: &str) -> Hmac<Sha256> {
        let mut mac = Self::mac(key);
        let len = u32::try_from(to.len()).unwrap_or(u32::MAX);
        mac.update(&len.to_le_bytes());
        mac.update(to.as_bytes());
        mac
    }

    /// Frames `payload` for the member on node `to` (the stamp is only sent with a key).
    pub fn seal(&self, payload: &[u8], stamp: Stamp, to: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(MAGIC);
        match &self.0 {
            Some(key) => {
                out.push(MODE_HMAC_STAMPED);
                let stamp = stamp.to_bytes();
                let mut mac = Self::mac_to(key, to);
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

    /// Checks a datagram's framing and tag as received by the member on node `me`; returns its
    /// stamp (keyed mode) and payload. Freshness is the caller's [`ReplayGuard`]'s job.
    pub fn open<'a>(
        &self,
        datagram: &'a [u8],
        me: &str,
    ) -> Result<(Option<Stamp>, &'a [u8]), AuthError> {
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
                let mut mac = Self::mac_to(key, me);
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

/// The key in use and, for [`ROTATION_OVERLAP`] after a change, the one before it. Times are
/// offsets on the caller's monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    current: GossipKey,
    previous: Option<(GossipKey, Duration)>,
}

impl Keyring {
    pub fn new(key: GossipKey) -> Self {
        Keyring {
            current: key,
            previous: None,
        }
    }

    pub fn is_set(&self) -> bool {
        self.current.is_set()
    }

    /// Switches to `key` at `now`. The key it replaces stays accepted for the overlap; going
    /// from no key to a key has no overlap (unauthenticated datagrams are refused at once).
    pub fn rotate(&mut self, key: GossipKey, now: Duration) {
        if key.0 == self.current.0 {
            return;
        }
        let old = std::mem::replace(&mut self.current, key);
        self.previous = (old.is_set() && self.current.is_set()).then_some((old, now));
    }

    /// The previous key while `now` is within `window` of the change.
    fn previous_within(&self, now: Duration, window: Duration) -> Option<&GossipKey> {
        self.previous
            .as_ref()
            .filter(|(_, at)| now.saturating_sub(*at) < window)
            .map(|(key, _)| key)
    }

    /// The key to send with at `now`: the previous one for the first half of the overlap.
    pub fn sealing(&self, now: Duration) -> &GossipKey {
        self.previous_within(now, ROTATION_OVERLAP / 2)
            .unwrap_or(&self.current)
    }

    /// [`GossipKey::open`] with the current key, then with the previous one during the overlap.
    pub fn open<'a>(
        &self,
        datagram: &'a [u8],
        me: &str,
        now: Duration,
    ) -> Result<(Option<Stamp>, &'a [u8]), AuthError> {
        match self.current.open(datagram, me) {
            Err(AuthError::BadTag) => match self.previous_within(now, ROTATION_OVERLAP) {
                Some(previous) => previous.open(datagram, me),
                None => Err(AuthError::BadTag),
            },
            other => other,
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
mod tests;
