//! The flood's generator where the kernel refuses live frames. A second veth pair in the client
//! namespace (`Lab::flood_ifs`) carries frames in a circle: the peer's XDP program
//! (`programs::flood_loop_program`) rewrites each frame into the next junk frame and broadcasts
//! it to the client's veth and back round the circle, at the rate its pacer lets out; the other
//! end sends everything straight back (`programs::bounce_program`). A few frames seeded by
//! AF_PACKET keep it going for the whole step with no syscall per frame, and the frames reach
//! the node as XDP frames, as live frames did: an AF_PACKET sender alone tops out near 1M/s
//! here, and its frames cost the node's CPU a copy each before XDP sees them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Result;

use super::pacer::{CycleCounts, PacerMap};
use super::programs::{self, flood_loop};
use super::sys::{attach_xdp, devmap, load_xdp, monotonic_ns};

/// Frames seeded into the circle at the start of a flood. With 8 copies per turn, 32 in flight
/// reached 2.1–2.4M junk frames/s here with 99.0–99.2% of the valid probes answered by driver
/// mode; 16 reached 1.2–1.4M/s (99.7%); 64 reached 1.8–2.7M/s, but the larger bursts (up to a
/// NAPI poll's 64 turns, 512 frames) overflowed the node's 256-slot ring while its NAPI thread
/// woke, and only 92–94% of the probes got in.
pub const FLOOD_IN_FLIGHT: u64 = 32;

/// Frames to the client's veth per turn of the circle (copies of the one frame written). One
/// turn costs the client CPU about a microsecond here: with one copy the circle reached 0.9M/s;
/// with 16 copies and 16 in flight, 1.4–1.6M/s with more probes refused than with 8.
pub const FLOOD_COPIES: u64 = 8;

pub struct FloodLoop {
    map: PacerMap,
    _devmap: OwnedFd,
    /// The programs stay attached as long as these links are held.
    _links: [OwnedFd; 2],
}

impl FloodLoop {
    /// Attaches the circle in the calling thread's namespace: `loop_if` broadcasts `frames` in
    /// turn to `out_if` (the client's veth) and to itself, `bounce_if` (its peer) sends them
    /// back. Nothing flows until frames are sent on `bounce_if` after [`FloodLoop::arm`].
    pub fn attach(
        frames: &[Vec<u8>],
        loop_if: u32,
        bounce_if: u32,
        out_if: u32,
    ) -> Result<FloodLoop> {
        let map = PacerMap::new(flood_loop::VALUE_SIZE, "the flood loop's map")?;
        let mut ifs = vec![out_if; FLOOD_COPIES as usize];
        ifs.push(loop_if);
        let targets = devmap(&ifs, "the flood loop's device map")?;
        let circle = load_xdp(
            &programs::flood_loop_program(frames, map.map.as_raw_fd(), targets.as_raw_fd())?,
            "bench_flood",
        )?;
        let bounce = load_xdp(&programs::bounce_program(), "bench_bounce")?;
        // The bouncing end first: the circle's first frames must find it.
        let bounce_link = attach_xdp(&bounce, bounce_if, "the flood loop's bouncing end")?;
        let loop_link = attach_xdp(&circle, loop_if, "the flood loop")?;
        Ok(FloodLoop {
            map,
            _devmap: targets,
            _links: [bounce_link, loop_link],
        })
    }

    /// Paces the flood at `rate` per second (`None`: as fast as the circle goes) and ends it
    /// `until` from now: after that every frame of the circle is dropped.
    pub fn arm(&self, rate: Option<u64>, until: Duration) -> Result<()> {
        let [interval, next] = PacerMap::pacing(rate.map(|r| r.div_ceil(FLOOD_COPIES)))?;
        let deadline = monotonic_ns() + until.as_nanos() as u64;
        self.map
            .set(&[interval, next, (flood_loop::DEADLINE, deadline)])
    }

    pub fn counts(&self) -> Result<CycleCounts> {
        let c = self.map.counts()?;
        Ok(CycleCounts {
            sent: c.sent * FLOOD_COPIES,
            held: c.held,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::sys::test_run;

    /// The circle's program over `frames`, its device map pointing at the loopback device.
    fn circle(frames: &[Vec<u8>]) -> (OwnedFd, PacerMap, OwnedFd) {
        let map = PacerMap::new(flood_loop::VALUE_SIZE, "test map").unwrap();
        let targets = devmap(&[1, 1], "test device map").unwrap();
        let prog = load_xdp(
            &programs::flood_loop_program(frames, map.map.as_raw_fd(), targets.as_raw_fd())
                .unwrap(),
            "test_flood",
        )
        .unwrap();
        (prog, map, targets)
    }

    #[test]
    fn the_circle_writes_each_frame_in_turn_whatever_came_round() {
        let frames = vec![vec![0x11; 42], vec![0x22; 60], vec![0x33; 86]];
        let (prog, map, _targets) = circle(&frames);
        map.set(&[(flood_loop::DEADLINE, u64::MAX)]).unwrap();
        // Whatever length comes round, the next frame in turn leaves, broadcast (XDP_REDIRECT).
        for (k, came) in [60usize, 86, 42, 42, 60, 86].into_iter().enumerate() {
            let (action, out) = test_run(&prog, &vec![0xee; came]);
            assert_eq!(action, 4, "turn {k}: XDP_REDIRECT");
            assert_eq!(out, frames[k % 3], "turn {k}");
        }
        assert_eq!(map.counts().unwrap(), CycleCounts { sent: 6, held: 0 });
    }

    #[test]
    fn the_pacer_sends_early_turns_round_again_and_the_deadline_ends_the_circle() {
        let frames = vec![vec![0x11; 60]];
        let (prog, map, _targets) = circle(&frames);
        // One frame a second: a burst's credit goes, the next turn is held and goes round
        // (the credit, 31 s, is far shorter than any uptime that runs the tests).
        let mut fields = PacerMap::pacing(Some(1)).unwrap().to_vec();
        fields.push((flood_loop::DEADLINE, u64::MAX));
        map.set(&fields).unwrap();
        let came = vec![0xee; 60];
        let burst = programs::cycle::BURST as u64;
        for _ in 0..burst {
            assert_eq!(test_run(&prog, &came), (4, frames[0].clone()));
        }
        assert_eq!(
            test_run(&prog, &came),
            (3, came.clone()),
            "held: XDP_TX, unchanged"
        );
        assert_eq!(
            map.counts().unwrap(),
            CycleCounts {
                sent: burst,
                held: 1
            }
        );
        // Past the deadline every frame is dropped, neither sent nor held.
        map.set(&[(flood_loop::DEADLINE, monotonic_ns())]).unwrap();
        assert_eq!(test_run(&prog, &came).0, 1, "XDP_DROP");
        assert_eq!(
            map.counts().unwrap(),
            CycleCounts {
                sent: burst,
                held: 1
            }
        );
    }
}
