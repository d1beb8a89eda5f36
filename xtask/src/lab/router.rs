//! BGP mode's router: namespace `hl-router` between the client and the nodes, running FRR
//! (`zebra`, `bgpd` and `bfdd`, Debian's `frr`). Its `eth0` is a port of the nodes' bridge
//! ([`ROUTER_V4`], [`ROUTER_V6`]); its `eth1` is a point-to-point link to the client
//! ([`CLIENT_LINK_V4`], [`CLIENT_LINK_V6`]), whose only way to the pools is the router. FRR
//! peers over eBGP with each node's speaker, passively, over IPv4 and IPv6 (AS [`ROUTER_AS`],
//! the nodes AS [`NODE_AS`]); `maximum-paths` makes the three nodes' paths one ECMP route that
//! zebra installs in the namespace's kernel table, and the kernel hashes each connection
//! (L4 multipath hash) onto one node. The nodes route the client's link through the router.
//! Each neighbor also has BFD with profile [`BFD_PROFILE`] (100 ms × 3, as a BGPPeer's
//! `bfdProfile` of the same timers asks for), which comes Up only when the node's speaker runs
//! BFD (`METALLB_BGP_TYPE=frr` and a `bfdProfile` on the BGPPeer); FRR is a graceful-restart
//! helper by default, so a speaker with `enableGracefulRestart` keeps its routes across restarts.
//!
//! The daemons run in the foreground as lab processes (`frr-zebra`, `frr-bgpd`, logs under
//! `target/lab/run`) with their own path space ([`FRR_PATHSPACE`]: sockets under
//! `/var/run/frr/herald-lab`), so they never meet a system FRR or the tests' routers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::kubectl::wait_for;
use super::procs;
use super::spec::{
    BGP_CLIENT_V4, BGP_CLIENT_V6, CLIENT_LINK_V4, CLIENT_LINK_V6, CLIENT_NS, NODE_AS, NODES,
    POOL_V4_PREFIX, POOL_V6_PREFIX, ROUTER_AS, ROUTER_CLIENT_V4, ROUTER_CLIENT_V6, ROUTER_NS,
    ROUTER_PORT, ROUTER_V4, ROUTER_V6, UPLINK, run_dir,
};
use super::topo::{add_addresses, ip, sysctl, uplink};

/// FRR's path space (`-N`) for the lab's daemons.
pub const FRR_PATHSPACE: &str = "herald-lab";
/// The router's BFD profile for the nodes: 100 ms × 3.
pub const BFD_PROFILE: &str = "lab-fast";
/// Its intervals (ms) and multiplier.
pub const BFD_INTERVAL_MS: u32 = 100;
pub const BFD_MULTIPLIER: u32 = 3;
/// The router's interface toward the client.
const CLIENT_SIDE: &str = "eth1";
const FRR_DAEMONS: &str = "/usr/lib/frr";

fn frr_run_dir() -> PathBuf {
    Path::new("/var/run/frr").join(FRR_PATHSPACE)
}

/// The router namespace, its two legs, and the routes that put it between client and nodes.
pub fn create() -> Result<()> {
    ip(&["netns", "add", ROUTER_NS])?;
    ip(&["-n", ROUTER_NS, "link", "set", "lo", "up"])?;
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        // Hash each connection (addresses and ports) onto one of the ECMP next hops, so
        // connections from the one client spread across the nodes.
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv6.fib_multipath_hash_policy", "1"),
    ] {
        sysctl(ROUTER_NS, key, value)?;
    }
    sysctl(CLIENT_NS, "net.ipv6.conf.default.accept_dad", "0")?;

    uplink(ROUTER_NS, UPLINK, ROUTER_PORT)?;
    add_addresses(ROUTER_NS, UPLINK, &format!("{ROUTER_V4}/24"), &ROUTER_V6)?;

    ip(&[
        "link",
        "add",
        CLIENT_SIDE,
        "netns",
        ROUTER_NS,
        "type",
        "veth",
        "peer",
        "name",
        UPLINK,
        "netns",
        CLIENT_NS,
    ])?;
    add_addresses(
        ROUTER_NS,
        CLIENT_SIDE,
        &format!("{ROUTER_CLIENT_V4}/28"),
        &ROUTER_CLIENT_V6,
    )?;
    add_addresses(
        CLIENT_NS,
        UPLINK,
        &format!("{BGP_CLIENT_V4}/28"),
        &BGP_CLIENT_V6,
    )?;
    // The client reaches the pools through the router only.
    route(CLIENT_NS, POOL_V4_PREFIX, &ROUTER_CLIENT_V4.to_string())?;
    route(CLIENT_NS, POOL_V6_PREFIX, &ROUTER_CLIENT_V6.to_string())?;
    // The nodes answer the client through the router: its link is more specific than their
    // segment's /24.
    for node in NODES {
        route(node.netns, CLIENT_LINK_V4, &ROUTER_V4.to_string())?;
        route(node.netns, CLIENT_LINK_V6, &ROUTER_V6.to_string())?;
    }
    Ok(())
}

fn route(netns: &str, prefix: &str, via: &str) -> Result<()> {
    ip(&["-n", netns, "route", "add", prefix, "via", via]).map(|_| ())
}

/// FRR's configuration: the nodes as passive eBGP neighbors over each family, ECMP over up to
/// 8 paths. The nodes share one AS, so their paths are equal without `as-path multipath-relax`.
pub fn frr_config() -> String {
    let mut c = String::new();
    c.push_str("frr defaults traditional\nhostname hl-router\n!\n");
    let _ = writeln!(
        c,
        "bfd\n profile {BFD_PROFILE}\n  receive-interval {BFD_INTERVAL_MS}\n  transmit-interval {BFD_INTERVAL_MS}\n  detect-multiplier {BFD_MULTIPLIER}\n exit\nexit"
    );
    let _ = writeln!(c, "router bgp {ROUTER_AS}");
    let _ = writeln!(c, " bgp router-id {ROUTER_V4}");
    c.push_str(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n");
    c.push_str(" bgp log-neighbor-changes\n");
    let neighbors: Vec<(String, bool)> = NODES
        .iter()
        .flat_map(|n| [(n.v4.to_string(), false), (n.v6.to_string(), true)])
        .collect();
    for (address, _) in &neighbors {
        let _ = writeln!(c, " neighbor {address} remote-as {NODE_AS}");
        let _ = writeln!(c, " neighbor {address} passive");
        let _ = writeln!(c, " neighbor {address} bfd profile {BFD_PROFILE}");
    }
    for (afi, v6) in [("ipv4", false), ("ipv6", true)] {
        let _ = writeln!(c, " address-family {afi} unicast\n  maximum-paths 8");
        for (address, _) in neighbors.iter().filter(|(_, is_v6)| *is_v6 == v6) {
            let _ = writeln!(c, "  neighbor {address} activate");
        }
        c.push_str(" exit-address-family\n");
    }
    c
}

/// Starts zebra, bgpd and bfdd in the router namespace and pushes [`frr_config`].
pub fn start_frr() -> Result<()> {
    // The daemons drop to user frr: their socket directory must be theirs. /var/run is a tmpfs,
    // so /var/run/frr may be missing (no system FRR started since boot).
    let parent = Path::new("/var/run/frr");
    if !parent.is_dir() {
        std::fs::create_dir_all(parent).context("creating /var/run/frr")?;
        chown_frr(parent)?;
    }
    let run = frr_run_dir();
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir(&run).with_context(|| format!("creating {}", run.display()))?;
    chown_frr(&run)?;
    let conf = run_dir().join("frr.conf");
    std::fs::write(&conf, frr_config()).context("writing frr.conf")?;

    for daemon in ["zebra", "bgpd", "bfdd"] {
        // `ip netns exec` execs the daemon (same pid, recorded); FRR needs nothing of the
        // host's mount namespace.
        procs::spawn_recorded(
            &format!("frr-{daemon}"),
            None,
            Command::new("ip")
                .args(["netns", "exec", ROUTER_NS])
                .arg(Path::new(FRR_DAEMONS).join(daemon))
                .args(["-N", FRR_PATHSPACE, "-P", "0", "--log", "stdout", "-i"])
                .arg(run.join(format!("{daemon}.pid"))),
        )?;
        let ready = match daemon {
            "zebra" => run.join("zserv.api"),
            _ => run.join(format!("{daemon}.vty")),
        };
        wait_for(
            &format!("FRR {daemon} in {ROUTER_NS}"),
            Duration::from_secs(30),
            || ready.exists().then_some(()),
        )?;
    }
    wait_for(
        "vtysh to reach bgpd and bfdd",
        Duration::from_secs(30),
        || {
            vtysh(&["-c", "show daemons"])
                .ok()
                .filter(|s| s.contains("bgpd") && s.contains("bfdd"))
        },
    )?;
    let out = vtysh(&["-f", &conf.display().to_string()])?;
    if let Some(err) = out.lines().find(|l| l.trim_start().starts_with('%')) {
        bail!("vtysh -f {}: {err}\n{out}", conf.display());
    }
    Ok(())
}

fn chown_frr(path: &Path) -> Result<()> {
    let status = Command::new("chown")
        .arg("frr:frr")
        .arg(path)
        .status()
        .context("running chown (is Debian's frr installed?)")?;
    if !status.success() {
        bail!("chown frr:frr {} failed: {status}", path.display());
    }
    Ok(())
}

/// Removes FRR's socket directory (`down`, after the daemons stopped).
pub fn remove_frr_run_dir() {
    let _ = std::fs::remove_dir_all(frr_run_dir());
}

/// `vtysh -N herald-lab <args>`: stdout, or the error vtysh printed.
pub(super) fn vtysh(args: &[&str]) -> Result<String> {
    let out = Command::new("vtysh")
        .args(["-N", FRR_PATHSPACE])
        .args(args)
        .output()
        .context("running vtysh")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "vtysh {}: {}{}",
            args.join(" "),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

pub(super) fn vtysh_json(command: &str) -> Result<Value> {
    let text = vtysh(&["-c", command])?;
    serde_json::from_str(&text).with_context(|| format!("parsing `{command}`: {text}"))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn config_peers_with_every_node_in_its_family() {
        let c = frr_config();
        assert!(c.contains("router bgp 64512\n"));
        assert!(c.contains(" neighbor 203.0.113.11 remote-as 64513\n"));
        assert!(c.contains(" neighbor 2001:db8:0:1::12 bfd profile lab-fast\n"));
        assert!(c.starts_with(
            "frr defaults traditional\nhostname hl-router\n!\nbfd\n profile lab-fast\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n exit\nexit\nrouter bgp"
        ));
        assert!(c.contains(" neighbor 2001:db8:0:1::13 remote-as 64513\n"));
        let v6 = c.split("address-family ipv6").nth(1).unwrap();
        assert!(v6.contains("  maximum-paths 8\n  neighbor 2001:db8:0:1::11 activate"));
        assert!(!v6.contains("203.0.113."));
        let v4 = c.split("address-family ipv4").nth(1).unwrap();
        assert!(
            v4.split("exit")
                .next()
                .unwrap()
                .contains("203.0.113.12 activate")
        );
    }

    #[test]
    fn bgp_yaml_names_the_router_and_the_asns() {
        let yaml = include_str!("manifests/bgp.yaml");
        assert!(yaml.contains(&format!("peerAddress: {ROUTER_V4}\n")));
        assert!(yaml.contains(&format!("peerAddress: \"{ROUTER_V6}\"\n")));
        assert_eq!(yaml.matches(&format!("myASN: {NODE_AS}\n")).count(), 2);
        assert_eq!(yaml.matches(&format!("peerASN: {ROUTER_AS}\n")).count(), 2);
    }

    /// `addr` inside `prefix` ("a.b.c.d/len" or "x::/len").
    fn contains(prefix: &str, addr: IpAddr) -> bool {
        let (net, len) = prefix.split_once('/').unwrap();
        let len: u32 = len.parse().unwrap();
        match (net.parse::<IpAddr>().unwrap(), addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    #[test]
    fn client_link_is_apart_from_the_segment_addresses() {
        let segment = NODES
            .iter()
            .map(|n| n.v4)
            .chain([ROUTER_V4, crate::lab::HOST_V4]);
        for a in segment {
            assert!(!contains(CLIENT_LINK_V4, a.into()), "{a}");
        }
        assert!(contains(CLIENT_LINK_V4, ROUTER_CLIENT_V4.into()));
        assert!(contains(CLIENT_LINK_V4, BGP_CLIENT_V4.into()));
        for d in crate::lab::direct_links() {
            assert!(!contains(CLIENT_LINK_V4, d.v4_net.into()));
            assert!(!contains(CLIENT_LINK_V6, d.v6_net.into()));
        }
        assert!(contains(CLIENT_LINK_V6, ROUTER_CLIENT_V6.into()));
        assert!(contains(CLIENT_LINK_V6, BGP_CLIENT_V6.into()));
        assert!(!contains(CLIENT_LINK_V6, ROUTER_V6.into()));
        assert!(!contains(POOL_V4_PREFIX, BGP_CLIENT_V4.into()));
        assert!(!contains(POOL_V6_PREFIX, BGP_CLIENT_V6.into()));
    }
}
