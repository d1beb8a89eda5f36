use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::config::{self, Snapshot, load};
use crate::election::SlicesByService;
use crate::election::fixtures::{excluded_node, node, service, slice, unavailable_node, with};

/// One metallb.io object as YAML (`spec` in flow style).
pub(super) fn doc(kind: &str, name: &str, spec: &str) -> String {
    let version = if kind == "BGPPeer" {
        "v1beta2"
    } else {
        "v1beta1"
    };
    format!(
        "---\napiVersion: metallb.io/{version}\nkind: {kind}\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec: {spec}\n"
    )
}

/// The configuration from YAML through the real loader and builder, node selectors resolved
/// against `nodes`. The mode rules are skipped: policy is the same for every BGP mode, and
/// these tests use IPv6 pools and large communities, which MetalLB's native mode refuses.
pub(super) fn build(yaml: &str, nodes: &[Node]) -> Config {
    let loaded = load::parse(yaml, "test.yaml").unwrap();
    let snapshot = Snapshot {
        nodes: nodes.to_vec(),
        skip_mode_rules: true,
        ..Snapshot::from_objects(loaded.objects)
    };
    config::build(&snapshot).unwrap_or_else(|e| panic!("invalid configuration: {e:?}"))
}

pub(super) const POOL: &str = "{addresses: [198.51.100.0/24, 2001:db8:0:2::/64]}";
pub(super) const EBGP: &str = "{myASN: 64513, peerASN: 64512, peerAddress: 203.0.113.1}";
pub(super) const IBGP: &str = "{myASN: 64512, peerASN: 64512, peerAddress: 203.0.113.2}";

pub(super) fn labelled(name: &str, labels: serde_json::Value) -> Node {
    with(node(name), json!({"metadata": {"labels": labels}}))
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(ToString::to_string).collect()
}

pub(super) struct World {
    pub(super) yaml: String,
    pub(super) nodes: Vec<Node>,
    pub(super) services: Vec<Service>,
    pub(super) slices: Vec<EndpointSlice>,
    pub(super) lb_class: Option<&'static str>,
    pub(super) ignore_exclude_lb: bool,
}

impl World {
    /// Nodes a and b (zone a and b), pool `pool`, an eBGP peer and an advertisement for
    /// everything; Service `web` at 198.51.100.10 with an endpoint on node-b.
    pub(super) fn new() -> World {
        World {
            yaml: [
                doc("IPAddressPool", "pool", POOL),
                doc("BGPPeer", "router", EBGP),
                doc("BGPAdvertisement", "all", "{}"),
            ]
            .concat(),
            nodes: vec![
                labelled("node-a", json!({"zone": "a"})),
                labelled("node-b", json!({"zone": "b"})),
            ],
            services: vec![service("web", &["198.51.100.10"])],
            slices: vec![slice("web", &["node-b"])],
            lb_class: None,
            ignore_exclude_lb: false,
        }
    }

    /// The same world with these metallb.io documents instead.
    pub(super) fn with_config(docs: &[String]) -> World {
        World {
            yaml: docs.concat(),
            ..World::new()
        }
    }

    pub(super) fn plan_on(&self, me: &str) -> BgpPlan {
        let config = build(&self.yaml, &self.nodes);
        let services: Vec<Arc<Service>> = self.services.iter().cloned().map(Arc::new).collect();
        let slices = SlicesByService::new(&self.slices);
        plan(&Cluster {
            node: me,
            config: &config,
            services: &services,
            slices: &slices,
            nodes: &self.nodes,
            lb_class: self.lb_class,
            ignore_exclude_lb: self.ignore_exclude_lb,
        })
    }
}

impl BgpPlan {
    /// The prefixes announced to `peer`.
    pub(super) fn prefixes(&self, peer: &str) -> Vec<IpNet> {
        self.routes
            .get(peer)
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    pub(super) fn reason(&self, key: &str) -> String {
        self.services[key].reason.clone().unwrap_or_default()
    }
}

#[test]
fn every_node_announces_a_host_route_to_every_session() {
    let w = World::new();
    for me in ["node-a", "node-b"] {
        let p = w.plan_on(me);
        assert_eq!(p.sessions.keys().collect::<Vec<_>>(), ["router"]);
        assert_eq!(p.prefixes("router"), [net("198.51.100.10/32")]);
        assert_eq!(
            p.routes["router"][&net("198.51.100.10/32")],
            RoutePolicy::default(),
            "eBGP: no LOCAL_PREF, no communities"
        );
        let web = &p.services["default/web"];
        assert_eq!(web.peers, names(&["router"]));
        assert_eq!((web.reason.as_deref(), web.error.as_deref()), (None, None));
        assert_eq!(web.ips, [IpAddr::from([198, 51, 100, 10])]);
    }
}

#[test]
fn session_defaults_follow_metallb_native() {
    let s = &World::new().plan_on("node-a").sessions["router"];
    assert_eq!(*s, SessionSpec::native_defaults());
    assert!(!s.is_ibgp());
}

#[test]
fn session_fields_are_resolved_from_the_peer() {
    let full = "{myASN: 64513, peerASN: 64512, localASN: 64600, peerAddress: 2001:db8::1, \
        peerPort: 1179, sourceAddress: 2001:db8::2, holdTime: 10s, connectTime: 5s, \
        routerID: 192.0.2.7, ebgpMultiHop: true, vrf: red, disableMP: true, \
        dualStackAddressFamily: true, enableGracefulRestart: true, bfdProfile: fast, \
        passwordSecret: {name: bgp-pass}}";
    let mut w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "full", full),
        doc(
            "BGPPeer",
            "zero",
            "{myASN: 1, peerASN: 2, peerAddress: 203.0.113.9, holdTime: 0s}",
        ),
        doc(
            "BGPPeer",
            "keep",
            "{myASN: 1, peerASN: 2, peerAddress: 203.0.113.8, holdTime: 30s, keepaliveTime: 4s}",
        ),
        doc(
            "BGPPeer",
            "inline",
            "{myASN: 1, peerASN: 2, peerAddress: 203.0.113.7, password: secret}",
        ),
        doc("BFDProfile", "fast", "{}"),
        doc("BGPAdvertisement", "all", "{}"),
    ]);
    w.yaml.push_str(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bgp-pass, namespace: metallb-system}\n\
         type: kubernetes.io/basic-auth\nstringData: {password: s3cret}\n",
    );
    let p = w.plan_on("node-a");
    let full = &p.sessions["full"];
    assert_eq!(full.my_asn, 64600, "localASN replaces myASN");
    assert_eq!(full.peer_address, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(full.peer_port, 1179);
    assert_eq!(full.source_address, Some("2001:db8::2".parse().unwrap()));
    assert_eq!(full.hold_time, Duration::from_secs(10));
    assert_eq!(
        full.keepalive,
        Duration::from_secs(3),
        "10 s / 3, whole seconds"
    );
    assert_eq!(full.connect_time, Some(Duration::from_secs(5)));
    assert_eq!(full.router_id, Some(Ipv4Addr::new(192, 0, 2, 7)));
    assert!(full.ebgp_multihop && full.disable_mp && full.dual_stack && full.graceful_restart);
    assert_eq!(full.vrf.as_deref(), Some("red"));
    assert_eq!(full.bfd_profile.as_deref(), Some("fast"));
    assert_eq!(full.password_secret.as_deref(), Some("bgp-pass"));
    assert!(full.has_password);

    let zero = &p.sessions["zero"];
    assert_eq!(
        (zero.hold_time, zero.keepalive),
        (Duration::ZERO, Duration::ZERO)
    );
    let keep = &p.sessions["keep"];
    assert_eq!(
        (keep.hold_time, keep.keepalive),
        (Duration::from_secs(30), Duration::from_secs(4))
    );
    let inline = &p.sessions["inline"];
    assert!(inline.has_password);
    assert_eq!(inline.password_secret, None);
}

#[test]
fn peer_node_selectors_choose_the_sessions() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "everywhere", EBGP),
        doc(
            "BGPPeer",
            "zone-a",
            "{myASN: 64513, peerASN: 64512, peerAddress: 203.0.113.5, nodeSelectors: [{matchLabels: {zone: a}}]}",
        ),
        doc("BGPAdvertisement", "all", "{}"),
    ]);
    let a = w.plan_on("node-a");
    assert_eq!(
        a.sessions.keys().collect::<Vec<_>>(),
        ["everywhere", "zone-a"]
    );
    assert_eq!(
        a.routes.keys().collect::<Vec<_>>(),
        ["everywhere", "zone-a"]
    );
    assert_eq!(
        a.services["default/web"].peers,
        names(&["everywhere", "zone-a"])
    );

    let b = w.plan_on("node-b");
    assert_eq!(b.sessions.keys().collect::<Vec<_>>(), ["everywhere"]);
    assert_eq!(b.routes.keys().collect::<Vec<_>>(), ["everywhere"]);
    assert_eq!(b.services["default/web"].peers, names(&["everywhere"]));
}

#[test]
fn interface_peers_open_no_session() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc(
            "BGPPeer",
            "unnumbered",
            "{myASN: 64513, peerASN: 64512, interface: eth1}",
        ),
        doc("BGPAdvertisement", "all", "{}"),
    ]);
    let p = w.plan_on("node-a");
    assert_eq!(p.sessions, BTreeMap::new());
    assert_eq!(p.routes, BTreeMap::new());
    let web = &p.services["default/web"];
    assert_eq!(web.peers, BTreeSet::new());
    assert!(
        p.reason("default/web").contains("no BGP session"),
        "{web:?}"
    );
}

#[test]
fn dynamic_asn_and_local_asn_peers_open_sessions_of_the_asked_kind() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc(
            "BGPPeer",
            "external",
            "{myASN: 64513, dynamicASN: external, peerAddress: 203.0.113.3}",
        ),
        doc(
            "BGPPeer",
            "internal",
            "{myASN: 64513, dynamicASN: internal, peerAddress: 203.0.113.4}",
        ),
        doc(
            "BGPPeer",
            "local",
            "{myASN: 64513, localASN: 64600, peerASN: 64600, peerAddress: 203.0.113.5}",
        ),
        doc("BGPAdvertisement", "all", "{localPref: 120}"),
    ]);
    let p = w.plan_on("node-a");
    let external = &p.sessions["external"];
    assert_eq!(external.peer_asn, PeerAs::External);
    assert!(!external.is_ibgp());
    let internal = &p.sessions["internal"];
    assert_eq!(internal.peer_asn, PeerAs::Internal);
    assert!(internal.is_ibgp());
    let local = &p.sessions["local"];
    assert_eq!(
        (local.my_asn, local.peer_asn),
        (64600, PeerAs::Fixed(64600))
    );
    assert!(local.is_ibgp(), "localASN decides internal or external");
    assert_eq!(
        p.services["default/web"].peers,
        names(&["external", "internal", "local"])
    );
    // LOCAL_PREF goes to the internal sessions only.
    for (peer, ibgp) in [("external", false), ("internal", true), ("local", true)] {
        let routes = &p.routes[peer];
        assert!(!routes.is_empty(), "{peer}");
        for route in routes.values() {
            assert_eq!(route.local_pref.is_some(), ibgp, "{peer}");
        }
    }
}

#[test]
fn advertisement_node_selectors_choose_the_announcing_nodes() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router", EBGP),
        doc(
            "BGPAdvertisement",
            "zone-b",
            "{nodeSelectors: [{matchLabels: {zone: b}}]}",
        ),
    ]);
    assert_eq!(
        w.plan_on("node-b").prefixes("router"),
        [net("198.51.100.10/32")]
    );
    let a = w.plan_on("node-a");
    assert_eq!(a.prefixes("router"), []);
    assert_eq!(
        a.sessions.len(),
        1,
        "the session still runs, with nothing to announce"
    );
    assert_eq!(
        a.reason("default/web"),
        "no BGPAdvertisement of IPAddressPool \"pool\" selects node \"node-a\""
    );
}

#[test]
fn advertisement_peers_restrict_the_sessions() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router-a", EBGP),
        doc(
            "BGPPeer",
            "router-b",
            "{myASN: 64513, peerASN: 64512, peerAddress: 203.0.113.6}",
        ),
        doc("BGPAdvertisement", "to-b", "{peers: [router-b]}"),
    ]);
    let p = w.plan_on("node-a");
    assert_eq!(p.prefixes("router-a"), []);
    assert_eq!(p.prefixes("router-b"), [net("198.51.100.10/32")]);
    assert_eq!(p.services["default/web"].peers, names(&["router-b"]));

    // Peers this node has no session with take nothing.
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("BGPPeer", "router-a", EBGP),
        doc("BGPAdvertisement", "to-x", "{peers: [router-x]}"),
    ]);
    let p = w.plan_on("node-a");
    assert_eq!(p.routes.keys().collect::<Vec<_>>(), ["router-a"]);
    assert_eq!(p.prefixes("router-a"), []);
    assert!(p.reason("default/web").contains("no BGP session"));
}

#[test]
fn cluster_policy_needs_an_endpoint_anywhere_local_one_on_this_node() {
    let mut w = World::new();
    // Cluster: the endpoint on node-b is enough for node-a.
    assert_eq!(w.plan_on("node-a").prefixes("router").len(), 1);

    w.services = vec![with(
        service("web", &["198.51.100.10"]),
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )];
    let a = w.plan_on("node-a");
    assert_eq!(a.prefixes("router"), []);
    assert_eq!(
        a.reason("default/web"),
        "externalTrafficPolicy is Local and node \"node-a\" has no serving endpoint"
    );
    assert_eq!(w.plan_on("node-b").prefixes("router").len(), 1);
}

#[test]
fn endpoint_conditions_and_addresses() {
    let endpoint = |e: serde_json::Value| with(slice("web", &[]), json!({"endpoints": [e]}));
    let cases = [
        (
            json!({"addresses": ["10.1.0.1"], "nodeName": "node-b"}),
            true,
        ),
        (
            json!({"addresses": ["10.1.0.1"], "conditions": {"ready": true}}),
            true,
        ),
        (
            json!({"addresses": ["10.1.0.1"], "conditions": {"ready": false}}),
            false,
        ),
        (
            json!({"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": true}}),
            true,
        ),
        (
            json!({"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": false}}),
            false,
        ),
        // MetalLB's BGP speaker also wants addresses (layer 2 does not look at them).
        (json!({"addresses": [], "nodeName": "node-b"}), false),
    ];
    for (e, announced) in cases {
        let mut w = World::new();
        w.slices = vec![endpoint(e.clone())];
        let p = w.plan_on("node-a");
        assert_eq!(!p.prefixes("router").is_empty(), announced, "{e}");
        if !announced {
            assert_eq!(
                p.reason("default/web"),
                "the Service has no serving endpoint"
            );
        }
    }
    let mut w = World::new();
    w.slices = vec![];
    assert_eq!(
        w.plan_on("node-a").reason("default/web"),
        "the Service has no serving endpoint"
    );
    // Slices of another Service, or of the same name in another namespace, do not count.
    w.slices = vec![
        slice("api", &["node-a"]),
        with(
            slice("web", &["node-a"]),
            json!({"metadata": {"namespace": "other"}}),
        ),
    ];
    assert_eq!(w.plan_on("node-a").prefixes("router"), []);
}

#[test]
fn network_unavailable_node_announces_nothing() {
    let mut w = World::new();
    w.nodes = vec![unavailable_node("node-a"), node("node-b")];
    let a = w.plan_on("node-a");
    assert_eq!(a.prefixes("router"), []);
    assert_eq!(a.sessions.len(), 1, "the session stays up");
    assert_eq!(
        a.reason("default/web"),
        "node \"node-a\" has the condition NetworkUnavailable"
    );
    assert_eq!(w.plan_on("node-b").prefixes("router").len(), 1);
}

#[test]
fn exclusion_label_unless_ignored() {
    let mut w = World::new();
    w.nodes = vec![excluded_node("node-a"), node("node-b")];
    let a = w.plan_on("node-a");
    assert_eq!(a.prefixes("router"), []);
    assert!(a.reason("default/web").contains(election::EXCLUDE_LB_LABEL));
    assert_eq!(w.plan_on("node-b").prefixes("router").len(), 1);

    w.ignore_exclude_lb = true;
    assert_eq!(w.plan_on("node-a").prefixes("router").len(), 1);
}

#[test]
fn only_load_balancers_of_this_class_with_addresses() {
    let mut w = World::new();
    w.services = vec![
        service("web", &["198.51.100.10"]),
        with(
            service("classy", &["198.51.100.11"]),
            json!({"spec": {"loadBalancerClass": "example.com/lb"}}),
        ),
        with(
            service("plain", &["198.51.100.12"]),
            json!({"spec": {"type": "ClusterIP"}}),
        ),
        service("pending", &[]),
    ];
    w.slices = ["web", "classy", "plain", "pending"]
        .iter()
        .map(|s| slice(s, &["node-b"]))
        .collect();
    let p = w.plan_on("node-a");
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["default/web"]);
    assert_eq!(p.prefixes("router"), [net("198.51.100.10/32")]);

    w.lb_class = Some("example.com/lb");
    let p = w.plan_on("node-a");
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["default/classy"]);
    assert_eq!(p.prefixes("router"), [net("198.51.100.11/32")]);
}

#[test]
fn unreadable_and_poolless_services_are_reported_not_announced() {
    let mut w = World::new();
    w.services = vec![
        with(
            service("bad", &["198.51.100.10"]),
            json!({"spec": {"ipFamilyPolicy": "Sometimes"}}),
        ),
        service("elsewhere", &["192.0.2.1"]),
    ];
    w.slices = vec![slice("bad", &["node-b"]), slice("elsewhere", &["node-b"])];
    let p = w.plan_on("node-a");
    assert_eq!(p.prefixes("router"), []);
    assert!(
        p.reason("default/bad")
            .starts_with("cannot be read: spec.ipFamilyPolicy")
    );
    assert_eq!(p.services["default/bad"].name, "bad");
    assert_eq!(
        p.reason("default/elsewhere"),
        "address 192.0.2.1 is not in any IPAddressPool"
    );
}

#[test]
fn pools_without_advertisements_and_configs_without_bgp() {
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("IPAddressPool", "other", "{addresses: [192.0.2.0/24]}"),
        doc("BGPPeer", "router", EBGP),
        doc("BGPAdvertisement", "other", "{ipAddressPools: [other]}"),
    ]);
    assert_eq!(
        w.plan_on("node-a").reason("default/web"),
        "no BGPAdvertisement covers IPAddressPool \"pool\""
    );

    // Layer 2 only: nothing at all.
    let w = World::with_config(&[
        doc("IPAddressPool", "pool", POOL),
        doc("L2Advertisement", "l2", "{}"),
    ]);
    assert_eq!(w.plan_on("node-a"), BgpPlan::default());
}
