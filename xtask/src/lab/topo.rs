//! The lab's network: a switch namespace with bridge `br0`; node and client namespaces, each with
//! an `eth0` veth whose peer is a bridge port; a host leg `hl-host` (203.0.113.1) on the bridge so
//! processes in the node namespaces reach kube-apiserver. Only 203.0.113.0/24 and 2001:db8:0:1::/64
//! on the wire; LoadBalancer IPs (198.51.100.0/24, 2001:db8:0:2::/64) are on-link from the client.
//! In BGP mode the client is not on the bridge: `router.rs` links it to the router namespace.
//!
//! Besides the segment, each node has a second NIC `eth1` on a point-to-point veth to its own
//! end in the bench client namespace `hl-direct` ([`DirectLink`]: a /28 inside 203.0.113.0/24
//! and a /64 inside 2001:db8::/32 per link). `bench vs-metallb` floods a node there without the
//! bridge copying each request to every namespace. The links exist before any speaker starts, so
//! Herald's and MetalLB's speakers both find `eth1` eligible; both ends have NAPI (GRO on,
//! threaded) like NICs, so driver-mode XDP_TX is delivered and the bench can place receive work.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::spec::{
    BRIDGE, CLIENT_NS, CLIENT_PORT, CLIENT_V4, CLIENT_V6, HOST_IF, HOST_PORT, HOST_PREFIX_LEN,
    HOST_V4, LabMode, NODES, NodeSpec, PEERS_NS, POOL_V4_PREFIX, POOL_V6_PREFIX, ROUTER_NS,
    SWITCH_NS, UPLINK,
};

pub(super) fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sysctl -w` inside `netns` (via ip netns exec, which gives the matching /proc/sys/net).
pub(super) fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .context("running sysctl")?;
    if !out.status.success() {
        bail!(
            "sysctl {key}={value} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The bench client namespace holding the node-facing ends of the direct links.
pub const DIRECT_NS: &str = "hl-direct";
/// Each node's end of its direct link (its second NIC).
pub const DIRECT_IF: &str = "eth1";
/// Prefix length of each direct link's IPv4 subnet.
pub const DIRECT_V4_PREFIX_LEN: u8 = 28;

/// The point-to-point link between `node` (`eth1`) and `client_if` in [`DIRECT_NS`], with its
/// own subnets: 203.0.113.(208 + 16·i)/28 and 2001:db8:0:d1+i::/64 for node i.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectLink {
    pub node: NodeSpec,
    /// Its end in [`DIRECT_NS`].
    pub client_if: String,
    /// First address of the link's /28 (the network address).
    pub v4_net: Ipv4Addr,
    /// The link's /64.
    pub v6_net: Ipv6Addr,
}

impl DirectLink {
    /// Host `n` of the link's IPv4 /28 (n < 16).
    pub fn v4_host(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, d] = self.v4_net.octets();
        Ipv4Addr::new(a, b, c, d | (n & 0x0f))
    }
    /// Interface identifier `iid` (last 64 bits) in the link's /64.
    pub fn v6_host(&self, iid: [u16; 4]) -> Ipv6Addr {
        let s = self.v6_net.segments();
        Ipv6Addr::new(s[0], s[1], s[2], s[3], iid[0], iid[1], iid[2], iid[3])
    }
    pub fn node_v4(&self) -> Ipv4Addr {
        self.v4_host(1)
    }
    pub fn client_v4(&self) -> Ipv4Addr {
        self.v4_host(2)
    }
    pub fn node_v6(&self) -> Ipv6Addr {
        self.v6_host([0, 0, 0, 1])
    }
    pub fn client_v6(&self) -> Ipv6Addr {
        self.v6_host([0, 0, 0, 2])
    }
}

/// The direct link of `NODES[index]` (`None` past the last node).
pub fn direct_link(index: usize) -> Option<DirectLink> {
    let node = *NODES.get(index)?;
    let i = u8::try_from(index).ok().filter(|i| *i < 3)?;
    Some(DirectLink {
        node,
        client_if: format!("dl-{}", node.name),
        v4_net: Ipv4Addr::new(203, 0, 113, 208 + 16 * i),
        v6_net: Ipv6Addr::new(0x2001, 0xdb8, 0, 0xd1 + u16::from(i), 0, 0, 0, 0),
    })
}

/// Every node's direct link, in `NODES` order.
pub fn direct_links() -> Vec<DirectLink> {
    (0..NODES.len()).filter_map(direct_link).collect()
}

/// Every namespace the lab may have made (the router only in BGP mode).
fn all_netns() -> Vec<&'static str> {
    let mut v = vec![SWITCH_NS, CLIENT_NS, DIRECT_NS, ROUTER_NS, PEERS_NS];
    v.extend(NODES.iter().map(|n| n.netns));
    v
}

/// True when any of the lab's namespaces or its host veth exists.
pub fn any_present() -> bool {
    let listed = ip(&["netns", "list"]).unwrap_or_default();
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    all_netns().iter().any(|n| names.contains(n)) || ip(&["link", "show", HOST_IF]).is_ok()
}

/// A veth `inner`@`netns` ↔ `port`@switch, the port enslaved to the bridge and up.
pub(super) fn uplink(netns: &str, inner: &str, port: &str) -> Result<()> {
    ip(&[
        "link", "add", inner, "netns", netns, "type", "veth", "peer", "name", port, "netns",
        SWITCH_NS,
    ])?;
    ip(&["-n", SWITCH_NS, "link", "set", port, "master", BRIDGE, "up"])?;
    Ok(())
}

/// The switch, the host leg, the nodes, the client and the direct links. In layer 2 mode the
/// client's `eth0` is a bridge port; in BGP mode the client namespace is left without links
/// for `router.rs` to put behind the router.
pub fn create(mode: LabMode) -> Result<()> {
    // The router's and the bench's extra peers' namespaces are made by their own modules.
    for ns in all_netns()
        .into_iter()
        .filter(|ns| *ns != ROUTER_NS && *ns != PEERS_NS)
    {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    ip(&["-n", SWITCH_NS, "link", "add", BRIDGE, "type", "bridge"])?;
    // Flood multicast (Neighbor Solicitations to solicited-node groups) to every port.
    ip(&[
        "-n",
        SWITCH_NS,
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    ip(&["-n", SWITCH_NS, "link", "set", BRIDGE, "up"])?;

    // Host leg: created in the host namespace, its peer moved into the switch.
    ip(&[
        "link", "add", HOST_IF, "type", "veth", "peer", "name", HOST_PORT, "netns", SWITCH_NS,
    ])?;
    ip(&[
        "-n", SWITCH_NS, "link", "set", HOST_PORT, "master", BRIDGE, "up",
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{HOST_V4}/{HOST_PREFIX_LEN}"),
        "dev",
        HOST_IF,
    ])?;
    ip(&["link", "set", HOST_IF, "up"])?;

    for node in NODES {
        uplink(node.netns, UPLINK, node.switch_port)?;
        // kube-proxy's strictARP: the kernel answers ARP only for addresses of the receiving
        // interface and picks eth0's own address as ARP source, so a LoadBalancer IP a node
        // holds on another interface is answered by Herald alone.
        for iface in ["all", UPLINK] {
            sysctl(
                node.netns,
                &format!("net.ipv4.conf.{iface}.arp_ignore"),
                "1",
            )?;
            sysctl(
                node.netns,
                &format!("net.ipv4.conf.{iface}.arp_announce"),
                "2",
            )?;
        }
        sysctl(
            node.netns,
            &format!("net.ipv6.conf.{UPLINK}.accept_dad"),
            "0",
        )?;
        // A node keeps its static IPv6 address across a link flap (the failover's link fault).
        sysctl(
            node.netns,
            &format!("net.ipv6.conf.{UPLINK}.keep_addr_on_down"),
            "1",
        )?;
        ip(&[
            "-n",
            node.netns,
            "addr",
            "add",
            &format!("{}/24", node.v4),
            "dev",
            UPLINK,
        ])?;
        ip(&[
            "-n",
            node.netns,
            "addr",
            "add",
            &format!("{}/64", node.v6),
            "dev",
            UPLINK,
            "nodad",
        ])?;
        ip(&["-n", node.netns, "link", "set", UPLINK, "up"])?;
    }

    if mode == LabMode::L2 {
        client_on_segment()?;
    }
    for link in direct_links() {
        create_direct_link(&link)?;
    }
    Ok(())
}

/// The client's `eth0` on the bridge, with the pools on-link: it resolves LoadBalancer IPs
/// with ARP / NDP.
fn client_on_segment() -> Result<()> {
    uplink(CLIENT_NS, UPLINK, CLIENT_PORT)?;
    sysctl(
        CLIENT_NS,
        &format!("net.ipv6.conf.{UPLINK}.accept_dad"),
        "0",
    )?;
    ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        &format!("{CLIENT_V4}/24"),
        "dev",
        UPLINK,
    ])?;
    ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        &format!("{CLIENT_V6}/64"),
        "dev",
        UPLINK,
        "nodad",
    ])?;
    ip(&["-n", CLIENT_NS, "link", "set", UPLINK, "up"])?;
    ip(&[
        "-n",
        CLIENT_NS,
        "route",
        "add",
        POOL_V4_PREFIX,
        "dev",
        UPLINK,
    ])?;
    ip(&[
        "-n",
        CLIENT_NS,
        "-6",
        "route",
        "add",
        POOL_V6_PREFIX,
        "dev",
        UPLINK,
    ])?;
    Ok(())
}

/// One node's `eth1` ↔ `dl-<node>` in [`DIRECT_NS`], addressed and up, the node end with NAPI.
fn create_direct_link(link: &DirectLink) -> Result<()> {
    let node_ns = link.node.netns;
    ip(&[
        "link",
        "add",
        DIRECT_IF,
        "netns",
        node_ns,
        "type",
        "veth",
        "peer",
        "name",
        &link.client_if,
        "netns",
        DIRECT_NS,
    ])?;
    let ends = [
        (node_ns, DIRECT_IF, link.node_v4(), link.node_v6()),
        (
            DIRECT_NS,
            link.client_if.as_str(),
            link.client_v4(),
            link.client_v6(),
        ),
    ];
    for (netns, iface, v4, v6) in ends {
        sysctl(netns, &format!("net.ipv6.conf.{iface}.accept_dad"), "0")?;
        add_addresses(netns, iface, &format!("{v4}/{DIRECT_V4_PREFIX_LEN}"), &v6)?;
    }
    // NAPI on both ends, each in its own kernel thread (GRO on a veth enables NAPI): like NICs,
    // and a driver-mode XDP_TX on one end is delivered only when the other end has NAPI.
    for (netns, iface) in [(node_ns, DIRECT_IF), (DIRECT_NS, link.client_if.as_str())] {
        let name = iface.to_string();
        super::probe::in_netns(netns, move || {
            crate::bench::dataplane::live::set_gro(&name, true)
        })?;
        write_sys(netns, &format!("class/net/{iface}/threaded"), "1")?;
    }
    // The client end without TSO: with TSO on, a veth hands a socket's frames to the sending
    // CPU's backlog instead of its peer's NAPI ring (`bench dataplane` switches it off too); on
    // the backlog path a reflected step's seed requests were lost and its loop never started.
    let client_if = link.client_if.clone();
    super::probe::in_netns(DIRECT_NS, move || {
        crate::bench::dataplane::live::set_tso(&client_if, false)
    })?;
    Ok(())
}

/// Writes a sysfs file as seen from inside `netns` (`ip netns exec` mounts its /sys).
fn write_sys(netns: &str, rel: &str, value: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c"])
        .arg(format!("echo {value} > /sys/{rel}"))
        .output()
        .context("running ip netns exec")?;
    if !out.status.success() {
        bail!(
            "writing {value} to /sys/{rel} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the lab's namespaces (their veths go with them) and the host leg; ignores absences.
pub fn destroy() {
    for ns in all_netns() {
        let _ = ip(&["netns", "del", ns]);
    }
    let _ = ip(&["link", "del", HOST_IF]);
}

/// MAC address of `iface` in `netns`.
pub fn mac(netns: &str, iface: &str) -> Result<String> {
    let out = ip(&["-n", netns, "-j", "link", "show", iface])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link")?;
    json.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .with_context(|| format!("no MAC for {iface} in {netns}"))
}

/// Sets `iface` in `netns` up or down (the failover's link fault).
pub fn set_link(netns: &str, iface: &str, up: bool) -> Result<()> {
    ip(&[
        "-n",
        netns,
        "link",
        "set",
        iface,
        if up { "up" } else { "down" },
    ])
    .map(|_| ())
}

/// Forgets `netns`'s neighbour entries on `iface` (a trial starts from what ARP says now).
pub fn flush_neighbours(netns: &str, iface: &str) -> Result<()> {
    ip(&["-n", netns, "neigh", "flush", "dev", iface]).map(|_| ())
}

/// `v4` (with its prefix length) and `v6`/64 (no DAD) on `iface` in `netns`, and the link up.
pub(super) fn add_addresses(
    netns: &str,
    iface: &str,
    v4: &str,
    v6: &std::net::Ipv6Addr,
) -> Result<()> {
    ip(&["-n", netns, "addr", "add", v4, "dev", iface])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        iface,
        "nodad",
    ])?;
    ip(&["-n", netns, "link", "set", iface, "up"]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_links_have_disjoint_subnets_inside_the_documentation_ranges() {
        let links = direct_links();
        assert_eq!(links.len(), NODES.len());
        let a = &links[0];
        assert_eq!(a.node.name, "node-a");
        assert_eq!(a.client_if, "dl-node-a");
        assert!(a.client_if.len() < 16, "interface name fits IFNAMSIZ");
        assert_eq!(a.node_v4(), Ipv4Addr::new(203, 0, 113, 209));
        assert_eq!(a.client_v4(), Ipv4Addr::new(203, 0, 113, 210));
        assert_eq!(
            a.node_v6(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0xd1, 0, 0, 0, 1)
        );
        assert_eq!(links[2].v4_host(15), Ipv4Addr::new(203, 0, 113, 255));
        assert_eq!(
            links[2].v6_net,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0xd3, 0, 0, 0, 0)
        );
        assert!(direct_link(NODES.len()).is_none());
        let lab_v4: Vec<Ipv4Addr> = NODES
            .iter()
            .map(|n| n.v4)
            .chain([CLIENT_V4, HOST_V4])
            .collect();
        for (i, l) in links.iter().enumerate() {
            for n in 0..16 {
                let ip = l.v4_host(n);
                assert_eq!(ip.octets()[..3], [203, 0, 113]);
                assert!(!lab_v4.contains(&ip), "{ip} is a segment address");
                for other in &links[i + 1..] {
                    assert_ne!(ip.octets()[3] >> 4, other.v4_net.octets()[3] >> 4);
                }
            }
            assert_eq!(l.v6_net.segments()[..2], [0x2001, 0xdb8]);
            assert_ne!(
                l.v6_net.segments()[..4],
                [0x2001, 0xdb8, 0, 1],
                "not the segment's /64"
            );
            assert_ne!(
                l.v6_net.segments()[..4],
                [0x2001, 0xdb8, 0, 2],
                "not the pool"
            );
        }
    }
}
