//! What the BGP speaker tests share: the ASNs, the Service's addresses, a scenario runner that
//! holds the cluster lock, and the objects every scenario applies (include with
//! `#[path = "support/bgp_cluster.rs"] mod bgp_cluster;` beside `kube_support` and `routers`).

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use herald_tests::{Bpffs, require_root};

use crate::kube_support::cluster::{Cluster, namespace_yaml, serial};
use crate::kube_support::netns::forward_api_into;
use crate::routers::{Lan, Neighbor, Route, Router, RouterConfig, RouterKind};

pub const ROUTER_AS: u32 = 64512;
pub const NODE_AS: u32 = 64513;
pub const SERVICE_IP: &str = "198.51.100.77";
pub const SERVICE_IP6: &str = "2001:db8:0:2::77";
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn run_serial(scenario: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario);
}

/// What every BGP scenario starts from: the reset cluster without BGP objects, a bpffs for
/// the speakers' pins, and a LAN of `hosts` node namespaces (names from `prefix`), each
/// reaching the API server.
pub async fn bgp_world(prefix: &str, hosts: usize) -> (Cluster, Bpffs, Lan) {
    require_root();
    let cluster = Cluster::reset().await;
    let bpffs = Bpffs::new().expect("bpffs");
    cluster.clear_bgp_objects();
    let lan = Lan::new(prefix, hosts).expect("lan");
    for host in &lan.hosts {
        forward_api_into(&host.name, cluster.plane.apiserver_port);
    }
    (cluster, bpffs, lan)
}

/// The cluster side: a Node per host, the namespace, a pool and an advertisement.
pub fn base_objects(cluster: &Cluster, ns: &str, nodes: &[&str], ad_extra: &str) {
    cluster.apply(&namespace_yaml(ns));
    for node in nodes {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    herald-test: \"true\"\n"
        ));
    }
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: bgp-e2e\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.64/27, 2001:db8:0:2::/64]\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: bgp-e2e\n  namespace: metallb-system\nspec:\n  ipAddressPools: [bgp-e2e]\n  communities: [\"64512:300\", \"large:64512:1:2\"]\n{ad_extra}"
    ));
}

pub fn peer_yaml(name: &str, address: IpAddr, my_asn: u32, extra: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  myASN: {my_asn}\n  peerASN: {ROUTER_AS}\n  peerAddress: \"{address}\"\n  holdTime: 9s\n{extra}"
    )
}

pub fn find<'a>(routes: &'a [Route], prefix: &str) -> Option<&'a Route> {
    routes.iter().find(|r| r.prefix.to_string() == prefix)
}

pub fn v4_prefix() -> String {
    format!("{SERVICE_IP}/32")
}

pub fn v6_prefix() -> String {
    format!("{SERVICE_IP6}/128")
}

/// A router of `kind` in `lan`'s router namespace, AS [`ROUTER_AS`], with host 0 as its eBGP
/// neighbor (AS [`NODE_AS`]) over IPv4 and over IPv6. Returns the start's error as is.
pub fn dual_stack_router(kind: RouterKind, lan: &Lan) -> anyhow::Result<Router> {
    Router::start(&RouterConfig {
        kind,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![IpAddr::V4(Lan::ROUTER_V4), IpAddr::V6(Lan::ROUTER_V6)],
        neighbors: vec![
            Neighbor::new(IpAddr::V4(Lan::host_v4(0)), NODE_AS),
            Neighbor {
                ipv6: true,
                ..Neighbor::new(IpAddr::V6(Lan::host_v6(0)), NODE_AS)
            },
        ],
    })
}
