//! The BGP side of `herald simulate`: every node's speaker evaluated over the allocation's
//! result, giving per Service which nodes announce it to which peers, and why the others do not.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use serde::Serialize;

use crate::bgp::policy;
use crate::config::Config;
use crate::election::{Cluster, SlicesByService};

use super::{Objects, Options};

/// How one Service is announced over BGP, node by node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpReport {
    /// Nodes announcing the Service, by name.
    pub announced_by: BTreeMap<String, Vec<PeerRoutes>>,
    /// Nodes that do not, with why.
    pub not_announced: BTreeMap<String, String>,
}

/// What one node sends one peer for the Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerRoutes {
    pub peer: String,
    /// The routes covering the Service's addresses (aggregated ones included).
    pub routes: Vec<Route>,
}

/// One route as the peer receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub prefix: String,
    /// Sent on iBGP sessions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// Evaluates every node's BGP plan over the Services with the addresses the allocation gave
/// them (`ips`, by `namespace/name`). Empty when the configuration has no BGP at all.
pub fn reports(
    config: &Config,
    objects: &Objects,
    options: &Options,
    ips: &BTreeMap<String, Vec<IpAddr>>,
) -> BTreeMap<String, BgpReport> {
    let mut out: BTreeMap<String, BgpReport> = BTreeMap::new();
    if config.peers.is_empty() && config.bgp_advertisements.is_empty() {
        return out;
    }
    let services: Vec<Arc<Service>> = objects
        .services
        .iter()
        .filter_map(|s| {
            let key = format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or("default"),
                s.metadata.name.as_deref().unwrap_or_default()
            );
            ips.get(&key).map(|ips| Arc::new(with_ingress(s, ips)))
        })
        .collect();
    let slices = SlicesByService::new(&objects.endpoint_slices);
    for node in objects
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
    {
        let plan = policy::plan(&Cluster {
            node,
            config,
            services: &services,
            slices: &slices,
            nodes: &objects.nodes,
            lb_class: options.lb_class.as_deref(),
            ignore_exclude_lb: options.ignore_exclude_lb,
        });
        for (key, service) in &plan.services {
            let report = out.entry(key.clone()).or_default();
            if service.peers.is_empty() {
                let reason = service
                    .reason
                    .clone()
                    .unwrap_or_else(|| "not announced".into());
                report.not_announced.insert(node.to_string(), reason);
                continue;
            }
            let peers = service
                .peers
                .iter()
                .map(|peer| peer_routes(&plan, peer, &service.ips))
                .collect();
            report.announced_by.insert(node.to_string(), peers);
        }
    }
    out
}

fn peer_routes(plan: &policy::BgpPlan, peer: &str, ips: &[IpAddr]) -> PeerRoutes {
    let routes = plan
        .routes
        .get(peer)
        .into_iter()
        .flatten()
        .filter(|(prefix, _)| ips.iter().any(|ip| prefix.contains(ip)))
        .map(|(prefix, route)| Route {
            prefix: prefix.to_string(),
            local_pref: route.local_pref,
            communities: route.communities.iter().map(ToString::to_string).collect(),
        })
        .collect();
    PeerRoutes {
        peer: peer.to_string(),
        routes,
    }
}

/// `service` as the allocator left it: `status.loadBalancer.ingress` holds `ips`.
fn with_ingress(service: &Service, ips: &[IpAddr]) -> Service {
    let mut service = service.clone();
    let ingress = ips
        .iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..LoadBalancerIngress::default()
        })
        .collect();
    service.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(ingress),
        }),
        ..ServiceStatus::default()
    });
    service
}

/// Text lines for one Service (indented under its header).
pub fn render(report: &BgpReport, out: &mut String) {
    use std::fmt::Write as _;
    for (node, peers) in &report.announced_by {
        for p in peers {
            let routes: Vec<String> = p.routes.iter().map(render_route).collect();
            let _ = writeln!(out, "  bgp: {node} -> {}: {}", p.peer, routes.join(", "));
        }
    }
    for (node, why) in &report.not_announced {
        let _ = writeln!(out, "  bgp: {node} not announcing: {why}");
    }
}

fn render_route(route: &Route) -> String {
    let mut attributes = Vec::new();
    if let Some(pref) = route.local_pref {
        attributes.push(format!("localPref {pref}"));
    }
    if !route.communities.is_empty() {
        attributes.push(format!("communities {}", route.communities.join(" ")));
    }
    if attributes.is_empty() {
        route.prefix.clone()
    } else {
        format!("{} ({})", route.prefix, attributes.join("; "))
    }
}
