//! Extra BGP peers for the BGP bench: namespace `hl-peers` on the nodes' bridge, one IPv4 and one
//! IPv6 address per peer (203.0.113.3 and 2001:db8:0:1::3, .4 and ::4, ...), and one BIRD
//! process per peer (strict bind: each listens on its own addresses; one BIRD refuses a second
//! session with the same neighbor) with a passive eBGP session from each node per family, each
//! peer its own AS. The IPv6 sessions come up only while BGPPeers name the IPv6 addresses (the
//! bench's IPv6 phase; MetalLB's native speaker never sees them). BIRD keeps what it learns and
//! exports nothing back; the first peer alone also installs what it learns into its namespace's
//! kernel table (a second router whose FIB the bench can watch: BIRD's kernel protocol holds
//! nothing back, where FRR's bgpd and zebra each queue a route before it reaches the kernel).
//! `lab down` removes the namespace and stops the BIRDs with the rest of the lab.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::procs;
use super::spec::{NODE_AS, NODES, PEERS_NS, PEERS_PORT, UPLINK, run_dir};
use super::topo::{ip, uplink};

/// The first extra peer's AS; the `i`-th is this + `i`.
const FIRST_AS: u32 = 64520;

/// One extra peer: its addresses and AS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub address: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub asn: u32,
}

/// Which of a peer's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// `count` extra peers (at most 8), from 203.0.113.3 and 2001:db8:0:1::3 up.
pub fn peers(count: usize) -> Vec<Peer> {
    (0..count.min(8))
        .map(|i| {
            let i = u8::try_from(i).unwrap_or(0);
            Peer {
                address: Ipv4Addr::new(203, 0, 113, 3 + i),
                v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 3 + u16::from(i)),
                asn: FIRST_AS + u32::from(i),
            }
        })
        .collect()
}

impl Family {
    /// BIRD's channel name.
    fn channel(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The BIRD protocol name of `node`'s session in `family`.
fn protocol(node: &str, family: Family) -> String {
    let name = node.replace('-', "_");
    match family {
        Family::V4 => name,
        Family::V6 => format!("{name}_v6"),
    }
}

impl Peer {
    /// The recorded process name of its BIRD.
    fn process(&self) -> String {
        format!("bird-peer-{}", self.address.octets()[3])
    }

    fn socket(&self) -> std::path::PathBuf {
        run_dir().join(format!("{}.ctl", self.process()))
    }

    /// Its BIRD's configuration: a passive session from every node; with `fib`, what it learns
    /// goes into the namespace's main kernel table too.
    pub fn bird_config(&self, fib: bool) -> String {
        let mut conf = String::new();
        let _ = writeln!(conf, "router id {};\nprotocol device {{}}", self.address);
        if fib {
            let _ = writeln!(
                conf,
                "protocol kernel {{\n  ipv4 {{ import none; export all; }};\n}}"
            );
        }
        for node in NODES {
            let sessions = [
                (Family::V4, self.address.to_string(), node.v4.to_string()),
                (Family::V6, self.v6.to_string(), node.v6.to_string()),
            ];
            for (family, local, neighbor) in sessions {
                let channel = family.channel();
                let _ = writeln!(
                    conf,
                    "protocol bgp {} {{\n  local {local} as {};\n  neighbor {neighbor} as {NODE_AS};\n  passive;\n  strict bind;\n  {channel} {{ import all; export none; }};\n}}",
                    protocol(node.name, family),
                    self.asn,
                );
            }
        }
        conf
    }
}

/// The namespace, its addresses and BIRD.
pub fn start(peers: &[Peer]) -> Result<()> {
    stop(peers);
    ip(&["netns", "add", PEERS_NS])?;
    ip(&["-n", PEERS_NS, "link", "set", "lo", "up"])?;
    uplink(PEERS_NS, UPLINK, PEERS_PORT)?;
    for peer in peers {
        ip(&[
            "-n",
            PEERS_NS,
            "addr",
            "add",
            &format!("{}/24", peer.address),
            "dev",
            UPLINK,
        ])?;
        // No duplicate address detection: BIRD binds the address as soon as it starts.
        ip(&[
            "-n",
            PEERS_NS,
            "addr",
            "add",
            &format!("{}/64", peer.v6),
            "dev",
            UPLINK,
            "nodad",
        ])?;
    }
    ip(&["-n", PEERS_NS, "link", "set", UPLINK, "up"])?;
    for (i, peer) in peers.iter().enumerate() {
        let conf = run_dir().join(format!("{}.conf", peer.process()));
        std::fs::write(&conf, peer.bird_config(i == 0)).context("writing BIRD's configuration")?;
        procs::spawn_recorded(
            &peer.process(),
            Some(PEERS_NS),
            Command::new("bird")
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(peer.socket()),
        )?;
    }
    Ok(())
}

/// The BIRDs' sessions of `family` that are Established, out of all of them.
pub fn established(peers: &[Peer], family: Family) -> Result<(usize, usize)> {
    let names: Vec<String> = NODES.iter().map(|n| protocol(n.name, family)).collect();
    let (mut up, mut all) = (0, 0);
    for peer in peers {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(peer.socket())
            .args(["show", "protocols"])
            .output()
            .context("running birdc")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let sessions: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" BGP "))
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|name| names.iter().any(|n| n == name))
            })
            .collect();
        up += sessions
            .iter()
            .filter(|l| l.contains("Established"))
            .count();
        all += sessions.len();
    }
    Ok((up, all))
}

/// Waits until every node has a session of `family` with every peer.
pub fn wait_established(peers: &[Peer], family: Family, patience: Duration) -> Result<()> {
    let want = peers.len() * NODES.len();
    let deadline = Instant::now() + patience;
    loop {
        let (up, all) = established(peers, family).unwrap_or((0, 0));
        if up == want && all == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {up} of {want} BIRD {family:?} sessions came up in {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the BIRDs and removes the namespace (nothing when absent).
pub fn stop(peers: &[Peer]) {
    for peer in peers {
        let _ = procs::kill_recorded(&peer.process(), libc::SIGTERM);
    }
    let _ = ip(&["netns", "del", PEERS_NS]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_meets_every_peer_on_its_own_address_and_as() {
        let peers = peers(2);
        assert_eq!(
            peers,
            vec![
                Peer {
                    address: Ipv4Addr::new(203, 0, 113, 3),
                    v6: "2001:db8:0:1::3".parse().unwrap(),
                    asn: 64520
                },
                Peer {
                    address: Ipv4Addr::new(203, 0, 113, 4),
                    v6: "2001:db8:0:1::4".parse().unwrap(),
                    asn: 64521
                },
            ]
        );
        let conf = peers[1].bird_config(false);
        assert!(conf.starts_with("router id 203.0.113.4;"), "{conf}");
        assert!(!conf.contains("protocol kernel"), "{conf}");
        assert_eq!(conf.matches("protocol bgp ").count(), 6, "{conf}");
        assert!(conf.contains("protocol bgp node_a {\n  local 203.0.113.4 as 64521;\n  neighbor 203.0.113.11 as 64513;\n  passive;\n  strict bind;\n  ipv4 { import all; export none; };"), "{conf}");
        assert!(conf.contains("protocol bgp node_c_v6 {\n  local 2001:db8:0:1::4 as 64521;\n  neighbor 2001:db8:0:1::13 as 64513;\n  passive;\n  strict bind;\n  ipv6 { import all; export none; };"), "{conf}");
        assert_eq!(conf.matches("strict bind;").count(), 6);
        assert_eq!(conf.matches("export none;").count(), 6);
        let fib = peers[0].bird_config(true);
        assert!(
            fib.contains("protocol kernel {\n  ipv4 { import none; export all; };\n}"),
            "{fib}"
        );
        assert_eq!(fib.matches("export none;").count(), 6, "{fib}");
    }
}
