//! What the lab is: its nodes, namespaces, interfaces and addresses, and where it keeps its
//! state and finds its binaries.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::paths::workspace_root;

/// One node namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node object name (also the gossip member name).
    pub name: &'static str,
    pub netns: &'static str,
    /// The bridge port (in the switch namespace) of the node's uplink.
    pub switch_port: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}
pub const NODES: [NodeSpec; 3] = [
    NodeSpec {
        name: "node-a",
        netns: "hl-node-a",
        switch_port: "p-node-a",
        v4: Ipv4Addr::new(203, 0, 113, 11),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x11),
    },
    NodeSpec {
        name: "node-b",
        netns: "hl-node-b",
        switch_port: "p-node-b",
        v4: Ipv4Addr::new(203, 0, 113, 12),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x12),
    },
    NodeSpec {
        name: "node-c",
        netns: "hl-node-c",
        switch_port: "p-node-c",
        v4: Ipv4Addr::new(203, 0, 113, 13),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x13),
    },
];
pub const SWITCH_NS: &str = "hl-sw";
pub const BRIDGE: &str = "br0";
pub const CLIENT_NS: &str = "hl-client";
pub const CLIENT_PORT: &str = "p-client";
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
/// Every namespace's uplink is called this (the speakers get `--interfaces-include eth0,eth1`:
/// the uplink and the direct link to the bench client, `topo::DirectLink`).
pub const UPLINK: &str = "eth0";
/// The host's leg on the lab bridge: kube-apiserver binds this address.
pub const HOST_IF: &str = "hl-host";
pub const HOST_PORT: &str = "p-host";
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The host routes only 203.0.113.0/26 into the lab (the API server, the router and the nodes
/// are there; the host talks to nothing else in it): the rest of 203.0.113.0/24 stays reachable
/// through the uplink, where a machine's package mirrors may live (on this VM every registry
/// resolves to 203.0.113.80), so cargo, apt and `go install` keep working while the lab is up.
pub const HOST_PREFIX_LEN: u8 = 26;
pub const APISERVER_PORT: u16 = 6443;
/// LoadBalancer IPs come from these prefixes (on-link from the client).
pub const POOL_V4_PREFIX: &str = "198.51.100.0/24";
pub const POOL_V6_PREFIX: &str = "2001:db8:0:2::/64";
/// Service ClusterIPs: dual stack so IPv6 LoadBalancer IPs exist; never on the wire (no kube-proxy).
pub const SERVICE_CIDR: &str = "10.96.0.0/16,2001:db8:0:96::/112";
/// The backend every node runs (pods' containerPort, the Service's port and targetPort).
pub const BACKEND_PORT: u16 = 8080;
/// The speakers' failure-detection target when `manifests/speaker.yaml` sets none (the
/// speaker's own default).
pub const DEFAULT_DETECT_MS: u64 = 500;
/// The lab's demo Service (from manifests/workload.yaml).
pub const DEMO_SERVICE: (&str, &str) = ("default", "web");

/// How the lab delivers traffic for LoadBalancer IPs to the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LabMode {
    /// Layer 2: the client is on the nodes' segment and resolves each IP with ARP / NDP.
    #[default]
    L2,
    /// BGP: the client sits behind a router (FRR) that learns each IP from every node's
    /// speaker over eBGP and spreads connections across the nodes by ECMP.
    Bgp,
}

impl LabMode {
    pub fn name(self) -> &'static str {
        match self {
            LabMode::L2 => "l2",
            LabMode::Bgp => "bgp",
        }
    }

    pub fn parse(text: &str) -> Option<LabMode> {
        [LabMode::L2, LabMode::Bgp]
            .into_iter()
            .find(|m| m.name() == text.trim())
    }
}

/// The router namespace of BGP mode: one leg (`eth0`) on the nodes' bridge, one (`eth1`) on a
/// point-to-point link to the client.
pub const ROUTER_NS: &str = "hl-router";
/// The BGP bench's extra peers (`peers.rs`): a namespace on the bridge running BIRD.
pub const PEERS_NS: &str = "hl-peers";
pub const PEERS_PORT: &str = "p-peers";
pub const ROUTER_PORT: &str = "p-router";
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
/// The router's AS (BGPPeer `peerASN`) and the nodes' (`myASN`): eBGP, as in the BGP tests.
pub const ROUTER_AS: u32 = 64512;
pub const NODE_AS: u32 = 64513;
/// The router–client link in BGP mode: 203.0.113.192/28 (below the direct links' .208/28s)
/// and 2001:db8:0:cc::/64; the router is host 1, the client host 2. The nodes reach it through
/// the router (a route more specific than their segment's /24).
pub const CLIENT_LINK_V4: &str = "203.0.113.192/28";
pub const CLIENT_LINK_V6: &str = "2001:db8:0:cc::/64";
pub const ROUTER_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 193);
pub const ROUTER_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xcc, 0, 0, 0, 1);
pub const BGP_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 194);
pub const BGP_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xcc, 0, 0, 0, 2);

/// Where `up` keeps its state (removed by `down`).
pub fn run_dir() -> PathBuf {
    workspace_root().join("target/lab/run")
}

pub fn kube_run_dir() -> PathBuf {
    run_dir().join("kube")
}

/// The kubeconfig of `identity` (admin, controller, speaker).
pub fn kubeconfig(identity: &str) -> PathBuf {
    kube_run_dir().join(format!("{identity}.kubeconfig"))
}

pub fn node_by_name(name: &str) -> Result<NodeSpec> {
    NODES
        .iter()
        .find(|n| n.name == name)
        .copied()
        .with_context(|| {
            format!(
                "no lab node named {name:?} (nodes: {})",
                NODES.map(|n| n.name).join(", ")
            )
        })
}

/// The host's `herald` (the debug build), for `herald xdp` on a node's pins from outside it.
pub fn herald_exe() -> PathBuf {
    workspace_root().join("target/debug/herald")
}

/// Inside the lab's LoadBalancer prefixes (198.51.100.0/24, 2001:db8:0:2::/64).
pub fn in_pools(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets()[..3] == [198, 51, 100],
        std::net::IpAddr::V6(v6) => v6.segments()[..4] == [0x2001, 0xdb8, 0, 2],
    }
}
