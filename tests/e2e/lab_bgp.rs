//! The lab in BGP mode (`xtask lab up --mode bgp`): the client namespace sits behind a router
//! namespace running FRR, which peers over eBGP with the three nodes' `herald speaker`s; the
//! Service's addresses must reach the router's kernel table as ECMP routes through all three
//! nodes, and the client's connections through them must reach the backends on every node.
//! In MetalLB's FRR mode with BFD and graceful restart, the speakers' BFD sessions come Up with
//! the router's bfdd, and a rolling restart costs neither a route nor a connection. `lab down`
//! must leave no router namespace and no FRR process. Needs root, Debian's `frr`
//! and the builds `cargo xtask test` makes (eBPF object, herald, xtask, the Kubernetes binaries).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/lab/mod.rs"]
mod lab;
#[allow(dead_code, reason = "only in_netns is used here")]
#[path = "support/kube/netns.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use lab::*;

const ROUTER_NS: &str = "hl-router";
const CLIENT_NS: &str = "hl-client";
const NODE_V4: [&str; 3] = ["203.0.113.11", "203.0.113.12", "203.0.113.13"];
const NODE_V6: [&str; 3] = ["2001:db8:0:1::11", "2001:db8:0:1::12", "2001:db8:0:1::13"];
/// Connections made through each address: enough that hashing them onto three next hops
/// leaves a node out with a probability below 1e-10.
const CONNECTIONS: usize = 60;

/// The gateways of the router's kernel route to `ip` (`ip -j route show`; one per ECMP next hop).
fn router_next_hops(ip: &str) -> BTreeSet<String> {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args(["-n", ROUTER_NS, family, "-j", "route", "show", "exact", ip])
        .output()
        .expect("ip route");
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["protocol"] == "bgp")
        .flat_map(|r| match r["nexthops"].as_array() {
            Some(hops) => hops.iter().map(|h| h["gateway"].clone()).collect(),
            None => vec![r["gateway"].clone()],
        })
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect()
}

/// One TCP connection from the client namespace to `ip`:8080; the backend's node name.
fn connect_from_client(ip: IpAddr) -> Result<String, String> {
    netns::in_netns(CLIENT_NS, move || {
        let addr = SocketAddr::new(ip, 8080);
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        // One HTTP/1.0 exchange: the backend's body is its node's name.
        std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or(text.as_str(), |(_, b)| b);
        Ok(body.trim().to_string())
    })
}

fn lab_pids(prefix: &str) -> Vec<i32> {
    let pids = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab/run/pids"),
    )
    .unwrap_or_default();
    pids.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(_, pid)| pid.trim().parse().ok())
        .collect()
}

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// `vtysh` on the lab router's FRR: the JSON it prints for `command`.
fn router_json(command: &str) -> serde_json::Value {
    let out = Command::new("vtysh")
        .args(["-N", "herald-lab", "-c", command])
        .output()
        .expect("vtysh");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Whether the router has BFD Up with all six node addresses, each speaker at 100 ms.
fn bfd_up_with_every_node() -> bool {
    let peers = router_json("show bfd peers json");
    NODE_V4.iter().chain(&NODE_V6).all(|node| {
        peers.as_array().into_iter().flatten().any(|p| {
            p["peer"] == *node
                && p["status"] == "up"
                && p["remote-transmit-interval"] == 100
                && p["remote-receive-interval"] == 100
        })
    })
}

/// Every node's IPv4 and IPv6 BGP session Established at the router.
fn sessions_established() -> bool {
    let neighbors = router_json("show bgp neighbors json");
    NODE_V4
        .iter()
        .chain(&NODE_V6)
        .all(|n| neighbors[*n]["bgpState"] == "Established")
}

/// The lab's BGPPeers in MetalLB's FRR mode with a BFDProfile of the router's 100 ms × 3 and
/// graceful restart: Herald's own speakers bring BFD Up with FRR's bfdd; a frozen speaker's
/// node leaves the router's route long before the 90 s hold time; and a rolling restart of
/// every speaker loses the router no next hop and the client — connecting through `ipv4`
/// every 20 ms — no connection.
fn frr_mode_bfd_and_graceful_restart(ipv4: IpAddr) {
    for what in ["daemonset/speaker", "deployment/controller"] {
        kubectl(&[
            "-n",
            "metallb-system",
            "set",
            "env",
            what,
            "METALLB_BGP_TYPE=frr",
        ]);
        kubectl(&[
            "-n",
            "metallb-system",
            "rollout",
            "status",
            what,
            "--timeout=180s",
        ]);
    }
    apply(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: lab-fast\n  namespace: metallb-system\nspec:\n  receiveInterval: 100\n  transmitInterval: 100\n  detectMultiplier: 3\n",
    );
    for peer in ["router-v4", "router-v6"] {
        kubectl(&[
            "-n",
            "metallb-system",
            "patch",
            "bgppeer",
            peer,
            "--type=merge",
            "-p",
            r#"{"spec":{"bfdProfile":"lab-fast","enableGracefulRestart":true}}"#,
        ]);
    }
    assert!(
        wait_until(DEADLINE, || bfd_up_with_every_node()
            && sessions_established()),
        "BFD never came up at 100 ms with every node: {}",
        router_json("show bfd peers json")
    );
    let ip = ipv4.to_string();
    let all: BTreeSet<String> = NODE_V4.iter().map(ToString::to_string).collect();
    assert!(wait_until(DEADLINE, || router_next_hops(&ip) == all));

    // A frozen speaker: BFD, not the 90 s hold timer, takes node-a's path away.
    let pid = speaker_pid("node-a").expect("node-a's speaker runs");
    signal(pid, libc::SIGSTOP);
    let dropped = wait_until(Duration::from_secs(20), || {
        !router_next_hops(&ip).contains(NODE_V4[0])
    });
    signal(pid, libc::SIGCONT);
    assert!(
        dropped,
        "the router kept node-a's path for 20 s after its speaker froze: {:?}",
        router_next_hops(&ip)
    );
    assert!(
        wait_until(DEADLINE, || router_next_hops(&ip) == all
            && bfd_up_with_every_node()),
        "node-a's path and BFD session never came back: {:?}",
        router_next_hops(&ip)
    );

    // A rolling restart of every speaker under graceful restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, ip, all) = (stop.clone(), ip.clone(), all.clone());
        std::thread::spawn(move || {
            let mut lost = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let hops = router_next_hops(&ip);
                if hops != all {
                    lost.push(hops);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            lost
        })
    };
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match connect_from_client(ipv4) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };
    kubectl(&[
        "-n",
        "metallb-system",
        "rollout",
        "restart",
        "daemonset/speaker",
    ]);
    kubectl(&[
        "-n",
        "metallb-system",
        "rollout",
        "status",
        "daemonset/speaker",
        "--timeout=300s",
    ]);
    let settled = wait_until(DEADLINE, || {
        sessions_established() && bfd_up_with_every_node()
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lost = watcher.join().unwrap();
    let (ok, failed) = client.join().unwrap();
    assert!(
        settled,
        "the restarted speakers' sessions and BFD never all came back"
    );
    assert!(
        lost.is_empty(),
        "the router's route lost next hops during the restart: {lost:?}"
    );
    assert!(
        failed.is_empty(),
        "{} of {} connections through {ip} failed during the restart: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} connections made during the restart");
}

/// Both addresses of the dual-stack Service: routed by the router through all three nodes
/// (its BGP table and its kernel's ECMP route), reached from the client on every node's
/// backend, shown by `lab status`; then `lab down` removes the router and stops FRR.
#[test]
fn client_reaches_every_node_through_the_router_by_ecmp() {
    let _serial = serial();
    lab_in("bgp");
    let mut ips = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            ips = service_ips("default", "web");
            ips.len() == 2
        }),
        "default/web never got an IPv4 and an IPv6 address: {ips:?}"
    );

    for ip in &ips {
        let nodes: BTreeSet<String> = if ip.contains(':') { NODE_V6 } else { NODE_V4 }
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            wait_until(DEADLINE, || router_next_hops(ip) == nodes),
            "the router's kernel route to {ip} should go through {nodes:?}: {:?}",
            router_next_hops(ip)
        );
    }

    // FRR's own table, as `lab status` reads it: one eBGP path per node, AS path [node AS].
    let status = status(false);
    assert_eq!(status["mode"], "bgp");
    for ip in &ips {
        let prefix = format!("{ip}/{}", if ip.contains(':') { 128 } else { 32 });
        let route = status["router"]["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["prefix"] == prefix.as_str())
            .unwrap_or_else(|| panic!("{prefix} not in the router's table: {status}"));
        assert_eq!(route["as_path"], "64513", "{route}");
        let mut bgp: Vec<&str> = route["bgp_next_hop_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        bgp.sort_unstable();
        assert_eq!(bgp, NODES, "BGP paths for {prefix}: {route}");
    }

    // Every node's ServiceBGPStatus for the Service names both BGPPeers (IPv4 and IPv6).
    let web = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["service"] == "default/web")
        .unwrap_or_else(|| panic!("default/web not in lab status: {status}"));
    let mut carriers: Vec<(String, Vec<String>)> = web["bgp_status"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let peers = b["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            (b["node"].as_str().unwrap_or_default().to_string(), peers)
        })
        .collect();
    carriers.sort();
    let both = vec!["router-v4".to_string(), "router-v6".to_string()];
    assert_eq!(
        carriers,
        NODES
            .iter()
            .map(|n| ((*n).to_string(), both.clone()))
            .collect::<Vec<_>>(),
        "ServiceBGPStatus of default/web: {web}"
    );

    // Connections from the client, each hashed (addresses and ports) onto one next hop.
    for ip in &ips {
        let address: IpAddr = ip.parse().unwrap();
        let mut served = BTreeMap::<String, usize>::new();
        for _ in 0..CONNECTIONS {
            let node = connect_from_client(address)
                .unwrap_or_else(|e| panic!("TCP from the client to {ip}:8080: {e}"));
            *served.entry(node).or_default() += 1;
        }
        assert_eq!(
            served.keys().map(String::as_str).collect::<Vec<_>>(),
            NODES,
            "{CONNECTIONS} connections through {ip} should reach every node: {served:?}"
        );
    }

    let text = xtask_lab(&["status"]);
    for ip in &ips {
        let prefix = format!("{ip}/{}", if ip.contains(':') { 128 } else { 32 });
        assert!(
            text.contains(&prefix),
            "lab status shows no {prefix}:\n{text}"
        );
    }
    assert!(
        text.contains("6/6 connected"),
        "lab status connects through the IPs:\n{text}"
    );
    assert!(
        text.contains("ServiceBGPStatus: node-"),
        "lab status lists the ServiceBGPStatus objects:\n{text}"
    );

    let ipv4: IpAddr = ips
        .iter()
        .find(|ip| !ip.contains(':'))
        .expect("an IPv4 address")
        .parse()
        .unwrap();
    frr_mode_bfd_and_graceful_restart(ipv4);

    let frr = lab_pids("frr-");
    assert_eq!(frr.len(), 3, "zebra, bgpd and bfdd recorded");
    xtask_lab(&["down"]);
    assert!(!netns_exists(ROUTER_NS), "lab down left {ROUTER_NS}");
    assert!(!netns_exists(CLIENT_NS), "lab down left {CLIENT_NS}");
    for pid in frr {
        assert!(
            wait_exit(pid, Duration::from_secs(10)),
            "FRR daemon {pid} still runs after lab down"
        );
    }
    assert!(
        !std::path::Path::new("/var/run/frr/herald-lab").exists(),
        "lab down left FRR's socket directory"
    );
}
