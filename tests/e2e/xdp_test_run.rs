//! The real XDP object (built by `cargo xtask build-ebpf`) run by the kernel on crafted frames
//! through BPF_PROG_TEST_RUN: exact reply bytes (checked with etherparse), every ignored or
//! malformed frame passed unchanged, the guard, the counters, and the edge cases: ARP whose
//! Ethernet source is not its sender, foreign claims on announced addresses, the rate limit.
//!
//! Needs root (CAP_BPF) and the object; without either every test fails saying which.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::PathBuf;

use aya::Ebpf;
use aya::maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::util::nr_cpus;
use etherparse::{ArpOperation, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use lb_common::maps::{
    Announcement, Claim, Counter, ExtraCounter, Guard, Ipv4Key, Ipv6Key, MAP_CLAIMS4, MAP_CLAIMS6,
    MAP_COUNTERS, MAP_EXTRA, MAP_FLOOD_LIMIT, MAP_GUARD, MAP_LIMIT, MAP_V4, MAP_V6, PROG_NAME,
};
use lb_common::ratelimit::RateLimit;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// BPF_PROG_TEST_RUN runs on the network namespace's loopback device unless told otherwise.
const LOOPBACK: u32 = 1;
const NODE_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const OTHER_MAC: [u8; 6] = [0x02, 0x99, 0x99, 0x99, 0x99, 0x99];
const VIP4: [u8; 4] = [198, 51, 100, 10];
const UNKNOWN4: [u8; 4] = [198, 51, 100, 99];
const CLIENT4: [u8; 4] = [198, 51, 100, 2];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn object_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/herald.bpf.o")
}

/// One loaded copy of the object with its own maps.
struct Rig {
    bpf: Ebpf,
}

impl Rig {
    fn new() -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "xdp_test_run needs root (CAP_BPF, CAP_NET_ADMIN): run as root"
        );
        let path = object_path();
        assert!(
            path.is_file(),
            "{} is missing: run `cargo xtask build-ebpf`",
            path.display()
        );
        let mut bpf = Ebpf::load_file(&path).expect("loading the XDP object");
        let prog: &mut Xdp = bpf
            .program_mut(PROG_NAME)
            .expect("program herald_xdp")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("the verifier accepts herald_xdp");
        Rig { bpf }
    }

    fn announce_v4(&mut self, ifindex: u32, addr: [u8; 4]) {
        let key = Ipv4Key { ifindex, addr };
        let mut map: PerCpuHashMap<_, Ipv4Key, Announcement> =
            PerCpuHashMap::try_from(self.bpf.map_mut(MAP_V4).expect(MAP_V4))
                .expect("per-CPU hash map");
        map.insert(&key, announced_on_every_cpu(), 0)
            .expect("insert");
    }

    fn announce_v6(&mut self, ifindex: u32, addr: [u8; 16]) {
        let key = Ipv6Key { ifindex, addr };
        let mut map: PerCpuHashMap<_, Ipv6Key, Announcement> =
            PerCpuHashMap::try_from(self.bpf.map_mut(MAP_V6).expect(MAP_V6))
                .expect("per-CPU hash map");
        map.insert(&key, announced_on_every_cpu(), 0)
            .expect("insert");
    }

    fn set_guard(&mut self, guard: Guard) {
        let mut map: Array<_, Guard> =
            Array::try_from(self.bpf.map_mut(MAP_GUARD).expect(MAP_GUARD)).expect("array");
        map.set(0, &guard, 0).expect("set guard");
    }

    /// Runs the program once on `frame`; returns the action and the frame after it.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut Xdp = self
            .bpf
            .program_mut(PROG_NAME)
            .expect("program")
            .try_into()
            .expect("XDP");
        let mut out = vec![0u8; 1024];
        let ctx = xdp_md(frame.len(), LOOPBACK);
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn counter(&self, counter: Counter) -> u64 {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.bpf.map(MAP_COUNTERS).expect(MAP_COUNTERS))
                .expect("per-CPU array");
        map.get(&(counter as u32), 0).expect("counter").iter().sum()
    }

    fn extra(&self, counter: ExtraCounter) -> u64 {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.bpf.map(MAP_EXTRA).expect(MAP_EXTRA))
                .expect("per-CPU array");
        map.get(&(counter as u32), 0).expect("counter").iter().sum()
    }

    fn set_limit(&mut self, limit: RateLimit) {
        let mut map: Array<_, RateLimit> =
            Array::try_from(self.bpf.map_mut(MAP_LIMIT).expect(MAP_LIMIT)).expect("array");
        map.set(0, &limit, 0).expect("set limit");
    }

    fn set_flood_limit(&mut self, limit: RateLimit) {
        let mut map: Array<_, RateLimit> =
            Array::try_from(self.bpf.map_mut(MAP_FLOOD_LIMIT).expect(MAP_FLOOD_LIMIT))
                .expect("array");
        map.set(0, &limit, 0).expect("set flood limit");
    }

    fn claim_v4(&self, addr: [u8; 4]) -> Option<Claim> {
        let map: HashMap<_, Ipv4Key, Claim> =
            HashMap::try_from(self.bpf.map(MAP_CLAIMS4).expect(MAP_CLAIMS4)).expect("LRU hash");
        let key = Ipv4Key {
            ifindex: LOOPBACK,
            addr,
        };
        map.get(&key, 0).ok()
    }

    fn claim_v6(&self, addr: [u8; 16]) -> Option<Claim> {
        let map: HashMap<_, Ipv6Key, Claim> =
            HashMap::try_from(self.bpf.map(MAP_CLAIMS6).expect(MAP_CLAIMS6)).expect("LRU hash");
        let key = Ipv6Key {
            ifindex: LOOPBACK,
            addr,
        };
        map.get(&key, 0).ok()
    }

    fn stats_v4(&self, addr: [u8; 4]) -> (u64, u64) {
        let map: PerCpuHashMap<_, Ipv4Key, Announcement> =
            PerCpuHashMap::try_from(self.bpf.map(MAP_V4).expect(MAP_V4)).expect("map");
        let values = map
            .get(
                &Ipv4Key {
                    ifindex: LOOPBACK,
                    addr,
                },
                0,
            )
            .expect("announced entry");
        values
            .iter()
            .fold((0, 0), |(req, rep), s| (req + s.requests, rep + s.replies))
    }

    fn stats_v6(&self, addr: [u8; 16]) -> (u64, u64) {
        let map: PerCpuHashMap<_, Ipv6Key, Announcement> =
            PerCpuHashMap::try_from(self.bpf.map(MAP_V6).expect(MAP_V6)).expect("map");
        let values = map
            .get(
                &Ipv6Key {
                    ifindex: LOOPBACK,
                    addr,
                },
                0,
            )
            .expect("announced entry");
        values
            .iter()
            .fold((0, 0), |(req, rep), s| (req + s.requests, rep + s.replies))
    }
}

/// NODE_MAC with zero counters, one copy per CPU (what `herald xdp announce` writes).
fn announced_on_every_cpu() -> PerCpuValues<Announcement> {
    let cpus = nr_cpus().expect("number of CPUs").get() as usize;
    let entry = Announcement {
        mac: NODE_MAC,
        ..Announcement::default()
    };
    PerCpuValues::try_from(vec![entry; cpus]).expect("one value per CPU")
}

/// `struct xdp_md` for ctx_in: data 0, data_end = frame length, on interface `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    [0u32, len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn arp_frame(eth_dst: [u8; 6], op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

fn solicited_node(addr: &[u8; 16]) -> [u8; 16] {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&addr[13..]);
    group
}

fn icmpv6_frame(
    eth_dst: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop: u8,
    icmp: Icmpv6Type,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, eth_dst)
        .ipv6(src, dst, hop)
        .icmpv6(icmp);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut f, payload).expect("writing to a Vec");
    f
}

fn ns_frame(src: [u8; 16], dst: [u8; 16], hop: u8, options: &[u8]) -> Vec<u8> {
    let mut payload = VIP6.to_vec();
    payload.extend_from_slice(options);
    let eth_dst = [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]];
    icmpv6_frame(
        eth_dst,
        src,
        dst,
        hop,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    )
}

const SOURCE_LL: [u8; 8] = [
    1,
    1,
    CLIENT_MAC[0],
    CLIENT_MAC[1],
    CLIENT_MAC[2],
    CLIENT_MAC[3],
    CLIENT_MAC[4],
    CLIENT_MAC[5],
];

fn assert_na(na: &[u8], eth_dst: [u8; 6], dst: [u8; 16], solicited: bool) {
    let parsed = SlicedPacket::from_ethernet(na).expect("NA parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = parsed.link else {
        panic!("not Ethernet II")
    };
    assert_eq!(eth.destination(), eth_dst);
    assert_eq!(eth.source(), NODE_MAC);
    let Some(NetSlice::Ipv6(ip)) = parsed.net else {
        panic!("not IPv6")
    };
    assert_eq!(ip.header().hop_limit(), 255);
    assert_eq!(ip.header().source(), VIP6);
    assert_eq!(ip.header().destination(), dst);
    let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
        panic!("not ICMPv6")
    };
    assert!(icmp.is_checksum_valid(VIP6, dst), "ICMPv6 checksum");
    let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
        panic!("not an NA")
    };
    assert!(!flags.router && flags.r#override);
    assert_eq!(flags.solicited, solicited);
    assert_eq!(icmp.payload()[..16], VIP6);
    assert_eq!(
        icmp.payload()[16..],
        [
            2,
            1,
            NODE_MAC[0],
            NODE_MAC[1],
            NODE_MAC[2],
            NODE_MAC[3],
            NODE_MAC[4],
            NODE_MAC[5]
        ]
    );
    assert_eq!(na.len(), 86);
}

#[test]
fn arp_request_for_announced_ip_is_answered_with_exact_bytes() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    let request = arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4);
    let (action, reply) = rig.run(&request);
    assert_eq!(action, XDP_TX);
    let mut expected = arp_frame(CLIENT_MAC, 2, NODE_MAC, VIP4, CLIENT4);
    expected[6..12].copy_from_slice(&NODE_MAC);
    expected[32..38].copy_from_slice(&CLIENT_MAC);
    assert_eq!(reply, expected);
    let parsed = SlicedPacket::from_ethernet(&reply).expect("reply parses");
    let Some(NetSlice::Arp(arp)) = parsed.net else {
        panic!("not ARP")
    };
    assert_eq!(arp.operation(), ArpOperation::REPLY);
    assert_eq!(
        (arp.sender_hw_addr(), arp.sender_protocol_addr()),
        (&NODE_MAC[..], &VIP4[..])
    );
    assert_eq!(
        (arp.target_hw_addr(), arp.target_protocol_addr()),
        (&CLIENT_MAC[..], &CLIENT4[..])
    );

    // An ARP probe (RFC 5227) is answered too, to target IP 0.0.0.0.
    let probe = arp_frame([0xff; 6], 1, CLIENT_MAC, [0; 4], VIP4);
    let (action, reply) = rig.run(&probe);
    assert_eq!(action, XDP_TX);
    assert_eq!(reply[38..42], [0, 0, 0, 0]);
    assert_eq!(rig.counter(Counter::ArpReplies), 2);
    assert_eq!(rig.stats_v4(VIP4), (2, 2));
}

#[test]
fn neighbor_solicitations_are_answered_with_valid_advertisements() {
    let mut rig = Rig::new();
    rig.announce_v6(LOOPBACK, VIP6);
    // Multicast with a source link-layer option (78 + 8 bytes: same length as the NA).
    let (action, na) = rig.run(&ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL));
    assert_eq!(action, XDP_TX);
    assert_na(&na, CLIENT_MAC, CLIENT6, true);
    // Unicast without options (78 bytes: the program grows the frame to 86).
    let mut unicast = ns_frame(CLIENT6, VIP6, 255, &[]);
    unicast[..6].copy_from_slice(&NODE_MAC);
    let (action, na) = rig.run(&unicast);
    assert_eq!(action, XDP_TX);
    assert_na(&na, CLIENT_MAC, CLIENT6, true);
    // Duplicate address detection with a nonce (94 bytes: shrunk to 86): to all nodes.
    let (action, na) = rig.run(&ns_frame(
        [0; 16],
        solicited_node(&VIP6),
        255,
        &[14, 1, 1, 2, 3, 4, 5, 6, 14, 1, 0, 0, 0, 0, 0, 0],
    ));
    assert_eq!(action, XDP_TX);
    assert_na(&na, [0x33, 0x33, 0, 0, 0, 1], ALL_NODES, false);
    assert_eq!(rig.counter(Counter::NaReplies), 3);
    assert_eq!(rig.stats_v6(VIP6), (3, 3));

    // Sent to another solicited-node group (RFC 4861 §7.1.1): passed to the kernel, unanswered.
    let mut other_group = solicited_node(&VIP6);
    other_group[15] ^= 0x01;
    let ns = ns_frame(CLIENT6, other_group, 255, &SOURCE_LL);
    assert_eq!(rig.run(&ns), (XDP_PASS, ns.clone()));
    assert_eq!(rig.counter(Counter::NaReplies), 3);
}

#[test]
fn the_kernel_reply_matches_the_shared_logic_byte_for_byte() {
    struct One;
    impl lb_common::respond::Announced for One {
        fn ipv4(&self, addr: [u8; 4]) -> Option<[u8; 6]> {
            (addr == VIP4).then_some(NODE_MAC)
        }
        fn ipv6(&self, addr: [u8; 16]) -> Option<[u8; 6]> {
            (addr == VIP6).then_some(NODE_MAC)
        }
    }
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    // A solicitation without options followed by 8 bytes of trailer: as long as an NA, so the
    // program answers it in place; only the message's bytes may reach the checksum.
    let mut trailed = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &[]);
    trailed.extend_from_slice(&[0xa5; 8]);
    let frames = [
        arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4),
        ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL),
        ns_frame(CLIENT6, solicited_node(&VIP6), 255, &[]),
        ns_frame([0; 16], solicited_node(&VIP6), 255, &[]),
        trailed,
    ];
    for frame in frames {
        let mut host = frame.clone();
        host.resize(frame.len().max(86), 0);
        let outcome = lb_common::respond::respond(&mut host, frame.len(), &One);
        if outcome == lb_common::respond::Outcome::NaReply {
            host.truncate(86);
        } else {
            host.truncate(frame.len());
        }
        let (action, kernel) = rig.run(&frame);
        assert_eq!(action, XDP_TX, "{outcome:?}");
        assert_eq!(kernel, host);
    }
}

/// How an unanswered frame shows in the counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Neither ARP nor a Neighbor Solicitation: passed without touching any map.
    FastPath,
    /// Counted as passed.
    Passed,
    /// Counted as passed and malformed.
    Malformed,
}

#[test]
fn ignored_and_malformed_frames_pass_unchanged_and_are_counted() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    rig.announce_v4(7, [198, 51, 100, 77]); // announced, but on another interface
    let arp_with = |at: usize, bytes: &[u8]| {
        let mut f = arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4);
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let ns_with = |at: usize, bytes: &[u8]| {
        let mut f = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL);
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let tcp = {
        let builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
            .ipv4(CLIENT4, VIP4, 64)
            .tcp(40000, 80, 1, 1024);
        let mut f = Vec::new();
        builder
            .write(&mut f, b"GET / HTTP/1.1\r\n")
            .expect("tcp frame");
        f
    };
    let mut ns_long_payload = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL);
    ns_long_payload[19] += 8;
    // (name, frame, how it is counted)
    let cases: Vec<(&str, Vec<u8>, Count)> = vec![
        ("TCP over IPv4", tcp, Count::FastPath),
        // (Frames under 14 bytes cannot be fed in: BPF_PROG_TEST_RUN rejects them with EINVAL.)
        ("only an Ethernet header", vec![0xff; 14], Count::FastPath),
        (
            "ICMPv6 echo",
            icmpv6_frame(
                NODE_MAC,
                CLIENT6,
                VIP6,
                64,
                Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 2 }),
                &[0; 8],
            ),
            Count::FastPath,
        ),
        (
            "ARP for unknown IP",
            arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, UNKNOWN4),
            Count::Passed,
        ),
        (
            "ARP for an IP announced on another interface",
            arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, [198, 51, 100, 77]),
            Count::Passed,
        ),
        (
            "gratuitous ARP",
            arp_frame([0xff; 6], 1, CLIENT_MAC, VIP4, VIP4),
            Count::Passed,
        ),
        (
            "ARP reply",
            arp_frame(NODE_MAC, 2, CLIENT_MAC, CLIENT4, VIP4),
            Count::Passed,
        ),
        (
            "unicast ARP to another MAC",
            arp_with(0, &[0x02, 0, 0, 0, 0, 9]),
            Count::Passed,
        ),
        (
            "ARP hardware type 6",
            arp_with(14, &[0, 6]),
            Count::Malformed,
        ),
        (
            "ARP protocol type",
            arp_with(16, &[0x86, 0xdd]),
            Count::Malformed,
        ),
        ("ARP hardware length", arp_with(18, &[8]), Count::Malformed),
        ("ARP protocol length", arp_with(19, &[16]), Count::Malformed),
        (
            "ARP truncated",
            arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4)[..41].to_vec(),
            Count::Malformed,
        ),
        (
            "NS hop limit 64",
            ns_frame(CLIENT6, solicited_node(&VIP6), 64, &SOURCE_LL),
            Count::Malformed,
        ),
        (
            "NS bad checksum",
            ns_with(56, &[0xde, 0xad]),
            Count::Malformed,
        ),
        ("NS code 1", ns_with(55, &[1]), Count::Malformed),
        (
            "NS zero-length option",
            ns_frame(
                CLIENT6,
                solicited_node(&VIP6),
                255,
                &[1, 0, 0, 0, 0, 0, 0, 0],
            ),
            Count::Malformed,
        ),
        (
            "DAD NS with source link-layer option",
            ns_frame([0; 16], solicited_node(&VIP6), 255, &SOURCE_LL),
            Count::Malformed,
        ),
        (
            "NS payload length past the frame",
            ns_long_payload,
            Count::Malformed,
        ),
        (
            "NS truncated",
            ns_frame(CLIENT6, solicited_node(&VIP6), 255, &[])[..70].to_vec(),
            Count::Malformed,
        ),
    ];
    let (mut passed, mut malformed) = (0, 0);
    for (name, frame, count) in &cases {
        let (action, out) = rig.run(frame);
        assert_eq!(action, XDP_PASS, "{name}");
        assert_eq!(&out, frame, "{name}: frame changed");
        passed += u64::from(*count != Count::FastPath);
        malformed += u64::from(*count == Count::Malformed);
        assert_eq!(
            rig.counter(Counter::Malformed),
            malformed,
            "{name}: malformed counter"
        );
        assert_eq!(
            rig.counter(Counter::Passed),
            passed,
            "{name}: passed counter"
        );
    }
    assert_eq!(
        rig.counter(Counter::ArpReplies) + rig.counter(Counter::NaReplies),
        0
    );
    assert_eq!(
        rig.stats_v4(VIP4),
        (0, 0),
        "invalid requests are not counted per address"
    );
}

#[test]
fn stale_guard_silences_answers_and_fresh_guard_allows_them() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    let arp = arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4);
    let ns = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL);

    let now = monotonic_ns();
    rig.set_guard(Guard {
        heartbeat_ns: now - 20_000_000_000,
        timeout_ns: 5_000_000_000,
    });
    assert_eq!(rig.run(&arp), (XDP_PASS, arp.clone()));
    assert_eq!(rig.run(&ns), (XDP_PASS, ns.clone()));
    assert_eq!(rig.counter(Counter::Silenced), 2);
    assert_eq!(rig.stats_v4(VIP4), (1, 0), "request seen, no reply");
    assert_eq!(rig.stats_v6(VIP6), (1, 0));

    rig.set_guard(Guard {
        heartbeat_ns: monotonic_ns(),
        timeout_ns: 60_000_000_000,
    });
    assert_eq!(rig.run(&arp).0, XDP_TX);
    assert_eq!(rig.run(&ns).0, XDP_TX);
    assert_eq!(rig.counter(Counter::Silenced), 2);
    assert_eq!(rig.stats_v4(VIP4), (2, 1));
    assert_eq!(rig.stats_v6(VIP6), (2, 1));

    // timeout 0 disables the guard (standalone `herald xdp`).
    rig.set_guard(Guard {
        heartbeat_ns: 0,
        timeout_ns: 0,
    });
    assert_eq!(rig.run(&arp).0, XDP_TX);

    // The value maps are created with: closed, nothing answered until armed.
    rig.set_guard(Guard::CLOSED);
    assert_eq!(rig.run(&arp), (XDP_PASS, arp.clone()));
    assert_eq!(rig.run(&ns), (XDP_PASS, ns.clone()));
    assert_eq!(rig.counter(Counter::Silenced), 4);
}

#[test]
fn maps_carry_btf_so_bpftool_shows_field_names() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    rig.set_guard(Guard {
        heartbeat_ns: 1,
        timeout_ns: 2,
    });
    let entry: &[&str] = &["ifindex", "addr", "mac", "flags", "requests", "replies"];
    rig.set_limit(RateLimit::DEFAULT);
    let expect: [(&str, &[&str]); 4] = [
        (MAP_V4, entry),
        (MAP_V6, entry),
        (MAP_GUARD, &["heartbeat_ns", "timeout_ns"]),
        (MAP_LIMIT, &["per_second", "burst"]),
    ];
    for (name, fields) in expect {
        let id = map_id(&rig, name);
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "id", &id.to_string()])
            .output()
            .expect("bpftool is installed (cargo xtask test installs it)");
        assert!(
            out.status.success(),
            "bpftool map dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(
            dump.contains("\"formatted\""),
            "{name}: bpftool found no BTF: {dump}"
        );
        for field in fields {
            assert!(
                dump.contains(&format!("\"{field}\"")),
                "{name}: field {field} missing in {dump}"
            );
        }
    }
}

/// An unsolicited Neighbor Advertisement of `target` to all nodes from Ethernet source
/// `eth_src`, with a target link-layer option `tlla`.
fn na_frame(eth_src: [u8; 6], target: [u8; 16], tlla: [u8; 6]) -> Vec<u8> {
    let mut payload = target.to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&tlla);
    let na = Icmpv6Type::NeighborAdvertisement(etherparse::icmpv6::NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    });
    let mut f = icmpv6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        CLIENT6,
        ALL_NODES,
        255,
        na,
        &payload,
    );
    f[6..12].copy_from_slice(&eth_src);
    f
}

/// Kept on purpose, as the Linux kernel does: a request whose Ethernet source is not its sender
/// hardware address (relayed or proxied ARP, or a forgery) is answered to the sender hardware
/// address, never to the Ethernet source, and counted so an operator sees them.
#[test]
fn arp_whose_ethernet_source_is_not_sha_is_answered_to_sha_and_counted() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    let mut request = arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4);
    request[6..12].copy_from_slice(&OTHER_MAC);
    let (action, reply) = rig.run(&request);
    assert_eq!(action, XDP_TX);
    assert_eq!(reply[..6], CLIENT_MAC, "Ethernet destination = sha");
    assert_eq!(reply[32..38], CLIENT_MAC, "target hardware address = sha");
    assert_eq!(reply[6..12], NODE_MAC);
    assert_eq!(rig.extra(ExtraCounter::ShaMismatch), 1);

    // A plain request is not counted; one for an address not announced is not either.
    assert_eq!(
        rig.run(&arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, VIP4))
            .0,
        XDP_TX
    );
    let mut unknown = arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT4, UNKNOWN4);
    unknown[6..12].copy_from_slice(&OTHER_MAC);
    assert_eq!(rig.run(&unknown), (XDP_PASS, unknown.clone()));
    assert_eq!(rig.extra(ExtraCounter::ShaMismatch), 1);
    assert_eq!(rig.counter(Counter::ArpReplies), 2);
}

/// Two nodes think they own an address: a gratuitous ARP, an ARP reply or a Neighbor
/// Advertisement saying an announced address is at another MAC is passed to the kernel
/// unchanged (never dropped, never answered) and recorded with the claiming MAC, a count and
/// the time.
#[test]
fn foreign_claims_are_passed_unchanged_and_recorded() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    rig.announce_v4(7, CLIENT4); // announced on another interface only
    let before = monotonic_ns();
    let passed = |rig: &mut Rig, frame: &[u8]| {
        assert_eq!(rig.run(frame), (XDP_PASS, frame.to_vec()));
    };

    passed(&mut rig, &arp_frame([0xff; 6], 1, OTHER_MAC, VIP4, VIP4));
    let claim = rig.claim_v4(VIP4).expect("gratuitous request recorded");
    assert_eq!((claim.mac, claim.count), (OTHER_MAC, 1));
    let after = monotonic_ns();
    // The coarse clock lags CLOCK_MONOTONIC by up to a tick (4 ms at HZ=250).
    assert!(
        claim.last_ns + 10_000_000 >= before && claim.last_ns <= after,
        "{before} <= {} <= {after}",
        claim.last_ns
    );

    let third_mac = [0x02, 0x77, 0, 0, 0, 7];
    passed(
        &mut rig,
        &arp_frame(CLIENT_MAC, 2, third_mac, VIP4, CLIENT4),
    );
    let claim = rig.claim_v4(VIP4).expect("reply recorded");
    assert_eq!(
        (claim.mac, claim.count),
        (third_mac, 2),
        "latest MAC, count"
    );
    passed(&mut rig, &arp_frame([0xff; 6], 2, OTHER_MAC, VIP4, VIP4));
    assert_eq!(rig.claim_v4(VIP4).map(|c| c.count), Some(3));

    // Not foreign: our own MAC, an address not announced here, a plain request.
    passed(&mut rig, &arp_frame([0xff; 6], 1, NODE_MAC, VIP4, VIP4));
    passed(
        &mut rig,
        &arp_frame([0xff; 6], 1, OTHER_MAC, UNKNOWN4, UNKNOWN4),
    );
    passed(
        &mut rig,
        &arp_frame([0xff; 6], 1, OTHER_MAC, CLIENT4, CLIENT4),
    );
    assert_eq!(rig.claim_v4(VIP4).map(|c| c.count), Some(3));
    assert_eq!(rig.claim_v4(CLIENT4), None, "key is interface + address");
    assert_eq!(rig.claim_v4(UNKNOWN4), None);
    assert_eq!(rig.extra(ExtraCounter::ForeignClaims), 3);
    assert_eq!(
        rig.counter(Counter::Passed),
        6,
        "ARP claims are passed ARP frames"
    );

    // IPv6: the target link-layer option names the claimer; our MAC there is no claim.
    passed(&mut rig, &na_frame(OTHER_MAC, VIP6, OTHER_MAC));
    passed(&mut rig, &na_frame(OTHER_MAC, VIP6, NODE_MAC));
    passed(&mut rig, &na_frame(OTHER_MAC, CLIENT6, OTHER_MAC));
    let claim = rig.claim_v6(VIP6).expect("NA recorded");
    assert_eq!((claim.mac, claim.count), (OTHER_MAC, 1));
    assert_eq!(rig.claim_v6(CLIENT6), None);
    // An advertisement failing RFC 4861 checks (hop limit 64) claims nothing.
    let mut bad = na_frame(third_mac, VIP6, third_mac);
    bad[21] = 64;
    passed(&mut rig, &bad);
    assert_eq!(rig.claim_v6(VIP6).map(|c| c.count), Some(1));
    assert_eq!(rig.extra(ExtraCounter::ForeignClaims), 4);
    assert_eq!(
        rig.counter(Counter::Passed),
        6,
        "advertisements are not counted as passed requests"
    );
    assert_eq!(rig.stats_v4(VIP4), (0, 0), "claims are not requests");
}

/// Over its burst, a source's requests for announced addresses are passed unanswered and
/// counted, while another source is still answered; both families share the source's bucket.
#[test]
fn rate_limit_passes_a_source_over_its_burst_and_answers_others() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    let from = |mac: [u8; 6]| arp_frame([0xff; 6], 1, mac, CLIENT4, VIP4);
    // The object's own value is all zeros: no limit until userspace sets one.
    for _ in 0..300 {
        assert_eq!(rig.run(&from(CLIENT_MAC)).0, XDP_TX);
    }
    assert_eq!(rig.extra(ExtraCounter::RateLimited), 0);

    // One per second after a burst of 3: the runs below take far less than a second.
    rig.set_limit(RateLimit {
        per_second: 1,
        burst: 3,
    });
    let limited = [0x02, 0x44, 0, 0, 0, 4];
    for n in 1..=3 {
        assert_eq!(
            rig.run(&from(limited)).0,
            XDP_TX,
            "request {n} of the burst"
        );
    }
    let fourth = from(limited);
    assert_eq!(
        rig.run(&fourth),
        (XDP_PASS, fourth.clone()),
        "over the burst"
    );
    assert_eq!(rig.extra(ExtraCounter::RateLimited), 1);
    assert_eq!(rig.run(&from(OTHER_MAC)).0, XDP_TX, "another source");

    // A solicitation from the same MAC (its Ethernet source) draws on the same bucket.
    let mut ns = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL);
    ns[6..12].copy_from_slice(&limited);
    assert_eq!(rig.run(&ns), (XDP_PASS, ns.clone()));
    let ns_other = ns_frame(CLIENT6, solicited_node(&VIP6), 255, &SOURCE_LL);
    assert_eq!(
        rig.run(&ns_other).0,
        XDP_TX,
        "CLIENT_MAC has its own bucket"
    );
    assert_eq!(rig.extra(ExtraCounter::RateLimited), 2);
    // Limited requests are seen (requests) but not answered (replies), and passed.
    assert_eq!(rig.stats_v4(VIP4), (300 + 5, 300 + 4));

    // Turned off again: answered at once.
    rig.set_limit(RateLimit::OFF);
    assert_eq!(rig.run(&from(limited)).0, XDP_TX);
}

/// The flood guard: over its burst, a source's frames that would be passed to the kernel
/// unanswered (requests for other addresses, malformed ones, requests over the answer limit)
/// are dropped and counted, in both families from one bucket; its requests for announced
/// addresses are still answered, and other sources still passed.
#[test]
fn flood_guard_drops_what_a_source_has_passed_beyond_its_burst() {
    let mut rig = Rig::new();
    rig.announce_v4(LOOPBACK, VIP4);
    rig.announce_v6(LOOPBACK, VIP6);
    let flooder = [0x02, 0x66, 0, 0, 0, 6];
    let unknown = |mac: [u8; 6]| arp_frame([0xff; 6], 1, mac, CLIENT4, [198, 51, 100, 99]);
    // The object's own value is all zeros: no guard until userspace sets one.
    for _ in 0..100 {
        assert_eq!(rig.run(&unknown(flooder)).0, XDP_PASS);
    }
    assert_eq!(rig.extra(ExtraCounter::FloodDropped), 0);

    // One per second after a burst of 3: the runs below take far less than a second.
    rig.set_flood_limit(RateLimit {
        per_second: 1,
        burst: 3,
    });
    for n in 1..=3 {
        assert_eq!(
            rig.run(&unknown(flooder)).0,
            XDP_PASS,
            "frame {n} of the burst"
        );
    }
    let passed_before = rig.counter(Counter::Passed);
    assert_eq!(rig.run(&unknown(flooder)).0, XDP_DROP, "over the burst");
    let mut malformed = unknown(flooder);
    malformed[18] = 7;
    assert_eq!(rig.run(&malformed).0, XDP_DROP, "malformed, same source");
    // A solicitation the kernel would discard (hop limit 64), same source.
    let mut ns = ns_frame(CLIENT6, solicited_node(&VIP6), 64, &SOURCE_LL);
    ns[6..12].copy_from_slice(&flooder);
    assert_eq!(rig.run(&ns).0, XDP_DROP, "a solicitation, same source");
    assert_eq!(rig.extra(ExtraCounter::FloodDropped), 3);
    assert_eq!(
        rig.counter(Counter::Passed),
        passed_before,
        "dropped frames are not counted as passed"
    );
    assert_eq!(
        rig.counter(Counter::Malformed),
        2,
        "still counted as malformed"
    );

    // Its requests for announced addresses are answered: answers draw on no flood credit.
    let announced = arp_frame([0xff; 6], 1, flooder, CLIENT4, VIP4);
    assert_eq!(rig.run(&announced).0, XDP_TX);
    // Another source is still passed.
    assert_eq!(rig.run(&unknown(OTHER_MAC)).0, XDP_PASS);

    // Turned off again: passed at once.
    rig.set_flood_limit(RateLimit::OFF);
    assert_eq!(rig.run(&unknown(flooder)).0, XDP_PASS);
    assert_eq!(rig.extra(ExtraCounter::FloodDropped), 3);
}

fn map_id(rig: &Rig, name: &str) -> u32 {
    use aya::maps::Map;
    let data = match rig.bpf.map(name).expect(name) {
        Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuHashMap(data)
        | Map::Array(data)
        | Map::PerCpuArray(data) => data,
        other => panic!("{name}: unexpected map type {other:?}"),
    };
    data.info().expect("map info").id()
}
