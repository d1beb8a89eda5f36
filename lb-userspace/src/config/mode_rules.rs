//! The rules of `METALLB_BGP_TYPE`: what native mode refuses, what FRR's one router per node
//! requires of the peers, and what only FRR itself can do (raw configuration, unnumbered
//! peers), which Herald's own speaker refuses in every mode rather than silently dropping it.

use kube::ResourceExt;

use super::error::ConfigError;
use super::model::ParsedPeer;
use super::selector::Labels;
use super::snapshot::{BgpMode, Snapshot};
use crate::api;

/// Every mode rule for `snapshot` (none when the snapshot skips them, as MetalLB's ConfigMap
/// converter does), and the refusal of FRR's raw configuration in every mode.
pub(super) fn check(
    snapshot: &Snapshot,
    peers: &[ParsedPeer],
    nodes: &[(String, Labels)],
    errors: &mut Vec<ConfigError>,
) {
    bgp_extras(snapshot, errors);
    if snapshot.skip_mode_rules {
        return;
    }
    match snapshot.bgp_mode {
        BgpMode::Native => native_mode_rules(snapshot, errors),
        BgpMode::Frr | BgpMode::FrrK8s => {
            frr_peer_pairs(peers, nodes, errors);
            frr_only_features(snapshot, errors);
        }
    }
}

/// MetalLB's FRR mode appends the `extras` key of ConfigMap `bgpextras` to FRR's
/// configuration, and its native mode refuses any. Herald has no FRR to append it to.
fn bgp_extras(snapshot: &Snapshot, errors: &mut Vec<ConfigError>) {
    if snapshot
        .bgp_extras
        .as_deref()
        .is_some_and(|e| !e.trim().is_empty())
    {
        errors.push(ConfigError::new(
            "ConfigMap",
            super::snapshot::BGP_EXTRAS,
            "data.extras",
            "raw FRR configuration is not supported: Herald's speaker speaks BGP and BFD itself and runs no FRR to append it to; express it with BGPPeer, BGPAdvertisement and BFDProfile fields, or empty the key",
        ));
    }
}

fn native_mode_rules(snapshot: &Snapshot, errors: &mut Vec<ConfigError>) {
    const HINT: &str = "is not supported in native BGP mode (METALLB_BGP_TYPE=frr or frr-k8s)";
    // Herald's native speaker also carries what MetalLB's native speaker refuses: IPv6 over
    // MP-BGP, large communities, keepaliveTime, connectTime, vrf, disableMP,
    // dualStackAddressFamily, dynamicASN and localASN. What it does not do yet stays refused.
    for peer in &snapshot.peers {
        let name = peer.name_any();
        let spec = &peer.spec;
        let frr_only = [
            ("spec.bfdProfile", !spec.bfd_profile.is_empty()),
            ("spec.enableGracefulRestart", spec.enable_graceful_restart),
            ("spec.interface", !spec.interface.is_empty()),
        ];
        for (field, set) in frr_only {
            if set {
                errors.push(ConfigError::new(
                    "BGPPeer",
                    &name,
                    field,
                    format!("{} {HINT}", &field[5..]),
                ));
            }
        }
    }
    for profile in &snapshot.bfd_profiles {
        errors.push(ConfigError::new(
            "BFDProfile",
            &profile.name_any(),
            "",
            format!("BFDProfile {HINT}"),
        ));
    }
}

/// FRR runs one router per node: peers that can land on the same node must agree on the
/// router ID, differ in identity, and share myASN within a VRF.
/// In the FRR modes Herald's own speaker serves the peers; what only FRR itself can do is
/// refused, so that a configuration never silently loses a session.
fn frr_only_features(snapshot: &Snapshot, errors: &mut Vec<ConfigError>) {
    for peer in &snapshot.peers {
        if !peer.spec.interface.is_empty() {
            errors.push(ConfigError::new(
                "BGPPeer",
                &peer.name_any(),
                "spec.interface",
                "unnumbered BGP (interface) needs FRR itself; Herald's speaker peers with a peerAddress only",
            ));
        }
    }
}

fn frr_peer_pairs(peers: &[ParsedPeer], nodes: &[(String, Labels)], errors: &mut Vec<ConfigError>) {
    for (i, later) in peers.iter().enumerate() {
        for earlier in &peers[..i] {
            let share_node = nodes.is_empty() || !later.peer.nodes.is_disjoint(&earlier.peer.nodes);
            if !share_node {
                continue;
            }
            let (p, q) = (&later.spec, &earlier.spec);
            let err = |field: &str, message: String| {
                ConfigError::new("BGPPeer", &later.peer.name, field, message)
            };
            if p.router_id != q.router_id {
                errors.push(err(
                    "spec.routerID",
                    format!(
                        "routerID {:?} differs from {:?} of BGPPeer {:?}; in FRR mode peers selecting the same node must all have the same RouterID",
                        p.router_id, q.router_id, earlier.peer.name
                    ),
                ));
            }
            if identity(p) == identity(q) {
                let field = if p.peer_address.is_empty() {
                    "spec.interface"
                } else {
                    "spec.peerAddress"
                };
                errors.push(err(
                    field,
                    format!(
                        "peer {} already exists (BGPPeer {:?}); FRR mode doesn't support duplicate BGPPeers selecting the same node",
                        identity(p),
                        earlier.peer.name
                    ),
                ));
            }
            if p.my_asn != q.my_asn && p.vrf == q.vrf {
                errors.push(err(
                    "spec.myASN",
                    format!(
                        "myASN {} differs from {} of BGPPeer {:?}; in FRR mode peers selecting the same node must have the same myASN within the same VRF",
                        p.my_asn, q.my_asn, earlier.peer.name
                    ),
                ));
            }
        }
    }
}

/// MetalLB's peer identifier: address or interface, plus `-vrf` when a VRF is set.
fn identity(spec: &api::BGPPeerSpec) -> String {
    let id = if spec.peer_address.is_empty() {
        &spec.interface
    } else {
        &spec.peer_address
    };
    if spec.vrf.is_empty() {
        id.clone()
    } else {
        format!("{id}-{}", spec.vrf)
    }
}
