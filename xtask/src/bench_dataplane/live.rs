//! The load generator: the kernel's XDP "live frames" mode of `BPF_PROG_TEST_RUN`. A two-
//! instruction XDP program returning XDP_TX runs on a frame `repeat` times; each run is really
//! transmitted out of the client veth (into the node's receive ring), from kernel space, with no
//! per-frame syscall or socket buffer. Used through raw `bpf(2)` calls: xtask needs no BPF crate.
//!
//! The node veth must have NAPI for frames sent this way: driver-mode XDP gives it, otherwise
//! GRO is switched on (`set_gro`), which is also what a real NIC's receive path looks like.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per batch inside the kernel (its maximum is 256).
const LIVE_BATCH: u32 = 256;

/// `r0 = XDP_TX (3); exit`.
const XDP_TX_PROGRAM: [u8; 16] = [0xb7, 0, 0, 0, 3, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];

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

/// The loaded XDP_TX program, used as an in-kernel frame generator.
pub struct LiveGenerator {
    prog: OwnedFd,
}

impl LiveGenerator {
    pub fn load() -> Result<LiveGenerator> {
        let license = b"GPL\0";
        let mut log = vec![0u8; 4096];
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, (XDP_TX_PROGRAM.len() / 8) as u32)
            .u64(8, XDP_TX_PROGRAM.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64);
        attr.0[48..56].copy_from_slice(b"bench_tx");
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: the kernel returned a new fd.
            Ok(fd) => Ok(LiveGenerator { prog: unsafe { OwnedFd::from_raw_fd(fd as i32) } }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                bail!(
                    "loading the XDP_TX generator program: {e} {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                )
            }
        }
    }

    /// Transmits `frame` `count` times out of interface `ifindex` (of the calling thread's
    /// namespace). Returns when all were handed to the device (the receiver may still drop them
    /// if its ring is full: that is loss at the responder).
    pub fn send(&self, frame: &[u8], ifindex: u32, count: u32) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u32; 6];
        ctx[1] = frame.len() as u32;
        ctx[3] = ifindex;
        let mut attr = Attr::new();
        attr.u32(0, self.prog.as_raw_fd() as u32)
            .u32(8, frame.len() as u32)
            .u64(16, frame.as_ptr() as u64)
            .u32(32, count)
            .u32(40, size_of_val(&ctx) as u32)
            .u64(48, ctx.as_ptr() as u64)
            .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
            .u32(72, LIVE_BATCH);
        if let Err(e) = bpf(BPF_PROG_TEST_RUN, &mut attr) {
            bail!("BPF_PROG_TEST_RUN (live frames, {count} × {} bytes): {e}", frame.len());
        }
        // Live mode reports no return value: delivery shows in the replies counted.
        Ok(())
    }
}

/// Switches GRO on or off for `ifname` in the calling thread's namespace (legacy SIOCETHTOOL
/// ETHTOOL_SGRO, so no ethtool binary is needed). On a veth, GRO on gives it NAPI.
pub fn set_gro(ifname: &str, on: bool) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
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
    let mut value = EthtoolValue { cmd: ETHTOOL_SGRO, data: u32::from(on) };
    let mut req = IfReq { name: [0; 16], data: &mut value, _pad: [0; 16] };
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
        bail!("ETHTOOL_SGRO {ifname}: {}", io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_fields_land_at_their_offsets() {
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304).u64(8, 0x1122_3344_5566_7788);
        assert_eq!(&a.0[4..8], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&a.0[8..16], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert!(a.0[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn generator_program_is_mov_r0_3_then_exit() {
        assert_eq!(XDP_TX_PROGRAM[0], 0xb7);
        assert_eq!(i32::from_le_bytes([3, 0, 0, 0]), 3);
        assert_eq!(&XDP_TX_PROGRAM[4..8], &3i32.to_le_bytes());
        assert_eq!(XDP_TX_PROGRAM[8], 0x95);
    }
}
