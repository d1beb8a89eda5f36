use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::fixtures::{merge, unavailable_node};
use super::*;
use crate::allocator::ServiceInfo;
use crate::config::{Config, L2Advertisement, NodePreference, Selector};

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn slice(endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(
        json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": endpoints}),
    )
    .unwrap()
}

fn ready_on(nodes: &[&str]) -> EndpointSlice {
    slice(
        nodes
            .iter()
            .map(|n| json!({"addresses": ["10.1.0.1"], "nodeName": n}))
            .collect(),
    )
}

fn service(extra: serde_json::Value) -> ServiceInfo {
    let mut base = json!({
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1", "selector": {"app": "web"}}
    });
    merge(&mut base, extra);
    let svc: Service = serde_json::from_value(base).unwrap();
    ServiceInfo::from_service(&svc).unwrap()
}

fn ad(name: &str, nodes: &[&str]) -> L2Advertisement {
    L2Advertisement {
        name: name.into(),
        pools: ["pool".to_string()].into(),
        service_selectors: vec![],
        nodes: nodes.iter().map(std::string::ToString::to_string).collect(),
        interfaces: vec![],
        preferred_nodes: vec![],
    }
}

fn config(ads: Vec<L2Advertisement>) -> Config {
    Config {
        l2_advertisements: ads,
        ..Config::default()
    }
}

fn selector(k: &str, v: &str) -> Selector {
    Selector {
        match_labels: [(k.to_string(), v.to_string())].into(),
        match_expressions: vec![],
    }
}

struct Case {
    service: ServiceInfo,
    ips: Vec<IpAddr>,
    config: Config,
    nodes: Vec<Node>,
    live: Option<BTreeSet<String>>,
    slices: Vec<EndpointSlice>,
    ignore_exclude_lb: bool,
}

impl Case {
    fn new(node_names: &[&str], ip: &str) -> Self {
        Case {
            service: service(json!({})),
            ips: vec![ip.parse().unwrap()],
            config: config(vec![ad("l2", node_names)]),
            nodes: node_names.iter().map(|n| node(n, &[])).collect(),
            live: None,
            slices: vec![ready_on(node_names)],
            ignore_exclude_lb: false,
        }
    }

    fn run(&self) -> Election {
        elect(&ElectionInput {
            service: &self.service,
            ips: &self.ips,
            pool: "pool",
            config: &self.config,
            nodes: &self.nodes,
            live_speakers: self.live.as_ref(),
            endpoint_slices: &self.slices.iter().collect::<Vec<_>>(),
            ignore_exclude_lb: self.ignore_exclude_lb,
        })
    }

    fn order(&self) -> Vec<String> {
        self.run().candidates.into_iter().map(|c| c.node).collect()
    }
}

#[test]
fn spec_vectors_without_preferences() {
    let nodes = ["node-a", "node-b", "node-c"];
    assert_eq!(
        Case::new(&nodes, "10.0.0.1").order(),
        ["node-b", "node-a", "node-c"]
    );
    assert_eq!(
        Case::new(&nodes, "10.0.0.2").order(),
        ["node-b", "node-c", "node-a"]
    );
    // Input order of the Node list does not matter.
    let mut case = Case::new(&nodes, "10.0.0.1");
    case.nodes.reverse();
    assert_eq!(case.order(), ["node-b", "node-a", "node-c"]);
}

#[test]
fn spec_vector_with_preferences() {
    let names = ["edge-a", "edge-b", "worker-a"];
    let mut case = Case::new(&names, "10.20.30.1");
    case.nodes = vec![
        node("edge-a", &[("role", "edge")]),
        node("edge-b", &[("role", "edge")]),
        node("worker-a", &[]),
    ];
    case.config.l2_advertisements[0].preferred_nodes = vec![NodePreference {
        weight: 100,
        selector: selector("role", "edge"),
    }];
    assert_eq!(case.order(), ["edge-b", "edge-a", "worker-a"]);
    let scores: Vec<i64> = case.run().candidates.iter().map(|c| c.score).collect();
    assert_eq!(scores, [100, 100, 0]);
}

#[test]
fn hash_uses_go_textual_form() {
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    let plain: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(election_hash("n", &mapped), election_hash("n", &plain));
    let v6: IpAddr = "2001:DB8:0:0:0:0:0:1".parse().unwrap();
    assert_eq!(v6.to_string(), "2001:db8::1");
    assert_eq!(
        election_hash("n", &v6),
        Sha256::digest(b"n#2001:db8::1").as_slice()
    );
}

#[test]
fn preference_scores_sum_over_ads_and_only_count_selected_nodes() {
    let mut case = Case::new(&["n1", "n2", "n3"], "10.0.0.1");
    case.nodes = vec![
        node("n1", &[("a", "1")]),
        node("n2", &[("a", "1"), ("b", "1")]),
        node("n3", &[("b", "1")]),
    ];
    let mut first = ad("first", &["n1", "n2", "n3"]);
    first.preferred_nodes = vec![NodePreference {
        weight: 10,
        selector: selector("a", "1"),
    }];
    let mut second = ad("second", &["n1", "n2"]);
    second.preferred_nodes = vec![NodePreference {
        weight: 20,
        selector: selector("b", "1"),
    }];
    case.config = config(vec![first, second]);
    let scores: BTreeMap<String, i64> = case
        .run()
        .candidates
        .into_iter()
        .map(|c| (c.node, c.score))
        .collect();
    // n3 matches "b" but the second ad does not select it.
    assert_eq!(
        scores,
        [("n1".into(), 10), ("n2".into(), 30), ("n3".into(), 0)].into()
    );
    assert_eq!(case.order()[0], "n2");
}

#[test]
fn no_serving_endpoint_means_nobody_announces() {
    let mut case = Case::new(&["n1"], "10.0.0.1");
    case.slices = vec![slice(
        json!([{"addresses": ["10.1.0.1"], "nodeName": "n1", "conditions": {"ready": false}}]),
    )];
    assert_eq!(case.run().result, Err(NotAnnounced::NoServingEndpoints));
    // Serving=true counts even when not ready (terminating pods still serve).
    case.slices = vec![slice(
        json!([{"addresses": ["10.1.0.1"], "nodeName": "n1", "conditions": {"ready": false, "serving": true}}]),
    )];
    assert!(case.run().result.is_ok());
    case.slices = vec![];
    assert_eq!(case.run().result, Err(NotAnnounced::NoServingEndpoints));
    // Ready unset counts as ready.
    case.slices = vec![slice(
        json!([{"addresses": ["10.1.0.1"], "nodeName": "elsewhere"}]),
    )];
    assert!(case.run().result.is_ok());
}

#[test]
fn service_selectors_of_ads_filter_and_shared_ips_are_not_announced() {
    let mut case = Case::new(&["n1"], "10.0.0.1");
    case.config.l2_advertisements[0].service_selectors = vec![selector("app", "other")];
    assert_eq!(
        case.run().result,
        Err(NotAnnounced::NoAdvertisement {
            pool: "pool".into()
        })
    );
    case.config.l2_advertisements[0].service_selectors = vec![selector("app", "web")];
    assert!(case.run().result.is_ok());
    case.service =
        service(json!({"metadata": {"annotations": {"metallb.universe.tf/allow-shared-ip": "k"}}}));
    assert_eq!(
        case.run().result,
        Err(NotAnnounced::SharedIpWithServiceSelectors)
    );
    // Without serviceSelectors, a shared IP is announced.
    case.config.l2_advertisements[0].service_selectors = vec![];
    assert!(case.run().result.is_ok());
}

#[test]
fn ads_of_other_pools_do_not_apply() {
    let mut case = Case::new(&["n1"], "10.0.0.1");
    case.config.l2_advertisements[0].pools = ["other".to_string()].into();
    assert_eq!(
        case.run().result,
        Err(NotAnnounced::NoAdvertisement {
            pool: "pool".into()
        })
    );
}

#[test]
fn candidate_filters() {
    let names = ["n1", "n2", "n3", "n4"];
    let mut case = Case::new(&names, "10.0.0.1");
    case.nodes = vec![
        node("n1", &[]),
        unavailable_node("n2"),
        node("n3", &[(EXCLUDE_LB_LABEL, "")]),
        node("n4", &[]),
    ];
    let mut got = case.order();
    got.sort();
    assert_eq!(got, ["n1", "n4"]);
    case.ignore_exclude_lb = true;
    let mut got = case.order();
    got.sort();
    assert_eq!(got, ["n1", "n3", "n4"]);
    // Only live speakers.
    case.live = Some(["n4".to_string(), "n2".to_string()].into());
    assert_eq!(case.order(), ["n4"]);
    // Nodes not selected by any ad are out.
    case.live = None;
    case.config.l2_advertisements[0].nodes = ["n3".to_string()].into();
    assert_eq!(case.order(), ["n3"]);
    case.config.l2_advertisements[0].nodes = BTreeSet::new();
    assert_eq!(case.run().result, Err(NotAnnounced::NoEligibleNode));
}

#[test]
fn local_policy_keeps_nodes_with_serving_endpoints() {
    let mut case = Case::new(&["node-a", "node-b", "node-c"], "10.0.0.1");
    case.service = service(json!({"spec": {"externalTrafficPolicy": "Local"}}));
    case.slices = vec![slice(json!([
        {"addresses": ["10.1.0.1"], "nodeName": "node-a"},
        {"addresses": ["10.1.0.2"], "nodeName": "node-c", "conditions": {"ready": false}}
    ]))];
    assert_eq!(case.order(), ["node-a"]);
    // Cluster policy: every node regardless of endpoints.
    case.service = service(json!({}));
    assert_eq!(case.order(), ["node-b", "node-a", "node-c"]);
}

#[test]
fn interfaces_are_the_union_or_all() {
    let mut case = Case::new(&["n1", "n2"], "10.0.0.1");
    let mut a = ad("a", &["n1", "n2"]);
    a.interfaces = vec!["eth0".into()];
    let mut b = ad("b", &["n1", "n2"]);
    b.interfaces = vec!["eth1".into(), "eth0".into()];
    let mut other = ad("c", &[]);
    other.interfaces = vec![];
    case.config = config(vec![a.clone(), b.clone(), other]);
    let winner = case.run().result.unwrap();
    assert_eq!(
        winner.interfaces,
        Interfaces::Named(["eth0".to_string(), "eth1".to_string()].into())
    );
    let all = ad("all", &["n1", "n2"]);
    case.config = config(vec![a, b, all]);
    assert_eq!(case.run().result.unwrap().interfaces, Interfaces::All);
}

#[test]
fn dual_stack_uses_the_first_status_address() {
    let mut case = Case::new(&["node-a", "node-b", "node-c"], "10.0.0.2");
    case.ips.push("2001:db8::1".parse().unwrap());
    assert_eq!(case.order(), ["node-b", "node-c", "node-a"]);
    case.ips = vec![];
    assert_eq!(case.run().result, Err(NotAnnounced::NoAddress));
}

#[test]
fn adding_a_node_moves_the_ip_only_if_it_sorts_first() {
    let base = Case::new(&["node-a", "node-b", "node-c"], "10.0.0.1");
    let before = base.order();
    for extra in ["node-d", "node-e", "node-f", "zz"] {
        let names = ["node-a", "node-b", "node-c", extra];
        let after = Case::new(&names, "10.0.0.1").order();
        let without: Vec<_> = after.iter().filter(|n| *n != extra).cloned().collect();
        assert_eq!(without, before, "relative order is stable");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every speaker must compute the same list whatever order it lists Nodes in, the list
        /// is sorted by hash, and removing a node that is not the winner never moves the IP.
        #[test]
        fn order_is_a_function_of_names_and_ip(
            names in prop::collection::btree_set("[a-z]{1,8}(-[a-z0-9]{1,4})?", 1..8),
            octets in any::<[u8; 4]>(),
            shuffled in any::<u64>(),
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let ip = IpAddr::from(octets).to_string();
            let case = Case::new(&names, &ip);
            let order = case.order();

            let mut permuted = Case::new(&names, &ip);
            let n = permuted.nodes.len();
            permuted.nodes.rotate_left((shuffled as usize) % n);
            if shuffled % 2 == 0 {
                permuted.nodes.reverse();
            }
            prop_assert_eq!(&permuted.order(), &order);

            let ip: IpAddr = ip.parse().unwrap();
            let hashes: Vec<[u8; 32]> = order.iter().map(|n| election_hash(n, &ip)).collect();
            prop_assert!(hashes.windows(2).all(|w| w[0] <= w[1]));

            if order.len() > 1 {
                let loser = &order[order.len() - 1];
                let rest: Vec<&str> = names.iter().copied().filter(|n| n != loser).collect();
                prop_assert_eq!(&Case::new(&rest, &ip.to_string()).order()[0], &order[0]);
            }
        }
    }
}
