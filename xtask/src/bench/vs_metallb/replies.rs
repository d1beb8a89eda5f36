//! ARP and NDP replies/s and reply latency in the lab, with `bench dataplane`'s generator and
//! measurement (`bench::dataplane::measure::Engine`): requests for the demo Service's IPv4/IPv6
//! address at rising paced rates, then unpaced; replies to the load are counted (and dropped) in
//! XDP on the client's end, one probe per millisecond is timed. Two places to send from:
//!
//! - the **segment**: the client namespace's uplink through the lab bridge, so every node (and
//!   the host leg) sees each request, as on a real L2 segment ([`measure_segment`]);
//! - a **direct link** to the announcing node (`lab::DirectLink`, its `eth1`), so only the
//!   responder under test sees the load ([`measure_direct`]).
//!
//! The requests come from [`Sources`] (`requests.rs`). MetalLB answers an NS through the
//! kernel's IPv6 stack, which needs a neighbour entry for the solicitor (on a real segment the
//! client answers the node's NS); [`Neighbours`] gives each node permanent entries for these
//! sources on both its interfaces for the whole run, for both implementations. ARP replies
//! (both) and Herald's NAs go out by MAC.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::direct::{Placement, engine};
use super::report::Saturation;
use super::requests::{Proto, Sources, traffic};
use crate::bench::dataplane::frames::{self, GENERATOR_MAC, PROBE_TAGS};
use crate::bench::dataplane::measure::{Engine, Generator, StepResult};
use crate::bench::dataplane::stats;
use crate::lab::{CLIENT_NS, DIRECT_IF, DirectLink, NODES, UPLINK};

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip -batch` lines that add (or delete) the generator's neighbour entries for `src` on `dev`.
pub fn neighbour_batch(add: bool, src: &Sources, dev: &str) -> String {
    let mut out = String::new();
    let entries = std::iter::once((src.load_v6, GENERATOR_MAC))
        .chain((0..PROBE_TAGS as u8).map(|t| (src.probe_v6(t), frames::probe_mac(t))));
    for (ip, mac) in entries {
        if add {
            let _ = writeln!(
                out,
                "neigh replace {ip} lladdr {} dev {dev} nud permanent",
                mac_string(&mac)
            );
        } else {
            let _ = writeln!(out, "neigh del {ip} dev {dev}");
        }
    }
    out
}

/// Per node namespace: its `ip -batch` for the segment's sources on the uplink and its direct
/// link's sources on `eth1`.
fn neighbour_batches(add: bool) -> Vec<(&'static str, String)> {
    NODES
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut batch = neighbour_batch(add, &Sources::segment(), UPLINK);
            if let Some(link) = crate::lab::direct_link(i) {
                batch += &neighbour_batch(add, &Sources::direct(&link), DIRECT_IF);
            }
            (node.netns, batch)
        })
        .collect()
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
        for (netns, batch) in neighbour_batches(true) {
            ip_batch(netns, &batch, false)?;
        }
        Ok(Neighbours)
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for (netns, batch) in neighbour_batches(false) {
            let _ = ip_batch(netns, &batch, true);
        }
    }
}

/// The generator runs on CPU 0 (`bench dataplane`'s placement). Every request it sends is
/// flooded by the lab bridge to three nodes and the host leg; left alone, the receiving stacks
/// run in the generator's own softirq on CPU 0 and cap what it can offer. RPS on those four
/// interfaces moves their receive work to CPU 1, for both implementations alike.
const RESPONDER_CPU_MASK: &str = "2";

fn rps_file(iface: &str) -> String {
    format!("/sys/class/net/{iface}/queues/rx-0/rps_cpus")
}

/// Reads then writes an interface's RPS mask inside `netns` (`None`: the host's namespace),
/// returning the previous mask.
fn swap_rps(netns: Option<&str>, iface: &str, mask: &str) -> Result<String> {
    let script = format!("cat {f} && echo {mask} > {f}", f = rps_file(iface));
    let out = crate::bench::dataplane::net::sysfs_sh(netns, &script)
        .with_context(|| format!("RPS on {iface}"))?;
    Ok(out.trim().to_string())
}

/// RPS of some receiving interfaces set to CPU 1; the old masks come back on drop.
pub struct RpsPlacement {
    previous: Vec<(Option<&'static str>, &'static str, String)>,
}

impl RpsPlacement {
    /// The segment: the nodes' uplinks and the host leg.
    pub fn segment() -> Result<RpsPlacement> {
        let targets = NODES
            .iter()
            .map(|n| (Some(n.netns), UPLINK))
            .chain([(None, crate::lab::HOST_IF)]);
        Self::apply(targets)
    }

    /// A direct link's node end. The generator's frames skip the node end's NAPI (the client
    /// end offloads segmentation, so the veth hands them to the backlog of the sending CPU),
    /// unless a driver-mode XDP program there turns that off: RPS moves the backlog to CPU 1
    /// for skb mode and MetalLB, as driver mode's NAPI thread is.
    pub fn direct(link: &DirectLink) -> Result<RpsPlacement> {
        Self::apply([(Some(link.node.netns), DIRECT_IF)])
    }

    fn apply(
        targets: impl IntoIterator<Item = (Option<&'static str>, &'static str)>,
    ) -> Result<RpsPlacement> {
        let mut placement = RpsPlacement { previous: vec![] };
        if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
            return Ok(placement);
        }
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

/// Every step of one protocol's series.
pub struct Series {
    pub proto: Proto,
    pub steps: Vec<StepResult>,
    /// The steps' responder CPU is measured (direct links: the responder's threads are known).
    pub measured_cpu: bool,
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
            responder_cpu: self.measured_cpu.then_some(top.responder_cpu),
            // The CPU rules need the responder's CPU; without it only loss tells.
            generator_limited: if self.measured_cpu {
                top.is_floor()
            } else {
                top.loss() < 0.01
            },
            runs: vec![top.replies],
            failed_runs: 0,
        })
    }
}

/// Runs the ARP then the NDP series on the segment against whoever answers for `vip4`/`vip6` now.
pub fn measure_segment(
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    rates: &[u64],
    step: Duration,
) -> Result<Vec<Result<Series>>> {
    let _rps = RpsPlacement::segment()?;
    let mut engine = Engine::start(
        CLIENT_NS,
        UPLINK,
        vec![IpAddr::V4(vip4), IpAddr::V6(vip6)],
        Generator::Packet,
    )?;
    let src = Sources::segment();
    let mut out = Vec::new();
    for proto in [Proto::Arp, Proto::Ndp] {
        out.push(series(
            &mut engine,
            None,
            proto,
            &src,
            (vip4, vip6),
            rates,
            step,
        ));
    }
    Ok(out)
}

/// Runs the `protos` series on `link`, from its end in `hl-direct`, placed by
/// [`Placement`] (`responder_pid`: a userspace responder to pin with the node's
/// receive work).
#[allow(clippy::too_many_arguments)]
pub fn measure_direct(
    link: &DirectLink,
    responder_pid: Option<i32>,
    protos: &[Proto],
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    rates: &[u64],
    step: Duration,
) -> Result<Vec<Result<Series>>> {
    let _rps = RpsPlacement::direct(link)?;
    let placement = Placement::apply(link, responder_pid)?;
    let mut engine = engine(link, vip4, vip6)?;
    // The responder's CPU time: node-CPU softirq time plus these threads' time.
    engine.responder_pids = placement.responder_threads();
    let src = Sources::direct(link);
    let mut out = Vec::new();
    for &proto in protos {
        out.push(series(
            &mut engine,
            Some(&placement),
            proto,
            &src,
            (vip4, vip6),
            rates,
            step,
        ));
    }
    Ok(out)
}

fn series(
    engine: &mut Engine,
    placement: Option<&Placement>,
    proto: Proto,
    src: &Sources,
    (vip4, vip6): (Ipv4Addr, Ipv6Addr),
    rates: &[u64],
    step: Duration,
) -> Result<Series> {
    let (load, probes) = traffic(proto, src, vip4, vip6);
    if !engine.wait_answered(&probes[0], Duration::from_secs(10))? {
        bail!(
            "no {} probe was answered within 10 s (before any load)",
            proto.name()
        );
    }
    // Warm-up at the first rate (neighbour entries, caches): not reported.
    let first = Some(rates.first().copied().unwrap_or(5_000));
    if let Some(p) = placement {
        p.for_rate(first);
    }
    engine.step(&load, &probes, first, Duration::from_millis(300))?;
    let mut steps = Vec::new();
    for rate in rates.iter().map(|&r| Some(r)).chain([None]) {
        if let Some(p) = placement {
            p.for_rate(rate);
        }
        let r = engine.step(&load, &probes, rate, step)?;
        let cpu = if engine.responder_pids.is_empty() {
            String::new()
        } else {
            format!(", responder CPU {:.0}%", r.responder_cpu)
        };
        println!(
            "   {} {:>7}: offered {:>7}/s replies {:>7}/s loss {:5.1}% p50 {} p99 {} (probes answered {}/{}{cpu})",
            proto.name(),
            rate.map_or("max".to_string(), |r| format!(
                "{}/s",
                crate::bench::dataplane::svg::si(r as f64)
            )),
            crate::bench::dataplane::svg::si(r.offered),
            crate::bench::dataplane::svg::si(r.replies),
            100.0 * r.loss(),
            us(r.p50_us()),
            us(r.p99_us()),
            r.probes_answered(),
            r.probes_sent,
        );
        if !matches!(r.path, Ok(None)) {
            println!("          {}", r.path_text());
        }
        println!("          probe time split: {}", r.split_text());
        for why in r.shortfalls() {
            println!("          NOT AS ASKED: {why}");
        }
        steps.push(r);
        // Let queues and sockets drain so one step's backlog does not count in the next.
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Series {
        proto,
        steps,
        measured_cpu: !engine.responder_pids.is_empty(),
    })
}

fn us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_batch_maps_each_source_to_its_mac() {
        let add = neighbour_batch(true, &Sources::segment(), UPLINK);
        assert_eq!(add.lines().count(), 1 + PROBE_TAGS);
        assert!(add.contains(
            "neigh replace 2001:db8:0:1::200 lladdr 02:aa:00:00:00:01 dev eth0 nud permanent"
        ));
        assert!(add.contains(
            "neigh replace 2001:db8:0:1::be00:3f lladdr 02:be:00:00:00:3f dev eth0 nud permanent"
        ));
        let del = neighbour_batch(false, &Sources::segment(), UPLINK);
        assert!(del.lines().all(|l| l.starts_with("neigh del ")));
        assert_eq!(del.lines().count(), 1 + PROBE_TAGS);
        // Each node also gets its direct link's sources on eth1.
        let batches = neighbour_batches(true);
        assert_eq!(batches.len(), NODES.len());
        let (netns, batch) = &batches[2];
        assert_eq!(*netns, "hl-node-c");
        assert_eq!(batch.lines().count(), 2 * (1 + PROBE_TAGS));
        assert!(batch.contains(
            "neigh replace 2001:db8:0:d3::200 lladdr 02:aa:00:00:00:01 dev eth1 nud permanent"
        ));
        assert!(!batch.contains("2001:db8:0:d1::"), "only its own link");
    }
}
