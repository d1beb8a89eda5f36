//! Speaker membership: SWIM (the `foca` crate) with every datagram authenticated by
//! [`super::auth`]. Sans-I/O: time is an offset the caller supplies and datagrams go in and out
//! as bytes, so a whole cluster (deaths, partitions, a member without the secret) is tested in
//! one process with virtual time; [`super::gossip`] drives it over UDP.
//!
//! Identities are `(node name, gossip address, bump)`. The address is foca's `Addr`: a member
//! that restarts (or is declared Down after a partition and renews itself) comes back with a
//! higher bump and replaces its old identity, so it rejoins without waiting for the cluster to
//! forget it. The election only sees node names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Config, Foca, Identity, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::auth::{self, AuthError, GossipKey, Keyring, ReplayGuard, Stamp};
use super::timing::Timing;

/// Largest datagram on the wire (fits an Ethernet MTU with IP/UDP headers).
pub const MAX_DATAGRAM: usize = 1400;

/// One speaker as the gossip knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpeakerId {
    /// The Node name (empty only for a seed address not heard from yet).
    pub node: String,
    /// Where its gossip socket is reached.
    pub addr: SocketAddr,
    /// Larger wins: the start time of the process, bumped on every renewal.
    pub bump: u64,
}

impl Identity for SpeakerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(SpeakerId {
            bump: self.bump.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// Counters of the gossip socket (exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams dropped because authentication failed (every reason).
    pub auth_failures: u64,
    /// The same, by reason, in [`AuthError::ALL`] order.
    pub dropped: [u64; AuthError::ALL.len()],
    /// Authenticated datagrams foca could not use (malformed, wrong version, ...).
    pub rejected: u64,
    pub received: u64,
    pub sent: u64,
}

/// The foca configuration for a detection target (see [`super::timing`] for the bound).
pub fn foca_config(timing: &Timing) -> Config {
    let one = NonZeroUsize::MIN;
    let mut config = Config::simple();
    config.probe_period = timing.probe_period;
    config.probe_rtt = timing.probe_rtt;
    config.num_indirect_probes = NonZeroUsize::new(2).unwrap_or(one);
    config.max_transmissions = NonZeroU8::new(6).unwrap_or(NonZeroU8::MIN);
    config.suspect_to_down_after = timing.suspect_to_down;
    config.remove_down_after = Some(Duration::from_secs(3600));
    config.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - auth::OVERHEAD).unwrap_or(one);
    config.notify_down_members = true;
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: one,
    });
    // Partition healing: keep knocking on members we consider Down, every guard budget, so
    // after a heal both sides see each other (and the loser withdraws) about as fast as a
    // guard runs out.
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: timing.guard_budget,
        num_members: NonZeroUsize::new(3).unwrap_or(one),
    });
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: timing.gossip_every,
        num_members: NonZeroUsize::new(3).unwrap_or(one),
    });
    config
}

type Swim = Foca<SpeakerId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// One member's state machine.
pub struct Membership {
    foca: Swim,
    runtime: foca::AccumulatingRuntime<SpeakerId>,
    /// Pending foca timers by (deadline, sequence).
    timers: BTreeMap<(Duration, u64), Timer<SpeakerId>>,
    seq: u64,
    now: Duration,
    keys: Keyring,
    /// Stamps of our datagrams: a random epoch per process and a counter.
    epoch: u64,
    sent_seq: u64,
    /// Wall-clock time (ms since the Unix epoch) at `now` = 0: stamps are this plus `now`.
    wall_base_ms: u64,
    replays: ReplayGuard,
    /// When a skewed peer clock was last reported (a warning a minute at most).
    skew_reported: Option<Duration>,
    outgoing: Vec<(SocketAddr, Vec<u8>)>,
    stats: Stats,
    last_contact: Option<Duration>,
    changed: bool,
    left: bool,
}

impl Membership {
    /// A member that knows nobody yet. `seed` seeds foca's random member choice and the epoch
    /// of our datagram stamps; `wall_base_ms` is the wall-clock time (ms since the Unix epoch)
    /// at `now` = 0, which the stamps' send times and the freshness check count from.
    pub fn new(
        id: SpeakerId,
        timing: &Timing,
        key: GossipKey,
        seed: u64,
        wall_base_ms: u64,
    ) -> Self {
        Membership {
            foca: Foca::new(
                id,
                foca_config(timing),
                StdRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            runtime: foca::AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            seq: 0,
            now: Duration::ZERO,
            keys: Keyring::new(key),
            epoch: seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
            sent_seq: 0,
            wall_base_ms,
            replays: ReplayGuard::default().started_at(wall_base_ms),
            skew_reported: None,
            outgoing: Vec::new(),
            stats: Stats::default(),
            last_contact: None,
            changed: true,
            left: false,
        }
    }

    pub fn identity(&self) -> &SpeakerId {
        self.foca.identity()
    }

    /// Rolls over to `key` (see [`Keyring::rotate`] for the overlap with the previous one).
    pub fn set_key(&mut self, key: GossipKey) {
        self.keys.rotate(key, self.now);
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// Asks `seeds` (node name and gossip address of other speakers) to let us in. Addresses
    /// that are already live members, and our own, are skipped.
    pub fn join(&mut self, seeds: &[(String, SocketAddr)], now: Duration) {
        self.advance(now);
        if self.left {
            return;
        }
        let known: BTreeSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let me = self.identity().addr;
        for (node, seed) in seeds {
            if *seed == me || known.contains(seed) {
                continue;
            }
            // Named, so the datagrams to it are sealed for its node; bump 0 loses to the
            // identity it answers with.
            let placeholder = SpeakerId {
                node: node.clone(),
                addr: *seed,
                bump: 0,
            };
            if let Err(error) = self.foca.announce(placeholder, &mut self.runtime) {
                tracing::debug!(%seed, %error, "gossip announce failed");
            }
        }
        self.drain();
    }

    /// Feeds one datagram received from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Duration,
    ) -> Result<(), AuthError> {
        self.advance(now);
        let now_ms = self.wall_ms();
        let me = &self.foca.identity().node;
        let opened = self
            .keys
            .open(datagram, me, self.now)
            .map_err(|e| (e, None))
            .and_then(|(stamp, payload)| {
                if let Some(stamp) = stamp {
                    self.replays
                        .check(stamp, now_ms)
                        .map_err(|e| (e, Some(stamp)))?;
                }
                Ok(payload)
            });
        let payload = match opened {
            Ok(payload) => payload,
            Err((e, stamp)) => {
                self.dropped(from, e, stamp, now_ms);
                return Err(e);
            }
        };
        self.stats.received += 1;
        if self.left {
            return Ok(());
        }
        match self.foca.handle_data(payload, &mut self.runtime) {
            Ok(()) => self.last_contact = Some(self.now),
            Err(error) => {
                self.stats.rejected += 1;
                tracing::debug!(%from, %error, "gossip payload rejected");
            }
        }
        self.drain();
        Ok(())
    }

    /// Counts a dropped datagram; a drop a clock offset explains is logged as a warning (once a
    /// minute at most) with the offset, the others at debug level.
    fn dropped(&mut self, from: SocketAddr, e: AuthError, stamp: Option<Stamp>, now_ms: u64) {
        self.stats.auth_failures += 1;
        self.stats.dropped[e.index()] += 1;
        let quiet = self
            .skew_reported
            .is_some_and(|at| self.now < at + Duration::from_secs(60));
        match stamp {
            Some(stamp) if e.is_clock() && !quiet => {
                // Not an attack as a rule: a node whose clock is off cannot gossip.
                self.skew_reported = Some(self.now);
                #[allow(clippy::cast_possible_wrap, reason = "ms since 1970 fit an i64")]
                let offset_ms = stamp.sent_ms as i64 - now_ms as i64;
                tracing::warn!(
                    %from,
                    reason = e.reason(),
                    peer_clock_offset_ms = offset_ms,
                    error = %e,
                    "gossip datagram dropped; check the nodes' clocks"
                );
            }
            _ => tracing::debug!(%from, reason = e.reason(), error = %e, "gossip datagram dropped"),
        }
    }

    /// Fires every foca timer due at `now`.
    pub fn handle_due(&mut self, now: Duration) {
        self.advance(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let timer = entry.remove();
            if self.left {
                continue;
            }
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "gossip timer failed");
            }
            self.drain();
        }
    }

    /// When the next timer is due.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Leaves the cluster: the members we know learn it at once and take over.
    pub fn leave(&mut self, now: Duration) {
        self.advance(now);
        if self.left {
            return;
        }
        // Marked first: leaving makes foca report itself Defunct, which must not be undone.
        self.left = true;
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(%error, "leaving the gossip failed");
        }
        self.drain();
        self.changed = true;
    }

    /// Wall-clock time of `now`, in ms since the Unix epoch.
    fn wall_ms(&self) -> u64 {
        self.wall_base_ms
            .saturating_add(u64::try_from(self.now.as_millis()).unwrap_or(u64::MAX))
    }

    fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.stats.sent += 1;
            let stamp = Stamp {
                epoch: self.epoch,
                seq: self.sent_seq,
                sent_ms: self.wall_ms(),
            };
            self.sent_seq += 1;
            let sealed = self.keys.sealing(self.now).seal(&data, stamp, &to.node);
            self.outgoing.push((to.addr, sealed));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            self.timers.insert((self.now + after, self.seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            match &notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(node = %id.node, addr = %id.addr, "speaker joined");
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(node = %id.node, addr = %id.addr, "speaker down");
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(bump = id.bump, "declared down by peers; rejoined");
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("declared down by peers; reusing identity");
                    if !self.left {
                        let _ = self.foca.reuse_down_identity();
                    }
                }
                _ => {}
            }
            self.changed = true;
        }
    }

    /// Datagrams to send: (address, bytes).
    pub fn take_outgoing(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.outgoing)
    }

    /// True once after the member list changed.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Node names of live speakers (alive or suspect), this one included unless it left.
    pub fn live_nodes(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .foca
            .iter_members()
            .map(|m| m.id().node.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if !self.left {
            out.insert(self.identity().node.clone());
        }
        out
    }

    /// Whether any live peer (another node) is in the view.
    pub fn peers_in_view(&self) -> bool {
        let me = &self.identity().node;
        self.foca
            .iter_members()
            .any(|m| !m.id().node.is_empty() && m.id().node != *me)
    }

    /// When an authenticated datagram was last accepted.
    pub fn last_contact(&self) -> Option<Duration> {
        self.last_contact
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
