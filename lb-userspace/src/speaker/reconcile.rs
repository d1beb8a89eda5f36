//! One reconcile pass of the speaker, from values: the cluster as the watches see it and the live
//! speakers in, data-plane changes (through an [`Announcer`]) and API writes (queued as
//! [`Write`]s for the writer task) out.
//!
//! Order: the configuration is rebuilt (an invalid one keeps the last good one and is reported
//! in ConfigurationState); the plan is computed; the announcer applies it (withdrawals, then
//! announcements); then Events (new ones only, failed announcements included) and the
//! ServiceL2Status and ServiceBGPStatus sets are queued — the API server never delays the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use crate::bgp::session::Report;
use crate::config::{self, Config, Snapshot};
use crate::dataplane::xdp_mode::ModeChange;
use crate::election::{Cluster, SlicesByService};
pub use crate::k8s::speaker::ClusterView;
use crate::speaker::announcer::Announcer;
use crate::speaker::interfaces::Eligible;
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, ClaimSeen, Inputs, Plan, PlannedEvent};
use crate::speaker::status::DesiredStatuses;

/// How often one (address, MAC) claim is reported again while it goes on.
pub const CLAIM_REPORT_EVERY: Duration = Duration::from_secs(60);

/// A write for the API writer task, in the order the pass made them.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Bring this node's ServiceL2Status and ServiceBGPStatus objects to the newest
    /// [`PendingStatuses`].
    Statuses,
    /// An Event on a Service, with the Service's uid when known.
    Event(PlannedEvent, Option<String>),
    /// ConfigurationState `speaker-<node>`: `None` = valid, else the error summary; owner Pod.
    ConfigState(Option<String>, Option<Box<Pod>>),
    /// An Event on a BGPPeer (its session came up, went down or could not start).
    PeerEvent(PeerEvent),
    /// An Event on this node's Node object: `(warning, reason, message)`.
    NodeEvent(bool, &'static str, String),
}

/// The newest desired ServiceL2Status and ServiceBGPStatus sets of this node, with the owner
/// Pod, waiting for the writer. Each pass replaces what is pending, so an API server slower than
/// the passes costs one pending set, never a queue of them.
#[derive(Clone, Default)]
pub struct PendingStatuses(Arc<Mutex<Option<StatusSets>>>);

/// The desired status sets and the owner Pod of the objects.
pub type StatusSets = (DesiredStatuses, Option<Box<Pod>>);

impl PendingStatuses {
    /// Stores `statuses`; true when none was pending (the writer then needs a
    /// [`Write::Statuses`] to look).
    fn put(&self, statuses: DesiredStatuses, owner: Option<Box<Pod>>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((statuses, owner))
            .is_none()
    }

    /// The newest pending sets, if any; nothing is pending afterwards.
    pub fn take(&self) -> Option<StatusSets> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// An Event on a BGPPeer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEvent {
    pub peer: String,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl PeerEvent {
    /// The Event a session report stands for.
    pub fn from_report(report: &Report, node: &str) -> PeerEvent {
        match report {
            Report::Up { peer } => PeerEvent {
                peer: peer.clone(),
                warning: false,
                reason: "sessionUp",
                message: format!("BGP session from node {node:?} established"),
            },
            Report::Down { peer, reason } => PeerEvent {
                peer: peer.clone(),
                warning: true,
                reason: "sessionDown",
                message: format!("BGP session from node {node:?} down: {reason}"),
            },
        }
    }
}

/// What a pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Pass {
    /// A plan was applied (with this configuration or the last good one).
    Applied,
    /// No valid configuration has been seen yet: nothing was planned. Whatever the data plane
    /// still holds from before cannot be justified and must not be answered.
    NoConfig,
}

/// Per-process settings a pass reads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node: String,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    /// `METALLB_BGP_TYPE`: which BGP rules the configuration is checked against.
    pub bgp_mode: config::BgpMode,
}

/// The speaker's memory between passes.
pub struct Reconciler {
    settings: Settings,
    config: Option<Config>,
    /// The last ConfigurationState verdict sent (`Some(None)` = valid).
    #[allow(
        clippy::option_option,
        reason = "None: nothing sent yet; Some(None): valid was sent"
    )]
    verdict: Option<Option<String>>,
    events: BTreeSet<PlannedEvent>,
    plan: Plan,
    /// Service key → uid, from the last pass.
    uids: BTreeMap<String, String>,
    /// This speaker's Pod as the last pass saw it (the owner of the objects it writes).
    owner: Option<Box<Pod>>,
    /// When each (address, MAC) claim was last reported.
    claims_reported: BTreeMap<(std::net::IpAddr, String), Duration>,
    metrics: Arc<SpeakerMetrics>,
    writes: mpsc::UnboundedSender<Write>,
    statuses: PendingStatuses,
}

impl Reconciler {
    pub fn new(
        settings: Settings,
        metrics: Arc<SpeakerMetrics>,
        writes: mpsc::UnboundedSender<Write>,
    ) -> Reconciler {
        Reconciler {
            settings,
            config: None,
            verdict: None,
            events: BTreeSet::new(),
            plan: Plan::default(),
            uids: BTreeMap::new(),
            owner: None,
            claims_reported: BTreeMap::new(),
            metrics,
            writes,
            statuses: PendingStatuses::default(),
        }
    }

    /// Where the writer finds the status sets each [`Write::Statuses`] stands for.
    pub fn pending_statuses(&self) -> PendingStatuses {
        self.statuses.clone()
    }

    fn send_statuses(&self, statuses: DesiredStatuses, owner: Option<Box<Pod>>) {
        if self.statuses.put(statuses, owner) {
            let _ = self.writes.send(Write::Statuses);
        }
    }

    /// The plan of the last pass that had a valid configuration.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// One pass at `now` (time since start): `live` speakers (`None` without memberlist) and
    /// the interfaces the announcer can use.
    pub fn reconcile(
        &mut self,
        view: &ClusterView,
        live: Option<&BTreeSet<String>>,
        eligible: &Eligible,
        announcer: &mut impl Announcer,
        now: Duration,
    ) -> Pass {
        let owner = || view.own_pod.clone().map(Box::new);
        let snapshot = Snapshot {
            pools: view.pools.clone(),
            l2_advertisements: view.l2_advertisements.clone(),
            bgp_advertisements: view.bgp_advertisements.clone(),
            peers: view.bgp_peers.clone(),
            communities: view.communities.clone(),
            bfd_profiles: view.bfd_profiles.clone(),
            namespaces: view.namespaces.clone(),
            nodes: view.nodes.clone(),
            secrets: view.password_secrets.clone(),
            bgp_extras: view.bgp_extras.clone(),
            bgp_mode: self.settings.bgp_mode,
            skip_mode_rules: false,
        };
        // Objects that could not be read make the configuration invalid: what is missing from
        // the caches must not silently shrink it. The last valid one keeps serving.
        let verdict = match (config::build(&snapshot), view.rejected.is_empty()) {
            (Ok(config), true) => {
                self.config = Some(config);
                self.metrics.config_loaded.set(1);
                self.metrics.config_stale.set(0);
                None
            }
            (built, _) => {
                self.metrics.config_stale.set(1);
                let mut lines = view.rejected.clone();
                if let Err(errors) = built {
                    lines.extend(errors.iter().map(ToString::to_string));
                }
                for e in &lines {
                    tracing::error!(error = %e, "configuration rejected; keeping the last good one");
                }
                Some(lines.join("\n"))
            }
        };
        if self.verdict.as_ref() != Some(&verdict) {
            let _ = self
                .writes
                .send(Write::ConfigState(verdict.clone(), owner()));
            self.verdict = Some(verdict);
        }
        let Some(config) = &self.config else {
            tracing::warn!("no valid configuration yet: not announcing anything");
            return Pass::NoConfig;
        };
        let slices = SlicesByService::of_shared(&view.endpoint_slices);
        let plan = plan::plan(&Inputs {
            cluster: Cluster {
                node: &self.settings.node,
                config,
                services: &view.services,
                slices: &slices,
                nodes: &view.nodes,
                lb_class: self.settings.lb_class.as_deref(),
                ignore_exclude_lb: self.settings.ignore_exclude_lb,
            },
            live_speakers: live,
            interfaces: eligible,
        });
        for p in &plan.problems {
            tracing::warn!(service = %p.service, problem = %p.message, "service skipped");
        }

        // Data plane first.
        let failed = announcer.apply(&plan, now);

        // Then the API server, through the writer task.
        let node = &self.settings.node;
        self.metrics.set_announced(node, &plan.announced());
        self.metrics.set_announced_bgp(node, &plan.bgp_announced());
        let mut events = plan.events(node);
        events.extend(failed);
        let uids: BTreeMap<String, String> = view
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or("default"),
                        s.metadata.name.as_deref()?
                    ),
                    s.metadata.uid.clone()?,
                ))
            })
            .collect();
        for event in plan::new_events(&self.events, &events) {
            if event.warning {
                tracing::warn!(service = %format!("{}/{}", event.namespace, event.name), reason = event.reason, message = %event.message, "event");
            }
            let uid = uids
                .get(&format!("{}/{}", event.namespace, event.name))
                .cloned();
            let _ = self.writes.send(Write::Event(event, uid));
        }
        self.events = events;
        self.send_statuses(plan.statuses(node), owner());
        self.plan = plan;
        self.uids = uids;
        self.owner = owner();
        Pass::Applied
    }

    /// Queues the last plan's status objects again, so the writer restores any that someone
    /// else changed or deleted (nothing when no plan was applied yet).
    pub fn resync_statuses(&self) {
        if self.config.is_none() {
            return;
        }
        self.send_statuses(self.plan.statuses(&self.settings.node), self.owner.clone());
    }

    /// A BGP session came up or went down: an Event on its BGPPeer (the session logged it).
    pub fn report_session(&self, report: &Report) {
        let _ = self.writes.send(Write::PeerEvent(PeerEvent::from_report(
            report,
            &self.settings.node,
        )));
    }

    /// Reports claims by other MACs on addresses this node announces: a warning log and a
    /// Warning Event on the Service, once per (address, MAC) every [`CLAIM_REPORT_EVERY`] at
    /// most (a conflict that goes on claims again and again).
    pub fn report_claims(&mut self, claims: &[ClaimSeen], now: Duration) {
        self.claims_reported
            .retain(|_, at| now.saturating_sub(*at) < CLAIM_REPORT_EVERY);
        let due: Vec<ClaimSeen> = claims
            .iter()
            .filter(|c| !self.claims_reported.contains_key(&(c.ip, c.mac.clone())))
            .cloned()
            .collect();
        let events = self.plan.claim_events(&self.settings.node, &due);
        for claim in &due {
            self.claims_reported
                .insert((claim.ip, claim.mac.clone()), now);
        }
        for event in events {
            let key = format!("{}/{}", event.namespace, event.name);
            tracing::warn!(service = %key, reason = event.reason, message = %event.message, "event");
            let uid = self.uids.get(&key).cloned();
            let _ = self.writes.send(Write::Event(event, uid));
        }
    }

    /// Reports XDP links that started in or moved to another mode than asked (the data plane
    /// logged each): a Warning Event `xdpModeChanged` on the Node.
    pub fn report_mode_changes(&mut self, changes: &[ModeChange]) {
        for change in changes {
            let _ = self.writes.send(Write::NodeEvent(
                true,
                "xdpModeChanged",
                change.message.clone(),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
