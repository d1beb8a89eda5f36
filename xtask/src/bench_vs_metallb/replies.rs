//! ARP and NDP replies/s and reply latency in the lab, with `bench dataplane`'s generator and
//! measurement (`bench_dataplane::measure::Engine`) running in the client namespace: requests
//! for the demo Service's IPv4/IPv6 address at rising paced rates, then unpaced, from the
//! client's uplink through the lab bridge (so every node sees each request, as on a real L2
//! segment); replies to the load are counted (and dropped) in XDP on the client's end, one probe
//! per millisecond is timed.
//!
//! Sources: the load comes from `LOAD_V4`/`LOAD_V6` with the generator's MAC, probes from
//! `PROBE_V4`/`probe_v6(tag)` with their tag MACs — addresses inside the lab's node subnet that
//! no interface owns. MetalLB answers an NS through the kernel's IPv6 stack, which needs a
//! neighbour entry for the solicitor (on a real segment the client answers the node's NS);
//! [`Neighbours`] gives each node namespace permanent entries for these sources for the whole
//! run, for both implementations. ARP replies (both) and Herald's NAs go out by MAC directly.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::Saturation;
use crate::bench_dataplane::frames::{self, GENERATOR_MAC, PROBE_TAGS};
use crate::bench_dataplane::measure::{Engine, Generator, StepResult};
use crate::bench_dataplane::stats;
use crate::lab::{CLIENT_NS, NODES, UPLINK};

pub const LOAD_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
pub const PROBE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 201);
pub const LOAD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x200);

/// Source address of the NDP probe with `tag` (one per tag, each with its own neighbour entry).
pub fn probe_v6(tag: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0xbe00, u16::from(tag))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp,
    Ndp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Arp => "ARP",
            Proto::Ndp => "NDP",
        }
    }
}

/// Load frame and the tagged probes for `proto`, asking for `vip`.
pub fn traffic(proto: Proto, vip4: Ipv4Addr, vip6: Ipv6Addr) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let tags = 0..PROBE_TAGS as u8;
    match proto {
        Proto::Arp => (
            vec![frames::arp_request(GENERATOR_MAC, LOAD_V4, vip4)],
            tags.map(|t| frames::arp_request(frames::probe_mac(t), PROBE_V4, vip4))
                .collect(),
        ),
        Proto::Ndp => (
            vec![frames::neighbor_solicitation(GENERATOR_MAC, LOAD_V6, vip6)],
            tags.map(|t| frames::neighbor_solicitation(frames::probe_mac(t), probe_v6(t), vip6))
                .collect(),
        ),
    }
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip -batch` lines that add (or delete) the generator's neighbour entries on a node.
pub fn neighbour_batch(add: bool) -> String {
    let mut out = String::new();
    let entries = std::iter::once((LOAD_V6, GENERATOR_MAC))
        .chain((0..PROBE_TAGS as u8).map(|t| (probe_v6(t), frames::probe_mac(t))));
    for (ip, mac) in entries {
        if add {
            let _ = writeln!(
                out,
                "neigh replace {ip} lladdr {} dev {UPLINK} nud permanent",
                mac_string(&mac)
            );
        } else {
            let _ = writeln!(out, "neigh del {ip} dev {UPLINK}");
        }
    }
    out
}

fn ip_batch(netns: &str, batch: &str, force: bool) -> Result<()> {
    let mut args = vec!["-n", netns];
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(batch.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() && !force {
        bail!(
            "ip -n {netns} -batch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The generator's permanent neighbour entries on every node, removed on drop.
pub struct Neighbours;

impl Neighbours {
    pub fn add() -> Result<Neighbours> {
        for node in NODES {
            ip_batch(node.netns, &neighbour_batch(true), false)?;
        }
        Ok(Neighbours)
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for node in NODES {
            let _ = ip_batch(node.netns, &neighbour_batch(false), true);
        }
    }
}

/// The generator runs on CPU 0 (`bench_dataplane`'s placement). Every request it sends is
/// flooded by the lab bridge to three nodes and the host leg; left alone, the receiving stacks
/// run in the generator's own softirq on CPU 0 and cap what it can offer. RPS on those four
/// interfaces moves their receive work to CPU 1, for both implementations alike.
const RESPONDER_CPU_MASK: &str = "2";

fn rps_file(iface: &str) -> String {
    format!("/sys/class/net/{iface}/queues/rx-0/rps_cpus")
}

/// Reads then writes an interface's RPS mask inside `netns` (`None`: the host's namespace),
/// returning the previous mask. `ip netns exec` mounts that namespace's sysfs.
fn swap_rps(netns: Option<&str>, iface: &str, mask: &str) -> Result<String> {
    let script = format!("cat {f} && echo {mask} > {f}", f = rps_file(iface));
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sh", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        }
    };
    let out = cmd.output().context("setting RPS")?;
    if !out.status.success() {
        bail!(
            "RPS on {iface} ({}): {}",
            netns.unwrap_or("host"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// RPS of the nodes' uplinks and the host leg set to CPU 1; the old masks come back on drop.
pub struct RpsPlacement {
    previous: Vec<(Option<&'static str>, &'static str, String)>,
}

impl RpsPlacement {
    pub fn apply() -> Result<RpsPlacement> {
        let mut placement = RpsPlacement { previous: vec![] };
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return Ok(placement);
        }
        let targets = NODES
            .iter()
            .map(|n| (Some(n.netns), UPLINK))
            .chain([(None, crate::lab::HOST_IF)]);
        for (netns, iface) in targets {
            let old = swap_rps(netns, iface, RESPONDER_CPU_MASK)?;
            placement.previous.push((netns, iface, old));
        }
        Ok(placement)
    }
}

impl Drop for RpsPlacement {
    fn drop(&mut self) {
        for (netns, iface, old) in &self.previous {
            let _ = swap_rps(*netns, iface, old);
        }
    }
}

/// Below this loss at the best step, the responder kept up with everything offered: the
/// generator, not the responder, set the figure (shown as "≥").
const GENERATOR_LIMITED_LOSS: f64 = 0.01;

/// Every step of one protocol's series.
pub struct Series {
    pub proto: Proto,
    pub steps: Vec<StepResult>,
}

impl Series {
    /// The figures of the step with the most replies/s, with the first step's latency.
    pub fn saturation(&self) -> Option<Saturation> {
        let i = stats::saturation_index(&self.steps.iter().map(|s| s.replies).collect::<Vec<_>>())?;
        let top = &self.steps[i];
        let low = self.steps.first()?;
        Some(Saturation {
            replies: top.replies,
            offered: top.offered,
            p50_us: top.p50_us(),
            p99_us: top.p99_us(),
            low_rate: low.target.map_or(low.offered, |t| t as f64),
            low_p50_us: low.p50_us(),
            low_p99_us: low.p99_us(),
            generator_max: self.steps.iter().map(|s| s.offered).fold(0.0, f64::max),
            generator_limited: top.loss() < GENERATOR_LIMITED_LOSS,
        })
    }
}

/// Runs the ARP then the NDP series against whoever answers for `vip4`/`vip6` now.
pub fn measure(
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    rates: &[u64],
    step: Duration,
) -> Result<Vec<Result<Series>>> {
    let _rps = RpsPlacement::apply()?;
    let mut engine = Engine::start(
        CLIENT_NS,
        UPLINK,
        vec![IpAddr::V4(vip4), IpAddr::V6(vip6)],
        Generator::Packet,
    )?;
    let mut out = Vec::new();
    for proto in [Proto::Arp, Proto::Ndp] {
        out.push(series(&mut engine, proto, vip4, vip6, rates, step));
    }
    Ok(out)
}

fn series(
    engine: &mut Engine,
    proto: Proto,
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    rates: &[u64],
    step: Duration,
) -> Result<Series> {
    let (load, probes) = traffic(proto, vip4, vip6);
    if !engine.wait_answered(&probes[0], Duration::from_secs(10))? {
        bail!(
            "no {} probe was answered within 10 s (before any load)",
            proto.name()
        );
    }
    // Warm-up at the first rate (neighbour entries, caches): not reported.
    engine.step(
        &load,
        &probes,
        Some(rates.first().copied().unwrap_or(5_000)),
        Duration::from_millis(300),
    )?;
    let mut steps = Vec::new();
    for rate in rates.iter().map(|&r| Some(r)).chain([None]) {
        let r = engine.step(&load, &probes, rate, step)?;
        println!(
            "   {} {:>7}: offered {:>7}/s replies {:>7}/s loss {:5.1}% p50 {} p99 {} (probes answered {}/{})",
            proto.name(),
            rate.map_or("max".to_string(), |r| format!(
                "{}/s",
                crate::bench_dataplane::svg::si(r as f64)
            )),
            crate::bench_dataplane::svg::si(r.offered),
            crate::bench_dataplane::svg::si(r.replies),
            100.0 * r.loss(),
            us(r.p50_us()),
            us(r.p99_us()),
            r.probes_answered(),
            r.probes_sent,
        );
        steps.push(r);
        // Let queues and sockets drain so one step's backlog does not count in the next.
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Series { proto, steps })
}

fn us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_asks_for_the_vip_from_lab_subnet_sources() {
        let vip4 = Ipv4Addr::new(198, 51, 100, 10);
        let vip6: Ipv6Addr = "2001:db8:0:2::10".parse().expect("v6");
        let (load, probes) = traffic(Proto::Arp, vip4, vip6);
        assert_eq!(load.len(), 1);
        assert_eq!(probes.len(), PROBE_TAGS);
        assert_eq!(&load[0][28..32], &LOAD_V4.octets(), "sender IP");
        assert_eq!(&load[0][38..42], &vip4.octets(), "target IP");
        assert_eq!(&probes[5][6..12], &frames::probe_mac(5), "source MAC = tag");
        let (load, probes) = traffic(Proto::Ndp, vip4, vip6);
        assert_eq!(&load[0][22..38], &LOAD_V6.octets(), "IPv6 source");
        assert_eq!(&probes[7][22..38], &probe_v6(7).octets());
        assert_eq!(&probes[7][62..78], &vip6.octets(), "NS target");
    }

    #[test]
    fn neighbour_batch_maps_each_source_to_its_mac() {
        let add = neighbour_batch(true);
        assert_eq!(add.lines().count(), 1 + PROBE_TAGS);
        assert!(add.contains(
            "neigh replace 2001:db8:0:1::200 lladdr 02:aa:00:00:00:01 dev eth0 nud permanent"
        ));
        assert!(add.contains(
            "neigh replace 2001:db8:0:1::be00:3f lladdr 02:be:00:00:00:3f dev eth0 nud permanent"
        ));
        let del = neighbour_batch(false);
        assert!(del.lines().all(|l| l.starts_with("neigh del ")));
        assert_eq!(del.lines().count(), 1 + PROBE_TAGS);
    }

    #[test]
    fn sources_are_in_the_lab_subnet_and_owned_by_no_lab_interface() {
        let lab_v4 = |ip: Ipv4Addr| ip.octets()[..3] == [203, 0, 113];
        assert!(lab_v4(LOAD_V4) && lab_v4(PROBE_V4));
        for ip in [LOAD_V4, PROBE_V4] {
            assert!(NODES.iter().all(|n| n.v4 != ip) && ip != crate::lab::CLIENT_V4);
        }
        for t in 0..PROBE_TAGS as u8 {
            let ip = probe_v6(t);
            assert_eq!(ip.segments()[..4], [0x2001, 0xdb8, 0, 1]);
            assert!(NODES.iter().all(|n| n.v6 != ip) && ip != crate::lab::CLIENT_V6);
        }
    }
}
