//! The rules: from a [`Snapshot`] to a [`Config`] or every [`ConfigError`], as MetalLB's
//! parser (`internal/config`) decides. Objects are read in name order, as the API server lists
//! them, so the result does not depend on the order objects were given in.

mod advertisements;
mod objects;
mod peers;
mod pools;
mod profiles;

use kube::ResourceExt;

use super::error::ConfigError;
use super::mode_rules;
use super::model::Config;
use super::selector::Labels;
use super::snapshot::Snapshot;
use advertisements::{
    bfd_echo_with_ipv6, bgp_advertisements, l2_advertisements, local_pref_conflicts,
};
use peers::peers;
use pools::pools;
use profiles::{bfd_profiles, community_aliases};

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
