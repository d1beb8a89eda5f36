//! Property tests of the allocator: sharing safety, pool membership, order independence of the
//! restart pass, restart stability, and agreement with a naive "walk the pool" reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use herald::allocator::{
    Allocator, Family, IpFamilyPolicy, Port, ServiceFamily, ServiceInfo, Status, pool_accepts,
};
use herald::config::{Pool, ServiceAllocation};
use ipnet::IpNet;
use proptest::prelude::*;

fn pool(
    name: &str,
    entries: &[&[&str]],
    avoid_buggy_ips: bool,
    namespaces: Option<&[&str]>,
) -> Pool {
    Pool {
        name: name.into(),
        labels: BTreeMap::new(),
        ranges: entries
            .iter()
            .map(|e| e.iter().map(|c| c.parse().unwrap()).collect())
            .collect(),
        auto_assign: true,
        avoid_buggy_ips,
        service_allocation: namespaces.map(|ns| ServiceAllocation {
            priority: 1,
            namespaces: ns.iter().map(std::string::ToString::to_string).collect(),
            service_selectors: vec![],
        }),
    }
}

fn config() -> BTreeMap<String, Pool> {
    [
        pool("p1", &[&["10.0.0.0/30"], &["10.0.0.8/31"]], false, None),
        pool(
            "p2",
            &[&["10.0.1.254/31", "10.0.2.0/31"], &["2001:db8::/126"]],
            true,
            None,
        ),
        pool("p3", &[&["10.0.3.0/31"]], false, Some(&["team"])),
        pool("p4", &[&["2001:db8:1::/127"]], false, None),
    ]
    .into_iter()
    .map(|p| (p.name.clone(), p))
    .collect()
}

/// Every address of the test pools plus one outside, for requests.
fn all_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = config()
        .values()
        .flat_map(|p| p.cidrs().flat_map(IpNet::hosts_all).collect::<Vec<_>>())
        .collect();
    out.push("192.0.2.1".parse().unwrap());
    out
}

trait HostsAll {
    fn hosts_all(&self) -> Vec<IpAddr>;
}

impl HostsAll for IpNet {
    fn hosts_all(&self) -> Vec<IpAddr> {
        // Every address including network and broadcast (tiny test nets only).
        let mut v = vec![self.network()];
        v.extend(self.hosts());
        if self.broadcast() != self.network() {
            v.push(self.broadcast());
        }
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Clone, Debug)]
struct Spec {
    namespace: &'static str,
    family: u8,
    prefer: bool,
    sharing: &'static str,
    backend: &'static str,
    ports: Vec<(bool, i32)>,
    request: Option<usize>,
    pool: Option<&'static str>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec!["default", "team"]),
        0u8..3,
        any::<bool>(),
        prop::sample::select(vec!["", "", "a", "b"]),
        prop::sample::select(vec!["", "x"]),
        prop::collection::vec((any::<bool>(), 80i32..83), 1..3),
        prop::option::weighted(0.2, 0usize..64),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec!["p1", "p2", "p3", "p4", "nope"]),
        ),
    )
        .prop_map(
            |(namespace, family, prefer, sharing, backend, ports, request, pool)| Spec {
                namespace,
                family,
                prefer,
                sharing,
                backend,
                ports,
                request,
                pool,
            },
        )
}

fn build(i: usize, s: &Spec, addresses: &[IpAddr]) -> ServiceInfo {
    let family = match s.family {
        0 => ServiceFamily::Single(Family::V4),
        1 => ServiceFamily::Single(Family::V6),
        _ => ServiceFamily::Dual,
    };
    let policy = match (s.family, s.prefer) {
        (2, true) => IpFamilyPolicy::PreferDualStack,
        (2, false) => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };
    ServiceInfo {
        namespace: s.namespace.into(),
        name: format!("svc{i:03}"),
        labels: BTreeMap::new(),
        is_load_balancer: true,
        lb_class: None,
        has_cluster_ip: true,
        cluster_ip_count: if s.family == 2 { 2 } else { 1 },
        family: Ok(family),
        ip_family_policy: policy,
        primary_family: Family::V4,
        requested_ips: Ok(s
            .request
            .map(|r| vec![addresses[r % addresses.len()]])
            .unwrap_or_default()),
        pool_annotation: s.pool.map(str::to_string),
        sharing_key: s.sharing.into(),
        has_sharing_annotation: !s.sharing.is_empty(),
        backend_key: s.backend.into(),
        traffic_policy_local: !s.backend.is_empty(),
        ports: s
            .ports
            .iter()
            .map(|(udp, port)| Port {
                protocol: if *udp { "UDP" } else { "TCP" }.into(),
                port: *port,
            })
            .collect(),
        ingress_ips: Ok(vec![]),
        allocated_from_pool: None,
        deprecated_annotations: vec![],
    }
}

fn assignments(outcomes: &[herald::allocator::Outcome]) -> BTreeMap<String, (Vec<IpAddr>, String)> {
    outcomes
        .iter()
        .filter_map(|o| match &o.status {
            Status::Assigned { ips, pool } => {
                Some((o.service.clone(), (ips.clone(), pool.clone())))
            }
            _ => None,
        })
        .collect()
}

fn with_status(mut svc: ServiceInfo, got: &BTreeMap<String, (Vec<IpAddr>, String)>) -> ServiceInfo {
    if let Some((ips, pool)) = got.get(&svc.key()) {
        svc.ingress_ips = Ok(ips.clone());
        svc.allocated_from_pool = Some(pool.clone());
    }
    svc
}

fn compatible(a: &ServiceInfo, b: &ServiceInfo) -> bool {
    !a.sharing_key.is_empty()
        && a.sharing_key == b.sharing_key
        && a.backend_key == b.backend_key
        && a.ports.iter().all(|p| !b.ports.contains(p))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold(specs in prop::collection::vec(spec(), 1..40)) {
        let addresses = all_addresses();
        let services: Vec<ServiceInfo> = specs.iter().enumerate().map(|(i, s)| build(i, s, &addresses)).collect();
        let pools = config();
        let mut allocator = Allocator::new(&pools, None);
        let outcomes: Vec<_> = services.iter().map(|s| allocator.reconcile(s)).collect();
        let got = assignments(&outcomes);
        let by_key: BTreeMap<String, &ServiceInfo> = services.iter().map(|s| (s.key(), s)).collect();

        // Every address lies in the reported pool, which accepts the service.
        let mut holders: BTreeMap<IpAddr, Vec<&ServiceInfo>> = BTreeMap::new();
        for (key, (ips, pool_name)) in &got {
            let svc = by_key[key];
            let pool = &pools[pool_name];
            prop_assert!(pool_accepts(pool, svc), "{key} in {pool_name}");
            // The same rule, independent of the allocator's: only p3 limits namespaces, to team.
            prop_assert!(pool_name != "p3" || svc.namespace == "team", "{key} in p3");
            for ip in ips {
                let inside = pool.cidrs().any(|c| c.contains(ip));
                let buggy = pool.avoid_buggy_ips && matches!(ip, IpAddr::V4(v4) if v4.octets()[3] == 0 || v4.octets()[3] == 255);
                prop_assert!(inside && !buggy, "{key}: {ip} outside {pool_name}");
                holders.entry(*ip).or_default().push(svc);
            }
            if let Some(p) = &svc.pool_annotation { prop_assert_eq!(p, pool_name); }
            let fams: BTreeSet<Family> = ips.iter().map(|ip| match ip { IpAddr::V4(_) => Family::V4, IpAddr::V6(_) => Family::V6 }).collect();
            prop_assert_eq!(fams.len(), ips.len(), "one address per family");
            match svc.family.clone().unwrap() {
                ServiceFamily::Single(f) => prop_assert_eq!(fams, BTreeSet::from([f])),
                ServiceFamily::Dual if svc.ip_family_policy == IpFamilyPolicy::RequireDualStack => prop_assert_eq!(ips.len(), 2),
                ServiceFamily::Dual => {}
            }
        }
        // No address held by two incompatible services.
        for (ip, users) in &holders {
            for (i, a) in users.iter().enumerate() {
                for b in &users[i + 1..] {
                    prop_assert!(compatible(a, b), "{ip} shared by {} and {}", a.key(), b.key());
                }
            }
        }
        // Counters agree with the holders.
        let counters = allocator.pool_counters();
        for (name, c) in &counters {
            let assigned: BTreeSet<&IpAddr> = got.values().filter(|(_, p)| p == name).flat_map(|(ips, _)| ips).collect();
            let v4 = assigned.iter().filter(|ip| ip.is_ipv4()).count() as i64;
            prop_assert_eq!((c.assigned_ipv4, c.assigned_ipv6), (v4, assigned.len() as i64 - v4));
        }

        // Restart: a fresh allocator re-seeded from the statuses, in any input order, gives
        // identical assignments, keeps pending services pending and clears nothing.
        let restarted: Vec<ServiceInfo> = services.iter().cloned().map(|s| with_status(s, &got)).collect();
        for reversed in [false, true] {
            let mut input = restarted.clone();
            if reversed { input.reverse(); }
            let mut fresh = Allocator::new(&pools, None);
            let again = fresh.reconcile_all(&input);
            prop_assert_eq!(&assignments(&again), &got);
            for o in &again {
                prop_assert!(o.events.iter().all(|e| e.reason.as_str() != "ClearAssignment"), "{:?}", o);
            }
            // And a second pass over the restarted state changes nothing.
            for o in fresh.reconcile_all(&input) {
                prop_assert!(again.contains(&o) || matches!(o.status, Status::Pending { .. }), "{:?}", o);
            }
        }
    }

    #[test]
    fn first_free_matches_a_naive_walk(specs in prop::collection::vec(spec(), 1..30), freed in prop::collection::vec(0usize..30, 0..6)) {
        // One pool, automatic single-stack IPv4 allocation, with releases in between.
        let mut p = pool("p", &[&["10.0.0.254/31", "10.0.1.0/30"], &["10.0.0.0/30"]], true, None);
        let pools: BTreeMap<String, Pool> = [(p.name.clone(), p.clone())].into();
        p.service_allocation = None;
        let walk: Vec<IpAddr> = p.cidrs().flat_map(IpNet::hosts_all)
            .filter(|ip| !matches!(ip, IpAddr::V4(v4) if v4.octets()[3] == 0 || v4.octets()[3] == 255))
            .collect();
        let mut allocator = Allocator::new(&pools, None);
        let mut held: BTreeMap<String, (IpAddr, ServiceInfo)> = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            if freed.contains(&i)
                && let Some(victim) = held.keys().next().cloned()
            {
                held.remove(&victim);
                allocator.release(&victim);
            }
            let mut s = s.clone();
            s.family = 0;
            s.request = None;
            s.pool = None;
            s.namespace = "default";
            let svc = build(i, &s, &[]);
            let expected = walk.iter().copied().find(|ip| {
                held.values().filter(|(h, _)| h == ip).all(|(_, other)| compatible(other, &svc))
            });
            let outcome = allocator.reconcile(&svc);
            match (&outcome.status, expected) {
                (Status::Assigned { ips, .. }, Some(ip)) => {
                    prop_assert_eq!(ips, &vec![ip]);
                    held.insert(svc.key(), (ip, svc));
                }
                (Status::Pending { .. }, None) => {}
                (status, expected) => prop_assert!(false, "{status:?} vs {expected:?}"),
            }
        }
    }
}
