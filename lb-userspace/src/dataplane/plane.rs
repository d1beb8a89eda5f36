//! The seam between the speaker and a layer-2 data plane: what the speaker asks of it (make an
//! interface answerable, announce, withdraw, list what is announced, send gratuitous rounds,
//! read counters, a guard handle for the heartbeat thread), implemented over the pinned XDP maps
//! and this process's answerers by [`AyaPlane`], and in memory by [`super::fake::FakePlane`] for
//! the speaker's unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::answerers::{self, Answerers, Serving};
use super::edges::{ClaimTracker, EdgeCounters, ForeignClaim};
use super::fallback::FallbackCounts;
use super::gratuitous::Sender;
use super::heartbeat::Guard;
use super::keys::{AddrKey, Mac};
use super::netdev::Interface;
use super::xdp_mode::{ModeChange, SkbReason, TxWatch};
use super::{AttachMode, AttachedMode, Dataplane, DataplaneChoice, Result, ServedBy};

/// One announced address's counters: `(ifindex, ip, requests, replies)`.
pub type AddressReading = (u32, IpAddr, u64, u64);

/// What one look at the data plane's counters found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub addresses: Vec<AddressReading>,
    /// Userspace responders' counters, by interface.
    pub userspace: Vec<(String, FallbackCounts)>,
    /// Foreign claims on announced addresses seen since the previous `observe` (by the XDP
    /// program; none before this process opened the plane): another MAC said the address is
    /// theirs (gratuitous ARP, ARP reply, Neighbor Advertisement). Two answerers, one address.
    pub claims: Vec<ForeignClaim>,
    /// The XDP program's counters of unusual requests and claims (running totals).
    pub edges: EdgeCounters,
    /// Links that started in or moved to another mode than asked, since the previous look.
    pub mode_changes: Vec<ModeChange>,
}

/// What the layer-2 speaker asks of the data plane.
pub trait L2Plane {
    /// The guard handle the heartbeat thread writes through (its own handle, its own thread).
    type Guard: Guard;

    /// The interface named `name` as the kernel has it now.
    fn interface(&self, name: &str) -> Result<Interface>;
    /// Makes something answer ARP/NDP on `iface` (idempotent); says who.
    fn attach(&mut self, iface: &Interface) -> Result<ServedBy>;
    /// Stops this process's answerers on interfaces not in `keep` (pinned XDP links stay).
    fn release_unused(&mut self, keep: &BTreeSet<String>);
    /// Answers for `ip` on `iface` from now on, with the interface's MAC; returns that MAC.
    fn announce(&mut self, iface: &Interface, ip: IpAddr) -> Result<Mac>;
    /// Stops answering for `ip` on `iface`; false when it was not announced.
    fn withdraw(&mut self, iface: &Interface, ip: IpAddr) -> Result<bool>;
    /// Every announced (ifindex, address).
    fn keys(&self) -> Result<Vec<AddrKey>>;
    /// One gratuitous round (ARP or unsolicited NA) for `ip` on `iface`; packets sent.
    fn gratuitous(&mut self, iface: &Interface, ip: IpAddr, mac: Mac) -> Result<u32>;
    /// Reads counters and the foreign claims new since the previous call, and restarts
    /// answerers of this process that ended on their own.
    fn observe(&mut self) -> Result<Observed>;
    /// A handle for the guard thread.
    fn guard(&self) -> Result<Self::Guard>;
    /// Stops this process's answerers (pinned XDP links stay, answering from the maps).
    fn shutdown(&mut self);
}

/// The real data plane: the maps and links pinned under one directory, and this process's
/// answerers.
pub struct AyaPlane {
    pin_dir: PathBuf,
    dp: Dataplane,
    answerers: Answerers,
    sender: Option<Sender>,
    claims: ClaimTracker,
    mode: AttachMode,
    /// Driver-mode links under `auto`, by interface index: are their replies leaving?
    watches: BTreeMap<u32, TxWatch>,
    /// Mode changes not yet reported by [`L2Plane::observe`].
    changes: Vec<ModeChange>,
}

impl AyaPlane {
    /// Opens (or creates) the maps under `pin_dir`. Without a gratuitous socket it still
    /// answers requests; it says so once.
    pub fn open(pin_dir: &Path, choice: DataplaneChoice, mode: AttachMode) -> Result<AyaPlane> {
        let dp = Dataplane::open(pin_dir)?;
        let claims = ClaimTracker::starting_from(&dp.claims()?);
        let sender = Sender::open()
            .map_err(|error| tracing::warn!(%error, "no gratuitous sender"))
            .ok();
        Ok(AyaPlane {
            pin_dir: pin_dir.to_path_buf(),
            dp,
            answerers: Answerers::new(pin_dir, choice, mode),
            sender,
            claims,
            mode,
            watches: BTreeMap::new(),
            changes: Vec::new(),
        })
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    /// Under `auto`, moves a driver-mode link whose replies are dropped on transmit to skb mode
    /// ([`TxWatch`]).
    fn watch_driver_links(&mut self, addresses: &[super::AddressInfo]) {
        if self.mode != AttachMode::Auto {
            return;
        }
        let links = match super::pins::link_pins(&self.pin_dir) {
            Ok(links) => links,
            Err(error) => {
                tracing::warn!(%error, "listing XDP links failed");
                return;
            }
        };
        let mut watched = BTreeMap::new();
        for (name, mode, _) in links {
            if mode != AttachedMode::Driver {
                continue;
            }
            let Ok(iface) = Interface::by_name(&name) else {
                continue;
            };
            let replies: u64 = addresses
                .iter()
                .filter(|a| a.ifindex == iface.index)
                .map(|a| a.replies)
                .sum();
            let Ok(dropped) = super::netdev::tx_dropped(iface.index) else {
                continue;
            };
            let mut watch = self.watches.remove(&iface.index).unwrap_or_default();
            if !watch.replies_dropped(replies, dropped) {
                watched.insert(iface.index, watch);
                continue;
            }
            match self.dp.move_link(
                &iface,
                AttachedMode::Driver,
                AttachedMode::Skb,
                Some(SkbReason::TxDropped),
            ) {
                Ok(attached) => {
                    if let Some(change) = ModeChange::of(&attached) {
                        tracing::warn!(iface = %name, reason = change.reason, "{}", change.message);
                        self.changes.push(change);
                    }
                }
                Err(error) => {
                    tracing::error!(iface = %name, %error, "moving the XDP link to skb mode failed");
                }
            }
        }
        self.watches = watched;
    }

    /// Writes the per-source rate limit the XDP program applies to answers.
    pub fn set_rate_limit(&mut self, limit: lb_common::ratelimit::RateLimit) -> Result<()> {
        self.dp.set_rate_limit(limit)
    }

    /// Writes the flood guard the XDP program applies to frames it passes unanswered.
    pub fn set_flood_limit(&mut self, limit: lb_common::ratelimit::RateLimit) -> Result<()> {
        self.dp.set_flood_limit(limit)
    }
}

impl L2Plane for AyaPlane {
    type Guard = Dataplane;

    fn interface(&self, name: &str) -> Result<Interface> {
        Interface::by_name(name)
    }

    fn attach(&mut self, iface: &Interface) -> Result<ServedBy> {
        let serving = self.answerers.serve(&mut self.dp, iface)?;
        if let Serving::Xdp(attached) = &serving
            && !attached.already
        {
            if let Some(change) = ModeChange::of(attached) {
                tracing::warn!(iface = %iface.name, mode = %attached.mode, reason = change.reason, "{}", change.message);
                self.changes.push(change);
            } else {
                tracing::info!(iface = %iface.name, mode = %attached.mode, "XDP attached");
            }
        }
        Ok(serving.served_by())
    }

    fn release_unused(&mut self, keep: &BTreeSet<String>) {
        self.answerers.retain(&mut self.dp, keep);
    }

    fn announce(&mut self, iface: &Interface, ip: IpAddr) -> Result<Mac> {
        Ok(self.dp.announce(iface, ip, None)?.mac)
    }

    fn withdraw(&mut self, iface: &Interface, ip: IpAddr) -> Result<bool> {
        self.dp.withdraw(iface, ip)
    }

    fn keys(&self) -> Result<Vec<AddrKey>> {
        self.dp.keys()
    }

    fn gratuitous(&mut self, iface: &Interface, ip: IpAddr, mac: Mac) -> Result<u32> {
        match &self.sender {
            Some(sender) => sender.announce(iface, ip, mac),
            None => Ok(0),
        }
    }

    fn observe(&mut self) -> Result<Observed> {
        // A responder ends on its own only when its socket is gone: restart it at once if the
        // interface is still the same one (a deleted or re-created one is left to the rescan).
        for ended in self.answerers.take_ended(&mut self.dp) {
            answerers::log_ended(&ended);
            match Interface::by_name(&ended.iface) {
                Ok(iface) if iface.index == ended.index => {
                    if let Err(error) = self.answerers.serve(&mut self.dp, &iface) {
                        tracing::warn!(iface = %iface.name, %error, "restarting the userspace responder failed");
                    }
                }
                _ => {}
            }
        }
        let snapshot = self.dp.snapshot()?;
        self.watch_driver_links(&snapshot.addresses);
        Ok(Observed {
            addresses: snapshot
                .addresses
                .iter()
                .map(|a| (a.ifindex, a.ip, a.requests, a.replies))
                .collect(),
            userspace: self.answerers.counts(),
            claims: self.claims.update(&self.dp.claims()?),
            edges: snapshot.edges,
            mode_changes: std::mem::take(&mut self.changes),
        })
    }

    fn guard(&self) -> Result<Dataplane> {
        Dataplane::open(&self.pin_dir)
    }

    fn shutdown(&mut self) {
        for ended in self.answerers.stop_all() {
            answerers::log_ended(&ended);
        }
    }
}
