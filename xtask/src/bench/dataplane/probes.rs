//! The latency probes and the reply receiver: one probe per millisecond, each tagged by its
//! source MAC so its reply finds its send time (and the veth's transmit stamp), and the thread
//! that reads every reply off the client's ring, times the probes' and counts wrong answers.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::frames::{self, PROBE_TAGS};
use super::lab::CLIENT_CPU;
use super::net::{self, Batch, ReplyRing};
use super::txstamp::ProbeSender;

const PROBE_EVERY: Duration = Duration::from_millis(1);

/// What the receiver thread learns, shared with the generator.
pub struct Shared {
    /// CLOCK_REALTIME send time of the outstanding probe per tag (0 = none).
    pub probe_sent: Vec<AtomicU64>,
    /// CLOCK_REALTIME when the veth driver took the outstanding probe per tag (0 = not known).
    pub probe_tx: Vec<AtomicU64>,
    /// Per timed probe: its tag and its time in ns.
    pub latencies_ns: Mutex<Vec<(u8, u64)>>,
    /// Per timed probe with a transmit stamp: (send path, flight) in ns.
    pub splits_ns: Mutex<Vec<(u64, u64)>>,
    /// Replies sent to the flood's source MAC: during the bad-input flood, each one is a wrong answer.
    pub to_generator: AtomicU64,
    /// Replies resolving an address that is not announced.
    pub wrong_address: AtomicU64,
    pub announced: Vec<IpAddr>,
    pub stop: AtomicBool,
}

/// One latency probe per millisecond, cycled over the tags (probe i carries tag i in its source
/// MAC, so its reply finds its slot).
pub struct Probes<'a> {
    batches: Vec<Batch<'a>>,
    next: Instant,
    pub attempts: u64,
    pub sent: u64,
    pub refused: u64,
}

impl<'a> Probes<'a> {
    pub fn new(probes: &'a [Vec<u8>]) -> Probes<'a> {
        Probes {
            batches: probes.iter().map(|p| Batch::new(&[p.as_slice()])).collect(),
            next: Instant::now(),
            attempts: 0,
            sent: 0,
            refused: 0,
        }
    }

    pub fn send_if_due(
        &mut self,
        sender: &ProbeSender,
        shared: &Shared,
        now: Instant,
    ) -> Result<()> {
        if self.batches.is_empty() || now < self.next {
            return Ok(());
        }
        let tag = (self.attempts % self.batches.len().min(PROBE_TAGS) as u64) as usize;
        shared.probe_tx[tag].store(0, Ordering::Relaxed);
        shared.probe_sent[tag].store(net::realtime_ns(), Ordering::Release);
        let (sent, stamp) = sender.send(&mut self.batches[tag])?;
        if sent {
            self.sent += 1;
            // The reply may already be in (then this probe has no split).
            if let Some(tx) = stamp {
                shared.probe_tx[tag].store(tx, Ordering::Release);
            }
        } else {
            shared.probe_sent[tag].store(0, Ordering::Relaxed);
            self.refused += 1;
        }
        self.attempts += 1;
        self.next += PROBE_EVERY;
        if self.next < now {
            self.next = now + PROBE_EVERY;
        }
        Ok(())
    }
}

pub fn receive(mut ring: ReplyRing, shared: &Shared) {
    let _ = net::pin_current_thread(CLIENT_CPU);
    net::raise_priority();
    while !shared.stop.load(Ordering::Relaxed) {
        ring.drain(10, |c| {
            let Some(reply) = frames::parse_reply(c.bytes) else {
                return;
            };
            if !shared.announced.contains(&reply.resolves) {
                shared.wrong_address.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(tag) = frames::probe_tag(&reply.to_mac) {
                let sent = shared.probe_sent[usize::from(tag)].swap(0, Ordering::AcqRel);
                let tx = shared.probe_tx[usize::from(tag)].swap(0, Ordering::AcqRel);
                if sent != 0
                    && c.received_ns >= sent
                    && let Ok(mut v) = shared.latencies_ns.lock()
                {
                    v.push((tag, c.received_ns - sent));
                    if (sent..=c.received_ns).contains(&tx)
                        && let Ok(mut s) = shared.splits_ns.lock()
                    {
                        s.push((tx - sent, c.received_ns - tx));
                    }
                }
            } else if reply.to_mac == frames::GENERATOR_MAC {
                shared.to_generator.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

pub fn take_all<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    match m.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    }
}
