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
//!
//! The node veth must have NAPI for frames sent this way: driver-mode XDP gives it, otherwise
//! GRO is switched on (`set_gro`), which is also what a real NIC's receive path looks like.
//!
//! Also here: `ReplyCounter`, a tiny XDP program on the client end that counts and drops the
//! replies to the load (sent to the generator's MAC) and passes everything else (probe replies
//! go on to the timestamping ring). On two cores the client shares its CPU with the generator;
//! building an skb per reply there would make the client, not the responder, the bottleneck.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per batch inside the kernel (its maximum is 256). Each batch reaches the veth as one
/// burst and its receive ring holds 256 frames: with 256 the bursts overflowed the ring while
/// the responder's CPU was half idle (ARP: 16–22% loss at 58% CPU); 128 keeps the burst inside
/// the ring and still lets the generator offer 2–2.5M/s beside the replies it absorbs.
const LIVE_BATCH: u32 = 128;

/// A `bpf_attr` big enough for the commands used here; fields written at their offsets.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, offset: usize, v: u32) -> &mut Attr {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, offset: usize, v: u64) -> &mut Attr {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The in-kernel frame generator: one loaded program per distinct frame, each writing that frame
/// and returning XDP_TX.
pub struct LiveGenerator {
    programs: Mutex<HashMap<Vec<u8>, OwnedFd>>,
}

impl LiveGenerator {
    /// Programs are loaded on first use, one per distinct frame.
    pub fn new() -> LiveGenerator {
        LiveGenerator {
            programs: Mutex::new(HashMap::new()),
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
            let p = load_xdp(&generator_program(frame)?, "bench_tx")?;
            programs.entry(frame.to_vec()).or_insert(p)
        };
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
        // Live mode reports no return value: delivery shows in the replies counted.
        Ok(())
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

fn load_xdp(insns: &[u8], name: &str) -> Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 16384];
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, (insns.len() / 8) as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "loading XDP program {name}: {e} {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        }
    }
}

/// One eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [
        code,
        (src << 4) | (dst & 0xf),
        o[0],
        o[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

/// Longest frame the generator program writes (the test run's page has room for far more; this
/// bounds the program at 2 + MAX/4 instructions).
const MAX_GENERATED_FRAME: usize = 256;

/// XDP program for the live-frames test run: if the frame is at least `frame.len()` bytes, write
/// `frame` into it (4-byte stores, then 2 and 1) and return XDP_TX; otherwise XDP_DROP.
fn generator_program(frame: &[u8]) -> Result<Vec<u8>> {
    if frame.is_empty() || frame.len() > MAX_GENERATED_FRAME {
        bail!(
            "live generator: frame of {} bytes (1..={MAX_GENERATED_FRAME})",
            frame.len()
        );
    }
    let stores: Vec<[u8; 8]> = {
        let mut v = Vec::new();
        let mut at = 0usize;
        while at < frame.len() {
            let left = frame.len() - at;
            let (code, width) = match left {
                4.. => (0x62, 4),   // *(u32 *)(r2 + at) = imm
                2 | 3 => (0x6a, 2), // *(u16 *)(r2 + at) = imm
                _ => (0x72, 1),     // *(u8 *)(r2 + at) = imm
            };
            let mut imm = [0u8; 4];
            imm[..width].copy_from_slice(&frame[at..at + width]);
            v.push(insn(code, 2, 0, at as i16, i32::from_le_bytes(imm)));
            at += width;
        }
        v
    };
    let mut prog = vec![
        insn(0x61, 2, 1, 0, 0),                  // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                  // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                  // r4 = r2
        insn(0x07, 4, 0, 0, frame.len() as i32), // r4 += len
        // if r4 > r3 goto drop (skips the stores and the XDP_TX exit)
        insn(0x2d, 4, 3, (stores.len() + 2) as i16, 0),
    ];
    prog.extend(stores);
    prog.extend([
        insn(0xb7, 0, 0, 0, 3), // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0), // exit
        insn(0xb7, 0, 0, 0, 1), // drop: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0), // exit
    ]);
    Ok(prog.concat())
}

/// XDP program: frames sent to `mac` are counted in array map `map_fd`[0] and dropped;
/// everything else passes.
fn counter_program(mac: [u8; 6], map_fd: i32) -> Vec<u8> {
    let head = i32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = i32::from(u16::from_le_bytes([mac[4], mac[5]]));
    let prog: [[u8; 8]; 24] = [
        insn(0xbf, 6, 1, 0, 0),      // 0: r6 = ctx
        insn(0x61, 2, 6, 0, 0),      // 1: r2 = ctx->data
        insn(0x61, 3, 6, 4, 0),      // 2: r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),      // 3: r4 = r2
        insn(0x07, 4, 0, 0, 6),      // 4: r4 += 6
        insn(0x2d, 4, 3, 4, 0),      // 5: if r4 > r3 goto 10 (pass)
        insn(0x61, 5, 2, 0, 0),      // 6: r5 = *(u32 *)(data + 0)
        insn(0x55, 5, 0, 2, head),   // 7: if r5 != mac[0..4] goto 10
        insn(0x69, 5, 2, 4, 0),      // 8: r5 = *(u16 *)(data + 4)
        insn(0x15, 5, 0, 2, tail),   // 9: if r5 == mac[4..6] goto 12 (count)
        insn(0xb7, 0, 0, 0, 2),      // 10: r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),      // 11: exit
        insn(0x62, 10, 0, -4, 0),    // 12: *(u32 *)(fp - 4) = 0 (key)
        insn(0xbf, 2, 10, 0, 0),     // 13: r2 = fp
        insn(0x07, 2, 0, 0, -4),     // 14: r2 += -4
        insn(0x18, 1, 1, 0, map_fd), // 15: r1 = map (ld_imm64, pseudo map fd)
        insn(0x00, 0, 0, 0, 0),      // 16: (second half)
        insn(0x85, 0, 0, 0, 1),      // 17: call map_lookup_elem
        insn(0x15, 0, 0, 2, 0),      // 18: if r0 == 0 goto 21
        insn(0xb7, 1, 0, 0, 1),      // 19: r1 = 1
        insn(0xdb, 0, 1, 0, 0),      // 20: lock *(u64 *)(r0 + 0) += r1
        insn(0xb7, 0, 0, 0, 1),      // 21: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),      // 22: exit
        insn(0x95, 0, 0, 0, 0),      // 23: (unreachable padding exit)
    ];
    prog[..23].concat()
}

/// Counts (and drops) frames sent to one MAC on an interface, in XDP driver mode.
pub struct ReplyCounter {
    map: OwnedFd,
    _prog: OwnedFd,
    /// The attachment lives as long as this fd: dropping it detaches the program.
    _link: OwnedFd,
    last: u64,
}

impl ReplyCounter {
    /// Attaches to `ifindex` of the calling thread's namespace.
    pub fn attach(ifindex: u32, mac: [u8; 6]) -> Result<ReplyCounter> {
        let mut attr = Attr::new();
        attr.u32(0, BPF_MAP_TYPE_ARRAY)
            .u32(4, 4)
            .u32(8, 8)
            .u32(12, 1);
        let map = match bpf(BPF_MAP_CREATE, &mut attr) {
            // SAFETY: new fd from the kernel.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            Err(e) => bail!("creating the reply counter map: {e}"),
        };
        let prog = load_xdp(&counter_program(mac, map.as_raw_fd()), "bench_count")?;
        let mut attr = Attr::new();
        attr.u32(0, prog.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, BPF_XDP)
            .u32(12, XDP_FLAGS_DRV_MODE);
        let link = match bpf(BPF_LINK_CREATE, &mut attr) {
            // SAFETY: new fd from the kernel.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            Err(e) => {
                bail!("attaching the reply counter (XDP driver mode, ifindex {ifindex}): {e}")
            }
        };
        let mut c = ReplyCounter {
            map,
            _prog: prog,
            _link: link,
            last: 0,
        };
        c.last = c.read()?;
        Ok(c)
    }

    fn read(&self) -> Result<u64> {
        let key = 0u32;
        let mut value = 0u64;
        let mut attr = Attr::new();
        attr.u32(0, self.map.as_raw_fd() as u32)
            .u64(8, &raw const key as u64)
            .u64(16, &raw mut value as u64);
        if let Err(e) = bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            bail!("reading the reply counter: {e}");
        }
        Ok(value)
    }

    /// Frames counted since the last call.
    pub fn take(&mut self) -> Result<u64> {
        let now = self.read()?;
        let delta = now.saturating_sub(self.last);
        self.last = now;
        Ok(delta)
    }
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

    #[test]
    fn attr_fields_land_at_their_offsets() {
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304).u64(8, 0x1122_3344_5566_7788);
        assert_eq!(&a.0[4..8], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&a.0[8..16], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert!(a.0[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn counter_program_matches_the_mac_and_jumps_inside() {
        let mac = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];
        let p = counter_program(mac, 7);
        assert_eq!(p.len() % 8, 0);
        let n = p.len() / 8;
        let at = |i: usize| &p[i * 8..i * 8 + 8];
        // The compared immediates are the MAC as the program loads it (little-endian loads).
        assert_eq!(&at(7)[4..8], &[0x02, 0xaa, 0x00, 0x00]);
        assert_eq!(&at(9)[4..6], &[0x00, 0x01]);
        // Map fd in the ld_imm64, marked as a pseudo map fd (src register 1).
        assert_eq!(at(15)[1] >> 4, 1);
        assert_eq!(
            i32::from_le_bytes([at(15)[4], at(15)[5], at(15)[6], at(15)[7]]),
            7
        );
        // Every conditional jump lands inside the program; the last instruction exits.
        for i in 0..n {
            let code = at(i)[0];
            if matches!(code, 0x15 | 0x2d | 0x55) {
                let off = i16::from_le_bytes([at(i)[2], at(i)[3]]);
                let target = i as i64 + 1 + i64::from(off);
                assert!(
                    (0..n as i64).contains(&target),
                    "insn {i} jumps to {target}"
                );
            }
        }
        assert_eq!(at(n - 1)[0], 0x95);
    }

    #[test]
    fn generator_program_writes_the_whole_frame_then_transmits() {
        for len in [1usize, 2, 3, 4, 5, 42, 60, 86, 255, 256] {
            let frame: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let p = generator_program(&frame).unwrap();
            let n = p.len() / 8;
            let at = |i: usize| &p[i * 8..i * 8 + 8];
            // Replaying the stores onto a zeroed buffer gives back exactly the frame.
            let mut buf = vec![0u8; len + 8];
            for i in 0..n {
                let (code, off) = (at(i)[0], i16::from_le_bytes([at(i)[2], at(i)[3]]) as usize);
                let width = match code {
                    0x62 => 4,
                    0x6a => 2,
                    0x72 => 1,
                    _ => continue,
                };
                assert_eq!(at(i)[1] & 0xf, 2, "stores go through r2 (data)");
                buf[off..off + width].copy_from_slice(&at(i)[4..4 + width]);
            }
            assert_eq!(&buf[..len], &frame[..], "len {len}");
            assert!(
                buf[len..].iter().all(|&b| b == 0),
                "len {len}: wrote past the frame"
            );
            // The bounds check compares data + len with data_end and jumps to the drop exit.
            assert_eq!(
                i32::from_le_bytes([at(3)[4], at(3)[5], at(3)[6], at(3)[7]]),
                len as i32
            );
            let target = 5 + i16::from_le_bytes([at(4)[2], at(4)[3]]) as usize;
            assert_eq!(at(target)[0], 0xb7);
            assert_eq!(at(target)[4], 1, "too short a frame is dropped");
            assert_eq!((at(target - 2)[0], at(target - 2)[4]), (0xb7, 3), "XDP_TX");
            assert_eq!(at(n - 1)[0], 0x95);
        }
        assert!(generator_program(&[]).is_err());
        assert!(generator_program(&[0; 257]).is_err());
    }
}
