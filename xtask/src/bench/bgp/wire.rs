//! The UPDATE messages on the router's wire: `tcpdump -v` on the router's side of the lab bridge,
//! BGP only, every announced prefix stamped with its packet's capture time (`-tt`, the kernel's
//! wall clock, mapped onto the bench's monotonic clock once at start: tcpdump's output itself
//! trails the packets). With [`super::routes::Monitor`], a create-to-route time splits into the
//! cluster's share (create → the first UPDATE carrying the prefix reaches the router) and the
//! router's (that UPDATE → the route in the router's FIB).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// One prefix announced in an UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// The speaker that sent it (the TCP source).
    pub from: IpAddr,
    /// As tcpdump prints it (`198.51.100.7/32`).
    pub prefix: String,
}

/// Reads `tcpdump -nn -tt -v` output a line at a time: the announced prefixes of each BGP UPDATE
/// (withdrawn routes and other messages are skipped).
#[derive(Default)]
pub struct Parser {
    from: Option<IpAddr>,
    in_updated: bool,
}

impl Parser {
    /// The prefix this line announces, if it is one.
    pub fn feed(&mut self, line: &str) -> Option<Announced> {
        let trimmed = line.trim();
        // A packet starts with its timestamp (`1796441334.404226 eth0  In  IP ...`).
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            self.from = None;
            self.in_updated = false;
            return None;
        }
        // `203.0.113.11.54977 > 203.0.113.2.179: Flags [P.], ...`
        if self.from.is_none()
            && let Some((source, _)) = trimmed.split_once(" > ")
        {
            self.from = source
                .rsplit_once('.')
                .and_then(|(addr, _port)| addr.parse().ok());
            return None;
        }
        if trimmed == "Updated routes:" {
            self.in_updated = true;
            return None;
        }
        if !self.in_updated {
            return None;
        }
        if let (Some(from), true) = (self.from, is_prefix(trimmed)) {
            return Some(Announced {
                from,
                prefix: trimmed.to_string(),
            });
        }
        self.in_updated = false;
        None
    }
}

/// The capture time a packet's first line starts with (`1796441334.404226 eth0 In IP ...`).
fn capture_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let (secs, micros) = stamp.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// `198.51.100.7/32`, `2001:db8::/64`.
fn is_prefix(text: &str) -> bool {
    text.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
    })
}

/// `tcpdump` on an interface of a namespace; dropping it stops the process.
pub struct Wire {
    child: Child,
    seen: mpsc::Receiver<(Instant, Announced)>,
    /// When each prefix (as tcpdump prints it) was first seen announced since the last drain.
    pub first: BTreeMap<String, Instant>,
}

impl Wire {
    pub fn start(netns: &str, interface: &str) -> Result<Wire> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args([
                "tcpdump",
                "--immediate-mode",
                "-l",
                "-nn",
                "-tt",
                "-v",
                "-i",
                interface,
            ])
            .arg("tcp port 179")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tcpdump in the router's namespace")?;
        let stdout = child.stdout.take().context("tcpdump has no stdout")?;
        let (tx, seen) = mpsc::channel();
        // One reading of both clocks maps a capture time onto the bench's clock.
        let (base, base_wall) = (Instant::now(), SystemTime::now());
        std::thread::spawn(move || {
            let mut parser = Parser::default();
            let mut packet_at = Instant::now();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(captured) = capture_time(&line) {
                    packet_at = match captured.duration_since(base_wall) {
                        Ok(after) => base + after,
                        Err(before) => base.checked_sub(before.duration()).unwrap_or(base),
                    };
                }
                if let Some(announced) = parser.feed(&line)
                    && tx.send((packet_at, announced)).is_err()
                {
                    break;
                }
            }
        });
        Ok(Wire {
            child,
            seen,
            first: BTreeMap::new(),
        })
    }

    /// Takes in what arrived so far.
    pub fn collect(&mut self) {
        while let Ok((at, announced)) = self.seen.try_recv() {
            self.first.entry(announced.prefix).or_insert(at);
        }
    }

    /// Forgets what was seen (before the next measurement).
    pub fn drain(&mut self) {
        self.collect();
        self.first.clear();
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = "\
1796441328.084636 eth0  In  IP (tos 0x0, ttl 64, id 48180, offset 0, flags [DF], proto TCP (6), length 71)
    203.0.113.13.55531 > 203.0.113.2.179: Flags [P.], cksum 0x784a (incorrect -> 0x7434), seq 1:20, ack 1, win 63, length 19: BGP
\tKeepalive Message (4), length: 19
1796441334.404226 eth0  In  IP (tos 0x0, ttl 64, id 51961, offset 0, flags [DF], proto TCP (6), length 100)
    203.0.113.11.54977 > 203.0.113.2.179: Flags [P.], cksum 0x7865 (incorrect -> 0xe338), seq 20:68, ack 19, win 63, length 48: BGP
\tUpdate Message (2), length: 48
\t  Origin (1), length: 1, Flags [T]: IGP
\t  AS Path (2), length: 6, Flags [T]: 64513
\t  Next Hop (3), length: 4, Flags [T]: 203.0.113.11
\t  Updated routes:
\t    198.51.100.254/32
\t    198.51.100.7/32
1796441334.404251 eth0  Out IP (tos 0xc0, ttl 1, id 37819, offset 0, flags [DF], proto TCP (6), length 52)
    203.0.113.2.179 > 203.0.113.11.54977: Flags [.], ack 68, win 64, length 0
1796441335.000001 eth0  In  IP (tos 0x0, ttl 64, id 51962, offset 0, flags [DF], proto TCP (6), length 100)
    203.0.113.12.51627 > 203.0.113.2.179: Flags [P.], seq 19:42, ack 20, win 63, length 23: BGP
\tUpdate Message (2), length: 23
\t  Withdrawn routes:
\t    198.51.100.9/32
\t  End-of-RIB
";

    #[test]
    fn packets_carry_their_capture_time() {
        let first = CAPTURE.lines().next().unwrap();
        assert_eq!(
            capture_time(first),
            Some(UNIX_EPOCH + Duration::from_micros(1_796_441_328_084_636))
        );
        assert_eq!(capture_time("\tUpdate Message (2), length: 48"), None);
    }

    #[test]
    fn announced_prefixes_with_their_speaker_and_nothing_withdrawn() {
        let mut parser = Parser::default();
        let seen: Vec<Announced> = CAPTURE.lines().filter_map(|l| parser.feed(l)).collect();
        let from: IpAddr = "203.0.113.11".parse().unwrap();
        assert_eq!(
            seen,
            vec![
                Announced {
                    from,
                    prefix: "198.51.100.254/32".into()
                },
                Announced {
                    from,
                    prefix: "198.51.100.7/32".into()
                },
            ]
        );
    }
}
