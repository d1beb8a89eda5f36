//! The lab's network: a switch namespace with bridge `br0`; node and client namespaces, each with
//! an `eth0` veth whose peer is a bridge port; a host leg `hl-host` (203.0.113.1) on the bridge so
//! processes in the node namespaces reach kube-apiserver. Only 203.0.113.0/24 and 2001:db8:0:1::/64
//! on the wire; LoadBalancer IPs (198.51.100.0/24, 2001:db8:0:2::/64) are on-link from the client.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{
    BRIDGE, CLIENT_NS, CLIENT_PORT, CLIENT_V4, CLIENT_V6, HOST_IF, HOST_PORT, HOST_V4, NODES,
    POOL_V4_PREFIX, POOL_V6_PREFIX, SWITCH_NS, UPLINK,
};

fn ip(args: &[&str]) -> Result<String> {
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
fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
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

fn all_netns() -> Vec<&'static str> {
    let mut v = vec![SWITCH_NS, CLIENT_NS];
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
fn uplink(netns: &str, inner: &str, port: &str) -> Result<()> {
    ip(&[
        "link", "add", inner, "netns", netns, "type", "veth", "peer", "name", port, "netns",
        SWITCH_NS,
    ])?;
    ip(&["-n", SWITCH_NS, "link", "set", port, "master", BRIDGE, "up"])?;
    Ok(())
}

pub fn create() -> Result<()> {
    for ns in all_netns() {
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
    ip(&["addr", "add", &format!("{HOST_V4}/24"), "dev", HOST_IF])?;
    ip(&["link", "set", HOST_IF, "up"])?;

    for node in NODES {
        uplink(node.netns, UPLINK, node.switch_port)?;
        // kube-proxy's strictARP: the kernel answers ARP only for addresses of the receiving
        // interface and picks eth0's own address as ARP source, so the LoadBalancer IPs the
        // agent puts on `lo` are answered by Herald alone.
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
    // The pools are on-link for the client: it resolves LoadBalancer IPs with ARP / NDP.
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

/// Addresses on `lo` of `netns` (plain text form).
pub fn lo_addresses(netns: &str) -> Result<Vec<String>> {
    let out = ip(&["-n", netns, "-j", "addr", "show", "dev", "lo"])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j addr")?;
    Ok(json
        .get(0)
        .and_then(|l| l.get("addr_info"))
        .and_then(|a| a.as_array())
        .map(|infos| {
            infos
                .iter()
                .filter_map(|i| i.get("local").and_then(|l| l.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Adds (`add` true) or deletes a host address on `lo` of `netns`.
pub fn lo_address(netns: &str, addr: std::net::IpAddr, add: bool) -> Result<()> {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    let cidr = format!("{addr}/{prefix}");
    let mut args = vec![
        "-n",
        netns,
        "addr",
        if add { "add" } else { "del" },
        &cidr,
        "dev",
        "lo",
    ];
    if add && addr.is_ipv6() {
        args.push("nodad");
    }
    ip(&args).map(|_| ())
}

/// Forgets `netns`'s neighbour entries on `iface` (a trial starts from what ARP says now).
pub fn flush_neighbours(netns: &str, iface: &str) -> Result<()> {
    ip(&["-n", netns, "neigh", "flush", "dev", iface]).map(|_| ())
}
