//! The client end's XDP program: counts and drops the replies to the load (sent to the
//! generator's MAC) and passes everything else (probe replies go on to the timestamping ring); in
//! a reflected step it sends each reply back rewritten into the next request instead. On two
//! cores the client shares its CPU with the generator: building an skb per reply there would
//! make the client, not the responder, the bottleneck.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Result, bail};

use super::programs;
use super::programs::reflect_loop;
use super::sys::{
    Attr, BPF_LINK_UPDATE, array_map, attach_xdp, bpf, load_xdp, map_lookup, map_update,
    monotonic_ns, word,
};

/// Counts (and drops) frames sent to one MAC on an interface, in XDP driver mode; during a
/// reflected step it sends each of them back as a request instead (`reflect`).
pub struct ReplyCounter {
    map: OwnedFd,
    prog: OwnedFd,
    /// The attachment lives as long as this fd: dropping it detaches the program.
    link: OwnedFd,
    mac: [u8; 6],
    /// The reflector in place of the counter, while one is, and its loop's map
    /// ([`reflect_loop`]).
    reflector: Option<(OwnedFd, OwnedFd)>,
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
        let link = attach_xdp(&prog, ifindex, "the reply counter")?;
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
        Ok([word(&value, 0), word(&value, programs::REFLECTED)])
    }

    /// Slot `k` of the map (0: replies, 1: reflected) since the last call for that slot.
    fn take_slot(&mut self, k: usize) -> Result<u64> {
        let now = self.read()?[k];
        let delta = now.saturating_sub(self.last[k]);
        self.last[k] = now;
        Ok(delta)
    }

    /// Replies counted since the program was attached (the step's own count is [`Self::take`]).
    pub fn replies_total(&self) -> Result<u64> {
        Ok(self.read()?[0])
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

    /// From now until `until` has passed, every reply is rewritten into `request` and sent
    /// back (and still counted); after that the program counts and drops again by itself. It is
    /// swapped in place on the attachment (`BPF_LINK_UPDATE`), so no frame meets no program.
    pub fn start_reflecting(&mut self, request: &[u8], until: Duration) -> Result<()> {
        let loop_map = array_map(reflect_loop::VALUE_SIZE, "the reflected loop's map")?;
        let prog = load_xdp(
            &programs::reflector_program(
                self.mac,
                self.map.as_raw_fd(),
                loop_map.as_raw_fd(),
                request,
            )?,
            "bench_reflect",
        )?;
        self.swap(prog.as_raw_fd())?;
        // The deadline counts from now: loading and swapping take milliseconds. Until it is set
        // the loop's frames would be dropped, but nothing is in flight before the step seeds it.
        let mut value = [0u8; reflect_loop::VALUE_SIZE as usize];
        let deadline = monotonic_ns() + until.as_nanos() as u64;
        let at = reflect_loop::DEADLINE as usize;
        value[at..at + 8].copy_from_slice(&deadline.to_ne_bytes());
        if let Err(e) = map_update(&loop_map, &value) {
            bail!("setting the reflected loop's deadline: {e}");
        }
        self.reflector = Some((prog, loop_map));
        Ok(())
    }

    /// Puts the counting program back; returns how long the loop ran, from its first reflected
    /// frame to its last (`None` if it reflected none).
    pub fn stop_reflecting(&mut self) -> Result<Option<Duration>> {
        let Some((_prog, loop_map)) = self.reflector.take() else {
            return Ok(None);
        };
        self.swap(self.prog.as_raw_fd())?;
        let mut value = [0u8; reflect_loop::VALUE_SIZE as usize];
        if let Err(e) = map_lookup(&loop_map, &mut value) {
            bail!("reading the reflected loop's times: {e}");
        }
        let (first, last) = (
            word(&value, reflect_loop::FIRST),
            word(&value, reflect_loop::LAST),
        );
        Ok((first != 0).then(|| Duration::from_nanos(last.saturating_sub(first))))
    }

    fn swap(&self, fd: i32) -> Result<()> {
        let mut attr = Attr::new();
        attr.u32(0, self.link.as_raw_fd() as u32).u32(4, fd as u32);
        if let Err(e) = bpf(BPF_LINK_UPDATE, &mut attr) {
            bail!("swapping the client's XDP program: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::sys::test_run;

    /// A reflector on `request` whose loop must stop at `deadline`; its program, counters and
    /// loop map.
    fn reflector(mac: [u8; 6], request: &[u8], deadline: u64) -> (OwnedFd, OwnedFd, OwnedFd) {
        let map = array_map(16, "test map").unwrap();
        let loop_map = array_map(reflect_loop::VALUE_SIZE, "test loop map").unwrap();
        let mut v = [0u8; reflect_loop::VALUE_SIZE as usize];
        v[..8].copy_from_slice(&deadline.to_ne_bytes());
        map_update(&loop_map, &v).unwrap();
        let prog = load_xdp(
            &programs::reflector_program(mac, map.as_raw_fd(), loop_map.as_raw_fd(), request)
                .unwrap(),
            "test_reflect",
        )
        .unwrap();
        (prog, map, loop_map)
    }

    fn counts(map: &OwnedFd) -> (u64, u64) {
        let mut v = [0u8; 16];
        map_lookup(map, &mut v).unwrap();
        (word(&v, 0), word(&v, 8))
    }

    #[test]
    fn the_reflector_sends_each_reply_back_as_the_request_and_counts_both() {
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let request: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(7)).collect();
        let (prog, map, loop_map) = reflector(mac, &request, u64::MAX);
        let before = monotonic_ns();
        // Replies of every length the responders send (42-byte ARP from the kernel, 60 padded,
        // 86 for an NA): each leaves as the request, exactly.
        for (k, len) in [42usize, 60, 86].into_iter().enumerate() {
            let mut reply = vec![0xaa; len];
            reply[..6].copy_from_slice(&mac);
            let (action, out) = test_run(&prog, &reply);
            assert_eq!(action, 3, "{len}-byte reply: XDP_TX");
            assert_eq!(out, request, "{len}-byte reply");
            assert_eq!(counts(&map), (k as u64 + 1, k as u64 + 1));
        }
        // A frame for another MAC (a probe's reply) passes untouched and uncounted.
        let mut other = vec![0xbb; 60];
        other[5] = 0x43;
        let (action, out) = test_run(&prog, &other);
        assert_eq!((action, out), (2, other));
        assert_eq!(counts(&map), (3, 3));
        // The loop's first and latest reflection, on the kernel's monotonic clock.
        let mut v = [0u8; reflect_loop::VALUE_SIZE as usize];
        map_lookup(&loop_map, &mut v).unwrap();
        let (first, last) = (word(&v, reflect_loop::FIRST), word(&v, reflect_loop::LAST));
        assert!(before <= first && first <= last && last <= monotonic_ns());
    }

    #[test]
    fn past_its_deadline_the_reflector_counts_and_drops() {
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let (prog, map, loop_map) = reflector(mac, &[0x11; 60], monotonic_ns());
        let mut reply = vec![0xaa; 60];
        reply[..6].copy_from_slice(&mac);
        let (action, _) = test_run(&prog, &reply);
        assert_eq!(action, 1, "XDP_DROP");
        assert_eq!(counts(&map), (1, 0), "counted as a reply, not reflected");
        let mut v = [0u8; reflect_loop::VALUE_SIZE as usize];
        map_lookup(&loop_map, &mut v).unwrap();
        assert_eq!(word(&v, reflect_loop::FIRST), 0, "the loop never ran");
    }

    #[test]
    fn the_counter_counts_only_replies_to_its_mac() {
        use crate::bench::dataplane::frames;
        use std::net::{Ipv4Addr, Ipv6Addr};
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let map = array_map(16, "test map").unwrap();
        let prog = load_xdp(
            &programs::counter_program(mac, map.as_raw_fd()),
            "test_count",
        )
        .unwrap();
        let to_mac = |mut f: Vec<u8>| {
            f[..6].copy_from_slice(&mac);
            f
        };
        let (v4, v6) = (Ipv4Addr::new(198, 51, 100, 1), Ipv6Addr::LOCALHOST);
        let request = to_mac(frames::arp_request([0x02, 0, 0, 0, 0, 1], v4, v4));
        let mut reply = request.clone();
        reply[21] = 2;
        let solicitation = to_mac(frames::neighbor_solicitation([0x02, 0, 0, 0, 0, 1], v6, v6));
        let mut advertisement = solicitation.clone();
        advertisement[54] = 136;
        let mut not_icmp = advertisement.clone();
        not_icmp[20] = 17;
        // Replies to the MAC are counted and dropped.
        assert_eq!(test_run(&prog, &reply).0, 1, "ARP reply: XDP_DROP");
        assert_eq!(test_run(&prog, &advertisement).0, 1, "NA: XDP_DROP");
        assert_eq!(counts(&map).0, 2);
        // The node stack's own requests to the MAC, anything else, and short frames pass
        // uncounted.
        let mut elsewhere = reply.clone();
        elsewhere[5] = 0x43;
        let mut first_byte = reply.clone();
        first_byte[0] = 0x82;
        let mut ipv4 = reply.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        for (what, frame) in [
            ("a reply to a MAC differing in its first byte", first_byte),
            ("an IPv4 frame", ipv4),
            ("ARP request", request),
            ("NS", solicitation),
            ("NA type after a non-ICMPv6 header", not_icmp),
            ("a reply to another MAC", elsewhere),
            ("a 21-byte frame", reply[..21].to_vec()),
            ("an NA cut before its type", advertisement[..54].to_vec()),
        ] {
            assert_eq!(test_run(&prog, &frame).0, 2, "{what}: XDP_PASS");
        }
        assert_eq!(counts(&map).0, 2);
        // A MAC whose first four bytes read as a negative 32-bit word is still matched.
        let high = [0x02, 0, 0, 0x80, 0, 0x42];
        let map = array_map(16, "test map").unwrap();
        let prog = load_xdp(
            &programs::counter_program(high, map.as_raw_fd()),
            "test_count_hi",
        )
        .unwrap();
        let mut to_high = reply.clone();
        to_high[..6].copy_from_slice(&high);
        assert_eq!(test_run(&prog, &to_high).0, 1, "XDP_DROP");
        assert_eq!(counts(&map).0, 1);
    }
}
