use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::config::{Config, L2Advertisement, Pool};
use crate::election::SlicesByService;
use crate::election::fixtures::{excluded_node, node, service, slice};

fn pool(name: &str, cidrs: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        labels: BTreeMap::new(),
        ranges: cidrs.iter().map(|c| vec![c.parse().unwrap()]).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    }
}

fn ad(nodes: &[&str], interfaces: &[&str]) -> L2Advertisement {
    L2Advertisement {
        name: "ad".into(),
        pools: ["pool".to_string()].into(),
        service_selectors: vec![],
        nodes: nodes.iter().map(std::string::ToString::to_string).collect(),
        interfaces: interfaces
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        preferred_nodes: vec![],
    }
}

fn config(ads: Vec<L2Advertisement>) -> Config {
    let mut pools = BTreeMap::new();
    pools.insert(
        "pool".to_string(),
        pool(
            "pool",
            &["198.51.100.0/24", "2001:db8:0:2::/64", "10.0.0.0/24"],
        ),
    );
    Config {
        pools,
        l2_advertisements: ads,
        ..Config::default()
    }
}

fn eligible(v4: &[&str], v6: &[&str]) -> Eligible {
    Eligible {
        ipv4: v4.iter().map(std::string::ToString::to_string).collect(),
        ipv6: v6.iter().map(std::string::ToString::to_string).collect(),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(std::string::ToString::to_string).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn target(iface: &str, addr: &str) -> Target {
    Target {
        iface: iface.into(),
        ip: ip(addr),
    }
}

struct World {
    config: Config,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    nodes: Vec<Node>,
    live: Option<BTreeSet<String>>,
    ifaces: Eligible,
}

impl World {
    fn abc() -> World {
        World {
            config: config(vec![ad(&["node-a", "node-b", "node-c"], &[])]),
            services: vec![service("web", &["10.0.0.1"])],
            slices: vec![slice("web", &["node-a"])],
            nodes: vec![node("node-a"), node("node-b"), node("node-c")],
            live: Some(set(&["node-a", "node-b", "node-c"])),
            ifaces: eligible(&["eth0"], &["eth0"]),
        }
    }

    fn plan_on(&self, me: &str) -> Plan {
        let services: Vec<Arc<Service>> = self.services.iter().cloned().map(Arc::new).collect();
        let slices = SlicesByService::new(&self.slices);
        plan(&Inputs {
            cluster: Cluster {
                node: me,
                config: &self.config,
                services: &services,
                slices: &slices,
                nodes: &self.nodes,
                lb_class: None,
                ignore_exclude_lb: false,
            },
            live_speakers: self.live.as_ref(),
            interfaces: &self.ifaces,
        })
    }
}

/// The spec's vector: IP 10.0.0.1 orders nodes [b, a, c].
#[test]
fn elected_node_announces_others_do_not() {
    let w = World::abc();
    let b = w.plan_on("node-b");
    assert_eq!(b.targets(), [target("eth0", "10.0.0.1")].into());
    assert!(matches!(
        b.services["default/web"].decision,
        Decision::Announce {
            restricted: false,
            ..
        }
    ));
    for other in ["node-a", "node-c"] {
        let p = w.plan_on(other);
        assert!(p.targets().is_empty());
        assert_eq!(
            p.services["default/web"].decision,
            Decision::Elsewhere {
                node: "node-b".into()
            }
        );
        assert!(p.l2_statuses(other).is_empty());
        assert!(p.events(other).is_empty());
    }
    let status = &b.l2_statuses("node-b")["default/web"];
    assert_eq!(status.node, "node-b");
    assert_eq!(status.service_name, "web");
    assert_eq!(status.service_namespace, "default");
    assert!(
        status.interfaces.is_empty(),
        "unrestricted: no interfaces listed"
    );
    assert_eq!(
        b.events("node-b").into_iter().collect::<Vec<_>>(),
        vec![PlannedEvent {
            namespace: "default".into(),
            name: "web".into(),
            warning: false,
            reason: "nodeAssigned",
            message: "announcing from node \"node-b\" with protocol \"layer2\"".into(),
        }]
    );
    assert_eq!(
        b.announced(),
        [("default/web".to_string(), ip("10.0.0.1"))].into()
    );
}

#[test]
fn winner_death_moves_to_next_and_old_winner_withdraws() {
    let mut w = World::abc();
    let before = w.plan_on("node-b").targets();
    // node-b died: the next in order (a) takes over; b (if it still ran) withdraws.
    w.live = Some(set(&["node-a", "node-c"]));
    assert_eq!(w.plan_on("node-a").targets(), before);
    let changes = diff(&before, &w.plan_on("node-b").targets());
    assert_eq!(changes.withdraw, vec![target("eth0", "10.0.0.1")]);
    assert!(changes.announce.is_empty());
    assert!(w.plan_on("node-c").targets().is_empty());
    // Removing a non-winner moves nothing.
    w.live = Some(set(&["node-a", "node-b"]));
    assert_eq!(w.plan_on("node-b").targets(), before);
}

#[test]
fn memberlist_disabled_uses_every_node_and_exclusion_label() {
    let mut w = World::abc();
    w.live = None;
    assert!(!w.plan_on("node-b").targets().is_empty());
    w.nodes = vec![node("node-a"), excluded_node("node-b"), node("node-c")];
    assert!(w.plan_on("node-b").targets().is_empty());
    assert!(!w.plan_on("node-a").targets().is_empty());
}

#[test]
fn named_interfaces_partial_missing_and_all_missing() {
    let mut w = World::abc();
    w.config = config(vec![ad(&["node-a", "node-b", "node-c"], &["eth1", "eth9"])]);
    w.ifaces = eligible(&["eth0", "eth1"], &["eth0", "eth1"]);
    let p = w.plan_on("node-b");
    assert_eq!(p.targets(), [target("eth1", "10.0.0.1")].into());
    let status = &p.l2_statuses("node-b")["default/web"];
    assert_eq!(status.interfaces.len(), 1);
    assert_eq!(status.interfaces[0].name, "eth1");
    let events = p.events("node-b");
    assert!(
        events.iter().any(|e| e.reason == "interfaceMissing"
            && e.warning
            && e.message
                == "interface \"eth9\" named by L2Advertisement \"ad\" is missing or not eligible on node \"node-b\"; announcing on the others"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.reason == "nodeAssigned"));

    w.ifaces = eligible(&["eth0"], &["eth0"]);
    let p = w.plan_on("node-b");
    assert!(p.targets().is_empty());
    assert!(matches!(
        p.services["default/web"].decision,
        Decision::Failed { .. }
    ));
    let events: Vec<_> = p.events("node-b").into_iter().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "announceFailed");
    assert!(events[0].warning);
    assert_eq!(
        events[0].message,
        "the interfaces specified by the L2Advertisements are not available on node \"node-b\": \"eth1\" (L2Advertisement \"ad\"), \"eth9\" (L2Advertisement \"ad\")"
    );
    // Interface availability is not part of eligibility: nobody else takes over.
    assert!(w.plan_on("node-a").targets().is_empty());
}

#[test]
fn address_outside_every_pool_is_not_announced_and_reported() {
    let mut w = World::abc();
    w.services = vec![
        service("web", &["203.0.113.9"]),
        service("ok", &["10.0.0.1"]),
    ];
    w.slices = vec![slice("web", &["node-a"]), slice("ok", &["node-a"])];
    for me in ["node-a", "node-b", "node-c"] {
        let p = w.plan_on(me);
        assert!(p.services["default/web"].targets.is_empty());
        assert!(matches!(
            p.services["default/web"].decision,
            Decision::NoPool { .. }
        ));
        assert!(p.events(me).iter().any(|e| e.name == "web"
            && e.reason == "announceFailed"
            && e.message.contains("203.0.113.9")));
    }
    // The rest keeps announcing.
    assert_eq!(
        w.plan_on("node-b").targets(),
        [target("eth0", "10.0.0.1")].into()
    );
}

#[test]
fn services_without_addresses_or_of_other_classes_are_skipped() {
    let mut w = World::abc();
    let mut classed = service("classed", &["10.0.0.1"]);
    classed.spec.as_mut().unwrap().load_balancer_class = Some("other".into());
    let mut cluster_ip = service("cip", &["10.0.0.1"]);
    cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    w.services = vec![service("pending", &[]), classed, cluster_ip];
    let p = w.plan_on("node-b");
    assert!(p.services.is_empty());
    assert!(p.problems.is_empty());
    // A bad ingress address is a problem naming the field, not a crash.
    w.services = vec![service("bad", &["not-an-ip"])];
    let p = w.plan_on("node-b");
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0]
            .message
            .contains("status.loadBalancer.ingress")
    );
}

#[test]
fn no_serving_endpoint_means_nobody() {
    let mut w = World::abc();
    w.slices = vec![];
    for me in ["node-a", "node-b", "node-c"] {
        let p = w.plan_on(me);
        assert!(p.targets().is_empty());
        assert!(matches!(
            p.services["default/web"].decision,
            Decision::Nobody { .. }
        ));
        assert!(p.events(me).is_empty());
    }
}

#[test]
fn dual_stack_uses_per_family_interfaces() {
    let mut w = World::abc();
    w.services = vec![service("web", &["10.0.0.1", "2001:db8:0:2::5"])];
    w.ifaces = eligible(&["eth0", "eth1"], &["eth1"]);
    let p = w.plan_on("node-b");
    assert_eq!(
        p.targets(),
        [
            target("eth0", "10.0.0.1"),
            target("eth1", "10.0.0.1"),
            target("eth1", "2001:db8:0:2::5"),
        ]
        .into()
    );
}

#[test]
fn pool_lookup_prefers_annotation_then_name_order() {
    let mut c = config(vec![]);
    c.pools
        .insert("aaa".into(), pool("aaa", &["198.51.100.0/25"]));
    let ips = [ip("198.51.100.5")];
    assert_eq!(pool_for(&c, &ips, None), Some("aaa"));
    assert_eq!(pool_for(&c, &ips, Some("pool")), Some("pool"));
    assert_eq!(pool_for(&c, &ips, Some("unknown")), Some("aaa"));
    assert_eq!(
        pool_for(&c, &[ip("198.51.100.200")], Some("aaa")),
        Some("pool")
    );
    assert_eq!(pool_for(&c, &[ip("192.0.2.1")], None), None);
    assert_eq!(
        pool_for(&c, &[ip("198.51.100.5"), ip("2001:db8:0:2::1")], None),
        Some("pool")
    );
}

#[test]
fn events_are_reported_once_per_change() {
    let w = World::abc();
    let first = w.plan_on("node-b").events("node-b");
    assert_eq!(new_events(&BTreeSet::new(), &first).len(), 1);
    assert!(new_events(&first, &first).is_empty());
}

#[test]
fn diff_is_set_difference() {
    let current: BTreeSet<_> = [target("eth0", "10.0.0.1"), target("eth0", "10.0.0.2")].into();
    let desired: BTreeSet<_> = [target("eth0", "10.0.0.2"), target("eth1", "10.0.0.2")].into();
    let c = diff(&current, &desired);
    assert_eq!(c.withdraw, vec![target("eth0", "10.0.0.1")]);
    assert_eq!(c.announce, vec![target("eth1", "10.0.0.2")]);
    assert!(diff(&desired, &desired).is_empty());
}

proptest! {
    /// Every node evaluating the same inputs agrees: each Service's addresses are announced by
    /// exactly one live node (the one the election names) when any can, and never by a node
    /// that is not live.
    #[test]
    fn exactly_one_live_node_announces(
        node_count in 1usize..6,
        live_mask in 1u32..64,
        services in proptest::collection::vec((0u8..255, any::<bool>(), 0u32..64), 1..8),
    ) {
        let names: Vec<String> = (0..node_count).map(|i| format!("node-{i}")).collect();
        let live: BTreeSet<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| live_mask & (1 << i) != 0)
            .map(|(_, n)| n.clone())
            .collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for (i, (host, v6, endpoint_mask)) in services.iter().enumerate() {
            let addr = if *v6 { format!("2001:db8:0:2::{host:x}") } else { format!("198.51.100.{host}") };
            let svc_name = format!("s{i}");
            svcs.push(service(&svc_name, &[&addr]));
            let on: Vec<&str> = name_refs
                .iter()
                .enumerate()
                .filter(|(j, _)| endpoint_mask & (1 << j) != 0)
                .map(|(_, n)| *n)
                .collect();
            slices.push(slice(&svc_name, &on));
        }
        let w = World {
            config: config(vec![ad(&name_refs, &[])]),
            services: svcs,
            slices,
            nodes: names.iter().map(|n| node(n)).collect(),
            live: Some(live.clone()),
            ifaces: eligible(&["eth0"], &["eth0"]),
        };
        let plans: BTreeMap<&str, Plan> = name_refs.iter().map(|n| (*n, w.plan_on(n))).collect();
        for (i, (_, _, endpoint_mask)) in services.iter().enumerate() {
            let key = format!("default/s{i}");
            let announcers: Vec<&str> = plans
                .iter()
                .filter(|(_, p)| !p.services[&key].targets.is_empty())
                .map(|(n, _)| *n)
                .collect();
            let has_endpoints = *endpoint_mask & ((1 << node_count) - 1) != 0;
            if has_endpoints && !live.is_empty() {
                prop_assert_eq!(announcers.len(), 1, "service {} announcers {:?}", key, announcers);
                prop_assert!(live.contains(announcers[0]));
                // Everyone else names the same winner.
                for (n, p) in &plans {
                    if *n != announcers[0] {
                        prop_assert_eq!(
                            &p.services[&key].decision,
                            &Decision::Elsewhere { node: announcers[0].to_string() }
                        );
                    }
                }
            } else {
                prop_assert!(announcers.is_empty());
            }
        }
    }

    /// Applying the diff to the current set yields the desired set.
    #[test]
    fn diff_applies(
        current in proptest::collection::btree_set((0u8..4, 0u8..8), 0..12),
        desired in proptest::collection::btree_set((0u8..4, 0u8..8), 0..12),
    ) {
        let to_targets = |s: &BTreeSet<(u8, u8)>| -> BTreeSet<Target> {
            s.iter().map(|(i, h)| Target { iface: format!("eth{i}"), ip: ip(&format!("198.51.100.{h}")) }).collect()
        };
        let (current, desired) = (to_targets(&current), to_targets(&desired));
        let changes = diff(&current, &desired);
        let mut result = current.clone();
        for t in &changes.withdraw { prop_assert!(result.remove(t)); }
        for t in &changes.announce { prop_assert!(result.insert(t.clone())); }
        prop_assert_eq!(result, desired);
    }
}

#[test]
fn configuration_state_like_metallb() {
    let now = "2026-01-01T00:00:00Z".parse().unwrap();
    let patch = |errors| crate::k8s::config_state::status_patch(&configuration_state(errors, now));
    assert_eq!(
        patch(None)["status"],
        json!({
            "result": "Valid",
            "errorSummary": "",
            "conditions": [{
                "type": "configReconcilerValid",
                "status": "True",
                "reason": "Reconciled",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        })
    );
    assert_eq!(
        patch(Some("IPAddressPool \"p\": bad"))["status"],
        json!({
            "result": "Invalid",
            "errorSummary": "IPAddressPool \"p\": bad",
            "conditions": [{
                "type": "configReconcilerValid",
                "status": "False",
                "reason": "ConfigurationError",
                "message": "IPAddressPool \"p\": bad",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        })
    );
}

#[test]
fn withdrawals_wait_the_hand_over_overlap_and_cancel_when_wanted_again() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    let t = |ip: &str| Target {
        iface: "eth0".into(),
        ip: ip.parse().unwrap(),
    };
    let ms = Duration::from_millis;
    let mut pending = BTreeMap::new();
    let overlap = ms(250);
    // First planned at 0: not yet due; still not due at 249 ms; due at 250 ms.
    assert!(due_withdrawals(&mut pending, &[t("198.51.100.1")], ms(0), overlap).is_empty());
    assert!(due_withdrawals(&mut pending, &[t("198.51.100.1")], ms(249), overlap).is_empty());
    assert_eq!(
        due_withdrawals(&mut pending, &[t("198.51.100.1")], ms(250), overlap),
        vec![t("198.51.100.1")]
    );
    assert!(pending.is_empty());
    // Wanted again before the deadline: forgotten, and a later withdrawal starts a fresh wait.
    assert!(due_withdrawals(&mut pending, &[t("198.51.100.2")], ms(300), overlap).is_empty());
    assert!(due_withdrawals(&mut pending, &[], ms(400), overlap).is_empty());
    assert!(due_withdrawals(&mut pending, &[t("198.51.100.2")], ms(600), overlap).is_empty());
    assert_eq!(
        due_withdrawals(&mut pending, &[t("198.51.100.2")], ms(850), overlap),
        vec![t("198.51.100.2")]
    );
    // Zero overlap withdraws at once.
    assert_eq!(
        due_withdrawals(&mut pending, &[t("2001:db8::1")], ms(900), Duration::ZERO),
        vec![t("2001:db8::1")]
    );
}

#[test]
fn a_service_sees_only_its_own_slices_by_namespace_and_name() {
    let key = "default/web";
    let mut w = World::abc();
    // Endpoints only in slices of other Services: a same name in another namespace, a slice
    // without the service-name label, another Service's: none of them serves "web".
    let mut elsewhere = slice("web", &["node-a"]);
    elsewhere.metadata.namespace = Some("other".into());
    let mut unlabelled = slice("web", &["node-a"]);
    unlabelled.metadata.labels = None;
    w.slices = vec![elsewhere, unlabelled, slice("webx", &["node-a"])];
    assert!(
        matches!(
            w.plan_on("node-b").services[key].decision,
            Decision::Nobody { .. }
        ),
        "{:?}",
        w.plan_on("node-b").services[key].decision
    );
    // Its own slice, beside all of those: it is served again (the spec's order: b wins).
    w.slices.push(slice("web", &["node-a"]));
    assert!(matches!(
        w.plan_on("node-b").services[key].decision,
        Decision::Announce { .. }
    ));
}
