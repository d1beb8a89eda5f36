//! Where each offered request went in one step, from the counters of the node's veth end read
//! before and after the step (`/proc/net/dev`, and the veth driver's own statistics from
//! `ethtool -S`, which count XDP_TX per queue), set beside what the generator sent and what the
//! client counted. The node's end sees both directions: a veth's receive counters are its
//! peer's transmit counters and the other way round, ring overflows and XDP_TX failures
//! included.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// Counters of one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    /// `ethtool -S` of the veth driver, by name.
    pub driver: BTreeMap<String, u64>,
}

impl LinkCounters {
    fn driver(&self, name: &str) -> u64 {
        self.driver.get(name).copied().unwrap_or(0)
    }
}

/// Reads one interface's counters from inside namespace `ns`.
pub fn read_link(ns: &str, ifname: &str) -> Result<LinkCounters> {
    // /proc/thread-self/net is the calling thread's namespace (in_netns joins it on a thread).
    let net = super::net::in_netns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev").context("reading /proc/net/dev")
    })?;
    let stats = ns_output(ns, "ethtool", &["-S", ifname])?;
    let mut link = parse_proc_net_dev(&net, ifname)
        .with_context(|| format!("{ifname} not in /proc/net/dev of {ns}"))?;
    link.driver = parse_ethtool_stats(&stats);
    if link.driver.is_empty() {
        bail!("ethtool -S {ifname} in {ns} printed no counters");
    }
    Ok(link)
}

fn ns_output(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net=/run/netns/{ns}");
    let all: Vec<&str> = [net.as_str(), program]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    super::lab::run("nsenter", &all)
}

/// One interface's line of `/proc/net/dev`: receive packets and drops (fields 2 and 4), transmit
/// packets and drops (fields 10 and 12).
pub fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<LinkCounters> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        (f.len() >= 16).then(|| LinkCounters {
            rx_packets: f[1],
            rx_dropped: f[3],
            tx_packets: f[9],
            tx_dropped: f[11],
            driver: BTreeMap::new(),
        })
    })
}

/// `name: value` lines of `ethtool -S`.
pub fn parse_ethtool_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Where the frames of one step went (differences over the step).
///
/// Read from the node's end, which sees both directions: its `rx_packets` are the frames that
/// entered its receive path (the client's `tx_packets`), its `rx_dropped` those its full ring
/// refused (the client's `tx_dropped`, live frames' `xdp_xmit_errors` included), its `tx_packets`
/// the replies that entered the client's ring, its `tx_dropped` those refused there (XDP_TX
/// failures included). The driver's `rx_queue_0_xdp_tx` tells which replies XDP sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path {
    /// Frames the generator handed to the kernel.
    pub generated: u64,
    /// Frames that entered the node's receive path.
    pub node_received: u64,
    /// Frames the node's full receive ring refused.
    pub node_refused: u64,
    /// Replies sent with XDP_TX that entered the client's ring.
    pub xdp_tx: u64,
    /// Replies that entered the client's ring (XDP_TX or the node's stack).
    pub replies: u64,
    /// Replies the client's full ring refused.
    pub replies_refused: u64,
    /// Replies the bench counted (reply counter and timestamping ring).
    pub counted: u64,
}

impl Path {
    /// The step's path from the counters before and after it, what the generator sent and what
    /// the client counted.
    pub fn between(
        before: &LinkCounters,
        after: &LinkCounters,
        generated: u64,
        counted: u64,
    ) -> Path {
        let (nb, na) = (before, after);
        let d = |f: fn(&LinkCounters) -> u64| f(na).saturating_sub(f(nb));
        Path {
            generated,
            node_received: d(|l| l.rx_packets),
            node_refused: d(|l| l.rx_dropped),
            xdp_tx: d(|l| l.driver("rx_queue_0_xdp_tx")),
            replies: d(|l| l.tx_packets),
            replies_refused: d(|l| l.tx_dropped),
            counted,
        }
    }

    /// Frames lost at each place, largest first (only places that lost any). For a flood of
    /// requests nobody should answer, "not answered by the node" is the expected place.
    pub fn losses(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            (
                "generator → node (uncounted)",
                self.generated
                    .saturating_sub(self.node_received + self.node_refused),
            ),
            ("node ring full", self.node_refused),
            (
                "not answered by the node",
                self.node_received
                    .saturating_sub(self.replies + self.replies_refused),
            ),
            ("client ring full", self.replies_refused),
            (
                "at client, not counted",
                self.replies.saturating_sub(self.counted),
            ),
        ];
        v.retain(|(_, n)| *n > 0);
        v.sort_by_key(|a| std::cmp::Reverse(a.1));
        v
    }

    /// One line: the counts along the path, then where frames were lost.
    pub fn describe(&self) -> String {
        let losses = self.losses();
        let lost = if losses.is_empty() {
            "nothing lost".to_string()
        } else {
            losses
                .iter()
                .map(|(at, n)| format!("{at} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "sent {} → node received {} (ring refused {}) → replies {} (XDP_TX {}, refused {}) → counted {}; lost: {lost}",
            self.generated,
            self.node_received,
            self.node_refused,
            self.replies,
            self.xdp_tx,
            self.replies_refused,
            self.counted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
hb-node0: 6000    100    0    3    0     0          0         0     4200      70    0    5    0     0       0          0
";

    #[test]
    fn proc_net_dev_line_of_the_interface() {
        let l = parse_proc_net_dev(PROC_NET_DEV, "hb-node0").expect("line");
        assert_eq!(
            (l.rx_packets, l.rx_dropped, l.tx_packets, l.tx_dropped),
            (100, 3, 70, 5)
        );
        assert!(parse_proc_net_dev(PROC_NET_DEV, "hb-node").is_none());
        assert!(parse_proc_net_dev("x: 1 2 3", "x").is_none());
    }

    #[test]
    fn ethtool_stats_by_name() {
        let s = parse_ethtool_stats(
            "NIC statistics:\n     peer_ifindex: 91\n     rx_queue_0_xdp_tx: 12\n     rx_queue_0_xdp_tx_errors: 3\n",
        );
        assert_eq!(s.get("rx_queue_0_xdp_tx"), Some(&12));
        assert_eq!(s.get("rx_queue_0_xdp_tx_errors"), Some(&3));
        assert_eq!(s.len(), 3);
    }

    fn node(rx: u64, rxd: u64, tx: u64, txd: u64, xdp_tx: u64) -> LinkCounters {
        LinkCounters {
            rx_packets: rx,
            rx_dropped: rxd,
            tx_packets: tx,
            tx_dropped: txd,
            driver: [("rx_queue_0_xdp_tx".to_string(), xdp_tx)].into(),
        }
    }

    #[test]
    fn driver_mode_losses_are_placed() {
        // Counters of a saturated driver-mode step (live frames): 3,146,712 sent, the node's
        // ring took 1,708,410 and refused 1,438,302; XDP_TX put 1,663,475 replies into the
        // client's ring, which refused 44,935; all counted.
        let before = node(100, 0, 100, 0, 100);
        let after = node(1_708_510, 1_438_302, 1_663_575, 44_935, 1_663_575);
        let p = Path::between(&before, &after, 3_146_712, 1_663_475);
        assert_eq!(
            p.losses(),
            vec![("node ring full", 1_438_302), ("client ring full", 44_935)]
        );
        assert!(p.describe().contains("ring refused 1438302"));
    }

    #[test]
    fn flood_and_uncounted_frames_are_placed() {
        let p = Path::between(&node(0, 0, 0, 0, 0), &node(900, 50, 10, 0, 10), 1_000, 8);
        assert_eq!(
            p.losses(),
            vec![
                ("not answered by the node", 890),
                ("generator → node (uncounted)", 50),
                ("node ring full", 50),
                ("at client, not counted", 2)
            ]
        );
    }

    #[test]
    fn nothing_lost_says_so() {
        let s = node(5, 0, 5, 0, 0);
        assert!(
            Path::between(&LinkCounters::default(), &s, 5, 5)
                .describe()
                .ends_with("nothing lost")
        );
    }
}
