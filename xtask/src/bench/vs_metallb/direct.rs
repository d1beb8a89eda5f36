//! The direct links (`lab::DirectLink`): which node answers for an address, seen from
//! `hl-direct` (a probe per link — the implementation-neutral view, the same for Herald and
//! MetalLB), the XDP mode Herald's speaker attached on a node's `eth1`, and where the links'
//! NAPI threads and a userspace responder run during a series ([`Placement`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::requests::{Proto, Sources, traffic};
use crate::bench::dataplane::measure::{Engine, Generator};
use crate::bench::dataplane::net;
use crate::lab::{self, DIRECT_IF, DIRECT_NS, DirectLink};

/// CPU of the generator, its receiver and the client ends' NAPI (as in `bench dataplane`).
const CLIENT_CPU: usize = 0;
/// CPU of the nodes' `eth1` NAPI threads (where the responder's receive work runs).
const NODE_CPU: usize = 1;

/// The one link whose node answered, or why there is not exactly one. `answered[i]` is for
/// `links[i]`.
pub fn pick_announcer<'a>(
    what: &str,
    links: &'a [DirectLink],
    answered: &[bool],
) -> Result<&'a DirectLink> {
    let who: Vec<&DirectLink> = links
        .iter()
        .zip(answered)
        .filter(|(_, a)| **a)
        .map(|(l, _)| l)
        .collect();
    match who.as_slice() {
        [one] => Ok(one),
        [] => bail!("no node answered {what} on its direct link"),
        several => bail!(
            "{} nodes answered {what} on their direct links: {}",
            several.len(),
            several
                .iter()
                .map(|l| l.node.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The bench's generator and reply counter on the `hl-direct` end of `link`, asking for the
/// Service's two addresses: AF_PACKET for the paced steps, the kernel's live frames for the
/// unpaced one (as `bench dataplane` does; both ends of a direct link have NAPI), so the
/// saturation step offers more than Herald's XDP answers; where the kernel refuses live frames,
/// that step is reflected (each reply sent back as the next request by the client end's XDP
/// program).
/// Each step also reads the node end's counters, so it says where its frames went.
pub fn engine(link: &DirectLink, vip4: Ipv4Addr, vip6: Ipv6Addr) -> Result<Engine> {
    let mut engine = Engine::start(
        DIRECT_NS,
        &link.client_if,
        vec![IpAddr::V4(vip4), IpAddr::V6(vip6)],
        Generator::Mixed,
    )?;
    engine.node = Some((link.node.netns.to_string(), DIRECT_IF.to_string()));
    Ok(engine)
}

/// Per link, whether its node answered an ARP request for `vip4` and a Neighbor Solicitation
/// for `vip6` — each the series' first probe, sent by the series' own `Engine` on the link: its
/// XDP reply counter on the client end is what lets driver-mode XDP_TX frames arrive (a veth
/// drops them when the peer has no XDP program), so Herald in driver mode is seen too. (Not
/// ndisc6: it ignores MetalLB's advertisements, which set Solicited without Override — valid,
/// and accepted by Linux's neighbour cache.)
fn answers(links: &[DirectLink], vip4: Ipv4Addr, vip6: Ipv6Addr) -> Result<Vec<(bool, bool)>> {
    let mut out = Vec::new();
    for link in links {
        let mut engine = engine(link, vip4, vip6)?;
        let src = Sources::direct(link);
        let mut answered = |proto| {
            let (_, probes) = traffic(proto, &src, vip4, vip6);
            engine.wait_answered(&probes[0], Duration::from_millis(500))
        };
        out.push((answered(Proto::Arp)?, answered(Proto::Ndp)?));
    }
    Ok(out)
}

/// The direct links of the nodes answering for `vip4` and for `vip6`, once the same single
/// node has answered two checks in a row (a hand-over settles first); up to `timeout`.
pub fn wait_announcers(
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    timeout: Duration,
) -> Result<(DirectLink, DirectLink)> {
    let links = lab::direct_links();
    let deadline = Instant::now() + timeout;
    let mut previous: Option<(String, String)> = None;
    loop {
        let last_error = match answers(&links, vip4, vip6).and_then(|a| {
            let (arp, ndp): (Vec<bool>, Vec<bool>) = a.into_iter().unzip();
            Ok((
                pick_announcer(&format!("ARP for {vip4}"), &links, &arp)?.clone(),
                pick_announcer(&format!("NS for {vip6}"), &links, &ndp)?.clone(),
            ))
        }) {
            Ok((a, b)) => {
                let names = (a.node.name.to_string(), b.node.name.to_string());
                if previous.as_ref() == Some(&names) {
                    return Ok((a, b));
                }
                previous = Some(names);
                None
            }
            Err(e) => {
                previous = None;
                Some(e)
            }
        };
        if Instant::now() >= deadline {
            return Err(last_error
                .unwrap_or_else(|| anyhow::anyhow!("the answering node kept changing"))
                .context(format!(
                    "finding the announcers on the direct links ({timeout:?})"
                )));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The XDP mode `herald xdp list -o json` shows attached on `iface` (`driver`, `skb`).
pub fn attached_mode(snapshot: &Value, iface: &str) -> Option<String> {
    snapshot["attachments"]
        .as_array()?
        .iter()
        .find(|a| a["iface"].as_str() == Some(iface))
        .and_then(|a| a["mode"].as_str())
        .map(str::to_string)
}

/// The XDP mode Herald's speaker attached on `link`'s node end.
pub fn herald_mode(link: &DirectLink) -> Option<String> {
    attached_mode(&lab::status::xdp_snapshot(&link.node), DIRECT_IF)
}

/// Kernel threads whose name starts with `prefix`, as thread ids.
fn threads_named(prefix: &str) -> Vec<i32> {
    crate::bench::dataplane::lab::threads_named(prefix)
        .into_iter()
        .filter_map(|tid| i32::try_from(tid).ok())
        .collect()
}

/// The threads of process `pid`.
fn threads_of(pid: i32) -> Vec<i32> {
    net::numbered(&format!("/proc/{pid}/task"))
}

/// Allows `tid` on `cpus` only. Failure leaves it where it was (the thread may have exited).
fn set_affinity(tid: i32, cpus: &[usize]) {
    let _ = net::set_affinity(tid, &cpus.iter().copied().collect());
}

fn set_nice(tid: i32, nice: i32) {
    crate::bench::dataplane::lab::set_nice(tid.unsigned_abs(), nice);
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get) >= 2
}

/// Where one direct-link series runs: the nodes' `eth1` NAPI threads on the responder CPU and
/// the client end's on the generator's, both at nice -20; a userspace responder (MetalLB's
/// announcing speaker) pinned to the responder CPU at nice -20 too, like `bench dataplane`'s
/// fallback. Undone on drop.
///
/// SCHED_FIFO as in `bench dataplane` only for the paced steps up to [`REALTIME_UP_TO`]/s
/// ([`Placement::for_rate`]); nice -20 above. The speakers run in the nodes' containers, which
/// cannot be made real-time (cgroup v1 gives a pod's cgroup no real-time runtime), and with a
/// real-time NAPI thread busy on each CPU (the reflected step, the top paced steps in skb mode)
/// a normal task runs only in what real-time throttling leaves, 50 ms of each second. Herald's
/// speaker then misses its guard heartbeats and its node stops answering, as it must when it
/// cannot be sure. Real-time throttling in 10 ms periods does not save it: 0.5 ms of each 10 ms
/// is 5% of both CPUs for every process of the lab, and the speakers' gossip still stalled past
/// the guard budget. At nice -20 the NAPI threads still take the CPU from the lab's other
/// processes, and a speaker that wakes to beat its guard runs within its time slice; but a
/// woken NAPI thread may wait for the running task's slice, milliseconds in a low-rate step's
/// p99, which real-time priority removes while the threads are mostly idle.
pub struct Placement {
    node_napi: Vec<i32>,
    client_napi: Vec<i32>,
    responder: Vec<i32>,
}

impl Placement {
    pub fn apply(link: &DirectLink, responder_pid: Option<i32>) -> Result<Placement> {
        let mut placement = Placement {
            node_napi: vec![],
            client_napi: vec![],
            responder: vec![],
        };
        if !two_cpus() {
            return Ok(placement);
        }
        let node = threads_named(&format!("napi/{DIRECT_IF}-"));
        let client = threads_named(&format!("napi/{}-", link.client_if));
        if node.is_empty() || client.is_empty() {
            bail!(
                "no NAPI threads napi/{DIRECT_IF}-* and napi/{}-* (lab up sets GRO and threaded NAPI on the direct links)",
                link.client_if
            );
        }
        for (threads, cpu) in [(&node, NODE_CPU), (&client, CLIENT_CPU)] {
            for &tid in threads {
                set_affinity(tid, &[cpu]);
                crate::bench::dataplane::lab::normal_policy(tid.unsigned_abs());
                set_nice(tid, -20);
            }
        }
        placement.node_napi = node;
        placement.client_napi = client;
        if let Some(pid) = responder_pid {
            placement.responder = threads_of(pid);
            for &tid in &placement.responder {
                set_affinity(tid, &[NODE_CPU]);
                set_nice(tid, -20);
            }
        }
        Ok(placement)
    }
}

/// Highest paced rate (requests/s) whose step runs the NAPI threads SCHED_FIFO: there the node
/// CPU was a third busy in driver mode and two thirds at most in skb mode (measured), and the
/// speakers kept their time (the guard silenced nothing).
pub const REALTIME_UP_TO: u64 = 100_000;

impl Placement {
    /// The NAPI threads' priority for a step at `rate` (`None`: unpaced): real-time up to
    /// [`REALTIME_UP_TO`], nice -20 above. Says so when a thread kept another policy (the
    /// kernel refused the change).
    pub fn for_rate(&self, rate: Option<u64>) {
        let realtime = rate.is_some_and(|r| r <= REALTIME_UP_TO);
        for &tid in self.node_napi.iter().chain(&self.client_napi) {
            let pid = tid.unsigned_abs();
            if realtime {
                crate::bench::dataplane::lab::realtime(pid);
            } else {
                crate::bench::dataplane::lab::normal_policy(pid);
                crate::bench::dataplane::lab::set_nice(pid, -20);
            }
            // SAFETY: sched_getscheduler reads a thread's policy; -1 when it is gone.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            let want = if realtime {
                libc::SCHED_FIFO
            } else {
                libc::SCHED_OTHER
            };
            if policy != want {
                println!(
                    "   NAPI thread {tid}: policy {policy}, not {want}, for the step at {}: the kernel refused the change",
                    rate.map_or("max".to_string(), |r| format!("{r}/s"))
                );
            }
        }
    }

    /// Threads whose CPU time is the responder's: the nodes' `eth1` NAPI threads and the
    /// userspace responder's threads (with node-CPU softirq time, `Engine` adds them up).
    pub fn responder_threads(&self) -> Vec<u32> {
        self.node_napi
            .iter()
            .chain(&self.responder)
            .filter_map(|&t| u32::try_from(t).ok())
            .collect()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let all: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, std::num::NonZero::get)).collect();
        for &tid in self
            .node_napi
            .iter()
            .chain(&self.client_napi)
            .chain(&self.responder)
        {
            crate::bench::dataplane::lab::normal_policy(tid.unsigned_abs());
            set_nice(tid, 0);
            set_affinity(tid, &all);
        }
    }
}

/// Requests for announced addresses `node`'s XDP program left unanswered because its guard had
/// run out (the `silenced` counter, summed over CPUs), or `None` when it cannot be read.
pub fn silenced(node: &lab::NodeSpec) -> Option<u64> {
    lab::status::xdp_snapshot(node)["counters"]["silenced"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_one_answering_link_is_the_announcer() {
        let links = lab::direct_links();
        let a = pick_announcer("ARP", &links, &[false, true, false]);
        assert_eq!(a.map(|l| l.node.name).ok(), Some("node-b"));
        let none = pick_announcer("ARP for 198.51.100.10", &links, &[false, false, false]);
        assert_eq!(
            none.err().map(|e| e.to_string()),
            Some("no node answered ARP for 198.51.100.10 on its direct link".into())
        );
        let two = pick_announcer("NS", &links, &[true, false, true]);
        assert_eq!(
            two.err().map(|e| e.to_string()),
            Some("2 nodes answered NS on their direct links: node-a, node-c".into())
        );
        // Fewer answers than links: the missing ones did not answer.
        let short = pick_announcer("ARP", &links, &[false, false]);
        assert!(short.is_err());
    }

    #[test]
    fn attached_mode_reads_the_interface_entry() {
        let snap = json!({"attachments": [
            {"iface": "eth0", "mode": "skb", "present": true},
            {"iface": "eth1", "mode": "driver", "present": true},
        ]});
        assert_eq!(attached_mode(&snap, "eth1").as_deref(), Some("driver"));
        assert_eq!(attached_mode(&snap, "eth0").as_deref(), Some("skb"));
        assert_eq!(attached_mode(&snap, "eth2"), None);
        assert_eq!(attached_mode(&Value::Null, "eth1"), None);
    }
}
