//! The router's forwarding table as it changes: `ip -o monitor route` in the router's network
//! namespace, every line stamped when it arrives. The kernel announces each route FRR's zebra
//! installs, replaces (a next hop more or fewer) or deletes, so the bench sees a prefix reach the
//! router's FIB, not just its BGP table. Also what FRR itself says, as JSON from `vtysh`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab;

/// One route as a notification shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub at: Instant,
    /// The destination as the kernel prints it (`198.51.100.7` for a host route).
    pub prefix: String,
    /// Empty when deleted.
    pub next_hops: BTreeSet<IpAddr>,
    /// Seen by reading the whole table (once a second while nothing arrives), not from a
    /// notification: `at` is then only as precise as that second.
    pub polled: bool,
}

/// Parses one `ip -o monitor route` line: `None` for lines about anything but a unicast route
/// (nexthop objects, local/broadcast/multicast routes, kernel-made routes without a gateway).
pub fn parse(line: &str) -> Option<(String, BTreeSet<IpAddr>)> {
    let line = line.trim();
    let (deleted, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let mut words = rest.split_whitespace();
    let prefix = words.next()?;
    let first_char = prefix.chars().next()?;
    if !(first_char.is_ascii_digit() || prefix.contains(':')) {
        return None;
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let hops: BTreeSet<IpAddr> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    if hops.is_empty() {
        return None;
    }
    Some((
        prefix.to_string(),
        if deleted { BTreeSet::new() } else { hops },
    ))
}

/// `ip -o monitor route` running in a namespace; dropping it stops the process.
pub struct Monitor {
    netns: String,
    child: Child,
    changes: mpsc::Receiver<Change>,
    /// The latest next hops of every prefix seen.
    pub table: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Monitor {
    pub fn start(netns: &str) -> Result<Monitor> {
        let mut child = Command::new("ip")
            .args(["-n", netns, "-o", "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ip monitor route")?;
        let stdout = child.stdout.take().context("ip monitor has no stdout")?;
        let (tx, changes) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Some((prefix, next_hops)) = parse(&line)
                    && tx
                        .send(Change {
                            at,
                            prefix,
                            next_hops,
                            polled: false,
                        })
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(Monitor {
            netns: netns.to_string(),
            child,
            changes,
            table: BTreeMap::new(),
        })
    }

    /// Takes every change that arrived until `deadline`, or until `done` holds for the table
    /// after a change; returns them in order. While nothing arrives, the whole table is read
    /// once a second, so a change the kernel did not announce (a next-hop group edited in
    /// place) is still seen, marked `polled`.
    pub fn until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&BTreeMap<String, BTreeSet<IpAddr>>) -> bool,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        if done(&self.table) {
            return out;
        }
        let mut last_read = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self
                .changes
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(change) => {
                    self.record(&change);
                    out.push(change);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if last_read.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    last_read = Instant::now();
                    out.extend(self.read_table());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
            }
            if done(&self.table) {
                return out;
            }
        }
    }

    /// Applies every change already queued and re-reads the table, so the next wait starts
    /// from the present (a change queued before a trial never counts in it).
    pub fn drain(&mut self) {
        while let Ok(change) = self.changes.try_recv() {
            self.record(&change);
        }
        let _ = self.read_table();
    }

    fn record(&mut self, change: &Change) {
        if change.next_hops.is_empty() {
            self.table.remove(&change.prefix);
        } else {
            self.table
                .insert(change.prefix.clone(), change.next_hops.clone());
        }
    }

    /// Reads the whole table, both families, and returns how it differs from what
    /// notifications said. A family that cannot be read leaves the table as it was.
    fn read_table(&mut self) -> Vec<Change> {
        let mut text = String::new();
        for family in ["-4", "-6"] {
            let Ok(out) = Command::new("ip")
                .args(["-n", &self.netns, family, "-o", "route", "show"])
                .output()
            else {
                return Vec::new();
            };
            if !out.status.success() {
                return Vec::new();
            }
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        let at = Instant::now();
        let now: BTreeMap<String, BTreeSet<IpAddr>> = text.lines().filter_map(parse).collect();
        let mut changes = Vec::new();
        for (prefix, hops) in &now {
            if self.table.get(prefix) != Some(hops) {
                changes.push(Change {
                    at,
                    prefix: prefix.clone(),
                    next_hops: hops.clone(),
                    polled: true,
                });
            }
        }
        for prefix in self.table.keys() {
            if !now.contains_key(prefix) {
                changes.push(Change {
                    at,
                    prefix: prefix.clone(),
                    next_hops: BTreeSet::new(),
                    polled: true,
                });
            }
        }
        for change in &changes {
            self.record(change);
        }
        changes
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long any one wait may take before the bench gives up.
pub const PATIENCE: Duration = Duration::from_mins(5);

/// Waits until `done` holds for `monitor`'s table (at most [`PATIENCE`]); the changes seen on
/// the way, in order.
pub fn wait_table(
    monitor: &mut Monitor,
    what: &str,
    done: impl FnMut(&BTreeMap<String, BTreeSet<IpAddr>>) -> bool,
) -> Result<Vec<Change>> {
    let mut done = done;
    let changes = monitor.until(Instant::now() + PATIENCE, &mut done);
    if !done(&monitor.table) {
        bail!("waited {PATIENCE:?} for {what}");
    }
    Ok(changes)
}

/// One FRR show command's JSON.
pub fn frr_json(command: &str) -> Result<serde_json::Value> {
    let out = Command::new("vtysh")
        .args(["-N", lab::router::FRR_PATHSPACE, "-c", command])
        .output()
        .context("running vtysh")?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing {command}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|h| h.parse().unwrap()).collect()
    }

    #[test]
    fn routes_from_frr_lines() {
        let cases = [
            (
                "198.51.100.77 nhid 9 via 203.0.113.2 dev br0 proto bgp metric 20 ",
                Some(("198.51.100.77", hops(&["203.0.113.2"]))),
            ),
            (
                "Deleted 198.51.100.77 nhid 9 via 203.0.113.2 dev br0 proto bgp metric 20 ",
                Some(("198.51.100.77", hops(&[]))),
            ),
            (
                "198.51.100.77 nhid 40 proto bgp metric 20 \\\tnexthop via 203.0.113.11 dev br0 weight 1 \\\tnexthop via 203.0.113.12 dev br0 weight 1 ",
                Some(("198.51.100.77", hops(&["203.0.113.11", "203.0.113.12"]))),
            ),
            (
                "2001:db8:0:2::7 nhid 12 via 2001:db8::11 dev br0 proto bgp metric 20 pref medium",
                Some(("2001:db8:0:2::7", hops(&["2001:db8::11"]))),
            ),
            ("id 9 via 203.0.113.2 dev br0 scope link proto zebra ", None),
            (
                "local 203.0.113.200 dev br0 table local proto kernel scope host src 203.0.113.1 ",
                None,
            ),
            ("fe80::/64 dev h0 proto kernel metric 256 pref medium", None),
            ("", None),
        ];
        for (line, want) in cases {
            let got = parse(line);
            let want = want.map(|(p, h)| (p.to_string(), h));
            assert_eq!(got, want, "{line:?}");
        }
    }
}
