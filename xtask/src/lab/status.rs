//! `cargo xtask lab status [--json]`: which node announces each LoadBalancer IP according to
//! each node's XDP maps (`herald xdp list`) and the speakers' ServiceL2Status objects, what the
//! client's ARP (arping) and NDP (ndisc6) say, and a TCP connection through each IP. In BGP
//! mode, the speakers' ServiceBGPStatus objects (which nodes carry the Service to which peers)
//! and the router's table (`router.rs`) instead of ARP and NDP, and several connections
//! through each IP to show them spread across the nodes.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::herald::{Speakers, speaker_pid};
use super::kubectl::kubectl;
use super::procs::{detect_ms, recorded_mode};
use super::spec::{
    APISERVER_PORT, BACKEND_PORT, CLIENT_NS, HOST_V4, LabMode, NODES, NodeSpec, UPLINK, herald_exe,
    run_dir,
};
use super::{probe, router_table, topo};

#[derive(clap::Args, Clone)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Skip the client's ARP/NDP/TCP checks (only the XDP maps and ServiceL2Status).
    #[arg(long)]
    pub no_client: bool,
}

/// Output of `cmd` run inside `netns` but in the host's mount namespace (pins stay visible).
pub fn output_in_netns(netns: &str, cmd: &mut Command) -> Result<std::process::Output> {
    let file = std::fs::File::open(format!("/run/netns/{netns}"))
        .with_context(|| format!("opening network namespace {netns}"))?;
    let fd = file.as_raw_fd();
    // SAFETY: setns is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    drop(file);
    Ok(out)
}

/// `herald xdp list -o json` for `node` (null when the node has no pins yet).
pub fn xdp_snapshot(node: &NodeSpec) -> Value {
    let Some(pins) = super::nodes::pin_dir_in_node(node).filter(|p| p.exists()) else {
        return Value::Null;
    };
    output_in_netns(
        node.netns,
        Command::new(herald_exe())
            .args(["xdp", "list", "-o", "json", "--pin-dir"])
            .arg(&pins),
    )
    .ok()
    .filter(|o| o.status.success())
    .and_then(|o| serde_json::from_slice(&o.stdout).ok())
    .unwrap_or(Value::Null)
}

/// Nodes whose XDP maps hold `ip` with a live guard (they answer for it).
pub fn xdp_announcers(ip: IpAddr) -> Vec<String> {
    NODES
        .iter()
        .filter(|n| {
            let snap = xdp_snapshot(n);
            let live = snap["guard"]["state"].as_str() != Some("stale");
            live && snap["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["ip"].as_str() == Some(&ip.to_string())))
        })
        .map(|n| n.name.to_string())
        .collect()
}

/// One speaker's status object for a Service (ServiceL2Status or ServiceBGPStatus).
pub struct ServiceStatus {
    /// `namespace/name` of the Service.
    pub service: String,
    pub node: String,
    /// The BGPPeers carrying it (ServiceBGPStatus only).
    pub peers: Vec<String>,
}

/// The status objects of one resource (`servicel2statuses`, `servicebgpstatuses`).
pub fn service_statuses(resource: &str) -> Vec<ServiceStatus> {
    let Ok(out) = kubectl(&["get", resource, "-A", "-o", "json"]) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    json["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| ServiceStatus {
            service: format!(
                "{}/{}",
                text(&i["status"]["serviceNamespace"]),
                text(&i["status"]["serviceName"])
            ),
            node: text(&i["status"]["node"]),
            peers: i["status"]["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect(),
        })
        .collect()
}

/// MAC of each node's uplink → node name.
pub fn node_macs() -> Vec<(String, String)> {
    NODES
        .iter()
        .filter_map(|n| Some((topo::mac(n.netns, UPLINK).ok()?, n.name.to_string())))
        .collect()
}

pub fn node_of_mac(macs: &[(String, String)], mac: &str) -> String {
    macs.iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(mac))
        .map_or_else(|| "unknown".to_string(), |(_, n)| n.clone())
}

/// The client's view of `ip`: (tool output lines, MAC of the answer).
pub fn client_resolve(ip: IpAddr) -> (Vec<String>, Option<String>) {
    let out = match ip {
        IpAddr::V4(_) => Command::new("ip")
            .args([
                "netns", "exec", CLIENT_NS, "arping", "-c", "2", "-w", "2", "-i", UPLINK,
            ])
            .arg(ip.to_string())
            .output(),
        IpAddr::V6(_) => Command::new("ip")
            .args([
                "netns", "exec", CLIENT_NS, "ndisc6", "-1", "-r", "3", "-w", "500",
            ])
            .arg(ip.to_string())
            .arg(UPLINK)
            .output(),
    };
    let Ok(out) = out else {
        return (vec!["(could not run arping/ndisc6)".to_string()], None);
    };
    parse_resolver_output(&String::from_utf8_lossy(&out.stdout))
}

/// The reply lines of arping (Habets' or iputils') / ndisc6 output, and the first MAC answering.
fn parse_resolver_output(text: &str) -> (Vec<String>, Option<String>) {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.contains("reply from")
                || l.contains("bytes from")
                || l.contains("link-layer address")
                || l.contains("Timed out")
        })
        .map(|l| l.trim().to_string())
        .collect();
    let mac = text.lines().find_map(|l| {
        // Habets' arping: "58 bytes from 02:..:.. (198.51.100.10): ..."
        if let Some(rest) = l.split("bytes from ").nth(1) {
            return Some(rest.split_whitespace().next()?.to_lowercase());
        }
        // iputils' arping: "Unicast reply from 198.51.100.10 [02:..:..]  0.1ms"
        if l.contains("reply from")
            && let Some(rest) = l.split('[').nth(1)
        {
            return Some(rest.split(']').next()?.to_lowercase());
        }
        l.split("link-layer address:")
            .nth(1)
            .map(|m| m.trim().to_lowercase())
    });
    (lines, mac)
}

/// A TCP connection from the client through `ip` to a backend: the serving node's name.
pub fn client_tcp(ip: IpAddr) -> Result<String> {
    probe::in_netns(CLIENT_NS, move || {
        probe::tcp_hello(SocketAddr::new(ip, BACKEND_PORT), Duration::from_secs(2))
    })
}

/// The lab's nodes in MetalLB's layer 2 order for `ip` when nothing else narrows the candidates
/// (no preferences, all speakers live, endpoints everywhere): SHA-256 of `node#ip`, ascending. The
/// first is the node the election names.
pub fn hash_order(ip: IpAddr) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut nodes: Vec<(Vec<u8>, &str)> = NODES
        .iter()
        .map(|n| (Sha256::digest(format!("{}#{ip}", n.name)).to_vec(), n.name))
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, n)| n.to_string()).collect()
}

/// The client's neighbour table lines for the pool addresses (`ip neigh`).
pub fn client_neighbours() -> Vec<String> {
    Command::new("ip")
        .args(["-n", CLIENT_NS, "neigh", "show", "dev", UPLINK])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .is_some_and(|a| super::spec::in_pools(&a))
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The latest `nodeAssigned` Event note of each Service ("namespace/name" → note).
pub fn node_assigned_events() -> Vec<(String, String)> {
    let Ok(out) = kubectl(&["get", "events.events.k8s.io", "-A", "-o", "json"]) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut latest = std::collections::BTreeMap::<String, (String, String)>::new();
    for e in json["items"].as_array().into_iter().flatten() {
        if e["reason"].as_str() != Some("nodeAssigned") {
            continue;
        }
        let service = format!(
            "{}/{}",
            e["regarding"]["namespace"].as_str().unwrap_or("?"),
            e["regarding"]["name"].as_str().unwrap_or("?")
        );
        let when = e["eventTime"]
            .as_str()
            .or(e["metadata"]["creationTimestamp"].as_str())
            .unwrap_or("")
            .to_string();
        let note = e["note"].as_str().unwrap_or("").to_string();
        if latest.get(&service).is_none_or(|(t, _)| *t <= when) {
            latest.insert(service, (when, note));
        }
    }
    latest.into_iter().map(|(s, (_, n))| (s, n)).collect()
}

/// LoadBalancer Services: (namespace/name, externalTrafficPolicy, ingress IPs).
pub fn lb_services() -> Result<Vec<(String, String, Vec<IpAddr>)>> {
    let out = kubectl(&["get", "services", "-A", "-o", "json"])?;
    let json: Value = serde_json::from_str(&out)?;
    Ok(json["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|s| s["spec"]["type"].as_str() == Some("LoadBalancer"))
                .map(|s| {
                    (
                        format!(
                            "{}/{}",
                            s["metadata"]["namespace"].as_str().unwrap_or("?"),
                            s["metadata"]["name"].as_str().unwrap_or("?")
                        ),
                        s["spec"]["externalTrafficPolicy"]
                            .as_str()
                            .unwrap_or("Cluster")
                            .to_string(),
                        s["status"]["loadBalancer"]["ingress"]
                            .as_array()
                            .map(|i| {
                                i.iter()
                                    .filter_map(|e| e["ip"].as_str()?.parse().ok())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

pub fn gather(client: bool) -> Result<Value> {
    if !run_dir().join("pids").is_file() {
        bail!("no lab is up: run `cargo xtask lab up`");
    }
    let mode = recorded_mode();
    let router = (mode == LabMode::Bgp).then(router_table::status_json);
    let macs = node_macs();
    let mut nodes = Vec::new();
    for node in NODES {
        let snap = xdp_snapshot(&node);
        nodes.push(json!({
            "name": node.name,
            "netns": node.netns,
            "ipv4": node.v4.to_string(),
            "ipv6": node.v6.to_string(),
            "mac": topo::mac(node.netns, UPLINK).unwrap_or_default(),
            "speaker_pid": speaker_pid(&node),
            // After `lab switch metallb` the nodes run MetalLB's speaker pods instead.
            "metallb_speaker_pid": Speakers::Metallb.pid(&node),
            "xdp_attachments": snap["attachments"].clone(),
            "guard": snap["guard"].clone(),
            "xdp_addresses": snap["addresses"].as_array().map(|a| a.iter().map(|e| e["ip"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
        }));
    }
    let l2 = service_statuses("servicel2statuses");
    let bgp = service_statuses("servicebgpstatuses");
    let events = node_assigned_events();
    let mut services = Vec::new();
    for (name, policy, ips) in lb_services()? {
        let first_ip = ips.first().copied();
        let mut addresses = Vec::new();
        for ip in ips {
            if let Some(router) = &router {
                addresses.push(router_table::address_json(ip, router, client));
                continue;
            }
            if !client {
                addresses.push(json!({"ip": ip.to_string(), "xdp_announcers": xdp_announcers(ip)}));
                continue;
            }
            let (lines, mac) = client_resolve(ip);
            let tcp = client_tcp(ip);
            addresses.push(json!({
                "ip": ip.to_string(),
                "xdp_announcers": xdp_announcers(ip),
                "client_answer_mac": mac,
                "client_answer_node": mac.as_deref().map(|m| node_of_mac(&macs, m)),
                "client_tool_output": lines,
                "tcp": probe::tcp_json(tcp),
            }));
        }
        // The layer 2 election order means nothing to BGP, where every node announces.
        let order = first_ip
            .filter(|_| router.is_none())
            .map(hash_order)
            .unwrap_or_default();
        services.push(json!({
            "service": name,
            "hash_order": order,
            "node_assigned_event": events.iter().find(|(s, _)| *s == name).map(|(_, n)| n.clone()),
            "externalTrafficPolicy": policy,
            "l2_status_nodes": l2.iter().filter(|s| s.service == name).map(|s| s.node.clone()).collect::<Vec<_>>(),
            "bgp_status": bgp.iter().filter(|s| s.service == name).map(|s| json!({"node": s.node, "peers": s.peers})).collect::<Vec<_>>(),
            "addresses": addresses,
        }));
    }
    Ok(json!({
        "mode": mode.name(),
        "apiserver": format!("https://{}:{}", HOST_V4, APISERVER_PORT),
        "detect_ms": detect_ms(),
        "router": router,
        "nodes": nodes,
        "services": services,
        "client_neighbours": if client && mode == LabMode::L2 { json!(client_neighbours()) } else { Value::Null },
    }))
}

/// The strings of a JSON array (nothing for anything else).
fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

pub fn print(args: &StatusArgs) -> Result<()> {
    let status = gather(!args.no_client)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "control plane: {} (speakers --detect-ms {}), mode {}",
        status["apiserver"].as_str().unwrap_or("?"),
        status["detect_ms"],
        status["mode"].as_str().unwrap_or("?")
    );
    println!("nodes:");
    for n in status["nodes"].as_array().into_iter().flatten() {
        let attach = n["xdp_attachments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        format!(
                            "{} on {}",
                            x["mode"].as_str().unwrap_or("?"),
                            x["iface"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "not attached".to_string());
        println!(
            "  {:<7} {:<13} {:<18} mac {}  speaker {}  xdp: {}  guard: {}",
            n["name"].as_str().unwrap_or("?"),
            n["ipv4"].as_str().unwrap_or("?"),
            n["ipv6"].as_str().unwrap_or("?"),
            n["mac"].as_str().unwrap_or("?"),
            match (n["speaker_pid"].as_i64(), n["metallb_speaker_pid"].as_i64()) {
                (Some(p), _) => format!("pid {p}"),
                (None, Some(p)) => format!("MetalLB's, pid {p}"),
                (None, None) => "NOT RUNNING".to_string(),
            },
            attach,
            n["guard"]["state"].as_str().unwrap_or("-"),
        );
    }
    if !status["router"].is_null() {
        router_table::print_status(&status["router"]);
    }
    println!("services:");
    let bgp_mode = status["mode"].as_str() == Some(LabMode::Bgp.name());
    for s in status["services"].as_array().into_iter().flatten() {
        let (kind, holders) = if bgp_mode {
            let holders: Vec<String> = s["bgp_status"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "{} → {}",
                        b["node"].as_str().unwrap_or("?"),
                        strings(&b["peers"]).join(", ")
                    )
                })
                .collect();
            ("ServiceBGPStatus", holders.join("; "))
        } else {
            ("ServiceL2Status", strings(&s["l2_status_nodes"]).join(", "))
        };
        println!(
            "  {} (externalTrafficPolicy {}), {kind}: {}",
            s["service"].as_str().unwrap_or("?"),
            s["externalTrafficPolicy"].as_str().unwrap_or("?"),
            if holders.is_empty() { "none" } else { &holders }
        );
        let order: Vec<&str> = s["hash_order"]
            .as_array()
            .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if !order.is_empty() {
            println!(
                "    election order (SHA-256 of node#{}, before policy/exclusion filters): {}",
                s["addresses"][0]["ip"].as_str().unwrap_or("?"),
                order.join(", ")
            );
        }
        if let Some(note) = s["node_assigned_event"].as_str() {
            println!("    Event nodeAssigned: {note}");
        }
        for a in s["addresses"].as_array().into_iter().flatten() {
            if a.get("router_next_hops").is_some() {
                router_table::print_address(a);
                continue;
            }
            let announcers: Vec<&str> = a["xdp_announcers"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            println!(
                "    {:<20} announced by (XDP maps): {}",
                a["ip"].as_str().unwrap_or("?"),
                if announcers.is_empty() {
                    "nobody".to_string()
                } else {
                    announcers.join(", ")
                }
            );
            let tool = if a["ip"].as_str().is_some_and(|i| i.contains(':')) {
                "ndisc6"
            } else {
                "arping"
            };
            match a["client_answer_mac"].as_str() {
                Some(mac) => println!(
                    "      client {tool}: answered by {mac} = {}",
                    a["client_answer_node"].as_str().unwrap_or("?")
                ),
                None => println!("      client {tool}: no answer"),
            }
            for line in a["client_tool_output"].as_array().into_iter().flatten() {
                println!("        | {}", line.as_str().unwrap_or(""));
            }
            if a["tcp"]["ok"].as_bool() == Some(true) {
                println!(
                    "      client TCP {}:{BACKEND_PORT}: connected, backend on {}",
                    probe::fmt_addr(a["ip"].as_str().unwrap_or("?")),
                    a["tcp"]["served_by"].as_str().unwrap_or("?")
                );
            } else {
                println!(
                    "      client TCP {}:{BACKEND_PORT}: FAILED ({})",
                    probe::fmt_addr(a["ip"].as_str().unwrap_or("?")),
                    a["tcp"]["error"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if let Some(neigh) = status["client_neighbours"].as_array() {
        println!("client neighbour table (ip -n {CLIENT_NS} neigh):");
        for line in neigh {
            println!("  {}", line.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_output_of_each_tool() {
        let habets = "ARPING 198.51.100.10\n58 bytes from 06:f1:8b:d2:99:59 (198.51.100.10): index=0 time=10.560 usec\n\n--- 198.51.100.10 statistics ---\n";
        let (lines, mac) = parse_resolver_output(habets);
        assert_eq!(mac.as_deref(), Some("06:f1:8b:d2:99:59"));
        assert_eq!(lines.len(), 1);
        let iputils = "ARPING 198.51.100.10 from 203.0.113.100 eth0\nUnicast reply from 198.51.100.10 [02:AA:BB:CC:DD:EE]  0.6ms\n";
        assert_eq!(
            parse_resolver_output(iputils).1.as_deref(),
            Some("02:aa:bb:cc:dd:ee")
        );
        let ndisc6 = "Soliciting 2001:db8:0:2::10 (2001:db8:0:2::10) on eth0...\nTarget link-layer address: 56:54:D4:05:AC:FF\n from 2001:db8:0:2::10\n";
        assert_eq!(
            parse_resolver_output(ndisc6).1.as_deref(),
            Some("56:54:d4:05:ac:ff")
        );
        let silent =
            "Soliciting 2001:db8:0:2::10 (2001:db8:0:2::10) on eth0...\nTimed out.\nTimed out.\n";
        let (lines, mac) = parse_resolver_output(silent);
        assert_eq!(mac, None);
        assert_eq!(lines, vec!["Timed out.", "Timed out."]);
    }

    /// The vectors of the spec's Algorithm B, renamed to the lab's nodes.
    #[test]
    fn hash_order_matches_metallb_vectors() {
        assert_eq!(
            hash_order("10.0.0.1".parse().unwrap()),
            ["node-b", "node-a", "node-c"]
        );
        assert_eq!(
            hash_order("10.0.0.2".parse().unwrap()),
            ["node-b", "node-c", "node-a"]
        );
    }

    #[test]
    fn mac_to_node_ignores_case_and_names_strangers() {
        let macs = vec![("06:f1:8b:d2:99:59".to_string(), "node-a".to_string())];
        assert_eq!(node_of_mac(&macs, "06:F1:8B:D2:99:59"), "node-a");
        assert_eq!(node_of_mac(&macs, "02:00:00:00:00:01"), "unknown");
    }
}
