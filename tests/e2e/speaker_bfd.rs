//! BFD between the real `herald speaker` and real routers (FRR's bfdd, BIRD's `bfd` protocol), in
//! network namespaces, with a real kube-apiserver: a BGPPeer with `bfdProfile` (under
//! `METALLB_BGP_TYPE=frr`, whose rules allow it) brings a BFD session up with the profile's
//! intervals as the router reports them; a frozen speaker (SIGSTOP: its TCP session stays open)
//! and a cut link (the node's port on the router's bridge down) each take the node's route out of
//! the router's table by BFD, long before the 90 s hold time; thawed or reconnected, the session
//! and the route come back. The speaker's BFD metrics follow. Hostile packets from the router's
//! address (a TTL below 255, a short one, a wrong version, another session's discriminator) are
//! dropped and counted by reason, and the session stays up.
//!
//! Needs root, the XDP object, `cargo xtask kube build`, `cargo build -p herald` and the Debian
//! packages frr and bird2.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/bgp_cluster.rs"]
mod bgp_cluster;
#[path = "support/kube/mod.rs"]
mod kube_support;
#[path = "support/routers/mod.rs"]
mod routers;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bgp_cluster::{
    NODE_AS, PATIENCE, ROUTER_AS, SERVICE_IP, base_objects, bgp_world, find, run_serial,
};
use herald_tests::{poll_until, unique};
use kube_support::netns::in_netns;
use kube_support::speaker::Speaker;
use routers::{BfdPeer, BfdTimers, Family, Lan, Neighbor, Route, Router, RouterConfig, RouterKind};

/// The profile both ends use: 100 ms each way, multiplier 3 (300 ms detection).
const TIMERS: BfdTimers = BfdTimers {
    receive_ms: 100,
    transmit_ms: 100,
    multiplier: 3,
};

/// Far below the 90 s hold time: a route gone within this went by BFD, not by BGP's timers.
const BFD_BOUND: Duration = Duration::from_secs(10);

#[test]
fn frr_bfd_takes_a_dead_node_out_and_back() {
    run_serial(scenario(RouterKind::Frr, false));
}

#[test]
fn bird_bfd_takes_a_dead_node_out_and_back() {
    run_serial(scenario(RouterKind::Bird, false));
}

/// `ebgpMultiHop` on both ends: BFD over UDP 4784 (RFC 5883), TTL checked against the profile's
/// `minimumTtl` (default 254) instead of 255.
#[test]
fn frr_multihop_bfd_takes_a_dead_node_out_and_back() {
    run_serial(scenario(RouterKind::Frr, true));
}

async fn scenario(kind: RouterKind, multihop: bool) {
    let (cluster, bpffs, lan) = bgp_world("hbd", 1).await;
    let plane = cluster.plane;
    let node = unique("hbd-node");
    let node_v4 = IpAddr::V4(Lan::host_v4(0));
    let router = Router::start(&RouterConfig {
        kind,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![IpAddr::V4(Lan::ROUTER_V4)],
        neighbors: vec![Neighbor {
            hold_time: Some(90),
            bfd: Some(TIMERS),
            multihop,
            ..Neighbor::new(node_v4, NODE_AS)
        }],
    })
    .expect("router");
    let ns = unique("speaker-bfd");
    base_objects(&cluster, &ns, &[node.as_str()], "");
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: fast\n  namespace: metallb-system\nspec:\n  receiveInterval: {}\n  transmitInterval: {}\n  detectMultiplier: {}\n",
        TIMERS.receive_ms, TIMERS.transmit_ms, TIMERS.multiplier
    ));
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: router\n  namespace: metallb-system\nspec:\n  myASN: {NODE_AS}\n  peerASN: {ROUTER_AS}\n  peerAddress: \"{}\"\n  holdTime: 90s\n  bfdProfile: fast\n  ebgpMultiHop: {multihop}\n",
        Lan::ROUTER_V4
    ));
    cluster.announced_web_service(&ns, &[SERVICE_IP], &node);
    let speaker = Speaker::start_with(plane, &lan.hosts[0], &node, &bpffs, &["--bgp-type=frr"]);
    let context = || {
        let bfd_metrics: Vec<String> = speaker
            .metrics()
            .lines()
            .filter(|l| l.contains("bfd") && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        format!(
            "speaker:\n{}\nspeaker BFD metrics:\n{}\nrouter BFD sessions: {:?}\nrouter:\n{}",
            speaker.logs(),
            bfd_metrics.join("\n"),
            router.bfd_peers(),
            router.logs()
        )
    };
    let prefix = format!("{SERVICE_IP}/32");
    let has_route = |routes: &[Route]| find(routes, &prefix).is_some();
    let no_route = |routes: &[Route]| find(routes, &prefix).is_none();
    let bfd_of = |router: &Router| -> Option<BfdPeer> {
        router
            .bfd_peers()
            .ok()?
            .into_iter()
            .find(|p| p.peer == node_v4)
    };

    // Up, with the profile's intervals as the router negotiated them.
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert!(
        poll_until(PATIENCE, || bfd_of(&router).is_some_and(|p| p.up)),
        "BFD session not up at the router: {:?}\n{}",
        router.bfd_peers(),
        context()
    );
    let peer = bfd_of(&router).unwrap();
    assert_eq!(peer.transmit_ms, TIMERS.transmit_ms, "{peer:?}");
    assert_eq!(
        peer.detect_ms,
        Some(u32::from(TIMERS.multiplier) * TIMERS.receive_ms),
        "{peer:?}"
    );
    if kind == RouterKind::Frr {
        assert_eq!(peer.remote_receive_ms, Some(TIMERS.receive_ms), "{peer:?}");
        assert_eq!(
            peer.remote_transmit_ms,
            Some(TIMERS.transmit_ms),
            "{peer:?}"
        );
        assert_eq!(peer.remote_detect_mult, Some(u32::from(TIMERS.multiplier)));
        assert_eq!(peer.multihop, Some(multihop), "{peer:?}");
    }
    assert!(
        poll_until(PATIENCE, || speaker
            .get("/status/bgp")
            .contains("\"bfd\":\"up\"")),
        "herald bgp status does not show BFD up: {}",
        speaker.get("/status/bgp")
    );
    let up_metric = format!("metallb_bfd_session_up{{peer=\"{}\"}} 1", Lan::ROUTER_V4);
    assert!(
        poll_until(PATIENCE, || speaker.metrics().contains(&up_metric)),
        "{up_metric} missing:\n{}",
        speaker.metrics()
    );

    // A frozen speaker: its TCP session stays open, BFD stops; the route goes by BFD.
    let frozen = Instant::now();
    speaker.signal(libc::SIGSTOP);
    let gone = router.wait_routes(Family::Ipv4, no_route, BFD_BOUND);
    let took = frozen.elapsed();
    speaker.signal(libc::SIGCONT);
    gone.unwrap_or_else(|e| panic!("route kept {took:?} after the freeze: {e}\n{}", context()));
    eprintln!("{kind:?}: route gone {took:?} after SIGSTOP (BFD {TIMERS:?}, hold time 90 s)");
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("route not back after SIGCONT: {e}\n{}", context()));
    assert!(poll_until(PATIENCE, || bfd_of(&router).is_some_and(|p| p.up)));

    // The node's link cut at the bridge (the router's own interface stays up).
    let cut = Instant::now();
    lan.router.ip(["link", "set", "h0", "down"]).unwrap();
    let gone = router.wait_routes(Family::Ipv4, no_route, BFD_BOUND);
    let took = cut.elapsed();
    lan.router.ip(["link", "set", "h0", "up"]).unwrap();
    gone.unwrap_or_else(|e| panic!("route kept {took:?} after the cut: {e}\n{}", context()));
    eprintln!("{kind:?}: route gone {took:?} after the link cut");
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("route not back after the repair: {e}\n{}", context()));

    // Hostile packets from the router's own address: each dropped, counted by reason, and the
    // session stays up.
    let downs_before = counter(&speaker.metrics(), "metallb_bfd_session_down_events{");
    let valid = |state: u8, yours: u32| -> Vec<u8> {
        let mut p = vec![0x20, state << 6, 3, 24];
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&yours.to_be_bytes());
        for _ in 0..3 {
            p.extend_from_slice(&100_000u32.to_be_bytes());
        }
        p
    };
    let mut wrong_version = valid(1, 0);
    wrong_version[0] = 0x40;
    let hostile: Vec<(u32, Vec<u8>)> = vec![
        (64, valid(1, 0)),
        (255, vec![0x20; 10]),
        (255, wrong_version),
        (255, valid(3, 0xdead_beef)),
    ];
    let target = std::net::SocketAddr::new(node_v4, if multihop { 4784 } else { 3784 });
    in_netns(&lan.router.name, move || {
        let socket = std::net::UdpSocket::bind((Lan::ROUTER_V4, 0)).unwrap();
        for (ttl, payload) in hostile {
            socket.set_ttl(ttl).unwrap();
            for _ in 0..5 {
                socket.send_to(&payload, target).unwrap();
            }
        }
    });
    let dropped = |reason: &str| {
        counter(
            &speaker.metrics(),
            &format!("herald_bfd_packets_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    for reason in ["ttl", "bad_length", "bad_version", "no_session"] {
        assert!(
            poll_until(PATIENCE, || dropped(reason) >= 5.0),
            "{reason}: {} dropped of 5\n{}",
            dropped(reason),
            speaker.metrics()
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(bfd_of(&router).is_some_and(|p| p.up), "{}", context());
    assert_eq!(
        counter(&speaker.metrics(), "metallb_bfd_session_down_events{"),
        downs_before,
        "a hostile packet took the session down\n{}",
        context()
    );

    // The speaker saw both: down events counted, and the BGP session ended with BFD.
    let metrics = speaker.metrics();
    let downs = counter(&metrics, "metallb_bfd_session_down_events{");
    assert!(downs >= 1.0, "no BFD down event counted:\n{metrics}");
    assert!(speaker.logs().contains("BFD session down"), "{}", context());
}

/// The value of the first metric line starting with `prefix` (0 when absent).
fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}
