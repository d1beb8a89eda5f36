//! Layer-2 announcer election with MetalLB's rules (docs/configure.md, "Which node announces";
//! MetalLB's `speaker/layer2_controller.go`,
//! <https://github.com/metallb/metallb/blob/v0.15.2/speaker/layer2_controller.go>).
//!
//! Stateless and pure: every speaker evaluates [`elect`] over the same inputs and gets the same
//! ordered candidate list, so exactly one node (the first) announces a Service.
//!
//! The rules both announcement modes share live here too: which endpoints can serve, which
//! nodes may announce at all ([`network_unavailable`], [`excluded_from_lb`]) and, in
//! [`service`], which Services a speaker announces and the pool owning their addresses.

pub mod service;

#[cfg(test)]
pub(crate) mod fixtures;

pub use service::{
    Announceable, Cluster, SERVICE_NAME_LABEL, SlicesByService, announceable, pool_for,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::allocator::ServiceInfo;
use crate::config::{Config, L2Advertisement, Selector, selector::any_matches};

/// Nodes carrying this label (any value) never announce, unless `--ignore-exclude-lb`.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Everything the election reads.
pub struct ElectionInput<'a> {
    pub service: &'a ServiceInfo,
    /// The Service's addresses in status order; the first one seeds the hash.
    pub ips: &'a [IpAddr],
    /// The pool owning the addresses.
    pub pool: &'a str,
    pub config: &'a Config,
    pub nodes: &'a [Node],
    /// Live memberlist members (alive or suspect); `None` when memberlist is disabled.
    pub live_speakers: Option<&'a BTreeSet<String>>,
    /// The EndpointSlices of this Service.
    pub endpoint_slices: &'a [&'a EndpointSlice],
    pub ignore_exclude_lb: bool,
}

/// Where the winner answers ARP/NDP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Interfaces {
    /// Every eligible interface.
    All,
    /// Only these (exact names).
    Named(BTreeSet<String>),
}

/// A candidate with its preference score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub node: String,
    pub score: i64,
}

/// Why no node announces the Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum NotAnnounced {
    #[error("the service has no address")]
    NoAddress,
    #[error("the service has no serving endpoint")]
    NoServingEndpoints,
    #[error("no L2Advertisement selects pool {pool:?} for this service")]
    NoAdvertisement { pool: String },
    #[error(
        "the service has an allow-shared-ip annotation and a matching L2Advertisement has serviceSelectors"
    )]
    SharedIpWithServiceSelectors,
    #[error("no eligible node")]
    NoEligibleNode,
}

/// The election's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Election {
    /// Eligible nodes in election order (empty when rules 1–3 stop early).
    pub candidates: Vec<Candidate>,
    /// The announcer and its interfaces, or why nobody announces.
    pub result: Result<Winner, NotAnnounced>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Winner {
    pub node: String,
    pub interfaces: Interfaces,
}

/// Whether an endpoint can serve: Ready unset or true, or Serving true.
pub fn can_serve(endpoint: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready);
    let serving = conditions.and_then(|c| c.serving);
    ready != Some(false) || serving == Some(true)
}

fn node_name(node: &Node) -> Option<&str> {
    node.metadata.name.as_deref()
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

/// Whether the node has the condition `NetworkUnavailable=True` (it announces nothing).
pub fn network_unavailable(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        })
}

/// Whether the node carries [`EXCLUDE_LB_LABEL`] (any value); it then announces nothing unless
/// `--ignore-exclude-lb`.
pub fn excluded_from_lb(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LB_LABEL))
}

/// Whether an advertisement's `serviceSelectors` take the Service (an empty list takes all).
pub fn selects_service(selectors: &[Selector], svc: &ServiceInfo) -> bool {
    selectors.is_empty() || any_matches(selectors, &svc.labels)
}

/// The bytes nodes are ordered by: SHA-256 of `node#ip` with Go's textual IP form.
pub fn election_hash(node: &str, ip: &IpAddr) -> [u8; 32] {
    // Rust's Display matches Go's String() for canonical addresses (dotted IPv4, RFC 5952 IPv6);
    // IPv4-mapped IPv6 is printed dotted by Go, so map it back first.
    let ip = crate::allocator::canonical(*ip);
    Sha256::digest(format!("{node}#{ip}").as_bytes()).into()
}

/// The advertisements of the owning pool that apply to the Service (rule 2).
pub fn matching_ads<'a>(
    config: &'a Config,
    pool: &str,
    svc: &ServiceInfo,
) -> Vec<&'a L2Advertisement> {
    config
        .l2_advertisements
        .iter()
        .filter(|ad| ad.pools.contains(pool))
        .filter(|ad| selects_service(&ad.service_selectors, svc))
        .collect()
}

/// Runs Algorithm B.
pub fn elect(input: &ElectionInput<'_>) -> Election {
    let stop = |reason| Election {
        candidates: Vec::new(),
        result: Err(reason),
    };
    let Some(first_ip) = input.ips.first() else {
        return stop(NotAnnounced::NoAddress);
    };
    let endpoints: Vec<_> = input
        .endpoint_slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .collect();
    let serving: Vec<_> = endpoints.iter().filter(|e| can_serve(e)).collect();
    if serving.is_empty() {
        return stop(NotAnnounced::NoServingEndpoints);
    }
    let ads = matching_ads(input.config, input.pool, input.service);
    if ads.is_empty() {
        return stop(NotAnnounced::NoAdvertisement {
            pool: input.pool.to_string(),
        });
    }
    if input.service.has_sharing_annotation && ads.iter().any(|ad| !ad.service_selectors.is_empty())
    {
        return stop(NotAnnounced::SharedIpWithServiceSelectors);
    }
    let serving_nodes: BTreeSet<&str> = serving
        .iter()
        .filter_map(|e| e.node_name.as_deref())
        .collect();

    let mut candidates: Vec<(Candidate, [u8; 32])> = input
        .nodes
        .iter()
        .filter_map(|node| node_name(node).map(|name| (name, node)))
        .filter(|(name, _)| input.live_speakers.is_none_or(|live| live.contains(*name)))
        .filter(|(_, node)| !network_unavailable(node))
        .filter(|(_, node)| input.ignore_exclude_lb || !excluded_from_lb(node))
        .filter(|(name, _)| ads.iter().any(|ad| ad.nodes.contains(*name)))
        .filter(|(name, _)| !input.service.traffic_policy_local || serving_nodes.contains(name))
        .map(|(name, node)| {
            let labels = node_labels(node);
            let score = ads
                .iter()
                .filter(|ad| ad.nodes.contains(name))
                .flat_map(|ad| ad.preferred_nodes.iter())
                .filter(|p| p.selector.matches(&labels))
                .map(|p| i64::from(p.weight))
                .sum();
            (
                Candidate {
                    node: name.to_string(),
                    score,
                },
                election_hash(name, first_ip),
            )
        })
        .collect();
    candidates.sort_by(|(a, ha), (b, hb)| b.score.cmp(&a.score).then_with(|| ha.cmp(hb)));
    let candidates: Vec<Candidate> = candidates.into_iter().map(|(c, _)| c).collect();

    let result = match candidates.first() {
        None => Err(NotAnnounced::NoEligibleNode),
        Some(winner) => {
            let selecting: Vec<_> = ads
                .iter()
                .filter(|ad| ad.nodes.contains(&winner.node))
                .collect();
            let interfaces = if selecting.iter().any(|ad| ad.interfaces.is_empty()) {
                Interfaces::All
            } else {
                Interfaces::Named(
                    selecting
                        .iter()
                        .flat_map(|ad| ad.interfaces.iter().cloned())
                        .collect(),
                )
            };
            Ok(Winner {
                node: winner.node.clone(),
                interfaces,
            })
        }
    };
    Election { candidates, result }
}

#[cfg(test)]
mod tests;
