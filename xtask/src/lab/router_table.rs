//! The router's table as `lab status` shows it in BGP mode: FRR's BGP paths per prefix
//! (`show bgp ipv4|ipv6 unicast json`), its sessions (`show bgp summary json`) and the kernel
//! route zebra installed (`ip -j route show proto bgp` in the router namespace), next hops
//! named by node; and, per LoadBalancer IP, where the client's connections through it went.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::kubectl::wait_for;
use super::probe;
use super::router::vtysh_json;
use super::spec::{BACKEND_PORT, CLIENT_NS, NODE_AS, NODES, ROUTER_AS, ROUTER_NS};
use super::topo::ip;

/// Connections `status` makes through each IP (ECMP spreads them across the nodes).
pub const CONNECTIONS: usize = 6;

/// One prefix in the router's table: its BGP paths and the kernel route zebra installed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterRoute {
    pub prefix: String,
    /// AS path of the best path, as FRR prints it ("64513").
    pub as_path: String,
    /// Next hop of every path FRR holds, the best one first.
    pub bgp_next_hops: Vec<IpAddr>,
    /// Next hops of the kernel route (ECMP: one per node).
    pub kernel_next_hops: Vec<IpAddr>,
}

/// `show bgp <afi> unicast json` (FRR 8.4): prefix → its paths, each with `nexthops`, `path`
/// (the AS path) and `bestpath`; returns (prefix, AS path of the best, next hops best first).
pub fn parse_bgp_table(v: &Value) -> Vec<(String, String, Vec<IpAddr>)> {
    let Some(routes) = v["routes"].as_object() else {
        return Vec::new();
    };
    let mut table = Vec::new();
    for (prefix, paths) in routes {
        let mut paths: Vec<&Value> = paths.as_array().into_iter().flatten().collect();
        paths.sort_by_key(|p| p["bestpath"] != true);
        let as_path = paths
            .first()
            .and_then(|p| p["path"].as_str().or(p["aspath"]["string"].as_str()))
            .unwrap_or("")
            .to_string();
        let mut hops = Vec::new();
        for p in paths {
            // An IPv6 path may list a link-local next hop beside the global one.
            let hop = p["nexthops"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["scope"] != "link-local")
                .find_map(|h| h["ip"].as_str()?.parse::<IpAddr>().ok());
            if let Some(hop) = hop.filter(|h| !hops.contains(h)) {
                hops.push(hop);
            }
        }
        table.push((prefix.clone(), as_path, hops));
    }
    table
}

/// `ip -j route show proto bgp`: prefix (with its length) → gateways (one, or each of a
/// multipath route's `nexthops`).
pub fn parse_kernel_routes(v: &Value) -> BTreeMap<String, Vec<IpAddr>> {
    let mut routes = BTreeMap::new();
    for r in v.as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str() else {
            continue;
        };
        let prefix = if dst.contains('/') {
            dst.to_string()
        } else if dst.contains(':') {
            format!("{dst}/128")
        } else {
            format!("{dst}/32")
        };
        let gateways: Vec<IpAddr> = match r["nexthops"].as_array() {
            Some(hops) => hops
                .iter()
                .filter_map(|h| h["gateway"].as_str()?.parse().ok())
                .collect(),
            None => r["gateway"]
                .as_str()
                .and_then(|g| g.parse().ok())
                .into_iter()
                .collect(),
        };
        routes.insert(prefix, gateways);
    }
    routes
}

fn kernel_routes(v6: bool) -> BTreeMap<String, Vec<IpAddr>> {
    let family = if v6 { "-6" } else { "-4" };
    ip(&[
        "-n", ROUTER_NS, family, "-j", "route", "show", "proto", "bgp",
    ])
    .ok()
    .and_then(|out| serde_json::from_str(&out).ok())
    .map(|v| parse_kernel_routes(&v))
    .unwrap_or_default()
}

/// The router's BGP table over both families, with the kernel's next hops for each prefix.
pub fn table() -> Result<Vec<RouterRoute>> {
    let mut routes = Vec::new();
    for (afi, v6) in [("ipv4", false), ("ipv6", true)] {
        let bgp = vtysh_json(&format!("show bgp {afi} unicast json"))?;
        let kernel = kernel_routes(v6);
        for (prefix, as_path, bgp_next_hops) in parse_bgp_table(&bgp) {
            routes.push(RouterRoute {
                kernel_next_hops: kernel.get(&prefix).cloned().unwrap_or_default(),
                prefix,
                as_path,
                bgp_next_hops,
            });
        }
    }
    Ok(routes)
}

/// `show bgp summary json`: (neighbor address, state, prefixes received) over both families.
fn sessions() -> Vec<(String, String, u64)> {
    let Ok(v) = vtysh_json("show bgp summary json") else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for family in ["ipv4Unicast", "ipv6Unicast"] {
        for (peer, p) in v[family]["peers"].as_object().into_iter().flatten() {
            out.insert((
                peer.clone(),
                p["state"].as_str().unwrap_or("?").to_string(),
                p["pfxRcd"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.into_iter().collect()
}

/// The lab node whose address `ip` is, else the address itself.
pub fn node_of(ip: IpAddr) -> String {
    NODES
        .iter()
        .find(|n| IpAddr::V4(n.v4) == ip || IpAddr::V6(n.v6) == ip)
        .map_or_else(|| ip.to_string(), |n| n.name.to_string())
}

/// What `lab status` shows of the router (JSON; [`print_status`] prints it).
pub fn status_json() -> Value {
    let (routes, error) = match table() {
        Ok(routes) => (routes, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let names = |hops: &[IpAddr]| hops.iter().map(|h| node_of(*h)).collect::<Vec<_>>();
    json!({
        "netns": ROUTER_NS,
        "asn": ROUTER_AS,
        "node_asn": NODE_AS,
        "error": error,
        "sessions": sessions().into_iter().map(|(peer, state, prefixes)| json!({
            "peer": peer,
            "node": peer.parse().map(node_of).unwrap_or_default(),
            "state": state,
            "prefixes": prefixes,
        })).collect::<Vec<_>>(),
        "routes": routes.iter().map(|r| json!({
            "prefix": r.prefix,
            "as_path": r.as_path,
            "bgp_next_hops": r.bgp_next_hops,
            "bgp_next_hop_nodes": names(&r.bgp_next_hops),
            "kernel_next_hops": r.kernel_next_hops,
            "kernel_next_hop_nodes": names(&r.kernel_next_hops),
        })).collect::<Vec<_>>(),
    })
}

/// The router's kernel next hops (node names) for host prefix `ip`, from [`status_json`].
pub fn kernel_next_hop_nodes(router: &Value, ip: IpAddr) -> Vec<String> {
    let prefix = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
    router["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["prefix"].as_str() == Some(prefix.as_str()))
        .and_then(|r| r["kernel_next_hop_nodes"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "-".to_string()
    } else {
        list.join(", ")
    }
}

/// Prints [`status_json`]: the sessions, then one line per prefix.
pub fn print_status(router: &Value) {
    println!(
        "router {} (FRR, AS {}; nodes AS {}):",
        router["netns"].as_str().unwrap_or("?"),
        router["asn"],
        router["node_asn"]
    );
    if let Some(e) = router["error"].as_str() {
        println!("  cannot read FRR: {e}");
    }
    let sessions: Vec<String> = router["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {} {}",
                s["node"].as_str().unwrap_or("?"),
                s["peer"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!("  sessions: {}", sessions.join(", "));
    println!(
        "  {:<22} {:<8} {:<34} kernel route next hops",
        "prefix", "AS path", "BGP next hops (best first)"
    );
    for r in router["routes"].as_array().into_iter().flatten() {
        println!(
            "  {:<22} {:<8} {:<34} {}",
            r["prefix"].as_str().unwrap_or("?"),
            r["as_path"].as_str().unwrap_or("?"),
            strings(&r["bgp_next_hop_nodes"]),
            strings(&r["kernel_next_hop_nodes"])
        );
    }
}

/// Waits until the router's kernel has a route to each of `ips` through every node.
pub fn wait_ecmp(ips: &[IpAddr]) -> Result<()> {
    wait_for(
        "the router's kernel routes to the Service through all three nodes (eBGP, ECMP)",
        Duration::from_secs(90),
        || {
            let router = status_json();
            ips.iter()
                .all(|ip| kernel_next_hop_nodes(&router, *ip).len() == NODES.len())
                .then_some(())
        },
    )
}

/// BGP mode: the router's next hops for `ip` and, from the client, [`CONNECTIONS`] new
/// connections through it (`tcp` is the first; `served_by_count` counts every node's share).
pub fn address_json(ip: IpAddr, router: &Value, client: bool) -> Value {
    let mut a = json!({
        "ip": ip.to_string(),
        "router_next_hops": kernel_next_hop_nodes(router, ip),
    });
    if client {
        let mut counts = BTreeMap::<String, usize>::new();
        let mut first = None;
        for _ in 0..CONNECTIONS {
            let tcp = probe::tcp_json(client_tcp(ip));
            if let Some(node) = tcp["served_by"].as_str() {
                *counts.entry(node.to_string()).or_default() += 1;
            }
            first.get_or_insert(tcp);
        }
        a["tcp"] = first.unwrap_or(Value::Null);
        a["served_by_count"] = json!(counts);
    }
    a
}

/// One address in BGP mode: the router's next hops and where the client's connections went.
pub fn print_address(a: &Value) {
    let ip = a["ip"].as_str().unwrap_or("?");
    let hops: Vec<&str> = a["router_next_hops"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    println!(
        "    {ip:<20} router's kernel route: {} next hop(s): {}",
        hops.len(),
        hops.join(", ")
    );
    let Some(counts) = a["served_by_count"].as_object() else {
        return;
    };
    let total: u64 = counts.values().filter_map(Value::as_u64).sum();
    let spread: Vec<String> = counts
        .iter()
        .map(|(node, n)| format!("{node} ×{n}"))
        .collect();
    if total == 0 {
        println!(
            "      client TCP {}:{BACKEND_PORT}: FAILED ({})",
            probe::fmt_addr(ip),
            a["tcp"]["error"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "      client TCP {}:{BACKEND_PORT}: {total}/{CONNECTIONS} connected, served by {}",
            probe::fmt_addr(ip),
            spread.join(", ")
        );
    }
}

/// A TCP connection from the client through `ip` to a backend: the serving node's name.
fn client_tcp(ip: IpAddr) -> Result<String> {
    probe::in_netns(CLIENT_NS, move || {
        probe::tcp_hello(SocketAddr::new(ip, BACKEND_PORT), Duration::from_secs(2))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_table_and_kernel_multipath_route() {
        let bgp: Value = serde_json::from_str(
            r#"{"routes":{"198.51.100.10/32":[
              {"valid":true,"multipath":true,"path":"64513","nexthops":[{"ip":"203.0.113.12","afi":"ipv4","used":true}]},
              {"valid":true,"bestpath":true,"multipath":true,"path":"64513","nexthops":[{"ip":"203.0.113.11","afi":"ipv4","used":true}]},
              {"valid":true,"multipath":true,"path":"64513","nexthops":[{"ip":"203.0.113.13","afi":"ipv4","used":true}]}]}}"#,
        )
        .unwrap();
        let table = parse_bgp_table(&bgp);
        assert_eq!(table.len(), 1);
        let (prefix, as_path, hops) = &table[0];
        assert_eq!(
            (prefix.as_str(), as_path.as_str()),
            ("198.51.100.10/32", "64513")
        );
        assert_eq!(
            hops.iter().map(|h| node_of(*h)).collect::<Vec<_>>(),
            ["node-a", "node-b", "node-c"]
        );
        let kernel: Value = serde_json::from_str(
            r#"[{"dst":"198.51.100.10","protocol":"bgp","metric":20,"flags":[],"nexthops":[
              {"gateway":"203.0.113.11","dev":"eth0","weight":1,"flags":[]},
              {"gateway":"203.0.113.12","dev":"eth0","weight":1,"flags":[]}]},
              {"dst":"2001:db8:0:2::10","gateway":"2001:db8:0:1::13","dev":"eth0","protocol":"bgp"}]"#,
        )
        .unwrap();
        let routes = parse_kernel_routes(&kernel);
        assert_eq!(routes["198.51.100.10/32"].len(), 2);
        assert_eq!(
            routes["2001:db8:0:2::10/128"]
                .iter()
                .map(|h| node_of(*h))
                .collect::<Vec<_>>(),
            ["node-c"]
        );
    }
}
