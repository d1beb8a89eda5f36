use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;
use crate::bgp::policy::{BgpPlan, ServiceBgp};

fn l2(node: &str, svc: &str, ifaces: &[&str]) -> L2ServiceStatus {
    L2ServiceStatus {
        node: node.into(),
        service_name: svc.into(),
        service_namespace: "default".into(),
        interfaces: ifaces
            .iter()
            .map(|n| crate::api::InterfaceInfo {
                name: n.to_string(),
            })
            .collect(),
    }
}

fn existing<S>(name: &str, svc: Option<&str>, status: Option<S>) -> ExistingStatus<S> {
    ExistingStatus {
        name: name.into(),
        service_key: svc.map(|s| format!("default/{s}")),
        status,
    }
}

#[test]
fn status_actions_table() {
    let desired: BTreeMap<String, L2ServiceStatus> = [
        ("default/web".to_string(), l2("node-b", "web", &[])),
        ("default/api".to_string(), l2("node-b", "api", &["eth1"])),
        ("default/new".to_string(), l2("node-b", "new", &[])),
    ]
    .into();
    let have = vec![
        // up to date
        existing("l2-1", Some("web"), Some(l2("node-b", "web", &[]))),
        // duplicate of web
        existing("l2-2", Some("web"), Some(l2("node-b", "web", &[]))),
        // interfaces changed
        existing("l2-3", Some("api"), Some(l2("node-b", "api", &["eth0"]))),
        // no longer announced here
        existing("l2-4", Some("gone"), Some(l2("node-b", "gone", &[]))),
        // no labels
        existing("l2-5", None, None),
    ];
    let actions = status_actions(&have, &desired);
    assert_eq!(
        actions,
        vec![
            StatusAction::Delete {
                name: "l2-2".into()
            },
            StatusAction::UpdateStatus {
                name: "l2-3".into(),
                status: l2("node-b", "api", &["eth1"]),
            },
            StatusAction::Delete {
                name: "l2-4".into()
            },
            StatusAction::Delete {
                name: "l2-5".into()
            },
            StatusAction::Create {
                service_key: "default/new".into(),
                status: l2("node-b", "new", &[]),
            },
        ]
    );
    // Immutable field differs (another node's name): delete and recreate.
    let have = vec![existing(
        "l2-9",
        Some("web"),
        Some(l2("node-a", "web", &[])),
    )];
    let desired: BTreeMap<_, _> = [("default/web".to_string(), l2("node-b", "web", &[]))].into();
    assert_eq!(
        status_actions(&have, &desired),
        vec![
            StatusAction::Delete {
                name: "l2-9".into()
            },
            StatusAction::Create {
                service_key: "default/web".into(),
                status: l2("node-b", "web", &[]),
            },
        ]
    );
    // Created but status not written yet: just write the status.
    let have = vec![existing("l2-8", Some("web"), None)];
    assert_eq!(
        status_actions(&have, &desired),
        vec![StatusAction::UpdateStatus {
            name: "l2-8".into(),
            status: l2("node-b", "web", &[]),
        }]
    );
}

fn bgp(node: &str, svc: &str, peers: &[&str]) -> BgpServiceStatus {
    BgpServiceStatus {
        node: node.into(),
        service_name: svc.into(),
        service_namespace: "default".into(),
        peers: peers.iter().map(ToString::to_string).collect(),
    }
}

/// A plan whose BGP part carries each `(service, peers)`; no peers: not announced from here.
fn bgp_plan(services: &[(&str, &[&str])]) -> Plan {
    let services = services
        .iter()
        .map(|(name, peers)| {
            (
                format!("default/{name}"),
                ServiceBgp {
                    namespace: "default".into(),
                    name: (*name).into(),
                    ips: vec![IpAddr::from([198, 51, 100, 10])],
                    peers: peers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<BTreeSet<_>>(),
                    reason: peers
                        .is_empty()
                        .then(|| "no BGP session takes its advertisements".into()),
                    error: None,
                },
            )
        })
        .collect();
    Plan {
        bgp: BgpPlan {
            services,
            ..BgpPlan::default()
        },
        ..Plan::default()
    }
}

#[test]
fn bgp_statuses_list_the_sorted_peers_of_each_carried_service() {
    let plan = bgp_plan(&[("web", &["zeta", "alpha"]), ("idle", &[])]);
    let statuses = plan.bgp_statuses("node-a");
    assert_eq!(
        statuses,
        [(
            "default/web".to_string(),
            bgp("node-a", "web", &["alpha", "zeta"])
        )]
        .into(),
        "a Service no session carries has no object"
    );
    assert!(plan.statuses("node-a").l2.is_empty());
    assert_eq!(plan.statuses("node-a").bgp, statuses);
}

#[test]
fn bgp_status_objects_follow_the_plan() {
    // First pass: nothing listed, one object to create.
    let desired = bgp_plan(&[("web", &["r4"])]).bgp_statuses("node-a");
    assert_eq!(
        status_actions(&[], &desired),
        vec![StatusAction::Create {
            service_key: "default/web".into(),
            status: bgp("node-a", "web", &["r4"]),
        }]
    );
    // A second peer carries it: the peers are updated in place.
    let listed = vec![existing(
        "bgp-x1",
        Some("web"),
        Some(bgp("node-a", "web", &["r4"])),
    )];
    let desired = bgp_plan(&[("web", &["r4", "r6"])]).bgp_statuses("node-a");
    assert_eq!(
        status_actions(&listed, &desired),
        vec![StatusAction::UpdateStatus {
            name: "bgp-x1".into(),
            status: bgp("node-a", "web", &["r4", "r6"]),
        }]
    );
    // Unchanged: nothing to write.
    let listed = vec![existing(
        "bgp-x1",
        Some("web"),
        Some(bgp("node-a", "web", &["r4", "r6"])),
    )];
    assert_eq!(status_actions(&listed, &desired), vec![]);
    // No session carries it any more (or the Service is gone): deleted.
    for plan in [bgp_plan(&[("web", &[])]), bgp_plan(&[])] {
        assert_eq!(
            status_actions(&listed, &plan.bgp_statuses("node-a")),
            vec![StatusAction::Delete {
                name: "bgp-x1".into()
            }]
        );
    }
    // Another node's object under this node's label (a renamed node): recreated.
    let listed = vec![existing(
        "bgp-x2",
        Some("web"),
        Some(bgp("node-z", "web", &["r4"])),
    )];
    let desired = bgp_plan(&[("web", &["r4"])]).bgp_statuses("node-a");
    assert_eq!(
        status_actions(&listed, &desired),
        vec![
            StatusAction::Delete {
                name: "bgp-x2".into()
            },
            StatusAction::Create {
                service_key: "default/web".into(),
                status: bgp("node-a", "web", &["r4"]),
            },
        ]
    );
}
