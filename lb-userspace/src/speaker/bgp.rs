//! BGP announcing beside layer 2, on the same seam: [`BgpAnnouncer`] hands the plan's BGP part
//! to this node's sessions on every pass, and [`Both`] lets one pass drive the layer-2 and the
//! BGP announcer together, so an address selected by an L2Advertisement and a BGPAdvertisement
//! is announced both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bgp::metrics::BgpMetrics;
use crate::bgp::policy::{BgpPlan, SessionSpec};
use crate::bgp::session::Report;
use crate::bgp::sessions::{Board, Passwords, Sessions};
use crate::config::BgpMode;
use crate::speaker::announcer::Announcer;
use crate::speaker::plan::{Plan, PlannedEvent};

/// The BGP side of the speaker.
pub struct BgpAnnouncer {
    sessions: Sessions,
    passwords: Passwords,
    /// The sessions of the last plan (withdrawing everything keeps them, with no routes).
    sessions_applied: BTreeMap<String, SessionSpec>,
}

impl BgpAnnouncer {
    pub fn new(
        node: String,
        mode: BgpMode,
        metrics: BgpMetrics,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Self {
        BgpAnnouncer {
            sessions: Sessions::new(node, mode, metrics, reports),
            passwords: Passwords::new(),
            sessions_applied: BTreeMap::new(),
        }
    }

    /// The passwords resolved from the BGPPeers and their Secrets, for the next pass.
    pub fn set_passwords(&mut self, passwords: Passwords) {
        self.passwords = passwords;
    }

    /// The node's addresses (next hops for the family a session's transport is not).
    pub fn set_node_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.sessions.set_node_addresses(addresses);
    }

    /// The live picture of the sessions (`/status/bgp`).
    pub fn board(&self) -> Board {
        self.sessions.board()
    }

    /// Closes every session with a Cease NOTIFICATION.
    pub async fn shutdown(&mut self) {
        self.sessions.shutdown(Duration::from_secs(3)).await;
    }
}

impl Announcer for BgpAnnouncer {
    fn apply(&mut self, plan: &Plan, _now: Duration) -> BTreeSet<PlannedEvent> {
        self.sessions.apply(&plan.bgp, &self.passwords);
        self.sessions_applied.clone_from(&plan.bgp.sessions);
        BTreeSet::new()
    }

    fn withdraw_everything(&mut self) {
        let empty = BgpPlan {
            sessions: self.sessions_applied.clone(),
            ..Default::default()
        };
        self.sessions.apply(&empty, &self.passwords);
    }
}

/// Two announcers driven as one: the first applies before the second.
pub struct Both<'a, A, B>(pub &'a mut A, pub &'a mut B);

impl<A: Announcer, B: Announcer> Announcer for Both<'_, A, B> {
    fn apply(&mut self, plan: &Plan, now: Duration) -> BTreeSet<PlannedEvent> {
        let mut failed = self.0.apply(plan, now);
        failed.extend(self.1.apply(plan, now));
        failed
    }

    fn withdraw_everything(&mut self) {
        self.0.withdraw_everything();
        self.1.withdraw_everything();
    }
}
