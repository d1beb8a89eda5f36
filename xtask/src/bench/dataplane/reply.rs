//! The client end's XDP program: counts and drops the replies to the load (sent to the
//! generator's MAC) and passes everything else (probe replies go on to the timestamping ring); in
//! a reflected step it sends each reply back rewritten into the next request instead. On two
//! cores the client shares its CPU with the generator: building an skb per reply there would
//! make the client, not the responder, the bottleneck.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Result, bail};

use super::programs;
use super::sys::{
    Attr, BPF_LINK_CREATE, BPF_LINK_UPDATE, BPF_XDP, XDP_FLAGS_DRV_MODE, array_map, bpf, load_xdp,
    map_lookup,
};

/// Counts (and drops) frames sent to one MAC on an interface, in XDP driver mode; during a
/// reflected step it sends each of them back as a request instead (`reflect`).
pub struct ReplyCounter {
    map: OwnedFd,
    prog: OwnedFd,
    /// The attachment lives as long as this fd: dropping it detaches the program.
    link: OwnedFd,
    mac: [u8; 6],
    /// The reflector in place of the counter, while one is.
    reflector: Option<OwnedFd>,
    last: [u64; 2],
}

impl ReplyCounter {
    /// Attaches to `ifindex` of the calling thread's namespace.
    pub fn attach(ifindex: u32, mac: [u8; 6]) -> Result<ReplyCounter> {
        // Replies counted, then frames reflected (`programs::REFLECTED`).
        let map = array_map(16, "the reply counter map")?;
        let prog = load_xdp(
            &programs::counter_program(mac, map.as_raw_fd()),
            "bench_count",
        )?;
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
            prog,
            link,
            mac,
            reflector: None,
            last: [0; 2],
        };
        c.last = c.read()?;
        Ok(c)
    }

    fn read(&self) -> Result<[u64; 2]> {
        let mut value = [0u8; 16];
        if let Err(e) = map_lookup(&self.map, &mut value) {
            bail!("reading the reply counter: {e}");
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[at..at + 8]);
            u64::from_ne_bytes(b)
        };
        Ok([word(0), word(programs::REFLECTED as usize)])
    }

    /// Slot `k` of the map (0: replies, 1: reflected) since the last call for that slot.
    fn take_slot(&mut self, k: usize) -> Result<u64> {
        let now = self.read()?[k];
        let delta = now.saturating_sub(self.last[k]);
        self.last[k] = now;
        Ok(delta)
    }

    /// Replies counted since the last call.
    pub fn take(&mut self) -> Result<u64> {
        self.take_slot(0)
    }

    /// Frames sent back as requests since the last call.
    pub fn take_reflected(&mut self) -> Result<u64> {
        self.take_slot(1)
    }

    /// Waits until no reply has been counted for `quiet` (at most `limit`): after a reflected
    /// step, a slow responder still holds requests of the loop and answers them later, and
    /// those answers belong to that step, not to whatever comes next.
    pub fn settle(&self, quiet: Duration, limit: Duration) -> Result<bool> {
        let start = std::time::Instant::now();
        let mut last = self.read()?[0];
        while start.elapsed() < limit {
            std::thread::sleep(quiet);
            let now = self.read()?[0];
            if now == last {
                return Ok(true);
            }
            last = now;
        }
        Ok(false)
    }

    /// With `Some(request)`, every reply from now on is rewritten into `request` and sent back
    /// (and still counted); with `None`, replies are counted and dropped again. The program is
    /// swapped in place on the attachment (`BPF_LINK_UPDATE`), so no frame meets no program.
    pub fn reflect(&mut self, request: Option<&[u8]>) -> Result<()> {
        let next = match request {
            Some(frame) => Some(load_xdp(
                &programs::reflector_program(self.mac, self.map.as_raw_fd(), frame)?,
                "bench_reflect",
            )?),
            None => None,
        };
        let fd = next.as_ref().unwrap_or(&self.prog).as_raw_fd();
        let mut attr = Attr::new();
        attr.u32(0, self.link.as_raw_fd() as u32).u32(4, fd as u32);
        if let Err(e) = bpf(BPF_LINK_UPDATE, &mut attr) {
            bail!("swapping the client's XDP program: {e}");
        }
        self.reflector = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::sys::test_run;

    #[test]
    fn the_reflector_sends_each_reply_back_as_the_request_and_counts_both() {
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let request: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(7)).collect();
        let map = array_map(16, "test map").unwrap();
        let prog = load_xdp(
            &programs::reflector_program(mac, map.as_raw_fd(), &request).unwrap(),
            "test_reflect",
        )
        .unwrap();
        let read = || {
            let mut v = [0u8; 16];
            map_lookup(&map, &mut v).unwrap();
            (
                u64::from_ne_bytes(v[..8].try_into().unwrap()),
                u64::from_ne_bytes(v[8..].try_into().unwrap()),
            )
        };
        // Replies of every length the responders send (42-byte ARP from the kernel, 60 padded,
        // 86 for an NA): each leaves as the request, exactly.
        for (k, len) in [42usize, 60, 86].into_iter().enumerate() {
            let mut reply = vec![0xaa; len];
            reply[..6].copy_from_slice(&mac);
            let (action, out) = test_run(&prog, &reply);
            assert_eq!(action, 3, "{len}-byte reply: XDP_TX");
            assert_eq!(out, request, "{len}-byte reply");
            assert_eq!(read(), (k as u64 + 1, k as u64 + 1));
        }
        // A frame for another MAC (a probe's reply) passes untouched and uncounted.
        let mut other = vec![0xbb; 60];
        other[5] = 0x43;
        let (action, out) = test_run(&prog, &other);
        assert_eq!((action, out), (2, other));
        assert_eq!(read(), (3, 3));
    }
}
