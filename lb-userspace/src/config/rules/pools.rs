//! The IPAddressPool rules: addresses, avoidBuggyIPs, autoAssign and serviceAllocation.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use kube::ResourceExt;

use super::objects::{by_name, select_names, selectors};
use crate::api;
use crate::config::address;
use crate::config::error::{ConfigError, Errors};
use crate::config::model::{Pool, ServiceAllocation};
use crate::config::selector::{Labels, Selector};
use crate::config::snapshot::Snapshot;

/// A pool plus what the advertisement rules need about its entries.
pub(crate) struct ParsedPool {
    pub pool: Pool,
    /// `(written entry, its CIDRs)` for the entries that parsed.
    pub entries: Vec<(String, Vec<IpNet>)>,
}

impl ParsedPool {
    pub(super) fn has_v6(&self) -> bool {
        self.pool.has_v6()
    }
}

pub(super) fn pools(
    snapshot: &Snapshot,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, ParsedPool> {
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
