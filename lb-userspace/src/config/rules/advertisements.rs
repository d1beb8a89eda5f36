//! The advertisement rules: which pools, nodes, peers and Services each L2Advertisement and
//! BGPAdvertisement selects, and the checks that span several of them (LOCAL_PREF conflicts, BFD
//! echo with IPv6).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::objects::{by_name, duplicates, select_names, selectors};
use super::pools::ParsedPool;
use crate::config::community::{self, CommunityError};
use crate::config::error::{ConfigError, Errors};
use crate::config::model::{
    BfdProfile, BgpAdvertisement, Community, L2Advertisement, NodePreference, ParsedPeer,
};
use crate::config::selector::{Labels, Selector};
use crate::config::snapshot::Snapshot;

/// Pool names selected by names and label selectors; all pools when both are empty.
/// Unknown names are ignored, as MetalLB does.
fn selected_pools(
    names: &[String],
    selectors: &[Selector],
    raw_selectors_given: bool,
    pools: &BTreeMap<String, ParsedPool>,
) -> BTreeSet<String> {
    if names.is_empty() && !raw_selectors_given {
        return pools.keys().cloned().collect();
    }
    pools
        .iter()
        .filter(|(name, p)| {
            names.contains(name) || selectors.iter().any(|s| s.matches(&p.pool.labels))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// What an advertisement (L2 or BGP) selects: the pools, the nodes and the services.
struct Selection {
    pools: BTreeSet<String>,
    nodes: BTreeSet<String>,
    service_selectors: Vec<Selector>,
}

/// Checks the pool names and parses the selectors both advertisement kinds share (errors name
/// their fields), and resolves them against the pools and nodes.
fn advertisement_selection(
    pool_names: &[String],
    pool_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    node_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    service_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    pools: &BTreeMap<String, ParsedPool>,
    nodes: &[(String, Labels)],
    errs: &mut Errors<'_>,
) -> Selection {
    duplicates(pool_names, "spec.ipAddressPools", "ipAddressPools", errs);
    let parsed_pool_selectors = selectors(pool_selectors, "spec.ipAddressPoolSelectors", errs);
    let parsed_node_selectors = selectors(node_selectors, "spec.nodeSelectors", errs);
    let service_selectors = selectors(service_selectors, "spec.serviceSelectors", errs);
    Selection {
        pools: selected_pools(
            pool_names,
            &parsed_pool_selectors,
            !pool_selectors.is_empty(),
            pools,
        ),
        nodes: select_names(nodes, &parsed_node_selectors),
        service_selectors,
    }
}

pub(super) fn l2_advertisements(
    snapshot: &Snapshot,
    pools: &BTreeMap<String, ParsedPool>,
    nodes: &[(String, Labels)],
    errors: &mut Vec<ConfigError>,
) -> Vec<L2Advertisement> {
    let mut result = Vec::new();
    let objects = by_name(&snapshot.l2_advertisements, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "L2Advertisement",
            name,
            list: errors,
        };
        let selection = advertisement_selection(
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
            &spec.service_selectors,
            pools,
            nodes,
            &mut errs,
        );
        let mut preferred_nodes = Vec::new();
        for (i, preferred) in spec.preferred_node_selectors.iter().enumerate() {
            if !(1..=100).contains(&preferred.weight) {
                errs.push(
                    format!("spec.preferredNodeSelectors[{i}].weight"),
                    format!("weight {} must be in 1-100 range", preferred.weight),
                );
                continue;
            }
            match Selector::parse(&preferred.preference) {
                Ok(selector) => preferred_nodes.push(NodePreference {
                    weight: preferred.weight,
                    selector,
                }),
                Err(e) => errs.push(
                    format!("spec.preferredNodeSelectors[{i}].preference"),
                    format!("invalid label selector: {e}"),
                ),
            }
        }
        result.push(L2Advertisement {
            name: name.to_string(),
            pools: selection.pools,
            service_selectors: selection.service_selectors,
            nodes: selection.nodes,
            interfaces: spec.interfaces.clone(),
            preferred_nodes,
        });
    }
    result
}

/// A BGP advertisement plus whether it restricts services (the LOCAL_PREF rule skips those).
pub(crate) struct ParsedBgpAdvertisement {
    pub advertisement: BgpAdvertisement,
    pub has_service_selectors: bool,
}

pub(super) fn bgp_advertisements(
    snapshot: &Snapshot,
    pools: &BTreeMap<String, ParsedPool>,
    aliases: &BTreeMap<String, Community>,
    nodes: &[(String, Labels)],
    errors: &mut Vec<ConfigError>,
) -> Vec<ParsedBgpAdvertisement> {
    let mut result = Vec::new();
    let objects = by_name(&snapshot.bgp_advertisements, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "BGPAdvertisement",
            name,
            list: errors,
        };
        duplicates(
            &spec.communities,
            "spec.communities",
            "community",
            &mut errs,
        );
        duplicates(&spec.peers, "spec.peers", "peers", &mut errs);
        let selection = advertisement_selection(
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
            &spec.service_selectors,
            pools,
            nodes,
            &mut errs,
        );

        let length_v4 = spec.aggregation_length.unwrap_or(32);
        let length_v6 = spec.aggregation_length_v6.unwrap_or(128);
        if !(1..=32).contains(&length_v4) {
            errs.push(
                "spec.aggregationLength",
                format!("invalid aggregation length {length_v4} for IPv4 (1-32)"),
            );
        }
        if !(0..=128).contains(&length_v6) {
            errs.push(
                "spec.aggregationLengthV6",
                format!("invalid aggregation length {length_v6} for IPv6 (0-128)"),
            );
        }
        if !spec.service_selectors.is_empty() {
            if length_v4 != 32 {
                errs.push(
                    "spec.serviceSelectors",
                    "serviceSelectors and aggregationLength are mutually exclusive, both cannot be set",
                );
            }
            if length_v6 != 128 {
                errs.push(
                    "spec.serviceSelectors",
                    "serviceSelectors and aggregationLengthV6 are mutually exclusive, both cannot be set",
                );
            }
        }

        let mut communities = BTreeSet::new();
        for (i, text) in spec.communities.iter().enumerate() {
            if let Some(value) = aliases.get(text) {
                communities.insert(value.clone());
                continue;
            }
            match community::parse(text) {
                Ok(value) => {
                    communities.insert(value);
                }
                Err(CommunityError::Value(message)) => errs.push(format!("spec.communities[{i}]"), message),
                Err(CommunityError::Format(_)) => errs.push_transient(
                    format!("spec.communities[{i}]"),
                    format!("{text:?} is neither a community value (A:B, large:A:B:C) nor a known Community alias"),
                ),
            }
        }

        let selected = selection.pools;
        // Every address entry of every selected pool must fit the aggregation length.
        for pool_name in &selected {
            let Some(pool) = pools.get(pool_name) else {
                continue;
            };
            for (entry, cidrs) in &pool.entries {
                let Some(shortest) = cidrs.iter().map(IpNet::prefix_len).min() else {
                    continue;
                };
                let (length, field) = match cidrs[0] {
                    IpNet::V4(_) => (length_v4, "spec.aggregationLength"),
                    IpNet::V6(_) => (length_v6, "spec.aggregationLengthV6"),
                };
                if length < i32::from(shortest) {
                    errs.push(
                        field,
                        format!(
                            "invalid aggregation length {length}: prefix {shortest} in IPAddressPool {pool_name:?} is more specific than the aggregation length for addresses {entry}"
                        ),
                    );
                }
            }
        }

        result.push(ParsedBgpAdvertisement {
            advertisement: BgpAdvertisement {
                name: name.to_string(),
                pools: selected,
                aggregation_length: length_v4.clamp(0, 32) as u8,
                aggregation_length_v6: length_v6.clamp(0, 128) as u8,
                local_pref: spec.local_pref.unwrap_or(0),
                communities: communities.into_iter().collect(),
                service_selectors: selection.service_selectors,
                nodes: selection.nodes,
                peers: spec.peers.clone(),
            },
            has_service_selectors: !spec.service_selectors.is_empty(),
        });
    }
    result
}

/// Two advertisements of the same pool, both without serviceSelectors, may only differ in
/// LOCAL_PREF when their aggregation lengths differ (for the pool's families), their peer
/// lists are disjoint, or their node sets are.
pub(super) fn local_pref_conflicts(
    ads: &[ParsedBgpAdvertisement],
    pools: &BTreeMap<String, ParsedPool>,
    errors: &mut Vec<ConfigError>,
) {
    let mut reported = BTreeSet::new();
    for (pool_name, pool) in pools {
        let on_pool: Vec<&BgpAdvertisement> = ads
            .iter()
            .filter(|a| !a.has_service_selectors && a.advertisement.pools.contains(pool_name))
            .map(|a| &a.advertisement)
            .collect();
        for (j, later) in on_pool.iter().enumerate() {
            for earlier in &on_pool[..j] {
                if later.local_pref_compatible(earlier, &pool.pool)
                    || !reported.insert((earlier.name.clone(), later.name.clone()))
                {
                    continue;
                }
                errors.push(ConfigError::new(
                    "BGPAdvertisement",
                    &later.name,
                    "spec.localPref",
                    format!(
                        "invalid local preference {}: BGPAdvertisement {:?} already sets local preference {} for IPAddressPool {pool_name:?} with the same aggregation lengths, overlapping peers and overlapping nodes",
                        later.local_pref, earlier.name, earlier.local_pref
                    ),
                ));
            }
        }
    }
}

/// BFD echo mode cannot run on a session that advertises IPv6 prefixes.
pub(super) fn bfd_echo_with_ipv6(
    ads: &[ParsedBgpAdvertisement],
    pools: &BTreeMap<String, ParsedPool>,
    peers: &[ParsedPeer],
    bfd_profiles: &BTreeMap<String, BfdProfile>,
    errors: &mut Vec<ConfigError>,
) {
    for ad in ads.iter().map(|a| &a.advertisement) {
        for pool_name in ad
            .pools
            .iter()
            .filter(|p| pools.get(*p).is_some_and(ParsedPool::has_v6))
        {
            for peer in peers.iter().map(|p| &p.peer) {
                let targeted = ad.peers.is_empty() || ad.peers.contains(&peer.name);
                let echo = peer
                    .bfd_profile
                    .as_ref()
                    .and_then(|b| bfd_profiles.get(b))
                    .is_some_and(|b| b.echo_mode);
                if targeted && echo {
                    errors.push(ConfigError::new(
                        "BGPAdvertisement",
                        &ad.name,
                        "spec.peers",
                        format!(
                            "IPAddressPool {pool_name:?} has IPv6 addresses and is advertised to BGPPeer {:?}, whose BFD profile has echo mode enabled, which is not possible",
                            peer.name
                        ),
                    ));
                }
            }
        }
    }
}
