//! One measurement step: offer frames at a paced rate (or as fast as the sender goes) for a fixed
//! time from the client namespace, count the replies the client receives, and time latency
//! probes interleaved with the load (one probe per millisecond, each tagged by its source MAC).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::attribution::{self, LinkCounters, Path};
use super::cpu::{self, CpuShare};
use super::floodloop::{FLOOD_IN_FLIGHT, FloodLoop};
use super::frames::{self, PROBE_TAGS};
use super::generate::{Load, generate};
use super::lab::{CLIENT_CPU, NODE_CPU};
use super::live::LiveGenerator;
use super::machine;
use super::net::{self, Counter, ReplyRing, Sender};
use super::pacer::CycleCounts;
use super::probes::{Shared, receive, take_all};
use super::reply::ReplyCounter;
use super::txstamp::ProbeSender;
use super::windows;

/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// How long a warm-up step runs ([`Engine::warm_up`]).
const WARM_UP: Duration = Duration::from_millis(300);
/// Replies still in flight when sending stops are counted if they arrive within this.
const DRAIN: Duration = Duration::from_millis(100);
/// A reflected loop that ran a smaller share of its step than this measured less than the step.
pub const LOOP_SHARE_MIN: f64 = 0.95;

/// Where the load comes from (probes always go through the AF_PACKET sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// `BPF_PROG_TEST_RUN` live frames: XDP_TX from kernel space, no per-frame syscall.
    Live,
    /// `sendmmsg` on an AF_PACKET socket (qdisc bypassed).
    Packet,
    /// AF_PACKET for the paced steps (even pacing), live frames for the unpaced ones (the
    /// saturation step and the flood): live frames can only be sent in long calls (each costs an
    /// RCU grace period), which is what an unpaced step wants and a paced one cannot use. Where
    /// the kernel refuses live frames, `reflect`.
    Mixed,
    /// AF_PACKET for the paced steps; in the unpaced saturation step an XDP program on the
    /// client end sends every reply back rewritten into the next request (`XDP_TX`), with
    /// `REFLECT_IN_FLIGHT` requests seeded by AF_PACKET, so the load keeps itself going with no
    /// syscall or page allocation per frame. The flood: live frames where the kernel allows
    /// them, AF_PACKET otherwise.
    Reflect,
}

/// Requests a reflected step puts in flight (by AF_PACKET, at its start): fewer than a veth
/// ring holds (256), so the loop alone never fills a ring. Kept at the ring's limit instead
/// (seeds topped up as fast as full rings dropped frames), one run's node end refused every
/// frame after an skb-mode step (replies from the node's stack) for the rest of the run. Three
/// batches of 64 still keep the
/// responder's ring from running dry while the client's batch is on its way back.
pub const REFLECT_IN_FLIGHT: u64 = 192;

impl Generator {
    /// Whether a step at `rate` (`None`: unpaced) is sent with live frames.
    fn live_for(self, rate: Option<u64>) -> bool {
        match self {
            Generator::Live => true,
            Generator::Packet | Generator::Reflect => false,
            Generator::Mixed => rate.is_none(),
        }
    }
}

pub struct Engine {
    sender: Sender,
    /// The flood's circle where there are no live frames ([`Engine::flood_circle`]).
    circle: Option<Circle>,
    probe_sender: ProbeSender,
    /// Replies to the load, counted and dropped in XDP on the client end.
    reply_counter: ReplyCounter,
    live: Option<LiveGenerator>,
    generator: Generator,
    /// Why the kernel refused live frames, when it did: the saturation step is then reflected and
    /// the flood comes from AF_PACKET.
    pub live_refused: Option<String>,
    client_ns: String,
    client_ifindex: u32,
    /// The responder's namespace and interface: when set, each step reads both veth ends'
    /// counters and says where its frames went.
    pub node: Option<(String, String)>,
    counter: Counter,
    shared: Arc<Shared>,
    receiver: Option<JoinHandle<()>>,
    /// Processes/threads whose CPU time counts as the responder's (besides CPU softirq time).
    pub responder_pids: Vec<u32>,
}

/// The flood's circle: the veth pair's ends and the AF_PACKET sender that seeds it.
struct Circle {
    seeder: Sender,
    seed_ifindex: u32,
    loop_ifindex: u32,
}

impl Circle {
    /// Attaches the circle for `load` towards `out_if`, paced at `rate` and ending `until`
    /// from now; with what it had counted before.
    fn start(
        &self,
        ns: &str,
        load: &[Vec<u8>],
        out_if: u32,
        rate: Option<u64>,
        until: Duration,
    ) -> Result<(FloodLoop, CycleCounts)> {
        let (loop_if, seed_if, frames) = (self.loop_ifindex, self.seed_ifindex, load.to_vec());
        let flood = net::in_netns(ns, move || {
            FloodLoop::attach(&frames, loop_if, seed_if, out_if)
        })?;
        flood.arm(rate, until)?;
        let before = flood.counts()?;
        Ok((flood, before))
    }
}

/// What a step is for, which decides how its load is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A measurement step: paced, or unpaced (the saturation step).
    Step,
    /// The bad-input flood: live frames paced by their own program where there are any.
    Flood,
    /// The generator's own ceiling: never reflected.
    Ceiling,
}

impl Engine {
    /// Opens sender and receive ring on the client interface and starts the receiver thread.
    pub fn start(
        client_ns: &str,
        client_if: &str,
        announced: Vec<IpAddr>,
        generator: Generator,
    ) -> Result<Engine> {
        let ifname = client_if.to_string();
        let (sender, probe_sender, ring, client_ifindex, reply_counter) =
            net::in_netns(client_ns, move || {
                let ifindex = net::ifindex(&ifname)? as u32;
                Ok((
                    Sender::open(&ifname)?,
                    ProbeSender::open(&ifname)?,
                    ReplyRing::open(&ifname)?,
                    ifindex,
                    ReplyCounter::attach(ifindex, frames::GENERATOR_MAC)?,
                ))
            })?;
        // Live frames where the kernel allows them; without, the mixed generator reflects its
        // saturation step (the output says so), an explicit `live` is refused.
        let live_refused = match generator {
            Generator::Packet => None,
            Generator::Live | Generator::Mixed | Generator::Reflect => {
                super::live::live_frames_refused()
            }
        };
        let (live, generator) = match (generator, &live_refused) {
            (Generator::Live, Some(why)) => {
                anyhow::bail!("--generator live: the kernel refused XDP live frames ({why})")
            }
            (Generator::Mixed | Generator::Reflect, Some(_)) => (None, Generator::Reflect),
            (Generator::Packet, _) => (None, Generator::Packet),
            (g, None) => (Some(LiveGenerator::new()), g),
        };
        let counter = ring.counter()?;
        let shared = Arc::new(Shared {
            probe_sent: (0..PROBE_TAGS).map(|_| AtomicU64::new(0)).collect(),
            probe_tx: (0..PROBE_TAGS).map(|_| AtomicU64::new(0)).collect(),
            latencies_ns: Mutex::new(Vec::new()),
            splits_ns: Mutex::new(Vec::new()),
            to_generator: AtomicU64::new(0),
            wrong_address: AtomicU64::new(0),
            announced,
            stop: AtomicBool::new(false),
        });
        let rx_shared = shared.clone();
        let receiver = std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || receive(ring, &rx_shared))
            .context("receiver thread")?;
        Ok(Engine {
            sender,
            circle: None,
            probe_sender,
            reply_counter,
            live,
            generator,
            live_refused,
            client_ns: client_ns.to_string(),
            client_ifindex,
            node: None,
            counter,
            shared,
            receiver: Some(receiver),
            responder_pids: Vec::new(),
        })
    }

    /// Where there are no live frames, the flood circles between `seed_if` and `loop_if` (a
    /// veth pair in the client namespace; see `floodloop`).
    pub fn flood_circle(&mut self, seed_if: &str, loop_if: &str) -> Result<()> {
        let (seed_if, loop_if) = (seed_if.to_string(), loop_if.to_string());
        self.circle = Some(net::in_netns(&self.client_ns, move || {
            Ok(Circle {
                seeder: Sender::open(&seed_if)?,
                seed_ifindex: net::ifindex(&seed_if)? as u32,
                loop_ifindex: net::ifindex(&loop_if)? as u32,
            })
        })?);
        Ok(())
    }

    /// Sends one probe every 100 ms until one is answered or `timeout` passes.
    pub fn wait_answered(&mut self, probe: &[u8], timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let r = self.step(
                &[],
                std::slice::from_ref(&probe.to_vec()),
                Some(0),
                Duration::from_millis(100),
            )?;
            if r.probes_answered() > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Offers `load` (cycled) at `rate` frames/s (`None`: unpaced; `Some(0)`: probes only) for
    /// `duration`, with `probes` (cycled over the tags) every millisecond.
    pub fn step(
        &mut self,
        load: &[Vec<u8>],
        probes: &[Vec<u8>],
        rate: Option<u64>,
        duration: Duration,
    ) -> Result<StepResult> {
        self.step_with(load, probes, rate, duration, Kind::Step)
    }

    /// A short paced step whose figures are not kept: neighbour entries for every probe source
    /// and caches are warm before the steps that count.
    pub fn warm_up(&mut self, load: &[Vec<u8>], probes: &[Vec<u8>], rate: u64) -> Result<()> {
        self.step(load, probes, Some(rate), WARM_UP).map(|_| ())
    }

    /// The generator alone: `load` (requests nobody answers) unpaced for `duration`, never
    /// reflected (there are no replies to reflect), so the most the sender offers by itself.
    pub fn ceiling(&mut self, load: &[Vec<u8>], duration: Duration) -> Result<StepResult> {
        self.step_with(load, &[], None, duration, Kind::Ceiling)
    }

    /// Like `step`, but the load always comes from the live-frames generator (where there is
    /// one), paced at `rate` by its own program: a flood at a set rate in bursts of a few frames;
    /// without one, from the flood circle where there is one (`flood_circle`), paced by its
    /// own program too.
    pub fn flood(
        &mut self,
        load: &[Vec<u8>],
        probes: &[Vec<u8>],
        rate: Option<u64>,
        duration: Duration,
    ) -> Result<StepResult> {
        self.step_with(load, probes, rate, duration, Kind::Flood)
    }

    fn step_with(
        &mut self,
        load: &[Vec<u8>],
        probes: &[Vec<u8>],
        rate: Option<u64>,
        duration: Duration,
        kind: Kind,
    ) -> Result<StepResult> {
        let live_paced = kind == Kind::Flood;
        // An unpaced step's replies over time, and the machine's speed just before and after
        // it and the flood: how much of its figure is the host's (`windows`, `machine::work_ms`).
        let sampled = rate.is_none() && kind == Kind::Step;
        let speed_probed = sampled || kind == Kind::Flood;
        let speed_before = speed_probed.then(|| machine::work_ms(NODE_CPU).ok());
        for slot in &self.shared.probe_sent {
            slot.store(0, Ordering::Relaxed);
        }
        self.take_latencies();
        self.take_splits();
        self.shared.to_generator.store(0, Ordering::Relaxed);
        self.shared.wrong_address.store(0, Ordering::Relaxed);
        self.counter.take()?;
        self.reply_counter.take()?;
        let counters_before = self.snapshot();
        let cpu_before = cpu::read_stat()?;
        let ticks_before: u64 = self
            .responder_pids
            .iter()
            .filter_map(|&p| cpu::process_ticks(p))
            .sum();

        let batch: Vec<&[u8]> = if load.is_empty() {
            Vec::new()
        } else {
            (0..BATCH)
                .map(|i| load[i % load.len()].as_slice())
                .collect()
        };
        let load_path = match &self.live {
            Some(g) if !load.is_empty() && (live_paced || self.generator.live_for(rate)) => {
                match load {
                    [frame] if !live_paced => Load::Live(g, self.client_ifindex, frame),
                    _ => {
                        let pace = if live_paced { rate } else { None };
                        Load::Cycled(g.cycled(load)?, self.client_ifindex, pace)
                    }
                }
            }
            _ => Load::Packet(&batch),
        };
        // A cycled load paces itself: the sending loop makes unpaced calls. A reflected step's
        // sender only seeds and tops up the loop.
        let reflect = self.generator == Generator::Reflect
            && rate.is_none()
            && kind == Kind::Step
            && load.len() == 1;
        let load_path = match load_path {
            Load::Packet(frames) if reflect => Load::Seeds(frames, REFLECT_IN_FLIGHT),
            other => other,
        };
        let rate_sent = match load_path {
            Load::Cycled(..) => None,
            _ => rate,
        };
        if reflect {
            self.reply_counter.take_reflected()?;
            // The loop stops itself when the step's time is up (the generator starts a moment
            // later, so it ends a moment before the step does).
            self.reply_counter.start_reflecting(&load[0], duration)?;
        }
        // Without live frames, the flood circles in the client namespace, seeded by AF_PACKET.
        let seeded = self.circle.as_ref().filter(|_| {
            live_paced
                && !load.is_empty()
                && self.generator != Generator::Packet
                && matches!(load_path, Load::Packet(_))
        });
        let circle = match seeded {
            Some(c) => Some(c.start(&self.client_ns, load, self.client_ifindex, rate, duration)?),
            None => None,
        };
        let load_path = match load_path {
            Load::Packet(frames) if circle.is_some() => Load::Seeds(frames, FLOOD_IN_FLIGHT),
            other => other,
        };
        let sender = seeded.map_or(&self.sender, |c| &c.seeder);
        let probe_sender = &self.probe_sender;
        let shared = &self.shared;
        let client_ns = self.client_ns.as_str();
        let reply_counter = &self.reply_counter;
        let done = AtomicBool::new(false);
        let (generated, readings) = std::thread::scope(|s| {
            let sampler = sampled.then(|| {
                s.spawn(|| {
                    // With the generator, not on the responder's CPU it is there to watch.
                    let _ = net::pin_current_thread(CLIENT_CPU);
                    windows::sample(|| reply_counter.replies_total().ok(), &done)
                })
            });
            let generated = s
                .spawn(|| {
                    generate(
                        client_ns,
                        (sender, probe_sender),
                        shared,
                        load_path,
                        probes,
                        rate_sent,
                        duration,
                    )
                })
                .join();
            done.store(true, Ordering::Relaxed);
            let readings = sampler
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            (generated, readings)
        });
        let mut generated =
            generated.map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        if let Some((flood, before)) = &circle {
            // The seeds went round the circle, not to the node: what the circle sent did.
            let after = flood.counts()?;
            generated.sent = generated.sent.saturating_sub(generated.load)
                + after.sent.saturating_sub(before.sent);
            generated.held = after.held.saturating_sub(before.held);
        }
        drop(circle);
        let cpu_after = cpu::read_stat()?;
        let ticks_after: u64 = self
            .responder_pids
            .iter()
            .filter_map(|&p| cpu::process_ticks(p))
            .sum();
        // The step's CPU window closes above: the wait below idles and must not dilute it.
        let mut loop_share = None;
        if reflect {
            // What is still in flight is counted and dropped from now on. Requests of the loop
            // can also stay in the node's receive ring after its NAPI poll stopped, until the
            // next frame arrives (seen with the fallback: the first frames of the next step
            // brought them out, and the flood counted their answers as wrong): a few frames
            // nobody answers bring them out now, and the step waits for their answers.
            let span = self.reply_counter.stop_reflecting()?;
            loop_share =
                Some(span.map_or(0.0, |d| d.as_secs_f64()) / generated.elapsed.as_secs_f64());
            generated.sent += self.reply_counter.take_reflected()?;
            let kick = frames::unanswered_arp();
            let mut batch = net::Batch::new(&[kick.as_slice()]);
            let mut settled = false;
            for _ in 0..50 {
                let _ = self.sender.send(&mut batch, 1)?;
                if self
                    .reply_counter
                    .settle(Duration::from_millis(100), Duration::from_millis(200))?
                {
                    settled = true;
                    break;
                }
            }
            if !settled {
                println!("          replies to the reflected load still arriving 10 s after it");
            }
        }
        std::thread::sleep(DRAIN);
        let speed = speed_before.map(|before| machine::Speed {
            before,
            after: machine::work_ms(NODE_CPU).ok(),
        });
        let (ring_replies, ring_drops) = self.counter.take()?;
        let load_replies = self.reply_counter.take()?;
        let replies = ring_replies + load_replies;
        let path = match (counters_before, self.snapshot()) {
            (Ok(None), _) | (_, Ok(None)) => Ok(None),
            (Ok(Some(a)), Ok(Some(b))) => Ok(Some(Path::between(&a, &b, generated.sent, replies))),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let (probe_tags, latencies_ns) = self.take_latencies().into_iter().unzip();
        let secs = generated.elapsed.as_secs_f64();
        let share = |i: usize| match (cpu_before.get(i), cpu_after.get(i)) {
            (Some(a), Some(b)) => cpu::share(a, b),
            _ => CpuShare::default(),
        };
        Ok(StepResult {
            target: rate,
            offered: generated.sent as f64 / secs,
            refused: generated.refused as f64 / secs,
            replies: replies as f64 / secs,
            probes_sent: generated.probes,
            probes_refused: generated.probes_refused,
            held: generated.held,
            reflected: reflect,
            loop_share,
            windows: windows::rates(&readings),
            speed,
            latencies_ns,
            probe_tags,
            splits_ns: self.take_splits(),
            node_cpu: share(NODE_CPU),
            // Softirq time and NAPI-thread time can overlap in the accounting; all of the
            // responder's work is pinned to the node CPU, so its busy share bounds the sum.
            responder_cpu: (share(NODE_CPU).softirq
                + 100.0 * ticks_after.saturating_sub(ticks_before) as f64
                    / cpu::ticks_per_second() as f64
                    / secs)
                .min(share(NODE_CPU).busy),
            client_cpu: share(CLIENT_CPU),
            ring_drops,
            to_generator: load_replies + self.shared.to_generator.load(Ordering::Relaxed),
            wrong_address: self.shared.wrong_address.load(Ordering::Relaxed),
            path,
        })
    }

    /// The node end's counters, when the node side is known; an error names what could not be
    /// read.
    fn snapshot(&self) -> std::result::Result<Option<LinkCounters>, String> {
        let Some((node_ns, node_if)) = &self.node else {
            return Ok(None);
        };
        attribution::read_link(node_ns, node_if)
            .map(Some)
            .map_err(|e| format!("counters unreadable: {e:#}"))
    }

    fn take_latencies(&self) -> Vec<(u8, u64)> {
        take_all(&self.shared.latencies_ns)
    }

    fn take_splits(&self) -> Vec<(u64, u64)> {
        take_all(&self.shared.splits_ns)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.receiver.take() {
            let _ = t.join();
        }
    }
}

mod result;
#[cfg(test)]
pub(super) mod tests;

pub use result::StepResult;
