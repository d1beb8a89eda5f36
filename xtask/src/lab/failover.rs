//! Failover as the client sees it: the client sends an ARP request for the demo Service's IPv4
//! address every `probe` interval (and opens a TCP connection through it every 10 ms); a fault
//! hits the announcing node; the figure is the time from the fault to the first ARP reply naming
//! another node's MAC (and to the first TCP connection served by another node). Used by
//! `cargo xtask lab failover` (one trial of each fault) and `cargo xtask bench failover`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::herald::Speakers;
use super::kubectl::service_ips;
use super::probe::{self, format_mac};
use super::procs::detect_ms;
use super::spec::{
    BACKEND_PORT, CLIENT_NS, CLIENT_V4, DEMO_SERVICE, NodeSpec, SWITCH_NS, UPLINK, node_by_name,
};
use super::status::{node_macs, node_of_mac};
use super::topo;

#[derive(clap::Args, Clone)]
pub struct FailoverArgs {
    /// ARP probe interval from the client, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub probe_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGSTOP of the announcing node's speaker (hung; its container still runs, so the kubelet
    /// restarts nothing until the liveness probe fails); repaired with SIGCONT.
    SpeakerFreeze,
    /// The announcing node's cable cut at the switch (setting `eth0` down inside the node would
    /// also flush the routes the lab installed there).
    LinkDown,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::SpeakerFreeze => "speaker frozen",
            Fault::LinkDown => "link down",
        }
    }

    /// The faults `lab failover` and `bench failover` try. (A killed speaker container is
    /// restarted by the kubelet at once, so a crash that stays down does not happen here.)
    pub const ALL: [Fault; 2] = [Fault::SpeakerFreeze, Fault::LinkDown];
}

/// Cuts (or restores) `node`'s cable at the switch.
fn set_node_link(node: &NodeSpec, up: bool) -> Result<()> {
    topo::set_link(SWITCH_NS, node.switch_port, up)
}

#[derive(Clone, Debug)]
pub struct Trial {
    pub fault: Fault,
    pub from: String,
    pub to: String,
    /// Fault → first ARP reply with the new node's MAC.
    pub arp: Duration,
    /// Fault → first TCP connection begun after the fault that completes (kube-proxy forwards it
    /// to a pod on any node); None: not within the deadline.
    pub tcp: Option<Duration>,
    /// The failed node did not take its IP back by itself after the repair; its speaker was
    /// restarted to restore the starting state.
    pub restarted_after_repair: bool,
}

/// How long one trial may wait for the new announcer.
pub const MAX_WAIT: Duration = Duration::from_secs(15);

/// A trial in which no other node answered within [`MAX_WAIT`] (the fault was repaired).
#[derive(Debug)]
pub struct NoTakeover {
    pub fault: Fault,
    pub vip: Ipv4Addr,
    pub from: String,
}

impl std::fmt::Display for NoTakeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: no other node answered ARP for {} within {MAX_WAIT:?} after the fault on {}",
            self.fault.label(),
            self.vip,
            self.from
        )
    }
}

impl std::error::Error for NoTakeover {}

/// The demo Service's IPv4 address.
pub fn demo_ipv4() -> Result<Ipv4Addr> {
    let (ns, name) = DEMO_SERVICE;
    service_ips(ns, name)
        .into_iter()
        .find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .with_context(|| format!("Service {ns}/{name} has no IPv4 address: is the lab up?"))
}

/// The MAC the client's ARP requests for `vip` get, when `rounds` consecutive answered rounds
/// agree on one MAC (within 10 s).
pub fn stable_answer(vip: Ipv4Addr, rounds: usize) -> Result<probe::Mac> {
    let found = probe::in_netns(CLIENT_NS, move || {
        let result = probe::probe_arp_rounds(
            UPLINK,
            CLIENT_V4,
            vip,
            Duration::from_millis(20),
            Duration::from_secs(10),
            |r| stable_tail(r, rounds).is_some(),
        )?;
        Ok(stable_tail(&result, rounds))
    })?;
    found.with_context(|| format!("no stable ARP answer for {vip} from the client within 10 s"))
}

fn stable_tail(rounds: &[probe::ArpRound], n: usize) -> Option<probe::Mac> {
    if rounds.len() < n {
        return None;
    }
    let tail = &rounds[rounds.len() - n..];
    let first = tail[0].macs();
    (first.len() == 1 && tail.iter().all(|r| r.macs() == first)).then(|| first[0])
}

/// One trial of `fault` against the node answering for the demo IPv4 address, then repair.
/// `speakers` names the implementation whose speaker a fault hits and a repair waits for.
pub fn trial(fault: Fault, probe_interval: Duration, speakers: Speakers) -> Result<Trial> {
    let vip = demo_ipv4()?;
    let macs = node_macs();
    let before = stable_answer(vip, 5)?;
    let from = node_of_mac(&macs, &format_mac(&before));
    let victim: NodeSpec = node_by_name(&from).with_context(|| {
        format!(
            "ARP for {vip} answered by {} (no lab node)",
            format_mac(&before)
        )
    })?;

    // The client starts from a clean neighbour cache, so its TCP goes where ARP says now.
    topo::flush_neighbours(CLIENT_NS, UPLINK)?;
    let armed = Arc::new(AtomicBool::new(false));
    let fault_time: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let arp_thread = {
        let armed = armed.clone();
        probe::spawn_in_netns(CLIENT_NS, move || {
            probe::probe_arp_rounds(UPLINK, CLIENT_V4, vip, probe_interval, MAX_WAIT, |rounds| {
                armed.store(true, Ordering::SeqCst);
                rounds
                    .last()
                    .is_some_and(|r| r.answers.iter().any(|a| a.mac != before))
            })
        })?
    };
    // kube-proxy forwards to a pod on any node, so the first connection begun after the fault
    // that completes is what the client sees.
    let tcp_fault_time = fault_time.clone();
    let tcp_thread = probe::spawn_in_netns(CLIENT_NS, move || {
        let start = Instant::now();
        while start.elapsed() < MAX_WAIT + Duration::from_secs(1) {
            let attempt = Instant::now();
            let served = probe::tcp_hello(
                SocketAddr::new(IpAddr::V4(vip), BACKEND_PORT),
                Duration::from_millis(100),
            );
            // Only connections begun after the fault count.
            if let (Some(fault), Ok(node)) = (tcp_fault_time.get(), served)
                && attempt >= *fault
            {
                return Ok(Some((Instant::now(), node)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(None)
    })?;
    while !armed.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }

    // The speaker is found before the clock starts: the time is the failover's, not the lookup's.
    let pid = speakers.running_pid(&victim)?;
    let fault_at = Instant::now();
    let _ = fault_time.set(fault_at);
    match fault {
        Fault::SpeakerFreeze => super::herald::freeze_pid(pid)?,
        Fault::LinkDown => set_node_link(&victim, false)?,
    }
    let rounds = arp_thread
        .join()
        .map_err(|_| anyhow::anyhow!("ARP probe thread panicked"))??;
    let tcp = tcp_thread
        .join()
        .map_err(|_| anyhow::anyhow!("TCP probe thread panicked"))??;

    let moved = rounds
        .iter()
        .flat_map(|r| r.answers.iter())
        .find(|a| a.at >= fault_at && a.mac != before);
    // Repair before judging, so a failed trial leaves the lab as it was.
    match fault {
        Fault::SpeakerFreeze => speakers.thaw(&victim, pid)?,
        Fault::LinkDown => set_node_link(&victim, true)?,
    }
    let Some(moved) = moved else {
        return Err(NoTakeover { fault, vip, from }.into());
    };
    let to = node_of_mac(&macs, &format_mac(&moved.mac));
    let restarted_after_repair = restore(vip, before, &victim, speakers)?;
    Ok(Trial {
        fault,
        from,
        to,
        arp: moved.at - fault_at,
        tcp: tcp.map(|(at, _)| at - fault_at),
        restarted_after_repair,
    })
}

/// Waits until the repaired node answers again (it sorts first for the IP); if it has not
/// within 20 s, waits for its speaker container (the kubelet may be restarting it after failed
/// liveness probes) and again for the answer. True when that second wait was needed.
fn restore(
    vip: Ipv4Addr,
    before: probe::Mac,
    victim: &NodeSpec,
    speakers: Speakers,
) -> Result<bool> {
    let back = |limit: Duration| -> Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if stable_answer(vip, 10).is_ok_and(|m| m == before) {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    };
    if back(Duration::from_secs(20))? {
        return Ok(false);
    }
    speakers.wait_running(victim)?;
    if back(Duration::from_secs(30))? {
        return Ok(true);
    }
    bail!(
        "{} did not take {vip} back after the repair, even after a speaker restart",
        victim.name
    )
}

pub fn print_trial(t: &Trial) {
    println!(
        "  {:<16} {} -> {}: client ARP answered by the new node after {:.0} ms; TCP through the IP connected after {}{}",
        t.fault.label(),
        t.from,
        t.to,
        t.arp.as_secs_f64() * 1000.0,
        t.tcp.map_or_else(
            || format!("> {} s", MAX_WAIT.as_secs()),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        ),
        if t.restarted_after_repair {
            " (after the repair the node needed a speaker restart to rejoin)"
        } else {
            ""
        }
    );
}

pub fn run_lab_failover(args: &FailoverArgs) -> Result<()> {
    let detect_ms = detect_ms();
    let probe = Duration::from_millis(args.probe_ms);
    println!(
        "failover of {} (speakers: --detect-ms {detect_ms}); the client probes ARP every {} ms and connects over TCP every 10 ms",
        demo_ipv4()?,
        args.probe_ms
    );
    for fault in Fault::ALL {
        let t = trial(fault, probe, Speakers::Herald)?;
        print_trial(&t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe::{ArpAnswer, ArpRound};

    fn round(macs: &[u8]) -> ArpRound {
        ArpRound {
            answers: macs
                .iter()
                .map(|m| ArpAnswer {
                    at: Instant::now(),
                    mac: [2, 0, 0, 0, 0, *m],
                })
                .collect(),
        }
    }

    #[test]
    fn stable_only_when_the_last_rounds_agree_on_one_mac() {
        assert_eq!(
            stable_tail(&[round(&[1]), round(&[1])], 3),
            None,
            "too few rounds"
        );
        assert_eq!(
            stable_tail(&[round(&[2]), round(&[1]), round(&[1]), round(&[1])], 3),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            stable_tail(&[round(&[1]), round(&[]), round(&[1])], 3),
            None,
            "a gap"
        );
        assert_eq!(
            stable_tail(&[round(&[1]), round(&[1, 2]), round(&[1])], 3),
            None,
            "two answer"
        );
        assert_eq!(
            stable_tail(&[round(&[1]), round(&[2]), round(&[2])], 3),
            None,
            "a change"
        );
    }
}
