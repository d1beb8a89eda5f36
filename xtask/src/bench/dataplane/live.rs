//! The load generator: the kernel's XDP "live frames" mode of `BPF_PROG_TEST_RUN`. A small XDP
//! program returning XDP_TX runs on a frame `repeat` times; each run is really transmitted out of
//! the client veth (into the node's receive ring), from kernel space, with no per-frame syscall or
//! socket buffer. Used through raw `bpf(2)` calls: xtask needs no BPF crate.
//!
//! The kernel initialises a page of its test-run page pool with the frame only when the page is
//! first allocated: a recycled page keeps whatever the last user wrote into it. An XDP responder
//! rewrites the request in place into its reply (XDP_TX), and the page comes back to the pool, so
//! the generator program writes the whole request into the frame on every run (one program per
//! distinct frame, the bytes as store immediates); otherwise it would send replies as "requests".
//! Several frames (the bad-input flood) go through one `CycleGenerator`, whose program writes
//! them in turn and can pace itself; the programs' bytes are built in `programs`.
//!
//! The node veth must have NAPI for frames sent this way: driver-mode XDP gives it, otherwise
//! GRO is switched on (`set_gro`), which is also what a real NIC's receive path looks like.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};

use super::pacer::{CycleCounts, PacerMap};
use super::programs;
use super::sys::{Attr, BPF_F_TEST_XDP_LIVE_FRAMES, BPF_PROG_TEST_RUN, bpf, load_xdp};

/// Frames per batch inside the kernel (its maximum is 256). Each batch reaches the veth as one
/// burst and its receive ring holds 256 frames: with 256 the bursts overflowed the ring while
/// the responder's CPU was half idle (ARP: 16–22% loss at 58% CPU); 128 keeps the burst inside
/// the ring and still lets the generator offer 2–2.5M/s beside the replies it absorbs.
const LIVE_BATCH: u32 = 128;

/// The in-kernel frame generator: one loaded program per distinct frame, each writing that frame
/// and returning XDP_TX.
pub struct LiveGenerator {
    programs: Mutex<HashMap<Vec<u8>, OwnedFd>>,
    cycles: Mutex<HashMap<Vec<Vec<u8>>, std::sync::Arc<CycleGenerator>>>,
}

impl LiveGenerator {
    /// Programs are loaded on first use, one per distinct frame.
    pub fn new() -> LiveGenerator {
        LiveGenerator {
            programs: Mutex::new(HashMap::new()),
            cycles: Mutex::new(HashMap::new()),
        }
    }

    /// Transmits `frame` `count` times out of interface `ifindex` (of the calling thread's
    /// namespace). Returns when all were handed to the device (the receiver may still drop them
    /// if its ring is full: that is loss at the responder).
    pub fn send(&self, frame: &[u8], ifindex: u32, count: u32) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let mut programs = self
            .programs
            .lock()
            .map_err(|_| anyhow::anyhow!("live generator programs poisoned"))?;
        let prog = if let Some(p) = programs.get(frame) {
            p
        } else {
            let p = load_xdp(&programs::generator_program(frame)?, "bench_tx")?;
            programs.entry(frame.to_vec()).or_insert(p)
        };
        run_live(prog, frame, ifindex, count)?;
        // Live mode reports no return value: delivery shows in the replies counted.
        Ok(())
    }

    /// The cycling generator for `frames` (created on first use, then kept with its counters).
    pub fn cycled(&self, frames: &[Vec<u8>]) -> Result<std::sync::Arc<CycleGenerator>> {
        let mut cycles = self
            .cycles
            .lock()
            .map_err(|_| anyhow::anyhow!("live generator programs poisoned"))?;
        if let Some(c) = cycles.get(frames) {
            return Ok(c.clone());
        }
        let c = std::sync::Arc::new(CycleGenerator::new(frames)?);
        cycles.insert(frames.to_vec(), c.clone());
        Ok(c)
    }
}

/// Why this kernel refuses live frames, or `None` where it allows them; checked once per
/// process with one live run of a program that drops its frame (nothing is sent). Some kernels
/// refuse the mode outright (`EPERM` for root, while plain test runs work).
pub fn live_frames_refused() -> Option<String> {
    static REFUSED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    REFUSED
        .get_or_init(|| {
            let drop_all = [
                programs::insn(0xb7, 0, 0, 0, 1), // r0 = XDP_DROP
                programs::insn(0x95, 0, 0, 0, 0), // exit
            ]
            .concat();
            let prog = match load_xdp(&drop_all, "bench_probe") {
                Ok(p) => p,
                Err(e) => return Some(format!("{e:#}")),
            };
            // No interface: the test run takes the namespace's loopback, and drops the frame.
            run_live(&prog, &[0u8; 60], 0, 1)
                .err()
                .map(|e| format!("{e:#}"))
        })
        .clone()
}

/// Runs `prog` on `frame` `count` times in live-frames mode: each run it returns XDP_TX for is
/// transmitted out of `ifindex` (of the calling thread's namespace).
fn run_live(prog: &OwnedFd, frame: &[u8], ifindex: u32, count: u32) -> Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u32; 6];
    ctx[1] = frame.len() as u32;
    ctx[3] = ifindex;
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u32(32, count)
        .u32(40, size_of_val(&ctx) as u32)
        .u64(48, ctx.as_ptr() as u64)
        .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
        .u32(72, LIVE_BATCH);
    if let Err(e) = bpf(BPF_PROG_TEST_RUN, &mut attr) {
        bail!(
            "BPF_PROG_TEST_RUN (live frames, {count} × {} bytes): {e}",
            frame.len()
        );
    }
    Ok(())
}

/// A live-frames generator over several frames, one after the other frame by frame (so even
/// one long call mixes them all), optionally paced in the program itself: a flood at a set rate
/// in small bursts, which no per-call pacing can give (each call costs the generator
/// milliseconds). Counts what it transmitted, so the step's "sent" is the program's own figure.
pub struct CycleGenerator {
    map: PacerMap,
    prog: OwnedFd,
    /// The test run's frame: as long as the longest (the program shortens it per frame).
    template: Vec<u8>,
}

impl CycleGenerator {
    fn new(frames: &[Vec<u8>]) -> Result<CycleGenerator> {
        let map = PacerMap::new(programs::cycle::VALUE_SIZE, "the cycling generator's map")?;
        let prog = load_xdp(
            &programs::cycle_program(frames, map.map.as_raw_fd())?,
            "bench_cycle",
        )?;
        let template = frames
            .iter()
            .max_by_key(|f| f.len())
            .cloned()
            .unwrap_or_default();
        Ok(CycleGenerator {
            map,
            prog,
            template,
        })
    }

    /// Paces the frames at `rate` per second from now on (`None`: unpaced); counters kept.
    pub fn pace(&self, rate: Option<u64>) -> Result<()> {
        self.map.set(&PacerMap::pacing(rate)?)
    }

    /// `count` runs of the program (frames sent plus runs held back by the pacer).
    pub fn send(&self, ifindex: u32, count: u32) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        run_live(&self.prog, &self.template, ifindex, count)
    }

    pub fn counts(&self) -> Result<CycleCounts> {
        self.map.counts()
    }
}

/// Frames per live-frames call at most (about a millisecond of load at the top rates).
pub(super) const LIVE_CHUNK: u64 = 1024;
/// Frames of the first live-frames call of an unpaced step. Each call costs the generator a
/// pause: the kernel sets up and tears down the call's page pool, and the thread sleeps through
/// RCU grace periods (`perf sched` on this rig: two sleeps of ~8 ms per call, 18% of a second of
/// 262,144-frame calls), while the responder's ring sits empty. So after the first call, which
/// measures the rate, each call is sized to the time left in the step.
const LIVE_UNPACED_FIRST: u64 = 1 << 18;
/// Bounds of an unpaced call sized to the time left: the smallest keeps the pauses rare near
/// the step's end (a step overruns by at most one such call), the largest keeps a call within
/// what `BPF_PROG_TEST_RUN` accepts with room to spare.
const LIVE_UNPACED_MIN: u64 = 1 << 16;
const LIVE_UNPACED_MAX: u64 = 1 << 24;

/// Frames for the next unpaced live-frames call: enough to fill `left` at the rate the last
/// call reached (`sent` frames in `took`), within the bounds above.
pub(super) fn unpaced_chunk(last: Option<(u64, Duration)>, left: Duration) -> u64 {
    let Some((sent, took)) = last else {
        return LIVE_UNPACED_FIRST;
    };
    let rate = sent as f64 / took.as_secs_f64().max(1e-6);
    ((rate * left.as_secs_f64()) as u64).clamp(LIVE_UNPACED_MIN, LIVE_UNPACED_MAX)
}

/// Switches GRO on or off for `ifname` in the calling thread's namespace (legacy SIOCETHTOOL
/// ETHTOOL_SGRO, so no ethtool binary is needed). On a veth, GRO on gives it NAPI.
pub fn set_gro(ifname: &str, on: bool) -> Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    set_feature(ifname, ETHTOOL_SGRO, "ETHTOOL_SGRO", on)
}

/// Switches TCP segmentation offload (every TSO flavour) on or off for `ifname` in the caller's
/// namespace.
pub fn set_tso(ifname: &str, on: bool) -> Result<()> {
    const ETHTOOL_STSO: u32 = 0x1f;
    set_feature(ifname, ETHTOOL_STSO, "ETHTOOL_STSO", on)
}

/// One legacy ethtool feature switch (`cmd`, named `name` in errors).
fn set_feature(ifname: &str, cmd: u32, name: &str, on: bool) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    if ifname.len() >= 16 {
        bail!("interface name {ifname} too long");
    }
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &raw mut value,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket for the ioctl; closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        bail!("socket: {}", io::Error::last_os_error());
    }
    // SAFETY: fd just created.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: req is a valid ifreq whose data points at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } != 0 {
        bail!("{name} {ifname}: {}", io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::sys::test_run;

    #[test]
    fn unpaced_calls_fill_the_time_left_within_bounds() {
        let left = Duration::from_millis(1500);
        assert_eq!(unpaced_chunk(None, left), LIVE_UNPACED_FIRST);
        // 2M/s measured, 1.5 s left: one call of 3M frames.
        let last = Some((200_000, Duration::from_millis(100)));
        assert_eq!(unpaced_chunk(last, left), 3_000_000);
        assert_eq!(
            unpaced_chunk(last, Duration::from_millis(1)),
            LIVE_UNPACED_MIN
        );
        assert_eq!(
            unpaced_chunk(Some((1 << 24, Duration::from_millis(1))), left),
            LIVE_UNPACED_MAX
        );
        assert_eq!(
            unpaced_chunk(Some((1000, Duration::ZERO)), left),
            LIVE_UNPACED_MAX,
            "a call too short to time reads as fast, not as a division by zero"
        );
    }

    /// Runs the generator's program once on its template, outside live mode: XDP action, frame.
    fn run_once(g: &CycleGenerator) -> (u32, Vec<u8>) {
        test_run(&g.prog, &g.template)
    }

    #[test]
    fn cycling_generator_sends_each_frame_in_turn_then_paces_in_bursts() {
        let frames: Vec<Vec<u8>> = [60usize, 34, 86, 35]
            .iter()
            .enumerate()
            .map(|(k, &len)| (0..len).map(|i| (i * 3 + k * 50) as u8).collect())
            .collect();
        let g = CycleGenerator::new(&frames).unwrap();
        for round in 0..2 {
            for (k, frame) in frames.iter().enumerate() {
                let (action, out) = run_once(&g);
                assert_eq!(action, 3, "round {round} frame {k}: XDP_TX");
                assert_eq!(&out, frame, "round {round} frame {k}");
            }
        }
        assert_eq!(g.counts().unwrap(), CycleCounts { sent: 8, held: 0 });
        // Ten frames a second: a burst of BURST, then held until 100 ms have passed.
        g.pace(Some(10)).unwrap();
        let sent = (0..40).filter(|_| run_once(&g).0 == 3).count() as u64;
        assert_eq!(sent, programs::cycle::BURST as u64);
        assert_eq!(
            g.counts().unwrap(),
            CycleCounts {
                sent: 8 + sent,
                held: 40 - sent
            }
        );
        std::thread::sleep(Duration::from_millis(250));
        let later = (0..10).filter(|_| run_once(&g).0 == 3).count();
        assert!(
            (2..=3).contains(&later),
            "{later} let out after 250 ms at 10/s"
        );
        g.pace(None).unwrap();
        assert!((0..10).all(|_| run_once(&g).0 == 3), "unpaced again");
    }
}
