//! Extra BGP peers for the BGP bench: namespace `hl-peers` on the nodes' bridge, one address per
//! peer (203.0.113.3, .4, ...), and one BIRD process per address (strict bind: each listens on
//! its own address; one BIRD refuses a second session with the same neighbor) with a passive
//! eBGP session from each node, each address its own AS. BIRD only keeps what it learns:
//! nothing is exported, nothing reaches a kernel table. `lab down` removes the namespace and
//! stops the BIRDs with the rest of the lab.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::procs;
use super::spec::{NODE_AS, NODES, PEERS_NS, PEERS_PORT, UPLINK, run_dir};
use super::topo::{ip, uplink};

/// The first extra peer's AS; the `i`-th is this + `i`.
const FIRST_AS: u32 = 64520;

/// One extra peer: its address and AS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub address: Ipv4Addr,
    pub asn: u32,
}

/// `count` extra peers (at most 8), from 203.0.113.3 up.
pub fn peers(count: usize) -> Vec<Peer> {
    (0..count.min(8))
        .map(|i| {
            let i = u8::try_from(i).unwrap_or(0);
            Peer {
                address: Ipv4Addr::new(203, 0, 113, 3 + i),
                asn: FIRST_AS + u32::from(i),
            }
        })
        .collect()
}

impl Peer {
    /// The recorded process name of its BIRD.
    fn process(&self) -> String {
        format!("bird-peer-{}", self.address.octets()[3])
    }

    fn socket(&self) -> std::path::PathBuf {
        run_dir().join(format!("{}.ctl", self.process()))
    }

    /// Its BIRD's configuration: a passive session from every node.
    pub fn bird_config(&self) -> String {
        let mut conf = String::new();
        let _ = writeln!(conf, "router id {};\nprotocol device {{}}", self.address);
        for node in NODES {
            let _ = writeln!(
                conf,
                "protocol bgp {} {{\n  local {} as {};\n  neighbor {} as {NODE_AS};\n  passive;\n  strict bind;\n  ipv4 {{ import all; export none; }};\n}}",
                node.name.replace('-', "_"),
                self.address,
                self.asn,
                node.v4,
            );
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
    }
    ip(&["-n", PEERS_NS, "link", "set", UPLINK, "up"])?;
    for peer in peers {
        let conf = run_dir().join(format!("{}.conf", peer.process()));
        std::fs::write(&conf, peer.bird_config()).context("writing BIRD's configuration")?;
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

/// The BIRDs' sessions that are Established, out of all of them.
pub fn established(peers: &[Peer]) -> Result<(usize, usize)> {
    let (mut up, mut all) = (0, 0);
    for peer in peers {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(peer.socket())
            .args(["show", "protocols"])
            .output()
            .context("running birdc")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let sessions: Vec<&str> = text.lines().filter(|l| l.contains(" BGP ")).collect();
        up += sessions
            .iter()
            .filter(|l| l.contains("Established"))
            .count();
        all += sessions.len();
    }
    Ok((up, all))
}

/// Waits until every node has a session with every peer.
pub fn wait_established(peers: &[Peer], patience: Duration) -> Result<()> {
    let want = peers.len() * NODES.len();
    let deadline = Instant::now() + patience;
    loop {
        let (up, all) = established(peers).unwrap_or((0, 0));
        if up == want && all == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {up} of {want} BIRD sessions came up in {patience:?}");
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
                    asn: 64520
                },
                Peer {
                    address: Ipv4Addr::new(203, 0, 113, 4),
                    asn: 64521
                },
            ]
        );
        let conf = peers[1].bird_config();
        assert!(conf.starts_with("router id 203.0.113.4;"), "{conf}");
        assert_eq!(conf.matches("protocol bgp ").count(), 3, "{conf}");
        assert!(conf.contains("protocol bgp node_a {\n  local 203.0.113.4 as 64521;\n  neighbor 203.0.113.11 as 64513;"), "{conf}");
        assert_eq!(conf.matches("strict bind;").count(), 3);
        assert_eq!(conf.matches("export none;").count(), 3);
    }
}
