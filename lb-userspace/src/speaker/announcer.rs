//! Announcing: making the network deliver this node's share of addresses. [`Announcer`] is what
//! the speaker's reconcile asks of any way to announce; [`L2Announcer`] does it in layer 2 over an
//! [`L2Plane`] (ARP/NDP answered from the XDP maps, gratuitous rounds, interfaces made
//! answerable). A BGP announcer sits beside it, taking the same plan.
//!
//! Order on every pass: withdraw entries on interfaces no longer used, then the withdrawals that
//! are due (a hand-over waits out the guard budget so the new owner overlaps the old), then the
//! new announcements, each followed by a gratuitous round. A failed announcement becomes a
//! warning Event on its Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dataplane::ServedBy;
use crate::dataplane::cadence::{Cadence, Windows};
use crate::dataplane::keys::Mac;
use crate::dataplane::netdev::{self, Interface};
use crate::dataplane::plane::L2Plane;
use crate::dataplane::xdp_mode::ModeChange;
use crate::speaker::interfaces::{self, Eligible, InterfaceFacts, InterfaceFilter};
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, ClaimSeen, Plan, PlannedEvent, Target};
use crate::speaker::unanswerable::{self, Refused};

/// What the speaker's reconcile asks of a way to announce addresses.
pub trait Announcer {
    /// Brings what this node announces in line with `plan` at `now` (time since start);
    /// returns a warning Event for each announcement that failed.
    fn apply(&mut self, plan: &Plan, now: Duration) -> BTreeSet<PlannedEvent>;
    /// Stops announcing everything (graceful shutdown).
    fn withdraw_everything(&mut self);
}

/// Layer-2 announcing over a data plane.
/// What one look at the data plane found for the reconcile loop to report.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Claims by other MACs on announced addresses.
    pub claims: Vec<ClaimSeen>,
    /// XDP links that started in or moved to another mode than asked.
    pub mode_changes: Vec<ModeChange>,
}

pub struct L2Announcer<P: L2Plane> {
    plane: P,
    filter: InterfaceFilter,
    guard_budget: Duration,
    windows: Windows<Target>,
    /// Eligible interfaces with a responder (XDP or userspace), by name.
    ifaces: BTreeMap<String, Interface>,
    eligible: Eligible,
    /// Eligible interfaces whose responder was refused at the last scan, with the reason.
    refused: Refused,
    /// Withdrawals waiting out the hand-over overlap, with when they were first planned.
    handover: BTreeMap<Target, Duration>,
    /// What the last applied plan wants answered.
    targets: BTreeSet<Target>,
    metrics: Arc<SpeakerMetrics>,
}

impl<P: L2Plane> L2Announcer<P> {
    pub fn new(
        plane: P,
        filter: InterfaceFilter,
        guard_budget: Duration,
        metrics: Arc<SpeakerMetrics>,
    ) -> Self {
        L2Announcer {
            plane,
            filter,
            guard_budget,
            windows: Windows::new(Cadence::default()),
            ifaces: BTreeMap::new(),
            eligible: Eligible::default(),
            refused: Refused::new(),
            handover: BTreeMap::new(),
            targets: BTreeSet::new(),
            metrics,
        }
    }

    pub fn plane(&self) -> &P {
        &self.plane
    }

    /// The interfaces addresses can be announced on, per family.
    pub fn eligible(&self) -> &Eligible {
        &self.eligible
    }

    /// Interfaces eligible at the last scan that cannot answer, with the reason, and how many
    /// do answer.
    pub fn answerable(&self) -> (&Refused, usize) {
        (&self.refused, self.ifaces.len())
    }

    /// Hand-overs still waiting: the reconcile loop must look again soon.
    pub fn handover_pending(&self) -> bool {
        !self.handover.is_empty()
    }

    /// Takes a fresh interface listing: makes every eligible interface answerable and drops the
    /// ones that cannot be; true when the usable set changed.
    pub fn rescan(&mut self, facts: &[InterfaceFacts]) -> bool {
        let mut eligible = interfaces::eligible(facts, &self.filter);
        let mut ifaces = BTreeMap::new();
        let mut served = Vec::new();
        let mut refused = Refused::new();
        for name in eligible.all() {
            let result = self
                .plane
                .interface(&name)
                .and_then(|iface| self.plane.attach(&iface).map(|by| (iface, by)));
            match result {
                Ok((iface, by)) => {
                    served.push((name.clone(), by));
                    ifaces.insert(name, iface);
                }
                Err(error) => {
                    let error = unanswerable::describe(&error);
                    tracing::warn!(iface = %name, %error, "cannot answer on this interface; not used");
                    eligible.ipv4.remove(&name);
                    eligible.ipv6.remove(&name);
                    refused.insert(name, error);
                }
            }
        }
        for gone in self.ifaces.keys().filter(|n| !ifaces.contains_key(*n)) {
            tracing::warn!(iface = %gone, "interface no longer eligible (gone, down or excluded)");
        }
        let userspace: BTreeSet<String> = served
            .iter()
            .filter(|(_, by)| *by == ServedBy::Userspace)
            .map(|(name, _)| name.clone())
            .collect();
        self.plane.release_unused(&userspace);
        self.metrics.set_dataplane_modes(
            &served
                .iter()
                .map(|(name, by)| (name.clone(), by.as_str()))
                .collect::<Vec<_>>(),
        );
        let changed = eligible != self.eligible
            || ifaces
                .iter()
                .any(|(n, i)| self.ifaces.get(n).map(|o| o.index) != Some(i.index));
        if changed {
            tracing::info!(ipv4 = ?eligible.ipv4, ipv6 = ?eligible.ipv6, "eligible interfaces");
        }
        self.eligible = eligible;
        self.ifaces = ifaces;
        self.refused = refused;
        changed
    }

    /// What the data plane holds, as targets; entries on interfaces not in use are `stale`.
    fn current(&self) -> (BTreeSet<Target>, Vec<(u32, IpAddr)>) {
        let mut known = BTreeSet::new();
        let mut stale = Vec::new();
        match self.plane.keys() {
            Ok(keys) => {
                for key in keys {
                    match self.ifaces.iter().find(|(_, i)| i.index == key.ifindex()) {
                        Some((name, _)) => {
                            known.insert(Target {
                                iface: name.clone(),
                                ip: key.ip(),
                            });
                        }
                        None => stale.push((key.ifindex(), key.ip())),
                    }
                }
            }
            Err(error) => tracing::error!(%error, "reading the announced addresses failed"),
        }
        (known, stale)
    }

    fn withdraw_stale(&mut self, stale: Vec<(u32, IpAddr)>) {
        for (ifindex, ip) in stale {
            // The entry goes even when leaving the multicast group fails (interface gone).
            let _ = self.plane.withdraw(&ghost_interface(ifindex), ip);
            tracing::info!(ifindex, %ip, "withdrew an address on an interface no longer used");
        }
    }

    fn send_round(&mut self, iface: &Interface, ip: IpAddr, mac: Mac) {
        match self.plane.gratuitous(iface, ip, mac) {
            Ok(packets) => self.metrics.gratuitous_sent(ip, u64::from(packets)),
            Err(error) => {
                tracing::warn!(iface = %iface.name, %ip, %error, "gratuitous send failed");
            }
        }
    }

    /// Sends the gratuitous rounds due at `now` for what is announced.
    pub fn gratuitous_tick(&mut self, now: Duration) {
        let due = self.windows.tick(now);
        let due: Vec<Target> = due
            .into_iter()
            .filter(|t| self.targets.contains(t))
            .collect();
        for t in due {
            if let Some(iface) = self.ifaces.get(&t.iface).cloned() {
                self.send_round(&iface, t.ip, iface.mac);
            }
        }
    }

    /// One gratuitous round for every announced address (`--reannounce-interval`).
    pub fn reannounce(&mut self) {
        for t in self.targets.clone() {
            if let Some(iface) = self.ifaces.get(&t.iface).cloned() {
                self.send_round(&iface, t.ip, iface.mac);
            }
        }
    }

    /// Folds the data plane's counters into the metrics; returns the claims by other MACs on
    /// announced addresses and the XDP mode changes seen since the last call.
    pub fn observe(&mut self) -> Seen {
        match self.plane.observe() {
            Ok(observed) => {
                self.metrics.observe_addresses(&observed.addresses);
                self.metrics.observe_fallback(&observed.userspace);
                self.metrics
                    .observe_edges(&observed.edges, &observed.claims);
                for change in &observed.mode_changes {
                    self.metrics.xdp_mode_changed(change);
                }
                let claims = observed
                    .claims
                    .iter()
                    .map(|c| ClaimSeen {
                        ip: c.ip,
                        mac: c.mac.to_string(),
                        iface: self
                            .ifaces
                            .iter()
                            .find(|(_, i)| i.index == c.ifindex)
                            .map(|(name, _)| name.clone()),
                    })
                    .collect();
                Seen {
                    claims,
                    mode_changes: observed.mode_changes,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading data-plane counters failed");
                Seen::default()
            }
        }
    }

    /// Stops this process's answerers (links and maps stay pinned).
    pub fn shutdown(&mut self) {
        self.plane.shutdown();
    }
}

impl<P: L2Plane> Announcer for L2Announcer<P> {
    fn apply(&mut self, plan: &Plan, now: Duration) -> BTreeSet<PlannedEvent> {
        let (current, stale) = self.current();
        self.withdraw_stale(stale);
        let desired = plan.targets();
        let changes = plan::diff(&current, &desired);
        let due = plan::due_withdrawals(
            &mut self.handover,
            &changes.withdraw,
            now,
            self.guard_budget,
        );
        for t in &due {
            self.windows.forget(t);
            if let Some(iface) = self.ifaces.get(&t.iface)
                && let Err(error) = self.plane.withdraw(iface, t.ip)
            {
                tracing::error!(iface = %t.iface, ip = %t.ip, %error, "withdraw failed");
            }
            tracing::info!(iface = %t.iface, ip = %t.ip, "withdrawn");
        }
        let mut failed = BTreeSet::new();
        for t in &changes.announce {
            let Some(iface) = self.ifaces.get(&t.iface).cloned() else {
                continue;
            };
            match self.plane.announce(&iface, t.ip) {
                Ok(mac) => {
                    tracing::info!(iface = %t.iface, ip = %t.ip, "announced");
                    if self.windows.apply(t.clone(), now) {
                        self.send_round(&iface, t.ip, mac);
                    }
                }
                Err(error) => {
                    tracing::error!(iface = %t.iface, ip = %t.ip, %error, "announce failed");
                    if let Some(s) = plan.services.values().find(|s| s.targets.contains(t)) {
                        failed.insert(PlannedEvent {
                            namespace: s.namespace.clone(),
                            name: s.name.clone(),
                            warning: true,
                            reason: "announceFailed",
                            message: format!("announcing {} on {}: {error}", t.ip, t.iface),
                        });
                    }
                }
            }
        }
        self.targets = desired;
        failed
    }

    fn withdraw_everything(&mut self) {
        let (current, stale) = self.current();
        for t in current {
            if let Some(iface) = self.ifaces.get(&t.iface)
                && let Err(error) = self.plane.withdraw(iface, t.ip)
            {
                tracing::error!(iface = %t.iface, ip = %t.ip, %error, "withdraw failed");
            }
        }
        self.withdraw_stale(stale);
        self.targets.clear();
    }
}

/// Just enough of an interface to withdraw an address entered on `ifindex`, which may be gone or
/// no longer eligible (the map key is the index; the name is only for leaving multicast groups).
fn ghost_interface(ifindex: u32) -> Interface {
    Interface {
        name: netdev::name_of(ifindex).unwrap_or_default(),
        index: ifindex,
        mac: Mac([0; 6]),
        hw_type: libc::ARPHRD_ETHER,
        noarp: false,
        loopback: false,
    }
}
