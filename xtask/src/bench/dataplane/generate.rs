//! The sending side of a step: the load (AF_PACKET batches or live frames, paced or not) and
//! the latency probes between it, from the client CPU, for the step's duration.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::lab::CLIENT_CPU;
use super::live::{CycleGenerator, LIVE_CHUNK, LiveGenerator, unpaced_chunk};
use super::net::{self, Batch, Sender, Sent};
use super::probes::{Probes, Shared};
use super::txstamp::ProbeSender;

pub(super) struct Generated {
    /// Frames of the load and probes sent.
    pub(super) sent: u64,
    /// Of `sent`, the load's.
    pub(super) load: u64,
    pub(super) refused: u64,
    pub(super) probes: u64,
    /// Probes the client's veth refused (the node's ring was full): they never reached it.
    pub(super) probes_refused: u64,
    /// Runs the cycling generator's pacer held back (0 for every other load).
    pub(super) held: u64,
    pub(super) elapsed: Duration,
}

/// The load of one step and how it is sent.
pub(super) enum Load<'a> {
    /// Live-frames generator, client ifindex, the one frame it sends (several go `Cycled`).
    Live(&'a LiveGenerator, u32, &'a [u8]),
    /// Live frames cycled frame by frame, client ifindex, the rate the program paces them at.
    Cycled(std::sync::Arc<CycleGenerator>, u32, Option<u64>),
    /// AF_PACKET batch.
    Packet(&'a [&'a [u8]]),
    /// AF_PACKET batch, at most this many frames in all (a reflected step's seeds), then only
    /// the probes until the step ends.
    Seeds(&'a [&'a [u8]], u64),
}

pub(super) fn generate(
    client_ns: &str,
    (sender, probe_sender): (&Sender, &ProbeSender),
    shared: &Shared,
    load: Load<'_>,
    probes: &[Vec<u8>],
    rate: Option<u64>,
    duration: Duration,
) -> Result<Generated> {
    net::pin_current_thread(CLIENT_CPU)?;
    net::raise_priority();
    // The live-frames generator resolves the interface in the caller's namespace.
    net::join_netns(client_ns)?;
    let limit = match load {
        Load::Seeds(_, total) => Some(total),
        _ => None,
    };
    let (mut batch, chunk, live, cycled) = match load {
        Load::Packet(frames) | Load::Seeds(frames, _) => {
            let b = Batch::new(frames);
            let n = b.len() as u64;
            (Some(b), n, None, None)
        }
        Load::Live(g, ifindex, frame) => (None, LIVE_CHUNK, Some((g, ifindex, frame)), None),
        Load::Cycled(c, ifindex, pace) => {
            c.pace(pace)?;
            let before = c.counts()?;
            (None, LIVE_CHUNK, None, Some((c, ifindex, before)))
        }
    };
    let live_frames = live.is_some() || cycled.is_some();
    let mut last_call: Option<(u64, Duration)> = None;
    let start = Instant::now();
    let (mut sent, mut refused, mut held, mut load) = (0u64, 0u64, 0u64, 0u64);
    // An unpaced live-frames call blocks this thread in the kernel for most of the step, so
    // probes then come from their own thread on the same CPU (the test run yields to it between
    // batches); with the paced AF_PACKET load they are interleaved here.
    let probes_sent = std::thread::scope(|s| -> Result<(u64, u64)> {
        let probe_thread = live_frames.then(|| {
            s.spawn(move || -> Result<(u64, u64, u64)> {
                net::pin_current_thread(CLIENT_CPU)?;
                net::raise_priority();
                let mut probing = Probes::new(probes);
                while start.elapsed() < duration {
                    probing.send_if_due(probe_sender, shared, Instant::now())?;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Ok((probing.attempts, probing.sent, probing.refused))
            })
        });
        let mut probing = Probes::new(probes);
        loop {
            let now = Instant::now();
            let elapsed = now - start;
            if elapsed >= duration {
                break;
            }
            if probe_thread.is_none() {
                probing.send_if_due(probe_sender, shared, now)?;
            }
            let due = match rate {
                None if live_frames => unpaced_chunk(last_call, duration.saturating_sub(elapsed)),
                None => chunk,
                Some(r) => {
                    let should = (r as f64 * elapsed.as_secs_f64()) as u64;
                    should
                        .saturating_sub(sent + refused + probing.sent + probing.refused)
                        .min(chunk)
                }
            };
            let due = limit.map_or(due, |l| due.min(l.saturating_sub(sent + refused)));
            if due == 0 {
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            if let Some(b) = batch.as_mut() {
                if b.len() == 0 {
                    std::thread::sleep(Duration::from_micros(20));
                    continue;
                }
                match sender.send(b, due as usize)? {
                    Sent::Frames(n) => sent += n as u64,
                    Sent::Refused => refused += 1,
                }
            } else if let Some((g, ifindex, frame)) = live {
                let call = Instant::now();
                g.send(frame, ifindex, due as u32)?;
                last_call = Some((due, call.elapsed()));
                sent += due;
            } else if let Some((c, ifindex, _)) = &cycled {
                let call = Instant::now();
                c.send(*ifindex, due as u32)?;
                last_call = Some((due, call.elapsed()));
            }
        }
        if let Some(t) = probe_thread {
            (probing.attempts, probing.sent, probing.refused) = t
                .join()
                .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        }
        if let Some((c, _, before)) = &cycled {
            // The program's own count: runs its pacer held back were not sent.
            let after = c.counts()?;
            sent += after.sent.saturating_sub(before.sent);
            held = after.held.saturating_sub(before.held);
        }
        load = sent;
        sent += probing.sent;
        refused += probing.refused;
        Ok((probing.attempts, probing.refused))
    })?;
    Ok(Generated {
        sent,
        load,
        refused,
        probes: probes_sent.0,
        probes_refused: probes_sent.1,
        held,
        elapsed: start.elapsed(),
    })
}
