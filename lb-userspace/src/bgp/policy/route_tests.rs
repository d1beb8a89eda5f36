//! Which routes and attributes: aggregation, LOCAL_PREF, communities, merging, and the
//! per-Service advertisement choice.

use std::collections::BTreeSet;

use serde_json::json;

use super::tests::{EBGP, IBGP, POOL, World, doc, names, net};
use super::*;
use crate::election::fixtures::{service, slice, with};

#[test]
fn aggregation_lengths_mask_host_bits_per_family() {
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", EBGP),
        doc(
            "BGPAdvertisement",
            "agg",
            "{aggregationLength: 24, aggregationLengthV6: 64}",
        ),
    ]);
    w.services = vec![service("web", &["198.51.100.77", "2001:db8:0:2::5"])];
    let p = w.plan_on("node-a");
    assert_eq!(
        p.prefixes("router"),
        [net("198.51.100.0/24"), net("2001:db8:0:2::/64")]
    );
    assert_eq!(p.services["default/web"].ips.len(), 2);
}

#[test]
fn each_advertisement_gives_its_own_prefix() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", IBGP),
        doc("BGPAdvertisement", "host", "{localPref: 100}"),
        doc(
            "BGPAdvertisement",
            "agg",
            "{aggregationLength: 24, aggregationLengthV6: 64, localPref: 50, communities: ['65000:24']}",
        ),
    ]);
    let p = w.plan_on("node-a");
    let routes = &p.routes["router"];
    assert_eq!(
        routes[&net("198.51.100.10/32")],
        RoutePolicy {
            local_pref: Some(100),
            communities: vec![]
        }
    );
    assert_eq!(
        routes[&net("198.51.100.0/24")],
        RoutePolicy {
            local_pref: Some(50),
            communities: vec![Community::Standard(65000, 24)]
        }
    );
}

#[test]
fn local_pref_only_on_ibgp_and_zero_when_unset() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "ebgp", EBGP),
        doc("BGPPeer", "ibgp", IBGP),
        doc(
            "BGPPeer",
            "ibgp-local-as",
            "{myASN: 64513, localASN: 64512, peerASN: 64512, peerAddress: 203.0.113.4}",
        ),
        doc("BGPAdvertisement", "all", "{localPref: 300}"),
    ]);
    let p = w.plan_on("node-a");
    let web = net("198.51.100.10/32");
    assert_eq!(p.routes["ebgp"][&web].local_pref, None);
    assert_eq!(p.routes["ibgp"][&web].local_pref, Some(300));
    assert_eq!(p.routes["ibgp-local-as"][&web].local_pref, Some(300));
    assert!(p.sessions["ibgp"].is_ibgp() && !p.sessions["ebgp"].is_ibgp());

    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "ibgp", IBGP),
        doc("BGPAdvertisement", "all", "{}"),
    ]);
    assert_eq!(
        w.plan_on("node-a").routes["ibgp"][&web].local_pref,
        Some(0),
        "MetalLB's native session writes LOCAL_PREF 0 on iBGP when localPref is unset"
    );
}

#[test]
fn communities_resolved_sorted_and_deduplicated() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", EBGP),
        doc(
            "Community",
            "aliases",
            "{communities: [{name: no-export, value: '65535:65281'}, {name: big, value: 'large:64512:1:2'}]}",
        ),
        doc(
            "BGPAdvertisement",
            "a",
            "{communities: [big, '65000:2', no-export, 'large:1:2:3']}",
        ),
        doc(
            "BGPAdvertisement",
            "b",
            "{communities: ['65000:1', '65000:2']}",
        ),
    ]);
    let p = w.plan_on("node-a");
    assert_eq!(
        p.routes["router"][&net("198.51.100.10/32")].communities,
        [
            Community::Standard(65000, 1),
            Community::Standard(65000, 2),
            Community::Standard(65535, 65281),
            Community::Large(1, 2, 3),
            Community::Large(64512, 1, 2),
        ],
        "two advertisements of one prefix: communities unioned"
    );
}

#[test]
fn services_sharing_a_prefix_give_one_route() {
    // Two Services aggregated into one /24: one route.
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", EBGP),
        doc("BGPAdvertisement", "agg", "{aggregationLength: 24}"),
    ]);
    w.services = vec![
        service("web", &["198.51.100.10"]),
        service("api", &["198.51.100.200"]),
    ];
    w.slices = vec![slice("web", &["node-b"]), slice("api", &["node-b"])];
    let p = w.plan_on("node-a");
    assert_eq!(p.prefixes("router"), [net("198.51.100.0/24")]);
    assert_eq!(p.services["default/web"].peers, names(&["router"]));
    assert_eq!(p.services["default/api"].peers, names(&["router"]));

    // Two Services on one shared address, each through its own advertisement: one host route
    // with the communities unioned and the higher LOCAL_PREF (MetalLB keeps whichever its map
    // iteration meets first).
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", IBGP),
        doc(
            "BGPAdvertisement",
            "gold",
            "{serviceSelectors: [{matchLabels: {tier: gold}}], localPref: 200, communities: ['65000:2']}",
        ),
        doc(
            "BGPAdvertisement",
            "web",
            "{serviceSelectors: [{matchLabels: {app: web}}], localPref: 100, communities: ['65000:1']}",
        ),
    ]);
    let shared = |name: &str, labels: serde_json::Value| {
        with(
            service(name, &["198.51.100.10"]),
            json!({"metadata": {"labels": labels,
                "annotations": {"metallb.io/allow-shared-ip": "k"}}}),
        )
    };
    w.services = vec![
        shared("web", json!({"app": "web"})),
        shared("dns", json!({"tier": "gold"})),
    ];
    w.slices = vec![slice("web", &["node-b"]), slice("dns", &["node-b"])];
    let p = w.plan_on("node-a");
    assert_eq!(
        p.routes["router"],
        BTreeMap::from([(
            net("198.51.100.10/32"),
            RoutePolicy {
                local_pref: Some(200),
                communities: vec![Community::Standard(65000, 1), Community::Standard(65000, 2)],
            }
        )])
    );
    assert_eq!(p.services.len(), 2);
    assert!(p.services.values().all(|s| s.peers == names(&["router"])));
}

#[test]
fn service_selectors_pick_the_advertisements() {
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", EBGP),
        doc(
            "BGPAdvertisement",
            "web-only",
            "{serviceSelectors: [{matchLabels: {app: web}}], communities: ['65000:80']}",
        ),
    ]);
    w.services = vec![
        with(
            service("web", &["198.51.100.10"]),
            json!({"metadata": {"labels": {"app": "web"}}}),
        ),
        service("api", &["198.51.100.11"]),
    ];
    w.slices = vec![slice("web", &["node-b"]), slice("api", &["node-b"])];
    let p = w.plan_on("node-a");
    assert_eq!(p.prefixes("router"), [net("198.51.100.10/32")]);
    assert_eq!(
        p.reason("default/api"),
        "no BGPAdvertisement of IPAddressPool \"pool\" selecting node \"node-a\" matches the Service's labels"
    );
}

#[test]
fn conflicting_local_prefs_for_one_service_block_it_with_an_error() {
    // The parser accepts these (both have serviceSelectors); the conflict shows per Service.
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", IBGP),
        doc(
            "BGPAdvertisement",
            "gold",
            "{serviceSelectors: [{matchLabels: {tier: gold}}], localPref: 200}",
        ),
        doc(
            "BGPAdvertisement",
            "web",
            "{serviceSelectors: [{matchLabels: {app: web}}], localPref: 100}",
        ),
    ]);
    w.services = vec![
        with(
            service("web", &["198.51.100.10"]),
            json!({"metadata": {"labels": {"app": "web", "tier": "gold"}}}),
        ),
        with(
            service("api", &["198.51.100.11"]),
            json!({"metadata": {"labels": {"app": "web"}}}),
        ),
    ];
    w.slices = vec![slice("web", &["node-b"]), slice("api", &["node-b"])];
    let p = w.plan_on("node-a");
    let web = &p.services["default/web"];
    assert_eq!(web.peers, BTreeSet::new());
    let message = "BGPAdvertisements \"gold\" and \"web\" have conflicting LOCAL_PREF (200 vs 100) for this Service";
    assert_eq!(web.error.as_deref(), Some(message));
    assert_eq!(web.reason.as_deref(), Some(message));
    assert_eq!(
        p.prefixes("router"),
        [net("198.51.100.11/32")],
        "api matches one of them only"
    );
    assert_eq!(p.services["default/api"].error, None);

    // Disjoint peers make them compatible.
    let mut w2 = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", IBGP),
        doc(
            "BGPPeer",
            "other",
            "{myASN: 64512, peerASN: 64512, peerAddress: 203.0.113.3}",
        ),
        doc(
            "BGPAdvertisement",
            "gold",
            "{serviceSelectors: [{matchLabels: {tier: gold}}], localPref: 200, peers: [other]}",
        ),
        doc(
            "BGPAdvertisement",
            "web",
            "{serviceSelectors: [{matchLabels: {app: web}}], localPref: 100, peers: [router]}",
        ),
    ]);
    w2.services = w.services;
    w2.slices = w.slices;
    let p = w2.plan_on("node-a");
    let web = net("198.51.100.10/32");
    assert_eq!(p.services["default/web"].error, None);
    assert_eq!(p.routes["other"][&web].local_pref, Some(200));
    assert_eq!(p.routes["router"][&web].local_pref, Some(100));
}

#[test]
fn prefix_helper_masks_and_checks_lengths() {
    let ad = BgpAdvertisement {
        name: "ad".into(),
        pools: BTreeSet::new(),
        aggregation_length: 30,
        aggregation_length_v6: 0,
        local_pref: 0,
        communities: vec![],
        service_selectors: vec![],
        nodes: BTreeSet::new(),
        peers: vec![],
    };
    assert_eq!(
        prefix("198.51.100.7".parse().unwrap(), &ad),
        Some(net("198.51.100.4/30"))
    );
    assert_eq!(
        prefix("2001:db8::1".parse().unwrap(), &ad),
        Some(net("::/0"))
    );
    let bad = BgpAdvertisement {
        aggregation_length: 33,
        ..ad
    };
    assert_eq!(prefix("198.51.100.7".parse().unwrap(), &bad), None);
}
