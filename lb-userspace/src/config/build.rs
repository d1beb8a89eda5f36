//! The rules: from a [`Snapshot`] to a [`Config`] or every [`ConfigError`], as MetalLB's
//! parser (`internal/config`) decides. Objects are read in name order, as the API server lists
//! them, so the result does not depend on the order objects were given in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kube::ResourceExt;

use super::address;
use super::community::{self, CommunityError};
use super::duration::parse_go_duration;
use super::error::{ConfigError, Errors};
use super::mode_rules;
use super::model::{
    BfdProfile, BgpAdvertisement, Community, Config, L2Advertisement, NodePreference, ParsedPeer,
    Peer, Pool, ServiceAllocation,
};
use super::selector::{Labels, Selector};
use super::selector_parse::parse_list;
use super::snapshot::Snapshot;
use crate::api;

/// Builds the validated configuration, or returns every error found (one bad object never
/// hides another's errors). Errors come sorted by kind, name and field.
pub fn build(snapshot: &Snapshot) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let nodes: Vec<(String, Labels)> = snapshot
        .nodes
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();

    let bfd_profiles = bfd_profiles(snapshot, &mut errors);
    let aliases = community_aliases(snapshot, &mut errors);
    let pools = pools(snapshot, &mut errors);
    let peers = peers(snapshot, &bfd_profiles, &nodes, &mut errors);
    let l2_advertisements = l2_advertisements(snapshot, &pools, &nodes, &mut errors);
    let bgp_advertisements = bgp_advertisements(snapshot, &pools, &aliases, &nodes, &mut errors);
    local_pref_conflicts(&bgp_advertisements, &pools, &mut errors);
    bfd_echo_with_ipv6(
        &bgp_advertisements,
        &pools,
        &peers,
        &bfd_profiles,
        &mut errors,
    );
    mode_rules::check(snapshot, &peers, &nodes, &mut errors);

    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(errors);
    }
    Ok(Config {
        pools: pools.into_iter().map(|(name, p)| (name, p.pool)).collect(),
        l2_advertisements,
        bgp_advertisements: bgp_advertisements
            .into_iter()
            .map(|a| a.advertisement)
            .collect(),
        peers: peers.into_iter().map(|p| p.peer).collect(),
        bfd_profiles,
        communities: aliases,
    })
}

/// The objects of one kind in name order, without nameless objects and later duplicates
/// (both reported).
fn by_name<'a, K: kube::Resource<DynamicType = ()>>(
    objects: &'a [K],
    errors: &mut Vec<ConfigError>,
) -> Vec<(&'a str, &'a K)> {
    let kind = K::kind(&());
    let mut sorted: Vec<(&str, &K)> = objects
        .iter()
        .map(|o| (o.meta().name.as_deref().unwrap_or(""), o))
        .collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut kept: Vec<(&str, &K)> = Vec::with_capacity(sorted.len());
    for (name, object) in sorted {
        if name.is_empty() {
            errors.push(ConfigError::new(&kind, "", "metadata.name", "missing name"));
        } else if kept.last().is_some_and(|(last, _)| *last == name) {
            errors.push(ConfigError::new(
                &kind,
                name,
                "metadata.name",
                format!("duplicate definition of {kind} {name:?}"),
            ));
        } else {
            kept.push((name, object));
        }
    }
    kept
}

/// Names of the items matched by any selector; every item when there are no selectors.
fn select_names(items: &[(String, Labels)], selectors: &[Selector]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|(_, labels)| selectors.is_empty() || selectors.iter().any(|s| s.matches(labels)))
        .map(|(name, _)| name.clone())
        .collect()
}

fn selectors(
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    field: &str,
    errs: &mut Errors<'_>,
) -> Vec<Selector> {
    let (parsed, problems) = parse_list(list, field);
    for (path, message) in problems {
        errs.push(path, message);
    }
    parsed
}

fn duplicates(list: &[String], field: &str, what: &str, errs: &mut Errors<'_>) {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            errs.push(
                format!("{field}[{i}]"),
                format!("duplicate definition of {what} {item:?}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// BFD profiles and communities

fn bfd_profiles(
    snapshot: &Snapshot,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, BfdProfile> {
    let mut profiles = BTreeMap::new();
    let objects = by_name(&snapshot.bfd_profiles, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "BFDProfile",
            name,
            list: errors,
        };
        let mut ranged = |field: &str, value: Option<u32>, min: u32, max: u32| {
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                errs.push(
                    format!("spec.{field}"),
                    format!("invalid value {v}, must be in {min}-{max} range"),
                );
            }
            value
        };
        let profile = BfdProfile {
            name: name.to_string(),
            receive_interval: ranged("receiveInterval", spec.receive_interval, 10, 60000),
            transmit_interval: ranged("transmitInterval", spec.transmit_interval, 10, 60000),
            echo_interval: ranged("echoInterval", spec.echo_interval, 10, 60000),
            detect_multiplier: ranged("detectMultiplier", spec.detect_multiplier, 2, 255),
            minimum_ttl: ranged("minimumTtl", spec.minimum_ttl, 1, 254),
            echo_mode: spec.echo_mode.unwrap_or(false),
            passive_mode: spec.passive_mode.unwrap_or(false),
        };
        profiles.insert(name.to_string(), profile);
    }
    profiles
}

fn community_aliases(
    snapshot: &Snapshot,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Community> {
    let mut aliases: BTreeMap<String, (Community, String)> = BTreeMap::new();
    let objects = by_name(&snapshot.communities, errors);
    for (name, object) in objects {
        let mut errs = Errors {
            kind: "Community",
            name,
            list: errors,
        };
        for (i, alias) in object.spec.communities.iter().enumerate() {
            let value = match community::parse(&alias.value) {
                Ok(v) => v,
                Err(e) => {
                    errs.push(
                        format!("spec.communities[{i}].value"),
                        e.message().to_string(),
                    );
                    continue;
                }
            };
            if let Some((_, owner)) = aliases.get(&alias.name) {
                let where_ = if owner == name {
                    "in this object".to_string()
                } else {
                    format!("in Community {owner:?}")
                };
                errs.push(
                    format!("spec.communities[{i}].name"),
                    format!(
                        "duplicate definition of community {:?} (already defined {where_})",
                        alias.name
                    ),
                );
                continue;
            }
            aliases.insert(alias.name.clone(), (value, name.to_string()));
        }
    }
    aliases
        .into_iter()
        .map(|(alias, (value, _))| (alias, value))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Pools

/// A pool plus what the advertisement rules need about its entries.
pub(crate) struct ParsedPool {
    pub pool: Pool,
    /// `(written entry, its CIDRs)` for the entries that parsed.
    pub entries: Vec<(String, Vec<IpNet>)>,
}

impl ParsedPool {
    fn has_v6(&self) -> bool {
        self.pool.has_v6()
    }
}

fn pools(snapshot: &Snapshot, errors: &mut Vec<ConfigError>) -> BTreeMap<String, ParsedPool> {
    let namespaces: Vec<(String, Labels)> = snapshot
        .namespaces
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    let mut pools = BTreeMap::new();
    // (pool, entry index, CIDR) of everything defined so far, for the overlap rule.
    let mut defined: Vec<(String, usize, IpNet)> = Vec::new();
    let objects = by_name(&snapshot.pools, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "IPAddressPool",
            name,
            list: errors,
        };
        if spec.addresses.is_empty() {
            errs.push("spec.addresses", "pool has no prefixes defined");
        }
        let mut entries = Vec::new();
        let mut reported = BTreeSet::new();
        for (i, entry) in spec.addresses.iter().enumerate() {
            let cidrs = match address::parse_entry(entry) {
                Ok(c) => c,
                Err(e) => {
                    errs.push(format!("spec.addresses[{i}]"), e);
                    continue;
                }
            };
            for cidr in &cidrs {
                for (other_pool, other_index, other) in &defined {
                    if address::overlaps(cidr, other)
                        && reported.insert((other_pool.clone(), *other_index, i))
                    {
                        let where_ = if other_pool == name {
                            format!("spec.addresses[{other_index}] of this pool")
                        } else {
                            format!("IPAddressPool {other_pool:?}")
                        };
                        errs.push(
                            format!("spec.addresses[{i}]"),
                            format!("CIDR \"{cidr}\" overlaps with already defined CIDR \"{other}\" ({where_})"),
                        );
                    }
                }
            }
            defined.extend(cidrs.iter().map(|c| (name.to_string(), i, *c)));
            entries.push((entry.clone(), cidrs));
        }
        let service_allocation = spec
            .service_allocation
            .as_ref()
            .map(|sa| service_allocation(sa, &namespaces, &mut errs));
        let pool = Pool {
            name: name.to_string(),
            labels: object.labels().clone(),
            ranges: entries.iter().map(|(_, cidrs)| cidrs.clone()).collect(),
            auto_assign: spec.auto_assign.unwrap_or(true),
            avoid_buggy_ips: spec.avoid_buggy_ips,
            service_allocation,
        };
        pools.insert(name.to_string(), ParsedPool { pool, entries });
    }
    pools
}

fn service_allocation(
    sa: &api::ServiceAllocation,
    namespaces: &[(String, Labels)],
    errs: &mut Errors<'_>,
) -> ServiceAllocation {
    for (i, ns) in sa.namespaces.iter().enumerate() {
        if sa.namespaces[..i].contains(ns) {
            // MetalLB's wording, kept for users grepping their logs.
            errs.push(
                format!("spec.serviceAllocation.namespaces[{i}]"),
                format!("duplicate definition in namespaces field ({ns:?})"),
            );
        }
    }
    let mut allocation = ServiceAllocation {
        priority: sa.priority,
        namespaces: sa.namespaces.iter().cloned().collect(),
        service_selectors: Vec::new(),
    };
    if sa.namespaces.is_empty()
        && sa.namespace_selectors.is_empty()
        && sa.service_selectors.is_empty()
    {
        // Only a priority: the pool matches every service.
        allocation.service_selectors = vec![Selector::everything()];
        return allocation;
    }
    let namespace_selectors = selectors(
        &sa.namespace_selectors,
        "spec.serviceAllocation.namespaceSelectors",
        errs,
    );
    if !namespace_selectors.is_empty() {
        allocation
            .namespaces
            .extend(select_names(namespaces, &namespace_selectors));
    }
    allocation.service_selectors = selectors(
        &sa.service_selectors,
        "spec.serviceAllocation.serviceSelectors",
        errs,
    );
    allocation
}

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

// ---------------------------------------------------------------------------------------
// Advertisements

/// What an advertisement (L2 or BGP) selects: the pools, the nodes and the services.
struct Selection {
    pools: BTreeSet<String>,
    nodes: BTreeSet<String>,
    service_selectors: Vec<Selector>,
}

/// Parses the selectors both advertisement kinds share (errors name their fields) and resolves
/// them against the pools and nodes.
fn advertisement_selection(
    pool_names: &[String],
    pool_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    node_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    service_selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    pools: &BTreeMap<String, ParsedPool>,
    nodes: &[(String, Labels)],
    errs: &mut Errors<'_>,
) -> Selection {
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

fn l2_advertisements(
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
        duplicates(
            &spec.ip_address_pools,
            "spec.ipAddressPools",
            "ipAddressPools",
            &mut errs,
        );
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

fn bgp_advertisements(
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
            &spec.ip_address_pools,
            "spec.ipAddressPools",
            "ipAddressPools",
            &mut errs,
        );
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
fn local_pref_conflicts(
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

// ---------------------------------------------------------------------------------------
// Peers

fn peers(
    snapshot: &Snapshot,
    bfd_profiles: &BTreeMap<String, BfdProfile>,
    nodes: &[(String, Labels)],
    errors: &mut Vec<ConfigError>,
) -> Vec<ParsedPeer> {
    let mut result = Vec::new();
    let objects = by_name(&snapshot.peers, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "BGPPeer",
            name,
            list: errors,
        };
        if spec.my_asn == 0 {
            errs.push("spec.myASN", "missing local ASN");
        }
        match (spec.peer_asn, spec.dynamic_asn) {
            (0, None) => errs.push("spec.peerASN", "missing peer ASN and dynamicASN"),
            (asn, Some(_)) if asn != 0 => {
                errs.push("spec.dynamicASN", "both peer ASN and dynamicASN specified");
            }
            _ => {}
        }
        if spec.peer_asn == spec.my_asn && spec.ebgp_multi_hop {
            errs.push(
                "spec.ebgpMultiHop",
                "invalid ebgp-multihop parameter set for an ibgp peer",
            );
        }
        match (spec.peer_address.is_empty(), spec.interface.is_empty()) {
            (true, true) => errs.push(
                "spec.peerAddress",
                "peer has no Address or Interface specified",
            ),
            (false, false) => errs.push(
                "spec.interface",
                "peer has both Address and Interface specified",
            ),
            _ => {}
        }
        let (hold_time_s, keepalive_time_s) = timers(spec, &mut errs);
        let mut ip = |field: &str, text: &str, what: &str| -> Option<IpAddr> {
            if text.is_empty() {
                return None;
            }
            text.parse()
                .map_err(|_| errs.push(field.to_string(), format!("invalid {what} {text:?}")))
                .ok()
        };
        let peer_address = ip("spec.peerAddress", &spec.peer_address, "BGPPeer address");
        let source_address = ip("spec.sourceAddress", &spec.source_address, "source IP");
        let router_id = match ip("spec.routerID", &spec.router_id, "router ID") {
            Some(IpAddr::V4(v4)) => Some(v4),
            Some(IpAddr::V6(_)) => {
                errs.push(
                    "spec.routerID",
                    format!(
                        "invalid router ID {:?}: must be an IPv4 address",
                        spec.router_id
                    ),
                );
                None
            }
            None => None,
        };
        let port = spec.peer_port.unwrap_or(179);
        let port = if port == 0 { 179 } else { port };
        if port > 16384 {
            errs.push(
                "spec.peerPort",
                format!("peer port {port} must be in 1-16384 range"),
            );
        }
        let connect_time_s = spec
            .connect_time
            .as_deref()
            .and_then(|text| match parse_go_duration(text) {
                Ok(d) if d.subsec_nanos() != 0 => {
                    errs.push(
                        "spec.connectTime",
                        "connect time should contain a whole number of seconds",
                    );
                    None
                }
                Ok(d) if !(1..=65535).contains(&d.as_secs()) => {
                    errs.push(
                        "spec.connectTime",
                        "connect time should be between 1 seconds to 65535",
                    );
                    None
                }
                Ok(d) => Some(d.as_secs()),
                Err(e) => {
                    errs.push("spec.connectTime", e);
                    None
                }
            });
        let node_selectors = selectors(&spec.node_selectors, "spec.nodeSelectors", &mut errs);
        let secret_name = spec
            .password_secret
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if !spec.password.is_empty() && !secret_name.is_empty() {
            errs.push(
                "spec.passwordSecret",
                "can not have both password and secret ref set in peer config",
            );
        } else if !secret_name.is_empty() {
            password_secret(&secret_name, snapshot, &mut errs);
        }
        if !spec.bfd_profile.is_empty() && !bfd_profiles.contains_key(&spec.bfd_profile) {
            errs.push_transient(
                "spec.bfdProfile",
                format!(
                    "peer {name} referencing non existing bfd profile {}",
                    spec.bfd_profile
                ),
            );
        }
        result.push(ParsedPeer {
            peer: Peer {
                name: name.to_string(),
                my_asn: spec.my_asn,
                peer_asn: spec.peer_asn,
                dynamic_asn: spec.dynamic_asn.map(|m| match m {
                    api::DynamicAsnMode::Internal => "internal".to_string(),
                    api::DynamicAsnMode::External => "external".to_string(),
                }),
                peer_address,
                interface: (!spec.interface.is_empty()).then(|| spec.interface.clone()),
                source_address,
                peer_port: port,
                hold_time_s,
                keepalive_time_s,
                router_id,
                nodes: select_names(nodes, &node_selectors),
                has_password: !spec.password.is_empty() || !secret_name.is_empty(),
                bfd_profile: (!spec.bfd_profile.is_empty()).then(|| spec.bfd_profile.clone()),
                ebgp_multihop: spec.ebgp_multi_hop,
                vrf: (!spec.vrf.is_empty()).then(|| spec.vrf.clone()),
                local_asn: (spec.local_asn != 0).then_some(spec.local_asn),
                connect_time_s,
                enable_graceful_restart: spec.enable_graceful_restart,
                dual_stack_address_family: spec.dual_stack_address_family,
                disable_mp: spec.disable_mp,
                password_secret: (!secret_name.is_empty()).then_some(secret_name),
            },
            spec: spec.clone(),
        });
    }
    result
}

/// MetalLB's timer rules: a missing hold time is 3× keepalive, a missing keepalive is hold/3;
/// hold truncated to seconds must be 0 or ≥ 3 s; keepalive may not exceed hold.
fn timers(spec: &api::BGPPeerSpec, errs: &mut Errors<'_>) -> (Option<u64>, Option<u64>) {
    let mut parse =
        |field: &str, text: &Option<String>| match text.as_deref().map(parse_go_duration) {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(e)) => {
                errs.push(field.to_string(), e);
                Err(())
            }
        };
    let (Ok(hold), Ok(keepalive)) = (
        parse("spec.holdTime", &spec.hold_time),
        parse("spec.keepaliveTime", &spec.keepalive_time),
    ) else {
        return (None, None);
    };
    let (hold, keepalive, field) = match (hold, keepalive) {
        (None, None) => return (None, None),
        (Some(h), Some(k)) => (h, k, "spec.holdTime"),
        (Some(h), None) => (h, h / 3, "spec.holdTime"),
        (None, Some(k)) => (k * 3, k, "spec.keepaliveTime"),
    };
    let whole_seconds = hold.as_secs();
    if whole_seconds != 0 && whole_seconds < 3 {
        errs.push(
            field,
            format!("invalid hold time {hold:?}: must be 0 or >=3s"),
        );
        return (None, None);
    }
    if keepalive > hold {
        errs.push(
            "spec.keepaliveTime",
            format!("invalid keepaliveTime {keepalive:?}, must be lower than holdTime {hold:?}"),
        );
        return (None, None);
    }
    (Some(whole_seconds), Some(keepalive.as_secs()))
}

fn password_secret(secret_name: &str, snapshot: &Snapshot, errs: &mut Errors<'_>) {
    let Some(secret) = snapshot
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(secret_name))
    else {
        errs.push_transient(
            "spec.passwordSecret",
            format!("secret ref not found: Secret {secret_name:?}"),
        );
        return;
    };
    if secret.type_.as_deref() != Some("kubernetes.io/basic-auth") {
        errs.push(
            "spec.passwordSecret",
            format!("secret type mismatch on Secret {secret_name:?}, type \"kubernetes.io/basic-auth\" is expected"),
        );
        return;
    }
    let in_data = secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key("password"));
    let in_string_data = secret
        .string_data
        .as_ref()
        .is_some_and(|d| d.contains_key("password"));
    if !in_data && !in_string_data {
        errs.push(
            "spec.passwordSecret",
            format!("password not specified in the Secret {secret_name:?}"),
        );
    }
}

/// BFD echo mode cannot run on a session that advertises IPv6 prefixes.
fn bfd_echo_with_ipv6(
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
