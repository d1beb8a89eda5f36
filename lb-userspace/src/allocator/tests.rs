//! Table tests for Algorithm A and for the Service view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::*;
use crate::config::{Pool, Selector, ServiceAllocation};

pub(crate) fn pool(name: &str, entries: &[&[&str]]) -> Pool {
    Pool {
        name: name.into(),
        labels: BTreeMap::new(),
        ranges: entries
            .iter()
            .map(|e| e.iter().map(|c| c.parse().unwrap()).collect())
            .collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    }
}

fn pools(list: Vec<Pool>) -> BTreeMap<String, Pool> {
    list.into_iter().map(|p| (p.name.clone(), p)).collect()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn k8s(name: &str, extra: Value) -> Service {
    let mut base = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}]}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn svc(name: &str, extra: Value) -> ServiceInfo {
    ServiceInfo::from_service(&k8s(name, extra)).unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn assigned(outcome: &Outcome) -> (Vec<String>, String) {
    match &outcome.status {
        Status::Assigned { ips, pool } => {
            (ips.iter().map(ToString::to_string).collect(), pool.clone())
        }
        other => panic!(
            "{}: expected an assignment, got {other:?} {:?}",
            outcome.service, outcome.events
        ),
    }
}

fn ip_of(outcome: &Outcome) -> String {
    assigned(outcome).0.join(",")
}

fn reasons(outcome: &Outcome) -> Vec<&'static str> {
    outcome.events.iter().map(|e| e.reason.as_str()).collect()
}

fn pending(outcome: &Outcome) -> String {
    match &outcome.status {
        Status::Pending { reason } => reason.clone(),
        other => panic!("expected pending, got {other:?}"),
    }
}

/// The Service as it looks after the controller wrote `outcome`.
fn written(mut service: ServiceInfo, outcome: &Outcome) -> ServiceInfo {
    match &outcome.status {
        Status::Assigned { ips, pool } => {
            service.ingress_ips = Ok(ips.clone());
            service.allocated_from_pool = Some(pool.clone());
        }
        Status::Cleared { .. } | Status::Pending { .. } => {
            service.ingress_ips = Ok(vec![]);
            service.allocated_from_pool = None;
        }
        Status::Ignored | Status::Unchanged { .. } => {}
    }
    service
}

// ---- ServiceInfo::from_service ----

#[test]
fn family_comes_from_cluster_ips() {
    let s = svc(
        "a",
        json!({"spec": {"clusterIPs": ["10.96.0.1", "fd00::1"], "ipFamilies": ["IPv6", "IPv4"]}}),
    );
    assert_eq!(s.family, Ok(ServiceFamily::Dual));
    assert_eq!(s.primary_family, Family::V6);
    let s = svc(
        "a",
        json!({"spec": {"clusterIPs": null, "clusterIP": "fd00::1"}}),
    );
    assert_eq!(s.family, Ok(ServiceFamily::Single(Family::V6)));
    assert_eq!(s.primary_family, Family::V4, "ipFamilies unset means IPv4");
    let s = svc(
        "a",
        json!({"spec": {"clusterIPs": ["10.96.0.1", "10.96.0.2"]}}),
    );
    assert!(s.family.is_err());
    let s = svc("a", json!({"spec": {"clusterIPs": ["None"]}}));
    assert_eq!(s.family.unwrap_err().field, "spec.clusterIPs");
    let s = svc("a", json!({"spec": {"clusterIPs": null}}));
    assert!(!s.has_cluster_ip);
}

#[test]
fn requested_ips_sources_and_precedence() {
    let s = svc("a", json!({"spec": {"loadBalancerIP": "192.0.2.1"}}));
    assert_eq!(s.requested_ips, Ok(ips(&["192.0.2.1"])));
    let s = svc(
        "a",
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": " 192.0.2.1 , 2001:db8::1"}}}),
    );
    assert_eq!(s.requested_ips, Ok(ips(&["192.0.2.1", "2001:db8::1"])));
    // metallb.io wins even when empty; then spec.loadBalancerIP is the only request.
    let s = svc(
        "a",
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "", "metallb.universe.tf/loadBalancerIPs": "192.0.2.9"}},
               "spec": {"loadBalancerIP": "192.0.2.1"}}),
    );
    assert_eq!(s.requested_ips, Ok(ips(&["192.0.2.1"])));
    let s = svc(
        "a",
        json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "192.0.2.9"}}}),
    );
    assert_eq!(s.requested_ips, Ok(ips(&["192.0.2.9"])));
    assert_eq!(
        s.deprecated_annotations,
        ["metallb.universe.tf/loadBalancerIPs"]
    );
    // Malformed: both fields, unparsable, two of one family, three addresses.
    for extra in [
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1"}}, "spec": {"loadBalancerIP": "192.0.2.1"}}),
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.300"}}}),
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1,192.0.2.2"}}}),
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1,2001:db8::1,192.0.2.2"}}}),
        json!({"spec": {"loadBalancerIP": "nope"}}),
    ] {
        let s = svc("a", extra.clone());
        let err = s.requested_ips.expect_err(&extra.to_string());
        assert!(err.field.contains("loadBalancerIP"), "{err}");
    }
    // IPv4-mapped IPv6 is IPv4, as in Go.
    let s = svc("a", json!({"spec": {"loadBalancerIP": "::ffff:192.0.2.1"}}));
    assert_eq!(s.requested_ips, Ok(ips(&["192.0.2.1"])));
}

#[test]
fn keys_pool_ports_and_other_fields() {
    let s = svc(
        "a",
        json!({"metadata": {"namespace": "ns", "labels": {"x": "y"}, "annotations": {
                  "metallb.universe.tf/address-pool": "old", "metallb.io/address-pool": "new",
                  "metallb.universe.tf/allow-shared-ip": "k1"}},
               "spec": {"externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"},
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}],
                        "loadBalancerClass": "cls", "ipFamilyPolicy": "PreferDualStack"},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"hostname": "x"}]}}}),
    );
    assert_eq!(s.key(), "ns/a");
    assert_eq!(s.pool_annotation.as_deref(), Some("new"));
    assert_eq!(s.sharing_key, "k1");
    assert!(s.has_sharing_annotation);
    assert_eq!(s.backend_key, "a=1,b=2");
    assert_eq!(
        s.ports,
        [
            Port {
                protocol: "UDP".into(),
                port: 53
            },
            Port {
                protocol: "TCP".into(),
                port: 53
            }
        ]
    );
    assert_eq!(s.lb_class.as_deref(), Some("cls"));
    assert_eq!(s.ip_family_policy, IpFamilyPolicy::PreferDualStack);
    assert_eq!(s.ingress_ips, Ok(ips(&["192.0.2.7"])));
    assert_eq!(s.labels.get("x").map(String::as_str), Some("y"));
    assert_eq!(
        s.deprecated_annotations,
        [
            "metallb.universe.tf/address-pool",
            "metallb.universe.tf/allow-shared-ip"
        ]
    );
    // Cluster policy: no backend key.
    assert_eq!(
        svc("b", json!({"spec": {"selector": {"a": "1"}}})).backend_key,
        ""
    );
}

#[test]
fn malformed_services_are_rejected_with_the_field() {
    let mut unnamed = k8s("x", json!({}));
    unnamed.metadata.name = None;
    assert_eq!(
        ServiceInfo::from_service(&unnamed).unwrap_err().field,
        "metadata.name"
    );
    let bad = k8s("x", json!({"spec": {"ipFamilyPolicy": "Sometimes"}}));
    let err = ServiceInfo::from_service(&bad).unwrap_err();
    assert_eq!(
        (err.service.as_str(), err.field.as_str()),
        ("default/x", "spec.ipFamilyPolicy")
    );
    let bad = k8s("x", json!({"spec": {"ipFamilies": ["IPv5"]}}));
    assert_eq!(
        ServiceInfo::from_service(&bad).unwrap_err().field,
        "spec.ipFamilies[0]"
    );
    let bad = svc(
        "x",
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "bogus"}]}}}),
    );
    assert!(bad.ingress_ips.is_err());
}

// ---- Allocation ----

#[test]
fn lowest_free_address_in_written_order_including_network_address() {
    let p = pool(
        "p",
        &[
            &["10.0.1.0/31"],
            &["10.0.0.0/31"],
            &["10.0.0.8/32", "10.0.0.4/30"],
        ],
    );
    let mut a = Allocator::new(&pools(vec![p]), None);
    let got: Vec<String> = (0..7)
        .map(|i| ip_of(&a.reconcile(&svc(&format!("s{i}"), json!({})))))
        .collect();
    assert_eq!(
        got,
        [
            "10.0.1.0", "10.0.1.1", "10.0.0.0", "10.0.0.1", "10.0.0.8", "10.0.0.4", "10.0.0.5"
        ]
    );
    // Freed addresses are reused first.
    a.release("default/s1");
    assert_eq!(ip_of(&a.reconcile(&svc("n", json!({})))), "10.0.1.1");
}

#[test]
fn avoid_buggy_ips_skips_dot0_dot255_for_auto_and_requests() {
    let mut p = pool("p", &[&["10.0.0.254/31", "10.0.1.0/31"]]);
    p.avoid_buggy_ips = true;
    let mut a = Allocator::new(&pools(vec![p]), None);
    assert_eq!(ip_of(&a.reconcile(&svc("a", json!({})))), "10.0.0.254");
    assert_eq!(ip_of(&a.reconcile(&svc("b", json!({})))), "10.0.1.1");
    let o = a.reconcile(&svc("c", json!({"spec": {"loadBalancerIP": "10.0.1.0"}})));
    assert!(pending(&o).contains("not allowed in config"));
    assert_eq!(reasons(&o), ["AllocationFailed"]);
}

#[test]
fn ipv6_pools_of_any_size() {
    let mut a = Allocator::new(&pools(vec![pool("v6", &[&["2001:db8::/48"]])]), None);
    let s = |n: &str| svc(n, json!({"spec": {"clusterIPs": ["fd00::1"]}}));
    assert_eq!(ip_of(&a.reconcile(&s("a"))), "2001:db8::");
    assert_eq!(ip_of(&a.reconcile(&s("b"))), "2001:db8::1");
    let counters = a.pool_counters()["v6"];
    assert_eq!(
        (counters.assigned_ipv6, counters.available_ipv6),
        (2, i64::MAX - 2)
    );
}

/// Pools far too large to enumerate (2^127 and 2^80 addresses): allocation, requests near the
/// end, release and counters must all work on intervals; a walk would never finish.
#[test]
fn huge_ipv6_pools_are_never_walked() {
    let mut a = Allocator::new(
        &pools(vec![pool("huge", &[&["8000::/1"], &["2001:db8::/48"]])]),
        None,
    );
    let s = |n: &str, extra: Value| {
        let mut base = json!({"spec": {"clusterIPs": ["fd00::1"]}});
        merge(&mut base, extra);
        svc(n, base)
    };
    let last = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let at_end = a.reconcile(&s("end", json!({"spec": {"loadBalancerIP": last}})));
    assert_eq!(ip_of(&at_end), last);
    assert_eq!(ip_of(&a.reconcile(&s("a", json!({})))), "8000::");
    assert_eq!(ip_of(&a.reconcile(&s("b", json!({})))), "8000::1");
    let in_second_entry = a.reconcile(&s(
        "c",
        json!({"spec": {"loadBalancerIP": "2001:db8:0:ffff:ffff:ffff:ffff:fffe"}}),
    ));
    assert_eq!(
        ip_of(&in_second_entry),
        "2001:db8:0:ffff:ffff:ffff:ffff:fffe"
    );
    a.release("default/a");
    assert_eq!(ip_of(&a.reconcile(&s("d", json!({})))), "8000::");
    let counters = a.pool_counters()["huge"];
    assert_eq!(counters.assigned_ipv6, 4);
    assert_eq!(
        counters.available_ipv6,
        i64::MAX - 4,
        "saturated, never counted"
    );
}

#[test]
fn requested_ip_checks() {
    let mut restricted = pool("restricted", &[&["10.0.1.0/24"]]);
    restricted.service_allocation = Some(ServiceAllocation {
        priority: 0,
        namespaces: ["prod".to_string()].into(),
        service_selectors: vec![],
    });
    let mut manual = pool("manual", &[&["10.0.2.0/24"], &["2001:db8::/64"]]);
    manual.auto_assign = false;
    let mut a = Allocator::new(
        &pools(vec![pool("p", &[&["10.0.0.0/24"]]), restricted, manual]),
        None,
    );
    // autoAssign is irrelevant for a request.
    assert_eq!(
        assigned(&a.reconcile(&svc("a", json!({"spec": {"loadBalancerIP": "10.0.2.5"}})))).1,
        "manual"
    );
    // Not in any pool.
    let o = a.reconcile(&svc("b", json!({"spec": {"loadBalancerIP": "192.0.2.1"}})));
    assert_eq!(pending(&o), "[\"192.0.2.1\"] is not allowed in config");
    // The pool's serviceAllocation must accept the Service.
    let o = a.reconcile(&svc("c", json!({"spec": {"loadBalancerIP": "10.0.1.5"}})));
    assert_eq!(
        pending(&o),
        "pool restricted not compatible for ip assignment"
    );
    let o = a.reconcile(&svc(
        "c2",
        json!({"metadata": {"namespace": "prod"}, "spec": {"loadBalancerIP": "10.0.1.5"}}),
    ));
    assert_eq!(assigned(&o).1, "restricted");
    // Family must match the Service's.
    let o = a.reconcile(&svc(
        "d",
        json!({"spec": {"loadBalancerIP": "2001:db8::5"}}),
    ));
    assert!(pending(&o).contains("does not match the ipFamily"));
    // Every address in one pool.
    let dual = json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "10.0.0.9,2001:db8::9"}},
                      "spec": {"clusterIPs": ["10.96.0.1", "fd00::1"], "ipFamilyPolicy": "RequireDualStack"}});
    assert!(pending(&a.reconcile(&svc("e", dual))).contains("not allowed in config"));
    // Requested dual-stack addresses keep the written order.
    let dual = json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "2001:db8::9,10.0.2.9"}},
                      "spec": {"clusterIPs": ["10.96.0.1", "fd00::1"], "ipFamilyPolicy": "RequireDualStack"}});
    assert_eq!(
        assigned(&a.reconcile(&svc("f", dual))).0,
        ["2001:db8::9", "10.0.2.9"]
    );
    // With a pool annotation, the owning pool must be that pool.
    let o = a.reconcile(&svc(
        "g",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "p"}}, "spec": {"loadBalancerIP": "10.0.2.7"}}),
    ));
    assert!(pending(&o).contains("not compatible with requested address pool p"));
    assert!(
        a.allocation("default/g").is_none(),
        "the failed claim is released"
    );
}

#[test]
fn malformed_requests_fail_allocation_or_keep_existing_addresses() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let bad = json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1"}}, "spec": {"loadBalancerIP": "10.0.0.2"}});
    let o = a.reconcile(&svc("new", bad.clone()));
    assert_eq!(reasons(&o), ["AllocationFailed"]);
    // An existing valid address is kept with LoadBalancerFailed.
    let first = svc("old", json!({}));
    let o = a.reconcile(&first);
    let mut changed = written(first, &o);
    let fresh = svc("old", bad);
    changed.requested_ips = fresh.requested_ips;
    let o = a.reconcile(&changed);
    assert_eq!(reasons(&o), ["LoadBalancerFailed"]);
    assert_eq!(ip_of(&o), "10.0.0.0");
    assert!(a.allocation("default/old").is_some());
}

#[test]
fn pool_annotation_has_no_spill_over_and_ignores_auto_assign() {
    let mut tiny = pool("tiny", &[&["10.0.9.0/32"]]);
    tiny.auto_assign = false;
    let mut a = Allocator::new(
        &pools(vec![
            pool("big", &[&["10.0.0.0/24"]]),
            tiny,
            pool("v6", &[&["2001:db8::/64"]]),
        ]),
        None,
    );
    let pinned = |n: &str, p: &str| {
        svc(
            n,
            json!({"metadata": {"annotations": {"metallb.io/address-pool": p}}}),
        )
    };
    assert_eq!(
        assigned(&a.reconcile(&pinned("a", "tiny"))),
        (vec!["10.0.9.0".into()], "tiny".into())
    );
    assert_eq!(
        pending(&a.reconcile(&pinned("b", "tiny"))),
        "no available IPs in pool \"tiny\" for IPv4 IPFamily"
    );
    assert_eq!(
        pending(&a.reconcile(&pinned("c", "nope"))),
        "unknown pool \"nope\""
    );
    // An IPv4 Service pinned to a v6-only pool fails.
    assert!(pending(&a.reconcile(&pinned("d", "v6"))).contains("no available IPs in pool \"v6\""));
    // The deprecated key works too; metallb.io wins when both are present.
    let both = svc(
        "e",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "big", "metallb.universe.tf/address-pool": "tiny"}}}),
    );
    assert_eq!(assigned(&a.reconcile(&both)).1, "big");
}

#[test]
fn pool_annotation_change_moves_the_service_silently() {
    let mut a = Allocator::new(
        &pools(vec![
            pool("a", &[&["10.0.0.0/24"]]),
            pool("b", &[&["10.0.1.0/24"]]),
        ]),
        None,
    );
    let s = svc("s", json!({}));
    let o = a.reconcile(&s);
    assert_eq!(assigned(&o).1, "a");
    let mut moved = written(s, &o);
    moved.pool_annotation = Some("b".into());
    let o = a.reconcile(&moved);
    assert_eq!(assigned(&o), (vec!["10.0.1.0".into()], "b".into()));
    assert_eq!(
        reasons(&o),
        ["IPAllocated"],
        "no ClearAssignment for an annotation change"
    );
}

#[test]
fn requested_ip_change_reallocates_silently() {
    let mut a = Allocator::new(&pools(vec![pool("a", &[&["10.0.0.0/24"]])]), None);
    let s = svc("s", json!({"spec": {"loadBalancerIP": "10.0.0.5"}}));
    let o = a.reconcile(&s);
    let mut moved = written(s, &o);
    moved.requested_ips = Ok(ips(&["10.0.0.6"]));
    let o = a.reconcile(&moved);
    assert_eq!(ip_of(&o), "10.0.0.6");
    assert_eq!(reasons(&o), ["IPAllocated"]);
    assert_eq!(o.freed, ips(&["10.0.0.5"]));
}

fn with_allocation(
    name: &str,
    priority: i64,
    namespaces: &[&str],
    selectors: Vec<Selector>,
    cidr: &'static str,
) -> Pool {
    let mut p = pool(name, &[&[cidr]]);
    p.service_allocation = Some(ServiceAllocation {
        priority,
        namespaces: namespaces
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        service_selectors: selectors,
    });
    p
}

fn sel(k: &str, v: &str) -> Selector {
    Selector {
        match_labels: [(k.to_string(), v.to_string())].into(),
        match_expressions: vec![],
    }
}

#[test]
fn automatic_tiers_and_priorities() {
    let list = vec![
        pool("z-general", &[&["10.9.0.0/24"]]),
        pool("a-general", &[&["10.8.0.0/24"]]),
        with_allocation("prio0", 0, &["team"], vec![], "10.0.0.0/24"),
        with_allocation("prio5", 5, &["team"], vec![], "10.5.0.0/24"),
        with_allocation("prio1", 1, &[], vec![sel("tier", "gold")], "10.1.0.0/24"),
        with_allocation("other-ns", 1, &["elsewhere"], vec![], "10.2.0.0/24"),
        with_allocation("all", 9, &[], vec![Selector::everything()], "10.3.0.0/32"),
    ];
    let mut a = Allocator::new(&pools(list), None);
    let team = |n: &str, labels: Value| {
        svc(
            n,
            json!({"metadata": {"namespace": "team", "labels": labels}}),
        )
    };
    assert_eq!(
        assigned(&a.reconcile(&team("gold", json!({"tier": "gold"})))).1,
        "prio1"
    );
    assert_eq!(assigned(&a.reconcile(&team("t1", json!({})))).1, "prio5");
    // A match-all serviceAllocation (priority only) catches every Service before tier 2.
    assert_eq!(assigned(&a.reconcile(&svc("d1", json!({})))).1, "all");
    // Tier 2 in name order once "all" is full.
    assert_eq!(assigned(&a.reconcile(&svc("d2", json!({})))).1, "a-general");
}

#[test]
fn priority_zero_sorts_last_and_non_accepting_pools_are_never_used() {
    let list = vec![
        with_allocation("p0", 0, &["team"], vec![], "10.0.0.0/24"),
        with_allocation("p3", 3, &["team"], vec![], "10.3.0.0/32"),
        with_allocation(
            "selective",
            1,
            &["team"],
            vec![sel("app", "db")],
            "10.1.0.0/24",
        ),
    ];
    let mut a = Allocator::new(&pools(list), None);
    let s = |n: &str| svc(n, json!({"metadata": {"namespace": "team"}}));
    assert_eq!(assigned(&a.reconcile(&s("a"))).1, "p3");
    assert_eq!(assigned(&a.reconcile(&s("b"))).1, "p0");
    // Default namespace: no tier-1 pool accepts, no tier 2 exists.
    assert_eq!(
        pending(&a.reconcile(&svc("c", json!({})))),
        "no available IPs"
    );
}

#[test]
fn namespace_quirk_pool_is_never_auto_assigned_but_can_be_requested() {
    let quirk = with_allocation("quirk", 1, &[], vec![], "10.0.0.0/24");
    let mut a = Allocator::new(&pools(vec![quirk]), None);
    assert_eq!(
        pending(&a.reconcile(&svc("a", json!({})))),
        "no available IPs"
    );
    assert_eq!(
        ip_of(&a.reconcile(&svc("b", json!({"spec": {"loadBalancerIP": "10.0.0.3"}})))),
        "10.0.0.3"
    );
}

#[test]
fn auto_assign_false_pools_are_skipped() {
    let mut off = pool("a-off", &[&["10.0.0.0/24"]]);
    off.auto_assign = false;
    let mut off_sa = with_allocation(
        "b-off-sa",
        1,
        &[],
        vec![Selector::everything()],
        "10.1.0.0/24",
    );
    off_sa.auto_assign = false;
    let mut a = Allocator::new(
        &pools(vec![off, off_sa, pool("c-on", &[&["10.2.0.0/24"]])]),
        None,
    );
    assert_eq!(assigned(&a.reconcile(&svc("a", json!({})))).1, "c-on");
}

fn dual(name: &str, policy: &str, families: &[&str]) -> ServiceInfo {
    svc(
        name,
        json!({"spec": {"clusterIPs": ["10.96.0.1", "fd00::1"], "ipFamilyPolicy": policy, "ipFamilies": families}}),
    )
}

#[test]
fn dual_stack_policies_in_the_pool_scan() {
    let list = vec![
        pool("a-v4", &[&["10.0.0.0/32"]]),
        pool("b-v6", &[&["2001:db8::/126"]]),
        pool("c-both", &[&["10.1.0.0/24"], &["2001:db8:1::/64"]]),
    ];
    let mut a = Allocator::new(&pools(list), None);
    // Require and Prefer take the first pool with both, written IPv4 first.
    assert_eq!(
        assigned(&a.reconcile(&dual("r", "RequireDualStack", &[]))),
        (
            vec!["10.1.0.0".into(), "2001:db8:1::".into()],
            "c-both".into()
        )
    );
    assert_eq!(
        assigned(&a.reconcile(&dual("p", "PreferDualStack", &["IPv6"]))).1,
        "c-both"
    );
    // Without a pool holding both: Require fails, Prefer takes the primary family first.
    let mut a = Allocator::new(
        &pools(vec![
            pool("a-v4", &[&["10.0.0.0/32"]]),
            pool("b-v6", &[&["2001:db8::/126"]]),
        ]),
        None,
    );
    assert_eq!(
        pending(&a.reconcile(&dual("r", "RequireDualStack", &[]))),
        "no available IPs"
    );
    assert_eq!(
        assigned(&a.reconcile(&dual("p6", "PreferDualStack", &["IPv6", "IPv4"]))),
        (vec!["2001:db8::".into()], "b-v6".into())
    );
    assert_eq!(
        assigned(&a.reconcile(&dual("p4", "PreferDualStack", &[]))),
        (vec!["10.0.0.0".into()], "a-v4".into())
    );
    // Primary exhausted: the other family.
    assert_eq!(
        assigned(&a.reconcile(&dual("p4b", "PreferDualStack", &["IPv4"]))).1,
        "b-v6"
    );
}

#[test]
fn require_dual_stack_needs_two_cluster_ips() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let o = a.reconcile(&svc(
        "s",
        json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}),
    ));
    assert_eq!(reasons(&o), ["not enough clusterips"]);
    assert!(matches!(o.status, Status::Cleared { .. }));
}

#[test]
fn prefer_dual_stack_adds_the_other_family_from_the_same_pool() {
    let mut a = Allocator::new(
        &pools(vec![
            pool("v4", &[&["10.0.0.0/24"]]),
            pool("v6", &[&["2001:db8::/64"]]),
        ]),
        None,
    );
    let s = dual("s", "PreferDualStack", &[]);
    let o = a.reconcile(&s);
    assert_eq!(assigned(&o), (vec!["10.0.0.0".into()], "v4".into()));
    let s = written(s, &o);
    // The pool has no IPv6: AdditionalAssignFailed on every reconcile, address kept.
    for _ in 0..2 {
        let o = a.reconcile(&s);
        assert_eq!(reasons(&o), ["AdditionalAssignFailed"]);
        assert_eq!(ip_of(&o), "10.0.0.0");
    }
    // Once the pool gains IPv6 the address is added.
    let mut grown = pool("v4", &[&["10.0.0.0/24"], &["2001:db8:9::/64"]]);
    grown.name = "v4".into();
    a.set_config(&pools(vec![grown, pool("v6", &[&["2001:db8::/64"]])]));
    let o = a.reconcile(&s);
    assert_eq!(assigned(&o).0, ["10.0.0.0", "2001:db8:9::"]);
    assert_eq!(reasons(&o), ["IPAllocated"]);
    let s = written(s, &o);
    assert_eq!(
        reasons(&a.reconcile(&s)),
        Vec::<&str>::new(),
        "stable afterwards"
    );
}

#[test]
fn prefer_dual_stack_with_one_cluster_ip_does_not_flap() {
    let mut a = Allocator::new(
        &pools(vec![pool("both", &[&["10.0.0.0/24"], &["2001:db8::/64"]])]),
        None,
    );
    let mut s = svc("s", json!({"spec": {"ipFamilyPolicy": "PreferDualStack"}}));
    let first = a.reconcile(&s);
    assert_eq!(ip_of(&first), "10.0.0.0");
    for _ in 0..3 {
        s = written(s, &first);
        let o = a.reconcile(&s);
        assert_eq!(o.status, first.status);
        assert!(o.events.is_empty());
    }
}

#[test]
fn family_change_drops_addresses_without_clear_assignment() {
    let mut a = Allocator::new(
        &pools(vec![pool("p", &[&["10.0.0.0/24"], &["2001:db8::/64"]])]),
        None,
    );
    let s = svc("s", json!({}));
    let o = a.reconcile(&s);
    let mut s = written(s, &o);
    s.family = Ok(ServiceFamily::Single(Family::V6));
    let o = a.reconcile(&s);
    assert_eq!(ip_of(&o), "2001:db8::");
    assert_eq!(reasons(&o), ["IPAllocated"]);
}

#[test]
fn early_clears() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let s = svc("s", json!({}));
    let o = a.reconcile(&s);
    let s = written(s, &o);
    let mut not_lb = s.clone();
    not_lb.is_load_balancer = false;
    let o = a.reconcile(&not_lb);
    assert!(matches!(o.status, Status::Cleared { .. }) && o.events.is_empty());
    assert_eq!(o.freed, ips(&["10.0.0.0"]));
    let no_cluster_ip = svc("n", json!({"spec": {"clusterIPs": null}}));
    let o = a.reconcile(&no_cluster_ip);
    assert!(matches!(o.status, Status::Cleared { .. }) && o.events.is_empty());
    // No pools at all: every Service is cleared.
    let o = a.reconcile(&s);
    assert_eq!(ip_of(&o), "10.0.0.0");
    a.set_config(&BTreeMap::new());
    let o = a.reconcile(&written(s, &o));
    assert!(matches!(o.status, Status::Cleared { .. }) && o.events.is_empty());
}

#[test]
fn lb_class_filtering() {
    let p = pools(vec![pool("p", &[&["10.0.0.0/24"]])]);
    let classed = svc("c", json!({"spec": {"loadBalancerClass": "herald"}}));
    let plain = svc("p", json!({}));
    let mut unset = Allocator::new(&p, None);
    assert_eq!(unset.reconcile(&classed).status, Status::Ignored);
    assert!(matches!(
        unset.reconcile(&plain).status,
        Status::Assigned { .. }
    ));
    let mut set = Allocator::new(&p, Some("herald".into()));
    assert!(matches!(
        set.reconcile(&classed).status,
        Status::Assigned { .. }
    ));
    assert_eq!(set.reconcile(&plain).status, Status::Ignored);
    let other = svc("o", json!({"spec": {"loadBalancerClass": "other"}}));
    assert_eq!(set.reconcile(&other).status, Status::Ignored);
}

#[test]
fn bad_status_or_cluster_ips_stop_without_writing() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let s = svc(
        "s",
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}}}),
    );
    let o = a.reconcile(&s);
    assert_eq!(reasons(&o), ["nolbIPsIPFamily"]);
    assert!(matches!(o.status, Status::Unchanged { .. }));
    let s = svc(
        "t",
        json!({"spec": {"clusterIPs": ["bogus"]}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}),
    );
    assert_eq!(reasons(&a.reconcile(&s)), ["noclusterIPsIPFamily"]);
    // Without a status, a bad clusterIP fails the allocation.
    let s = svc("u", json!({"spec": {"clusterIPs": ["bogus"]}}));
    assert_eq!(reasons(&a.reconcile(&s)), ["AllocationFailed"]);
}

// ---- Sharing ----

fn shared(name: &str, key: &str, ports: Value) -> ServiceInfo {
    svc(
        name,
        json!({"metadata": {"annotations": {"metallb.io/allow-shared-ip": key}}, "spec": {"ports": ports}}),
    )
}

#[test]
fn sharing_keys_and_ports() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let dns_udp = shared("udp", "dns", json!([{"port": 53, "protocol": "UDP"}]));
    let dns_tcp = shared("tcp", "dns", json!([{"port": 53, "protocol": "TCP"}]));
    let dns_tcp2 = shared("tcp2", "dns", json!([{"port": 53, "protocol": "TCP"}]));
    let other_key = shared("other", "web", json!([{"port": 80}]));
    let no_key = svc("nokey", json!({}));
    assert_eq!(ip_of(&a.reconcile(&dns_udp)), "10.0.0.0");
    assert_eq!(
        ip_of(&a.reconcile(&dns_tcp)),
        "10.0.0.0",
        "TCP/53 and UDP/53 coexist"
    );
    assert_eq!(
        ip_of(&a.reconcile(&dns_tcp2)),
        "10.0.0.1",
        "port conflict moves on"
    );
    assert_eq!(ip_of(&a.reconcile(&other_key)), "10.0.0.2");
    assert_eq!(ip_of(&a.reconcile(&no_key)), "10.0.0.3");
    // Requests hit the same checks with MetalLB's messages.
    let o = a.reconcile(&svc("r1", json!({"spec": {"loadBalancerIP": "10.0.0.3"}})));
    assert!(pending(&o).contains("does not allow sharing"), "{o:?}");
    let mut r2 = shared("r2", "dns", json!([{"port": 53, "protocol": "UDP"}]));
    r2.requested_ips = Ok(ips(&["10.0.0.0"]));
    assert_eq!(
        pending(&a.reconcile(&r2)),
        "port UDP/53 is already in use on \"10.0.0.0\""
    );
    // The address is freed only when its last user releases it.
    assert!(a.release("default/udp").is_empty());
    assert_eq!(a.release("default/tcp"), ips(&["10.0.0.0"]));
    assert_eq!(ip_of(&a.reconcile(&svc("n", json!({})))), "10.0.0.0");
}

#[test]
fn co_location_wins_only_when_the_shared_address_comes_first() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let first = svc("first", json!({}));
    let o = a.reconcile(&first);
    assert_eq!(ip_of(&o), "10.0.0.0");
    assert_eq!(
        ip_of(&a.reconcile(&shared("s1", "k", json!([{"port": 80}])))),
        "10.0.0.1"
    );
    a.release("default/first");
    // 10.0.0.0 is free and comes before the shareable 10.0.0.1.
    assert_eq!(
        ip_of(&a.reconcile(&shared("s2", "k", json!([{"port": 81}])))),
        "10.0.0.0"
    );
    // Now 10.0.0.0 is shareable too and comes first.
    assert_eq!(
        ip_of(&a.reconcile(&shared("s3", "k", json!([{"port": 82}])))),
        "10.0.0.0"
    );
}

#[test]
fn backend_keys_must_match() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let local = |n: &str, app: &str, port: i32| {
        svc(
            n,
            json!({"metadata": {"annotations": {"metallb.io/allow-shared-ip": "k"}},
                   "spec": {"externalTrafficPolicy": "Local", "selector": {"app": app}, "ports": [{"port": port}]}}),
        )
    };
    assert_eq!(ip_of(&a.reconcile(&local("a", "x", 80))), "10.0.0.0");
    assert_eq!(ip_of(&a.reconcile(&local("b", "x", 81))), "10.0.0.0");
    assert_eq!(ip_of(&a.reconcile(&local("c", "y", 82))), "10.0.0.1");
}

#[test]
fn sole_user_may_change_keys_but_co_tenants_lose_the_address() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let alone = shared("alone", "k1", json!([{"port": 80}]));
    let o = a.reconcile(&alone);
    let mut alone = written(alone, &o);
    alone.sharing_key = "k2".into();
    let o = a.reconcile(&alone);
    assert_eq!(ip_of(&o), "10.0.0.0");
    assert!(o.events.is_empty());
    let alone = written(alone, &o);
    let buddy = shared("buddy", "k2", json!([{"port": 81}]));
    let o = a.reconcile(&buddy);
    assert_eq!(ip_of(&o), "10.0.0.0");
    let mut buddy = written(buddy, &o);
    // The buddy changes its key: it loses the shared address, the other keeps it.
    buddy.sharing_key = "k3".into();
    let o = a.reconcile(&buddy);
    assert_eq!(reasons(&o), ["ClearAssignment", "IPAllocated"]);
    assert_eq!(ip_of(&o), "10.0.0.1");
    assert!(o.freed.is_empty(), "10.0.0.0 is still used by alone");
    assert_eq!(ip_of(&a.reconcile(&alone)), "10.0.0.0");
    // A port clash introduced by a co-tenant also clears it.
    let o = a.reconcile(&shared("third", "k2", json!([{"port": 82}])));
    let mut third = written(shared("third", "k2", json!([{"port": 82}])), &o);
    assert_eq!(ip_of(&o), "10.0.0.0");
    third.ports = vec![Port {
        protocol: "TCP".into(),
        port: 80,
    }];
    let o = a.reconcile(&third);
    assert_eq!(reasons(&o), ["ClearAssignment", "IPAllocated"]);
}

// ---- Config changes and restart ----

#[test]
fn config_change_invalidations() {
    let mut restricted = with_allocation("r", 1, &["team"], vec![], "10.1.0.0/24");
    restricted.auto_assign = true;
    let mut a = Allocator::new(
        &pools(vec![pool("p", &[&["10.0.0.0/24"]]), restricted]),
        None,
    );
    let s = svc("s", json!({}));
    let o = a.reconcile(&s);
    assert_eq!(ip_of(&o), "10.0.0.0");
    let s = written(s, &o);
    let t = svc("t", json!({"metadata": {"namespace": "team"}}));
    let o = a.reconcile(&t);
    assert_eq!(assigned(&o).1, "r");
    let t = written(t, &o);

    // Renaming / expanding / autoAssign=false keep the address; the annotation follows.
    let mut renamed = pool("renamed", &[&["10.0.0.0/23"]]);
    renamed.auto_assign = false;
    let change = a.set_config(&pools(vec![
        renamed,
        with_allocation("r", 1, &["team"], vec![], "10.1.0.0/24"),
    ]));
    assert_eq!(
        change.moved,
        [(
            "default/s".to_string(),
            "p".to_string(),
            "renamed".to_string()
        )]
    );
    let o = a.reconcile(&s);
    assert_eq!(assigned(&o), (vec!["10.0.0.0".into()], "renamed".into()));
    assert!(o.events.is_empty());
    let s = written(s, &o);

    // The namespace no longer accepted: ClearAssignment, then re-allocate elsewhere.
    let change = a.set_config(&pools(vec![
        pool("renamed", &[&["10.0.0.0/23"]]),
        with_allocation("r", 1, &["other"], vec![], "10.1.0.0/24"),
    ]));
    assert!(change.forgotten.is_empty());
    let o = a.reconcile(&t);
    assert_eq!(reasons(&o), ["ClearAssignment", "IPAllocated"]);
    assert_eq!(assigned(&o).1, "renamed");
    let t = written(t, &o);

    // Shrunk out of the pool: forgotten, ClearAssignment, pending when nothing else fits.
    let change = a.set_config(&pools(vec![pool("renamed", &[&["10.0.1.0/32"]])]));
    // team/t had moved to 10.0.0.1 in "renamed": forgotten too.
    assert_eq!(change.forgotten, ["default/s", "team/t"]);
    let o = a.reconcile(&s);
    assert_eq!(reasons(&o), ["ClearAssignment", "IPAllocated"]);
    assert_eq!(ip_of(&o), "10.0.1.0");
    let o = a.reconcile(&t);
    assert_eq!(reasons(&o), ["ClearAssignment", "AllocationFailed"]);
    assert!(matches!(o.status, Status::Pending { .. }));
}

#[test]
fn newly_buggy_address_is_invalidated() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let s = svc("s", json!({}));
    let o = a.reconcile(&s);
    assert_eq!(ip_of(&o), "10.0.0.0");
    let mut buggy = pool("p", &[&["10.0.0.0/24"]]);
    buggy.avoid_buggy_ips = true;
    assert_eq!(a.set_config(&pools(vec![buggy])).forgotten, ["default/s"]);
    let o = a.reconcile(&written(s, &o));
    assert_eq!(reasons(&o), ["ClearAssignment", "IPAllocated"]);
    assert_eq!(ip_of(&o), "10.0.0.1");
}

#[test]
fn deleted_annotated_pool_clears_silently_then_fails_as_unknown() {
    let mut a = Allocator::new(
        &pools(vec![
            pool("x", &[&["10.0.0.0/24"]]),
            pool("y", &[&["10.1.0.0/24"]]),
        ]),
        None,
    );
    let s = svc(
        "s",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "x"}}}),
    );
    let o = a.reconcile(&s);
    let s = written(s, &o);
    a.set_config(&pools(vec![pool(
        "y",
        &[&["10.1.0.0/24"], &["10.0.0.0/24"]],
    )]));
    let o = a.reconcile(&s);
    assert_eq!(reasons(&o), ["AllocationFailed"]);
    assert_eq!(pending(&o), "unknown pool \"x\"");
}

#[test]
fn restart_reclaims_existing_addresses_first_without_compaction() {
    let p = pools(vec![pool("p", &[&["10.0.0.0/24"]])]);
    let with_status = |n: &str, ip: &str| {
        svc(
            n,
            json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}),
        )
    };
    let services = vec![
        svc("aaa-new", json!({})),
        with_status("zzz-old", "10.0.0.0"),
        with_status("mid", "10.0.0.7"),
    ];
    let mut a = Allocator::new(&p, None);
    let outcomes = a.reconcile_all(&services);
    let by_name: BTreeMap<String, String> = outcomes
        .iter()
        .map(|o| (o.service.clone(), ip_of(o)))
        .collect();
    assert_eq!(by_name["default/zzz-old"], "10.0.0.0");
    assert_eq!(by_name["default/mid"], "10.0.0.7", "no compaction");
    assert_eq!(by_name["default/aaa-new"], "10.0.0.1");
    // Re-claims are silent.
    let old = outcomes
        .iter()
        .find(|o| o.service == "default/zzz-old")
        .unwrap();
    assert!(old.events.is_empty());
}

#[test]
fn deprecated_annotation_events_only_when_the_service_is_written() {
    let mut a = Allocator::new(&pools(vec![pool("p", &[&["10.0.0.0/24"]])]), None);
    let s = svc(
        "s",
        json!({"metadata": {"annotations": {"metallb.universe.tf/allow-shared-ip": "k", "metallb.universe.tf/address-pool": "p"}}}),
    );
    let o = a.reconcile(&s);
    assert_eq!(
        reasons(&o),
        [
            "IPAllocated",
            "deprecatedAnnotation",
            "deprecatedAnnotation"
        ]
    );
    assert!(o.events[1].message.contains("metallb.io/address-pool"));
    let o = a.reconcile(&written(s, &o));
    assert!(o.events.is_empty());
}

#[test]
fn pool_counters_follow_metallb() {
    let mut buggy = pool(
        "b",
        &[
            &["10.0.0.0/23"],
            &["10.0.2.0/30"],
            &["10.0.3.252/30"],
            &["2001:db8::/120"],
        ],
    );
    buggy.avoid_buggy_ips = true;
    let mut a = Allocator::new(
        &pools(vec![
            buggy,
            pool("huge", &[&["2001:db9::/64"], &["2001:dba::/64"]]),
        ]),
        None,
    );
    a.reconcile(&svc("s", json!({"spec": {"loadBalancerIP": "10.0.0.1"}})));
    a.reconcile(&shared("t", "k", json!([{"port": 1}])));
    a.reconcile(&shared("u", "k", json!([{"port": 2}])));
    let c = a.pool_counters();
    // /23: 508; /30 at .0: 3; /30 ending .255: 3; IPv6 unaffected: 256.
    assert_eq!(
        c["b"],
        PoolCounters {
            assigned_ipv4: 2,
            assigned_ipv6: 0,
            available_ipv4: 512,
            available_ipv6: 256
        }
    );
    assert_eq!(c["huge"].available_ipv6, i64::MAX);
    assert_eq!(c["huge"].available_ipv4, 0);
}

#[test]
fn results_do_not_depend_on_pool_map_order() {
    // Same pools given in any order yield the same decisions (tier 2 by name).
    let list = vec![
        pool("b", &[&["10.1.0.0/24"]]),
        pool("a", &[&["10.0.0.0/24"]]),
        pool("c", &[&["10.2.0.0/24"]]),
    ];
    let mut one = Allocator::new(&pools(list.clone()), None);
    let mut rev = list;
    rev.reverse();
    let mut two = Allocator::new(&pools(rev), None);
    let s = svc("s", json!({}));
    assert_eq!(one.reconcile(&s), two.reconcile(&s));
    assert_eq!(assigned(&one.reconcile(&svc("t", json!({})))).1, "a");
    let _unused: BTreeSet<()> = BTreeSet::new();
}

#[test]
fn restart_pass_ignores_other_classes_and_keeps_every_valid_address() {
    let p = pools(vec![
        pool("v4", &[&["10.0.0.0/32"]]),
        pool("both", &[&["10.0.1.0/32"], &["2001:db8::/128"]]),
    ]);
    let mut a = Allocator::new(&p, None);
    let classed = svc(
        "classed",
        json!({"spec": {"loadBalancerClass": "x"}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.0"}]}}}),
    );
    // "a-dual" sorts first and could add 2001:db8:: (held by "z-v6") in step 5; the restart pass
    // re-claims every status before any Service grows or allocates.
    let dual_status = json!({"spec": {"clusterIPs": ["10.96.0.1", "fd00::1"], "ipFamilyPolicy": "PreferDualStack"},
                              "status": {"loadBalancer": {"ingress": [{"ip": "10.0.1.0"}]}}});
    let v6 = json!({"spec": {"clusterIPs": ["fd00::2"]}, "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8::"}]}}});
    let outcomes = a.reconcile_all(&[classed, svc("a-dual", dual_status), svc("z-v6", v6)]);
    let by: BTreeMap<String, &Outcome> = outcomes.iter().map(|o| (o.service.clone(), o)).collect();
    assert_eq!(by["default/classed"].status, Status::Ignored);
    assert_eq!(ip_of(by["default/z-v6"]), "2001:db8::");
    assert_eq!(ip_of(by["default/a-dual"]), "10.0.1.0");
    assert_eq!(reasons(by["default/a-dual"]), ["AdditionalAssignFailed"]);
}
