//! The BGPPeer rules: addresses, ASNs, timers, the password Secret, the BFD profile and the
//! nodes each peer applies to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::objects::{by_name, select_names, selectors};
use crate::api;
use crate::config::duration::parse_go_duration;
use crate::config::error::{ConfigError, Errors};
use crate::config::model::{BfdProfile, ParsedPeer, Peer};
use crate::config::selector::Labels;
use crate::config::snapshot::Snapshot;

pub(super) fn peers(
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
