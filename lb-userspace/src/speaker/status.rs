//! This node's per-Service status objects, pure: ServiceL2Status (the Services it answers for
//! over layer 2) and ServiceBGPStatus (the Services its BGP sessions carry, with the BGPPeers
//! that carry each), the desired set of each kind from a [`Plan`], and the writes that bring the
//! listed objects to it. One generic comparison serves both kinds ([`status_actions`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use crate::api::{BgpServiceStatus, InterfaceInfo, L2ServiceStatus};
pub use crate::api::{ExistingStatus, ServiceStatus};
use crate::speaker::plan::{Decision, Plan};

/// The desired objects of both kinds, by Service key (`namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredStatuses {
    pub l2: BTreeMap<String, L2ServiceStatus>,
    pub bgp: BTreeMap<String, BgpServiceStatus>,
}

impl Plan {
    /// Both kinds of status this node keeps.
    pub fn statuses(&self, node: &str) -> DesiredStatuses {
        DesiredStatuses {
            l2: self.l2_statuses(node),
            bgp: self.bgp_statuses(node),
        }
    }

    /// The ServiceL2Status this node keeps, by `namespace/name` (only Services it announces).
    pub fn l2_statuses(&self, node: &str) -> BTreeMap<String, L2ServiceStatus> {
        self.services
            .iter()
            .filter_map(|(key, s)| match &s.decision {
                Decision::Announce { restricted, .. } if !s.targets.is_empty() => {
                    let used: BTreeSet<&str> = s.targets.iter().map(|t| t.iface.as_str()).collect();
                    let interfaces = if *restricted {
                        used.into_iter()
                            .map(|name| InterfaceInfo {
                                name: name.to_string(),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Some((
                        key.clone(),
                        L2ServiceStatus {
                            node: node.to_string(),
                            service_name: s.name.clone(),
                            service_namespace: s.namespace.clone(),
                            interfaces,
                        },
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The ServiceBGPStatus this node keeps, by `namespace/name`: every Service one of its
    /// sessions carries, with the sorted names of the BGPPeers that carry it (configured, not
    /// necessarily established, as MetalLB lists them). None for a Service no session carries.
    pub fn bgp_statuses(&self, node: &str) -> BTreeMap<String, BgpServiceStatus> {
        self.bgp
            .services
            .iter()
            .filter(|(_, s)| !s.peers.is_empty())
            .map(|(key, s)| {
                (
                    key.clone(),
                    BgpServiceStatus {
                        node: node.to_string(),
                        service_name: s.name.clone(),
                        service_namespace: s.namespace.clone(),
                        peers: s.peers.iter().cloned().collect(),
                    },
                )
            })
            .collect()
    }
}

/// A write to bring this node's objects of one kind to the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusAction<S> {
    Create {
        service_key: String,
        status: S,
    },
    /// Only mutable fields changed (interfaces, peers).
    UpdateStatus {
        name: String,
        status: S,
    },
    Delete {
        name: String,
    },
}

/// Compares this node's objects of one kind with the desired statuses. Objects of Services no
/// longer wanted here, duplicates, and objects whose immutable fields differ are deleted (and
/// recreated when still wanted).
pub fn status_actions<S: ServiceStatus>(
    existing: &[ExistingStatus<S>],
    desired: &BTreeMap<String, S>,
) -> Vec<StatusAction<S>> {
    let mut out = Vec::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    let mut sorted: Vec<&ExistingStatus<S>> = existing.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for e in sorted {
        let wanted = e
            .service_key
            .as_deref()
            .and_then(|k| desired.get_key_value(k));
        match wanted {
            Some((key, want)) if !kept.contains(key.as_str()) => {
                let have = e.status.clone().unwrap_or_default();
                let (node, name, _) = have.identity();
                // Created, status not written yet: nothing immutable is set.
                let blank = node.is_empty() && name.is_empty();
                if !(blank || have.identity() == want.identity()) {
                    out.push(StatusAction::Delete {
                        name: e.name.clone(),
                    });
                    continue;
                }
                kept.insert(key.as_str());
                if have != *want {
                    out.push(StatusAction::UpdateStatus {
                        name: e.name.clone(),
                        status: want.clone(),
                    });
                }
            }
            _ => out.push(StatusAction::Delete {
                name: e.name.clone(),
            }),
        }
    }
    for (key, want) in desired {
        if !kept.contains(key.as_str()) {
            out.push(StatusAction::Create {
                service_key: key.clone(),
                status: want.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
