//! `simulate()` over a hand-built configuration: allocation, restart re-claim and election
//! composed as `herald simulate` does (the YAML front end is tested in simulate_cli.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;

use herald::cli::simulate::{Objects, Options, Report, ServiceReport, render_text, simulate};
use herald::config::{Config, L2Advertisement, Pool};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

fn config() -> Config {
    let pool = Pool {
        name: "first-pool".into(),
        labels: BTreeMap::new(),
        ranges: vec![vec![
            "10.0.0.1/32".parse().unwrap(),
            "10.0.0.2/32".parse().unwrap(),
        ]],
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    };
    Config {
        pools: [(pool.name.clone(), pool)].into(),
        l2_advertisements: vec![L2Advertisement {
            name: "l2".into(),
            pools: ["first-pool".to_string()].into(),
            service_selectors: vec![],
            nodes: ["node-a", "node-b", "node-c"]
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            interfaces: vec![],
            preferred_nodes: vec![],
        }],
        ..Config::default()
    }
}

fn service(name: &str, status_ip: Option<&str>) -> Service {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
    });
    if let Some(ip) = status_ip {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    serde_json::from_value(v).unwrap()
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn endpoints(service: &str, node: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": node}]
    }))
    .unwrap()
}

fn objects(services: Vec<Service>) -> Objects {
    Objects {
        services,
        nodes: ["node-c", "node-a", "node-b"]
            .into_iter()
            .map(node)
            .collect(),
        endpoint_slices: vec![endpoints("alpha", "node-c"), endpoints("beta", "node-a")],
    }
}

fn find<'a>(report: &'a Report, name: &str) -> &'a ServiceReport {
    report.services.iter().find(|s| s.name == name).unwrap()
}

fn candidates(s: &ServiceReport) -> Vec<String> {
    s.layer2
        .as_ref()
        .unwrap()
        .candidates
        .iter()
        .map(|c| c.node.clone())
        .collect()
}

#[test]
fn allocates_and_elects_with_the_spec_vectors() {
    let report = simulate(
        &config(),
        &objects(vec![service("alpha", None), service("beta", None)]),
        &Options::default(),
    );
    let alpha = find(&report, "alpha");
    assert_eq!(
        (alpha.state.as_str(), alpha.ips[0].to_string().as_str()),
        ("assigned", "10.0.0.1")
    );
    assert_eq!(alpha.pool.as_deref(), Some("first-pool"));
    assert_eq!(candidates(alpha), ["node-b", "node-a", "node-c"]);
    assert_eq!(
        alpha.layer2.as_ref().unwrap().node.as_deref(),
        Some("node-b")
    );
    let beta = find(&report, "beta");
    assert_eq!(beta.ips[0].to_string(), "10.0.0.2");
    assert_eq!(candidates(beta), ["node-b", "node-c", "node-a"]);
    assert_eq!(report.pools["first-pool"].assigned_ipv4, 2);
    assert_eq!(report.pools["first-pool"].available_ipv4, 0);
    let text = render_text(&report);
    assert!(
        text.contains("default/alpha: assigned 10.0.0.1 pool=first-pool"),
        "{text}"
    );
    assert!(
        text.contains("layer2: announced by node-b (interfaces: all)"),
        "{text}"
    );
}

#[test]
fn restart_keeps_statuses_and_reports_pending_and_unannounced() {
    // beta already holds 10.0.0.1; gamma has no endpoints; delta finds the pool full.
    let services = vec![
        service("alpha", None),
        service("beta", Some("10.0.0.1")),
        service("delta", None),
    ];
    let report = simulate(&config(), &objects(services), &Options::default());
    assert_eq!(find(&report, "beta").ips[0].to_string(), "10.0.0.1");
    assert!(
        find(&report, "beta").events.is_empty(),
        "re-claims are silent"
    );
    assert_eq!(find(&report, "alpha").ips[0].to_string(), "10.0.0.2");
    let delta = find(&report, "delta");
    assert_eq!(delta.state, "pending");
    assert_eq!(delta.reason.as_deref(), Some("no available IPs"));
    assert_eq!(delta.events[0].reason.as_str(), "AllocationFailed");
    let report = simulate(
        &config(),
        &objects(vec![service("gamma", None)]),
        &Options::default(),
    );
    let l2 = find(&report, "gamma").layer2.clone().unwrap();
    assert_eq!(l2.node, None);
    assert_eq!(
        l2.not_announced.as_deref(),
        Some("the service has no serving endpoint")
    );
}

#[test]
fn json_shape_is_stable() {
    let report = simulate(
        &config(),
        &objects(vec![service("alpha", None)]),
        &Options::default(),
    );
    let value: Value = serde_json::to_value(&report).unwrap();
    let alpha = &value["services"][0];
    assert_eq!(alpha["state"], "assigned");
    assert_eq!(alpha["ips"], json!(["10.0.0.1"]));
    assert_eq!(alpha["layer2"]["node"], "node-b");
    assert_eq!(alpha["layer2"]["interfaces"], "all");
    assert_eq!(
        alpha["events"][0],
        json!({"reason": "IPAllocated", "type": "Normal", "message": "Assigned IP [\"10.0.0.1\"]"})
    );
    assert_eq!(value["pools"]["first-pool"]["assignedIPv4"], 1);
}

#[test]
fn invalid_services_and_lb_class_are_reported() {
    let mut bad = service("bad", None);
    bad.spec.as_mut().unwrap().ip_family_policy = Some("Sometimes".into());
    let mut classed = service("classed", None);
    classed.spec.as_mut().unwrap().load_balancer_class = Some("other".into());
    let report = simulate(&config(), &objects(vec![bad, classed]), &Options::default());
    let bad = find(&report, "bad");
    assert_eq!(bad.state, "invalid");
    assert!(bad.reason.as_ref().unwrap().contains("spec.ipFamilyPolicy"));
    assert_eq!(find(&report, "classed").state, "ignored");
}
