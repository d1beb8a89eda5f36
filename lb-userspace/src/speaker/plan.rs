//! The speaker's decision, pure: from the configuration, the cluster's Services, EndpointSlices
//! and Nodes, the live speakers, this node's name and its eligible interfaces to what this node
//! announces (interface, address) and the Events it reports (the status objects it keeps are
//! [`super::status`]'s).
//!
//! Every speaker evaluates the same function over the same inputs; the election
//! ([`crate::election`]) names one node per Service, so exactly one live node announces each
//! address. [`diff`] turns the plan and what the data plane holds into announce/withdraw steps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::allocator::ServiceInfo;
use crate::bgp::{self, policy::BgpPlan};
use crate::dataplane::keys::unannounceable_reason;
use crate::election::{self, Announceable, Cluster, ElectionInput, Interfaces};

use super::interfaces::Eligible;

/// MetalLB's protocol label for layer 2 (metrics, events).
pub const PROTOCOL: &str = "layer2";
/// MetalLB's protocol label for BGP (metrics, events).
pub const BGP_PROTOCOL: &str = "bgp";

pub use crate::election::{SERVICE_NAME_LABEL, pool_for};

/// Everything one evaluation reads: the cluster as BGP policy sees it too, and what only layer 2
/// needs.
pub struct Inputs<'a> {
    pub cluster: Cluster<'a>,
    /// Live speakers (alive or suspect, this one included); `None` when memberlist is off.
    pub live_speakers: Option<&'a BTreeSet<String>>,
    pub interfaces: &'a Eligible,
}

/// One address answered on one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub iface: String,
    pub ip: IpAddr,
}

/// What happens to one Service's addresses on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This node is elected and announces on `interfaces`.
    Announce {
        interfaces: BTreeSet<String>,
        /// The advertisements named interfaces (ServiceL2Status lists them only then).
        restricted: bool,
        /// Named interfaces this node lacks, each with the L2Advertisements naming it (the rest
        /// still announces).
        missing: Vec<(String, Vec<String>)>,
    },
    /// Another node is elected.
    Elsewhere { node: String },
    /// The Service's address is in no IPAddressPool (the pool shrank or was deleted): nobody
    /// announces, and every speaker reports it.
    NoPool { reason: String },
    /// Nobody announces (no endpoint, no advertisement, no eligible node, ...).
    Nobody { reason: String },
    /// This node is elected but cannot answer: nobody announces.
    Failed { reason: String },
}

/// The plan for one Service with addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub decision: Decision,
    /// What this node answers for the Service (empty unless `Announce`).
    pub targets: BTreeSet<Target>,
}

/// A Service skipped because it cannot be read (logged, never fatal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub service: String,
    pub message: String,
}

/// The whole evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// By `namespace/name`.
    pub services: BTreeMap<String, ServicePlan>,
    pub problems: Vec<Problem>,
    /// What this node announces over BGP (sessions, routes per peer, per Service).
    pub bgp: BgpPlan,
}

/// An Event to record on a Service (reported when it first appears, see [`new_events`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedEvent {
    pub namespace: String,
    pub name: String,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Evaluates every Service.
pub fn plan(inputs: &Inputs<'_>) -> Plan {
    let mut out = Plan::default();
    for service in inputs.cluster.services {
        let (info, ips) = match election::announceable(service, inputs.cluster.lb_class) {
            Ok(Some(Announceable { info, ips })) => (info, ips),
            Ok(None) => continue,
            Err(e) => {
                out.problems.push(Problem {
                    service: e.service.clone(),
                    message: format!("{}: {}", e.field, e.message),
                });
                continue;
            }
        };
        let decision = decide(inputs, inputs.cluster.slices.of(&info), &info, &ips);
        let targets = match &decision {
            Decision::Announce { interfaces, .. } => ips
                .iter()
                .filter(|ip| unannounceable_reason(**ip).is_none())
                .flat_map(|ip| {
                    interfaces
                        .iter()
                        .filter(|i| inputs.interfaces.for_ip(ip).contains(*i))
                        .map(|iface| Target {
                            iface: iface.clone(),
                            ip: *ip,
                        })
                })
                .collect(),
            _ => BTreeSet::new(),
        };
        out.services.insert(
            info.key(),
            ServicePlan {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                ips,
                decision,
                targets,
            },
        );
    }
    out.bgp = bgp::policy::plan(&inputs.cluster);
    out
}

fn decide(
    inputs: &Inputs<'_>,
    slices: &[&EndpointSlice],
    info: &ServiceInfo,
    ips: &[IpAddr],
) -> Decision {
    let Some(pool) = pool_for(
        inputs.cluster.config,
        ips,
        info.allocated_from_pool.as_deref(),
    ) else {
        let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
        return Decision::NoPool {
            reason: format!("address {} is not in any IPAddressPool", list.join(",")),
        };
    };
    let election = election::elect(&ElectionInput {
        service: info,
        ips,
        pool,
        config: inputs.cluster.config,
        nodes: inputs.cluster.nodes,
        live_speakers: inputs.live_speakers,
        endpoint_slices: slices,
        ignore_exclude_lb: inputs.cluster.ignore_exclude_lb,
    });
    let winner = match election.result {
        Ok(winner) => winner,
        Err(reason) => {
            return Decision::Nobody {
                reason: reason.to_string(),
            };
        }
    };
    if winner.node != inputs.cluster.node {
        return Decision::Elsewhere { node: winner.node };
    }
    let all = inputs.interfaces.all();
    // Which of this node's advertisements name each interface (for messages).
    let naming = |iface: &str| -> Vec<String> {
        election::matching_ads(inputs.cluster.config, pool, info)
            .into_iter()
            .filter(|ad| {
                ad.nodes.contains(inputs.cluster.node) && ad.interfaces.iter().any(|i| i == iface)
            })
            .map(|ad| ad.name.clone())
            .collect()
    };
    let (interfaces, restricted, missing) = match winner.interfaces {
        Interfaces::All => (all, false, Vec::new()),
        Interfaces::Named(named) => {
            let missing: Vec<(String, Vec<String>)> = named
                .difference(&all)
                .map(|m| (m.clone(), naming(m)))
                .collect();
            let present: BTreeSet<String> = named.intersection(&all).cloned().collect();
            (present, true, missing)
        }
    };
    let ip_list = || {
        ips.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let usable = ips.iter().any(|ip| {
        unannounceable_reason(*ip).is_none()
            && interfaces
                .iter()
                .any(|i| inputs.interfaces.for_ip(ip).contains(i))
    });
    if !usable {
        let reason = if restricted && !missing.is_empty() {
            let named: Vec<String> = missing
                .iter()
                .map(|(iface, ads)| format!("{iface:?} (L2Advertisement {})", quoted_list(ads)))
                .collect();
            format!(
                "the interfaces specified by the L2Advertisements are not available on node {:?}: {}",
                inputs.cluster.node,
                named.join(", ")
            )
        } else {
            format!(
                "node {:?} has no interface eligible for layer 2 for {}",
                inputs.cluster.node,
                ip_list()
            )
        };
        return Decision::Failed { reason };
    }
    Decision::Announce {
        interfaces,
        restricted,
        missing,
    }
}

impl Plan {
    /// Everything this node must answer.
    pub fn targets(&self) -> BTreeSet<Target> {
        self.services
            .values()
            .flat_map(|s| s.targets.iter().cloned())
            .collect()
    }

    /// `(service key, address)` pairs this node announces over BGP.
    pub fn bgp_announced(&self) -> BTreeSet<(String, IpAddr)> {
        self.bgp
            .services
            .iter()
            .filter(|(_, s)| !s.peers.is_empty())
            .flat_map(|(key, s)| s.ips.iter().map(move |ip| (key.clone(), *ip)))
            .collect()
    }

    /// `(service key, address)` pairs this node announces (`metallb_speaker_announced`).
    pub fn announced(&self) -> BTreeSet<(String, IpAddr)> {
        self.services
            .iter()
            .flat_map(|(key, s)| s.targets.iter().map(move |t| (key.clone(), t.ip)))
            .collect()
    }

    /// The Events this plan stands for.
    pub fn events(&self, node: &str) -> BTreeSet<PlannedEvent> {
        let mut out = BTreeSet::new();
        for s in self.services.values() {
            let event = |warning, reason, message| PlannedEvent {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                warning,
                reason,
                message,
            };
            match &s.decision {
                Decision::Announce { missing, .. } => {
                    out.insert(event(
                        false,
                        "nodeAssigned",
                        format!("announcing from node {node:?} with protocol {PROTOCOL:?}"),
                    ));
                    for (iface, ads) in missing {
                        out.insert(event(
                            true,
                            "interfaceMissing",
                            format!(
                                "interface {iface:?} named by L2Advertisement {} is missing or not eligible on node {node:?}; announcing on the others",
                                quoted_list(ads)
                            ),
                        ));
                    }
                }
                Decision::Failed { reason } | Decision::NoPool { reason } => {
                    out.insert(event(true, "announceFailed", reason.clone()));
                }
                _ => {}
            }
        }
        for s in self.bgp.services.values() {
            let event = |warning, reason, message| PlannedEvent {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                warning,
                reason,
                message,
            };
            if !s.peers.is_empty() {
                out.insert(event(
                    false,
                    "nodeAssigned",
                    format!("announcing from node {node:?} with protocol {BGP_PROTOCOL:?}"),
                ));
            }
            if let Some(error) = &s.error {
                out.insert(event(true, "announceFailed", error.clone()));
            }
        }
        out
    }
}

/// Another MAC claiming an address, as the data plane saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimSeen {
    pub ip: IpAddr,
    /// The claiming MAC, `aa:bb:…`.
    pub mac: String,
    /// The interface it arrived on, when still known.
    pub iface: Option<String>,
}

impl Plan {
    /// Warning Events for claims on addresses this node announces: another host answers for
    /// the same address, so clients reach one or the other. Claims on addresses the plan does
    /// not announce (withdrawn meanwhile) are left out.
    pub fn claim_events(&self, node: &str, claims: &[ClaimSeen]) -> Vec<PlannedEvent> {
        claims
            .iter()
            .filter_map(|claim| {
                let s = self
                    .services
                    .values()
                    .find(|s| s.targets.iter().any(|t| t.ip == claim.ip))?;
                let on = claim
                    .iface
                    .as_deref()
                    .map(|i| format!(" on interface {i:?}"))
                    .unwrap_or_default();
                Some(PlannedEvent {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    warning: true,
                    reason: "addressClaimed",
                    message: format!(
                        "another host (MAC {}) claims {}{on}, which node {node:?} announces: two answerers for one address",
                        claim.mac, claim.ip
                    ),
                })
            })
            .collect()
    }
}

/// `"a", "b"` (Go's %q style, comma-separated).
fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events of `next` that `previous` did not already report (Events mark changes; a
/// recomputation with the same outcome records nothing).
pub fn new_events(
    previous: &BTreeSet<PlannedEvent>,
    next: &BTreeSet<PlannedEvent>,
) -> Vec<PlannedEvent> {
    next.difference(previous).cloned().collect()
}

/// Data-plane steps from what is announced to what must be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub withdraw: Vec<Target>,
    pub announce: Vec<Target>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty() && self.announce.is_empty()
    }
}

/// Which planned withdrawals are due. A withdrawal waits `overlap` after it was first planned, so
/// a hand-over (another node elected, e.g. a restarted speaker taking its address back) overlaps
/// the new announcer instead of leaving a gap; `overlap` is the guard budget, the same bound the
/// data-plane guard gives a dead speaker. `pending` remembers first-planned times; a target no
/// longer to withdraw is forgotten.
pub fn due_withdrawals(
    pending: &mut BTreeMap<Target, Duration>,
    withdraw: &[Target],
    now: Duration,
    overlap: Duration,
) -> Vec<Target> {
    pending.retain(|t, _| withdraw.contains(t));
    let mut due = Vec::new();
    for t in withdraw {
        let since = *pending.entry(t.clone()).or_insert(now);
        if now.saturating_sub(since) >= overlap {
            pending.remove(t);
            due.push(t.clone());
        }
    }
    due
}

pub fn diff(current: &BTreeSet<Target>, desired: &BTreeSet<Target>) -> Changes {
    Changes {
        withdraw: current.difference(desired).cloned().collect(),
        announce: desired.difference(current).cloned().collect(),
    }
}

/// `ConfigurationState speaker-<node>` status (MetalLB's): `result`, `errorSummary` and the
/// `configReconcilerValid` condition, transited `now`. `errors` is `None` when the
/// configuration was accepted.
pub fn configuration_state(
    errors: Option<&str>,
    now: k8s_openapi::jiff::Timestamp,
) -> crate::api::ConfigurationStateStatus {
    crate::api::ConfigurationStateStatus::reported("configReconcilerValid", errors, now)
}

#[cfg(test)]
mod tests;
