//! Invariants of [`plan`] over generated clusters: a pool with an IPv4 /24 and an IPv6 /64,
//! up to three peers and advertisements with random node selectors, peer lists, aggregation
//! lengths and communities, up to six Services with endpoints here and there.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;

use super::tests::{build, doc};
use super::*;
use crate::election::SlicesByService;
use crate::election::fixtures::{node, service, slice, with};

const NODES: usize = 3;

#[derive(Clone, Debug)]
struct PeerCase {
    ibgp: bool,
    zone_a_only: bool,
}

#[derive(Clone, Debug)]
struct AdCase {
    v4: u8,
    v6: u8,
    zone_a_only: bool,
    /// Bit i: peer i is listed (0: all peers).
    peers: u8,
    communities: Vec<(u16, u16)>,
}

#[derive(Clone, Debug)]
struct ServiceCase {
    v4: u8,
    v6: Option<u16>,
    local: bool,
    /// Bit i: an endpoint on node i.
    endpoints: u8,
    ready: bool,
}

#[derive(Clone, Debug)]
struct Case {
    me: usize,
    zone_a: [bool; NODES],
    unavailable: [bool; NODES],
    excluded: [bool; NODES],
    peers: Vec<PeerCase>,
    ads: Vec<AdCase>,
    local_pref: u32,
    services: Vec<ServiceCase>,
    ignore_exclude_lb: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let peer = (any::<bool>(), any::<bool>())
        .prop_map(|(ibgp, zone_a_only)| PeerCase { ibgp, zone_a_only });
    let ad = (
        24u8..=32,
        64u8..=128,
        any::<bool>(),
        0u8..8,
        prop::collection::vec((0u16..3, 0u16..3), 0..3),
    )
        .prop_map(|(v4, v6, zone_a_only, peers, communities)| AdCase {
            v4,
            v6,
            zone_a_only,
            peers,
            communities,
        });
    let svc = (
        1u8..=254,
        prop::option::of(1u16..=0xffff),
        any::<bool>(),
        0u8..8,
        prop::bool::weighted(0.8),
    )
        .prop_map(|(v4, v6, local, endpoints, ready)| ServiceCase {
            v4,
            v6,
            local,
            endpoints,
            ready,
        });
    (
        0..NODES,
        any::<[bool; NODES]>(),
        prop::array::uniform3(prop::bool::weighted(0.15)),
        prop::array::uniform3(prop::bool::weighted(0.15)),
        prop::collection::vec(peer, 1..=3),
        prop::collection::vec(ad, 1..=3),
        prop_oneof![Just(0u32), 1u32..1000],
        prop::collection::vec(svc, 1..=6),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                me,
                zone_a,
                unavailable,
                excluded,
                peers,
                ads,
                local_pref,
                services,
                ignore_exclude_lb,
                seed,
            )| Case {
                me,
                zone_a,
                unavailable,
                excluded,
                peers,
                ads,
                local_pref,
                services,
                ignore_exclude_lb,
                seed,
            },
        )
}

struct Built {
    config: Config,
    nodes: Vec<Node>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn build_case(c: &Case) -> Built {
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut labels = json!({"zone": if c.zone_a[i] { "a" } else { "b" }});
            if c.excluded[i] {
                labels[election::EXCLUDE_LB_LABEL] = json!("");
            }
            let mut extra = json!({"metadata": {"labels": labels}});
            if c.unavailable[i] {
                extra["status"] =
                    json!({"conditions": [{"type": "NetworkUnavailable", "status": "True"}]});
            }
            with(node(&format!("node-{i}")), extra)
        })
        .collect();
    let zone_a = "nodeSelectors: [{matchLabels: {zone: a}}]";
    let mut yaml = doc(
        "IPAddressPool",
        "pool",
        "{addresses: [198.51.100.0/24, 2001:db8:0:2::/64]}",
    );
    for (i, p) in c.peers.iter().enumerate() {
        let peer_asn = if p.ibgp { 64512 } else { 64600 + i };
        let selector = if p.zone_a_only {
            zone_a
        } else {
            "nodeSelectors: []"
        };
        yaml.push_str(&doc(
            "BGPPeer",
            &format!("peer-{i}"),
            &format!(
                "{{myASN: 64512, peerASN: {peer_asn}, peerAddress: 203.0.113.{}, {selector}}}",
                i + 1
            ),
        ));
    }
    for (i, a) in c.ads.iter().enumerate() {
        let peers: Vec<String> = (0..3)
            .filter(|b| a.peers & (1 << b) != 0)
            .map(|b| format!("peer-{b}"))
            .collect();
        let communities: BTreeSet<String> = a
            .communities
            .iter()
            .map(|(x, y)| format!("'{}:{}'", 65000 + x, y))
            .collect();
        let selector = if a.zone_a_only {
            zone_a
        } else {
            "nodeSelectors: []"
        };
        yaml.push_str(&doc(
            "BGPAdvertisement",
            &format!("ad-{i}"),
            &format!(
                "{{aggregationLength: {}, aggregationLengthV6: {}, localPref: {}, peers: [{}], communities: [{}], {selector}}}",
                a.v4,
                a.v6,
                c.local_pref,
                peers.join(", "),
                communities.into_iter().collect::<Vec<_>>().join(", "),
            ),
        ));
    }
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for (i, s) in c.services.iter().enumerate() {
        let name = format!("svc-{i}");
        let mut ips = vec![format!("198.51.100.{}", s.v4)];
        if let Some(v6) = s.v6 {
            ips.push(format!("2001:db8:0:2::{v6:x}"));
        }
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let policy = if s.local { "Local" } else { "Cluster" };
        services.push(with(
            service(&name, &ips),
            json!({"spec": {"externalTrafficPolicy": policy}}),
        ));
        let on: Vec<String> = (0..NODES)
            .filter(|n| s.endpoints & (1 << n) != 0)
            .map(|n| format!("node-{n}"))
            .collect();
        let on: Vec<&str> = on.iter().map(String::as_str).collect();
        let mut endpoints = slice(&name, &on);
        for e in endpoints.endpoints.iter_mut().flatten() {
            e.conditions = Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                ready: Some(s.ready),
                ..Default::default()
            });
        }
        slices.push(endpoints);
    }
    Built {
        config: build(&yaml, &nodes),
        nodes,
        services,
        slices,
    }
}

fn run(
    c: &Case,
    b: &Built,
    services: &[Service],
    slices: &[EndpointSlice],
    nodes: &[Node],
) -> BgpPlan {
    let services: Vec<Arc<Service>> = services.iter().cloned().map(Arc::new).collect();
    let slices = SlicesByService::new(slices);
    plan(&Cluster {
        node: &format!("node-{}", c.me),
        config: &b.config,
        services: &services,
        slices: &slices,
        nodes,
        lb_class: None,
        ignore_exclude_lb: c.ignore_exclude_lb,
    })
}

/// A deterministic shuffle driven by `seed` (xorshift, Fisher-Yates).
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    let mut x = seed | 1;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_invariants(c in case()) {
        let b = build_case(&c);
        let p = run(&c, &b, &b.services, &b.slices, &b.nodes);

        // Routes exist exactly for the sessions.
        prop_assert_eq!(p.routes.keys().collect::<Vec<_>>(), p.sessions.keys().collect::<Vec<_>>());
        let me = format!("node-{}", c.me);
        for (peer, session) in &p.sessions {
            prop_assert_eq!(peer, &session.peer);
            let selected = b.config.peers.iter().any(|cfg| &cfg.name == peer && cfg.nodes.contains(&me));
            prop_assert!(selected, "{}", peer);
        }

        let v4_lengths: BTreeSet<u8> = b.config.bgp_advertisements.iter().map(|a| a.aggregation_length).collect();
        let v6_lengths: BTreeSet<u8> = b.config.bgp_advertisements.iter().map(|a| a.aggregation_length_v6).collect();
        for (peer, routes) in &p.routes {
            for (prefix, route) in routes {
                // Host bits cleared; the length is an advertisement's aggregation length.
                prop_assert_eq!(*prefix, prefix.trunc());
                let lengths = match prefix { IpNet::V4(_) => &v4_lengths, IpNet::V6(_) => &v6_lengths };
                prop_assert!(lengths.contains(&prefix.prefix_len()), "{prefix}");
                // Every announced prefix holds an address of a Service announced to this peer.
                prop_assert!(p.services.values().any(|s| s.peers.contains(peer)
                    && s.ips.iter().any(|ip| prefix.contains(ip))), "{peer} {prefix}");
                // LOCAL_PREF on iBGP only; communities sorted and unique.
                prop_assert_eq!(route.local_pref.is_some(), p.sessions[peer].is_ibgp());
                prop_assert!(route.communities.windows(2).all(|w| w[0] < w[1]));
            }
        }
        for s in p.services.values() {
            prop_assert_eq!(s.peers.is_empty(), s.reason.is_some(), "{:?}", s);
            for peer in &s.peers {
                prop_assert!(p.sessions.contains_key(peer));
                // Every address of an announced Service is covered on each of its peers.
                for ip in &s.ips {
                    prop_assert!(p.routes[peer].keys().any(|net| net.contains(ip)), "{peer} {ip}");
                }
            }
        }
        // Nothing is announced from an unavailable node or, unless ignored, an excluded one.
        if c.unavailable[c.me] || c.excluded[c.me] && !c.ignore_exclude_lb {
            prop_assert!(p.routes.values().all(BTreeMap::is_empty));
        }

        // Same inputs in another order: the same plan.
        let again = run(
            &c,
            &b,
            &shuffled(&b.services, c.seed),
            &shuffled(&b.slices, c.seed.rotate_left(17)),
            &shuffled(&b.nodes, c.seed.rotate_left(33)),
        );
        prop_assert_eq!(&p, &again);
    }
}
