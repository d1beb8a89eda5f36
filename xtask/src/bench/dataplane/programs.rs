//! The bench's own XDP programs, assembled here as eBPF bytecode (xtask loads them with raw
//! `bpf(2)` calls and needs no BPF crate): the live-frames generators and the client's reply
//! counter. Only their bytes are built here; `live` loads, runs and attaches them.

use anyhow::{Result, bail};

/// One eBPF instruction.
pub(super) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
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

/// Longest frame a generator program writes (the test run's page has room for far more; this
/// bounds the program at 2 + MAX/4 instructions per frame).
pub(super) const MAX_GENERATED_FRAME: usize = 256;

/// Stores writing `frame` at `r2` (4-byte stores, then 2 and 1).
fn frame_stores(frame: &[u8]) -> Vec<[u8; 8]> {
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
}

fn check_frame(frame: &[u8]) -> Result<()> {
    if frame.is_empty() || frame.len() > MAX_GENERATED_FRAME {
        bail!(
            "live generator: frame of {} bytes (1..={MAX_GENERATED_FRAME})",
            frame.len()
        );
    }
    Ok(())
}

/// At least one frame, each of a length a program can write (`none`: the error without any).
fn check_frames(frames: &[Vec<u8>], none: &str) -> Result<()> {
    if frames.is_empty() {
        bail!("{none}");
    }
    frames.iter().try_for_each(|f| check_frame(f))
}

/// XDP program for the live-frames test run: if the frame is at least `frame.len()` bytes, write
/// `frame` into it (4-byte stores, then 2 and 1) and return XDP_TX; otherwise XDP_DROP.
pub(super) fn generator_program(frame: &[u8]) -> Result<Vec<u8>> {
    check_frame(frame)?;
    let stores = frame_stores(frame);
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

/// Fields (u64) of the cycling generator's map value, at these byte offsets.
pub(super) mod cycle {
    /// Earliest time (ns, `bpf_ktime_get_ns`) the pacer lets the next frame out.
    pub const NEXT: i16 = 0;
    /// Nanoseconds between frames; 0: unpaced.
    pub const INTERVAL: i16 = 8;
    /// Frames let out so far: selects the next frame.
    pub const INDEX: i16 = 16;
    /// Frames written and transmitted (XDP_TX).
    pub const SENT: i16 = 24;
    /// Runs the pacer held back (XDP_DROP: the page goes straight back to the pool).
    pub const HELD: i16 = 32;
    /// Bytes of the value.
    pub const VALUE_SIZE: u32 = 40;
    /// Frames the pacer lets out back to back after the generator was held up (preempted by
    /// the probes or the client's NAPI thread): the burst stays far inside a 256-frame ring.
    pub const BURST: i32 = 32;
}

/// A tiny assembler: instructions and jumps to labels, resolved on `finish`.
enum Item {
    Insn([u8; 8]),
    Jump {
        code: u8,
        dst: u8,
        src: u8,
        imm: i32,
        to: usize,
    },
    Mark(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn put(&mut self, i: [u8; 8]) {
        self.items.push(Item::Insn(i));
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: usize) {
        self.items.push(Item::Jump {
            code,
            dst,
            src,
            imm,
            to,
        });
    }
    fn mark(&mut self, label: usize) {
        self.items.push(Item::Mark(label));
    }
    /// `reg` = &`map_fd`[0] (an array map's element 0), or a jump to `missing` when the lookup
    /// fails. Clobbers r0–r5.
    fn map_value_into(&mut self, reg: u8, map_fd: i32, missing: usize) {
        self.put(insn(0x62, 10, 0, -4, 0)); // *(u32 *)(fp - 4) = 0 (key)
        self.put(insn(0xbf, 2, 10, 0, 0)); // r2 = fp
        self.put(insn(0x07, 2, 0, 0, -4)); // r2 += -4
        self.put(insn(0x18, 1, 1, 0, map_fd)); // r1 = map (ld_imm64, pseudo map fd)
        self.put(insn(0x00, 0, 0, 0, 0));
        self.put(insn(0x85, 0, 0, 0, 1)); // call map_lookup_elem
        self.jump(0x15, 0, 0, 0, missing); // if r0 == 0 goto missing
        self.put(insn(0xbf, reg, 0, 0, 0)); // reg = value
    }
    /// The pacer over r7 = a map value laid out as in [`cycle`]: unpaced (interval 0), or
    /// not before `NEXT`, falls through (`NEXT` advanced by the interval); early, jumps to
    /// `hold`. `NEXT` never lags the clock by more than [`cycle::BURST`] frames. Clobbers r0–r5.
    fn pacer(&mut self, hold: usize) {
        let (check, emit) = (self.label(), self.label());
        self.put(insn(0x79, 1, 7, cycle::INTERVAL, 0)); // r1 = interval
        self.jump(0x15, 1, 0, 0, emit); // unpaced: straight on
        self.put(insn(0x85, 0, 0, 0, 5)); // r0 = bpf_ktime_get_ns()
        self.put(insn(0x79, 1, 7, cycle::NEXT, 0)); // r1 = next
        self.put(insn(0x79, 2, 7, cycle::INTERVAL, 0)); // r2 = interval
        self.put(insn(0xbf, 3, 2, 0, 0)); // r3 = interval
        self.put(insn(0x27, 3, 0, 0, cycle::BURST - 1)); // r3 *= BURST - 1 (the credit)
        self.jump(0x2d, 3, 0, 0, check); // credit longer than the uptime: no floor
        self.put(insn(0xbf, 4, 0, 0, 0)); // r4 = now
        self.put(insn(0x1f, 4, 3, 0, 0)); // r4 -= credit
        self.jump(0x3d, 1, 4, 0, check); // if next >= now - credit goto check
        self.put(insn(0xbf, 1, 4, 0, 0)); // next = now - credit
        self.mark(check);
        self.jump(0x2d, 1, 0, 0, hold); // if next > now goto hold
        self.put(insn(0x0f, 1, 2, 0, 0)); // next += interval
        self.put(insn(0x7b, 7, 1, cycle::NEXT, 0)); // store next
        self.mark(emit);
    }

    /// Rewrites the frame at r6 = ctx into `frame`, whatever its length was (set with
    /// `bpf_xdp_adjust_tail`), or jumps to `drop` when it cannot. Clobbers r0–r5.
    fn rewrite_into(&mut self, frame: &[u8], drop: usize) {
        let len = frame.len() as i32;
        let write = self.label();
        self.put(insn(0x61, 2, 6, 0, 0)); // r2 = ctx->data
        self.put(insn(0x61, 3, 6, 4, 0)); // r3 = ctx->data_end
        self.put(insn(0x1f, 3, 2, 0, 0)); // r3 -= r2 (the frame's length)
        self.put(insn(0xb7, 2, 0, 0, len)); // r2 = len
        self.put(insn(0x1f, 2, 3, 0, 0)); // r2 -= r3 (the tail's change)
        self.jump(0x15, 2, 0, 0, write); // same length: write
        self.put(insn(0xbf, 1, 6, 0, 0)); // r1 = ctx
        self.put(insn(0x85, 0, 0, 0, 65)); // call xdp_adjust_tail(ctx, r2)
        self.jump(0x55, 0, 0, 0, drop); // if r0 != 0 goto drop
        self.mark(write);
        self.put(insn(0x61, 2, 6, 0, 0)); // r2 = ctx->data
        self.put(insn(0x61, 3, 6, 4, 0)); // r3 = ctx->data_end
        self.put(insn(0xbf, 4, 2, 0, 0)); // r4 = r2
        self.put(insn(0x07, 4, 0, 0, len)); // r4 += len
        self.jump(0x2d, 4, 3, 0, drop); // if r4 > r3 goto drop
        for st in frame_stores(frame) {
            self.put(st);
        }
    }

    /// Rewrites the frame into the next of `frames` in turn (r7 = a map value laid out as in
    /// [`cycle`], whose `INDEX` counts the turns) and jumps to `sent`, or to `drop` when it
    /// cannot. Clobbers r0–r5.
    fn next_in_turn(&mut self, frames: &[Vec<u8>], drop: usize, sent: usize) {
        let n = frames.len();
        self.put(insn(0x79, 1, 7, cycle::INDEX, 0)); // r1 = index
        self.put(insn(0xbf, 2, 1, 0, 0)); // r2 = index
        self.put(insn(0x07, 2, 0, 0, 1)); // r2 += 1
        self.put(insn(0x7b, 7, 2, cycle::INDEX, 0)); // store index + 1
        if n > 1 {
            self.put(insn(0x97, 1, 0, 0, n as i32)); // r1 = index % n
        }
        for (k, frame) in frames.iter().enumerate() {
            let next = self.label();
            if n > 1 {
                self.jump(0x55, 1, 0, k as i32, next); // if r1 != k goto next frame
            }
            self.rewrite_into(frame, drop);
            self.jump(0x05, 0, 0, 0, sent); // goto sent
            self.mark(next);
        }
        if n > 1 {
            self.jump(0x05, 0, 0, 0, drop); // (no frame matched: cannot happen)
        }
    }

    /// `*(u64 *)(r7 + at) += 1`, atomically. Clobbers r1.
    fn count(&mut self, at: i16) {
        self.put(insn(0xb7, 1, 0, 0, 1)); // r1 = 1
        self.put(insn(0xdb, 7, 1, at, 0)); // lock *(u64 *)(r7 + at) += r1
    }

    fn finish(self) -> Result<Vec<u8>> {
        let mut at = vec![None; self.labels];
        let mut pc = 0usize;
        for item in &self.items {
            match item {
                Item::Mark(l) => at[*l] = Some(pc),
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc * 8);
        let mut pc = 0i64;
        for item in &self.items {
            match *item {
                Item::Insn(i) => out.extend(i),
                Item::Jump {
                    code,
                    dst,
                    src,
                    imm,
                    to,
                } => {
                    let Some(target) = at[to] else {
                        bail!("jump to an unplaced label");
                    };
                    let off = i16::try_from(target as i64 - pc - 1)
                        .map_err(|_| anyhow::anyhow!("jump too far"))?;
                    out.extend(insn(code, dst, src, off, imm));
                }
                Item::Mark(_) => continue,
            }
            pc += 1;
        }
        Ok(out)
    }
}

/// XDP program for the live-frames test run over several frames: each run that the pacer lets
/// out writes the next of `frames` in turn (the test run's frame is as long as the longest;
/// `bpf_xdp_adjust_tail` shortens it) and returns XDP_TX. The pacer and the counters live
/// in the array map `map_fd` (value laid out as in [`cycle`]): with an interval set, a run
/// earlier than `NEXT` is held back (XDP_DROP) and counted; `NEXT` advances by the interval per
/// frame and never lags the clock by more than [`cycle::BURST`] frames.
pub(super) fn cycle_program(frames: &[Vec<u8>], map_fd: i32) -> Result<Vec<u8>> {
    check_frames(frames, "live generator: no frames to cycle")?;
    let mut a = Asm::default();
    let (drop, hold, sent) = (a.label(), a.label(), a.label());
    a.put(insn(0xbf, 6, 1, 0, 0)); // r6 = ctx
    a.map_value_into(7, map_fd, drop);
    a.pacer(hold);
    a.next_in_turn(frames, drop, sent);
    a.mark(sent);
    a.count(cycle::SENT);
    a.put(insn(0xb7, 0, 0, 0, 3)); // r0 = XDP_TX
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.mark(hold);
    a.count(cycle::HELD);
    a.mark(drop);
    a.put(insn(0xb7, 0, 0, 0, 1)); // r0 = XDP_DROP
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.finish()
}

/// XDP program: replies sent to `mac` (ARP replies, and ICMPv6 Neighbor Advertisements right
/// after the IPv6 header) are counted in array map `map_fd`[0] and dropped; everything else
/// passes, other frames to `mac` included: the node's own stack sends the generator its ARP
/// and neighbour probes too, which are not answers and must not count as any (under the flood,
/// every frame counted here is a wrong answer).
pub(super) fn counter_program(mac: [u8; 6], map_fd: i32) -> Vec<u8> {
    let head = i32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = i32::from(u16::from_le_bytes([mac[4], mac[5]]));
    // Ethertypes and the ARP opcode as little-endian 16-bit loads see them.
    let arp = i32::from(u16::from_le_bytes([0x08, 0x06]));
    let ipv6 = i32::from(u16::from_le_bytes([0x86, 0xdd]));
    let arp_reply = i32::from(u16::from_le_bytes([0x00, 0x02]));
    let prog: [[u8; 8]; 36] = [
        insn(0xbf, 6, 1, 0, 0),          // 0: r6 = ctx
        insn(0x61, 2, 6, 0, 0),          // 1: r2 = ctx->data
        insn(0x61, 3, 6, 4, 0),          // 2: r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),          // 3: r4 = r2
        insn(0x07, 4, 0, 0, 22),         // 4: r4 += 22 (through the ARP opcode)
        insn(0x2d, 4, 3, 28, 0),         // 5: if r4 > r3 goto 34 (pass)
        insn(0x61, 5, 2, 0, 0),          // 6: r5 = *(u32 *)(data + 0)
        insn(0x56, 5, 0, 26, head),      // 7: if w5 != mac[0..4] goto 34 (a 32-bit compare)
        insn(0x69, 5, 2, 4, 0),          // 8: r5 = *(u16 *)(data + 4)
        insn(0x55, 5, 0, 24, tail),      // 9: if r5 != mac[4..6] goto 34
        insn(0x69, 5, 2, 12, 0),         // 10: r5 = ethertype
        insn(0x15, 5, 0, 9, arp),        // 11: if ARP goto 21
        insn(0x55, 5, 0, 21, ipv6),      // 12: if not IPv6 goto 34
        insn(0xbf, 4, 2, 0, 0),          // 13: r4 = r2
        insn(0x07, 4, 0, 0, 55),         // 14: r4 += 55 (through the ICMPv6 type)
        insn(0x2d, 4, 3, 18, 0),         // 15: if r4 > r3 goto 34
        insn(0x71, 5, 2, 20, 0),         // 16: r5 = next header
        insn(0x55, 5, 0, 16, 58),        // 17: if not ICMPv6 goto 34
        insn(0x71, 5, 2, 54, 0),         // 18: r5 = ICMPv6 type
        insn(0x15, 5, 0, 3, 136),        // 19: if NA goto 23 (count)
        insn(0x05, 0, 0, 13, 0),         // 20: goto 34
        insn(0x69, 5, 2, 20, 0),         // 21: r5 = ARP opcode
        insn(0x55, 5, 0, 11, arp_reply), // 22: if not a reply goto 34
        insn(0x62, 10, 0, -4, 0),        // 23: *(u32 *)(fp - 4) = 0 (key)
        insn(0xbf, 2, 10, 0, 0),         // 24: r2 = fp
        insn(0x07, 2, 0, 0, -4),         // 25: r2 += -4
        insn(0x18, 1, 1, 0, map_fd),     // 26: r1 = map (ld_imm64, pseudo map fd)
        insn(0x00, 0, 0, 0, 0),          // 27: (second half)
        insn(0x85, 0, 0, 0, 1),          // 28: call map_lookup_elem
        insn(0x15, 0, 0, 2, 0),          // 29: if r0 == 0 goto 32
        insn(0xb7, 1, 0, 0, 1),          // 30: r1 = 1
        insn(0xdb, 0, 1, 0, 0),          // 31: lock *(u64 *)(r0 + 0) += r1
        insn(0xb7, 0, 0, 0, 1),          // 32: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),          // 33: exit
        insn(0xb7, 0, 0, 0, 2),          // 34: r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),          // 35: exit
    ];
    prog.concat()
}

/// Byte offset of the reflected-frame count in the reply counter's map value (the replies
/// counted are at 0).
pub(super) const REFLECTED: i16 = 8;

/// The reflected loop's own map value: when it must stop, and when it ran (`bpf_ktime_get_ns`,
/// CLOCK_MONOTONIC).
pub(super) mod reflect_loop {
    /// Reflect nothing at or after this time (set before the step).
    pub const DEADLINE: i16 = 0;
    /// Time of the first frame reflected (0 until then).
    pub const FIRST: i16 = 8;
    /// Time of the latest frame reflected.
    pub const LAST: i16 = 16;
    pub const VALUE_SIZE: u32 = 24;
}

/// XDP program for the client end during a reflected step: a frame sent to `mac` (a reply to the
/// load) is counted in `map_fd`[0] at offset 0, rewritten into `frame` (the request; its length
/// set with `bpf_xdp_adjust_tail`) and sent back with XDP_TX, counted at [`REFLECTED`]; a frame
/// that cannot be rewritten is dropped. Everything else passes. Each reply thus becomes the next
/// request, and the load keeps itself going from kernel space with no syscall per frame, until
/// the deadline in `loop_fd`[0] ([`reflect_loop`]): from then on replies are counted and dropped,
/// so the loop cannot outlast its step however late user space swaps the program back. The
/// first and latest reflection times are kept there too.
pub(super) fn reflector_program(
    mac: [u8; 6],
    map_fd: i32,
    loop_fd: i32,
    frame: &[u8],
) -> Result<Vec<u8>> {
    check_frame(frame)?;
    let head = i32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = i32::from(u16::from_le_bytes([mac[4], mac[5]]));
    let mut a = Asm::default();
    let (pass, drop, stamped) = (a.label(), a.label(), a.label());
    a.put(insn(0xbf, 6, 1, 0, 0)); // r6 = ctx
    a.put(insn(0x61, 2, 6, 0, 0)); // r2 = ctx->data
    a.put(insn(0x61, 3, 6, 4, 0)); // r3 = ctx->data_end
    a.put(insn(0xbf, 4, 2, 0, 0)); // r4 = r2
    a.put(insn(0x07, 4, 0, 0, 6)); // r4 += 6
    a.jump(0x2d, 4, 3, 0, pass); // if r4 > r3 goto pass
    a.put(insn(0x61, 5, 2, 0, 0)); // r5 = *(u32 *)(data + 0)
    a.jump(0x55, 5, 0, head, pass); // if r5 != mac[0..4] goto pass
    a.put(insn(0x69, 5, 2, 4, 0)); // r5 = *(u16 *)(data + 4)
    a.jump(0x55, 5, 0, tail, pass); // if r5 != mac[4..6] goto pass
    a.map_value_into(7, map_fd, drop);
    a.count(0); // a reply
    a.map_value_into(8, loop_fd, drop);
    a.put(insn(0x85, 0, 0, 0, 5)); // r0 = bpf_ktime_get_ns()
    a.put(insn(0x79, 1, 8, reflect_loop::DEADLINE, 0)); // r1 = deadline
    a.jump(0x3d, 0, 1, 0, drop); // if now >= deadline goto drop
    a.put(insn(0x79, 1, 8, reflect_loop::FIRST, 0)); // r1 = first
    a.jump(0x55, 1, 0, 0, stamped); // if first != 0 goto stamped
    a.put(insn(0x7b, 8, 0, reflect_loop::FIRST, 0)); // first = now
    a.mark(stamped);
    a.put(insn(0x7b, 8, 0, reflect_loop::LAST, 0)); // last = now
    a.rewrite_into(frame, drop);
    a.count(REFLECTED);
    a.put(insn(0xb7, 0, 0, 0, 3)); // r0 = XDP_TX
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.mark(drop);
    a.put(insn(0xb7, 0, 0, 0, 1)); // r0 = XDP_DROP
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.mark(pass);
    a.put(insn(0xb7, 0, 0, 0, 2)); // r0 = XDP_PASS
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.finish()
}

/// The flood loop's map value: the cycling generator's fields ([`cycle`]), then when the loop
/// must end.
pub(super) mod flood_loop {
    /// Frames arriving at or after this time (`bpf_ktime_get_ns`) are dropped: the loop ends.
    pub const DEADLINE: i16 = super::cycle::VALUE_SIZE as i16;
    pub const VALUE_SIZE: u32 = super::cycle::VALUE_SIZE + 8;
    /// `bpf_redirect_map` flag: to every device in the map.
    pub const BROADCAST: i32 = 1 << 3;
}

/// XDP program for one end of a veth pair whose other end sends every frame straight back
/// ([`bounce_program`]): the frames in flight circle between the two ends, and each turn that
/// the pacer lets out (map `map_fd`, laid out as in [`flood_loop`]) rewrites the frame into the
/// next of `frames` and broadcasts it through the device map `devmap_fd` (the client's veth,
/// and this end itself to keep the frame circling), counted as sent; a turn the pacer holds
/// back goes round again unchanged (XDP_TX), counted as held. From the deadline on, every frame
/// is dropped. So the flood comes from kernel space at the pacer's rate, with no syscall per
/// frame and no socket buffer at the responder (the frames reach it as XDP frames).
pub(super) fn flood_loop_program(
    frames: &[Vec<u8>],
    map_fd: i32,
    devmap_fd: i32,
) -> Result<Vec<u8>> {
    check_frames(frames, "flood loop: no frames to send")?;
    let mut a = Asm::default();
    let (drop, hold, sent) = (a.label(), a.label(), a.label());
    a.put(insn(0xbf, 6, 1, 0, 0)); // r6 = ctx
    a.map_value_into(7, map_fd, drop);
    a.put(insn(0x85, 0, 0, 0, 5)); // r0 = bpf_ktime_get_ns()
    a.put(insn(0x79, 1, 7, flood_loop::DEADLINE, 0)); // r1 = deadline
    a.jump(0x3d, 0, 1, 0, drop); // if now >= deadline goto drop
    a.pacer(hold);
    a.next_in_turn(frames, drop, sent);
    a.mark(sent);
    a.count(cycle::SENT);
    a.put(insn(0x18, 1, 1, 0, devmap_fd)); // r1 = device map (ld_imm64, pseudo map fd)
    a.put(insn(0x00, 0, 0, 0, 0));
    a.put(insn(0xb7, 2, 0, 0, 0)); // r2 = 0 (key; unused when broadcasting)
    a.put(insn(0xb7, 3, 0, 0, flood_loop::BROADCAST)); // r3 = BPF_F_BROADCAST
    a.put(insn(0x85, 0, 0, 0, 51)); // r0 = bpf_redirect_map(r1, r2, r3)
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.mark(hold);
    a.count(cycle::HELD);
    a.put(insn(0xb7, 0, 0, 0, 3)); // r0 = XDP_TX
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.mark(drop);
    a.put(insn(0xb7, 0, 0, 0, 1)); // r0 = XDP_DROP
    a.put(insn(0x95, 0, 0, 0, 0)); // exit
    a.finish()
}

/// XDP program: every frame goes back out where it came from (XDP_TX).
pub(super) fn bounce_program() -> Vec<u8> {
    [
        insn(0xb7, 0, 0, 0, 3), // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0), // exit
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_program_matches_the_mac_and_jumps_inside() {
        let mac = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];
        let p = counter_program(mac, 7);
        assert_eq!(p.len() % 8, 0);
        let at = |i: usize| &p[i * 8..i * 8 + 8];
        // The compared immediates are the MAC as the program loads it (little-endian loads).
        assert_eq!(&at(7)[4..8], &[0x02, 0xaa, 0x00, 0x00]);
        assert_eq!(&at(9)[4..6], &[0x00, 0x01]);
        // Map fd in the ld_imm64, marked as a pseudo map fd (src register 1).
        assert_eq!(at(26)[1] >> 4, 1);
        assert_eq!(
            i32::from_le_bytes([at(26)[4], at(26)[5], at(26)[6], at(26)[7]]),
            7
        );
        assert_jumps_inside_and_exits(&p);
    }

    /// Every jump lands inside the program; the last instruction exits.
    fn assert_jumps_inside_and_exits(p: &[u8]) {
        let n = p.len() / 8;
        let at = |i: usize| &p[i * 8..i * 8 + 8];
        for i in 0..n {
            let code = at(i)[0];
            // BPF_JMP or BPF_JMP32 class, but not a call or an exit.
            if matches!(code & 0x07, 0x05 | 0x06) && code != 0x85 && code != 0x95 {
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

    #[test]
    fn cycle_program_jumps_land_inside_and_it_ends_in_exits() {
        let frames = vec![vec![1u8; 60], vec![2u8; 34], vec![3u8; 86]];
        let p = cycle_program(&frames, 9).unwrap();
        assert_jumps_inside_and_exits(&p);
        let n = p.len() / 8;
        let at = |i: usize| &p[i * 8..i * 8 + 8];
        // Every frame sets the length first (one xdp_adjust_tail call each, skipped when the
        // frame already has it).
        let adjust = (0..n)
            .filter(|&i| at(i)[0] == 0x85 && at(i)[4] == 65)
            .count();
        assert_eq!(adjust, 3);
        assert!(cycle_program(&[], 9).is_err());
        assert!(cycle_program(&[vec![0; 257]], 9).is_err());
    }
}
