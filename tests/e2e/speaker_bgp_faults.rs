//! The real `herald speaker` in BGP mode when peers and configuration misbehave, against a real
//! FRR router and a real kube-apiserver:
//!
//! - the session to FRR uses `dynamicASN: external` and `localASN` (the BGPPeer's `myASN` is
//!   not the AS FRR expects, so the session only comes up if `localASN` replaces it);
//! - a peer that answers the OPEN with garbage (a broken marker, an oversized length) gets a
//!   Message Header Error NOTIFICATION back, is retried with backoff, and is reported (a
//!   `sessionDown` Event on its BGPPeer, `metallb_bgp_session_up 0`), while the FRR session
//!   keeps its routes;
//! - a peer address nobody answers: `connectTime` bounds each attempt, reported the same way;
//! - FRR shutting the neighbor down (a Cease NOTIFICATION): reported, and the session comes back
//!   with the route once the neighbor is enabled again;
//! - a second BGPAdvertisement whose communities make the route's UPDATE too large: that route
//!   is held back and counted as pending, the session stays up, and the route returns when the
//!   advertisement goes;
//! - the BGPAdvertisement moved to another pool, and the pool shrunk past the Service's
//!   address: the route leaves the router's table with the session still up.
//!
//! Needs root, the XDP object, `cargo xtask kube build`, `cargo build -p herald` and the
//! Debian package frr.

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

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgp_cluster::{NODE_AS, PATIENCE, ROUTER_AS, SERVICE_IP, bgp_world, find};
use herald_tests::{poll_until, unique};
use kube_support::cluster::{namespace_yaml, serial, wait_for};
use kube_support::netns::in_netns;
use kube_support::speaker::Speaker;
use routers::{Family, Lan, Neighbor, Route, Router, RouterConfig, RouterKind};

/// A second address of the router namespace, where the garbage peer listens.
const GARBAGE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
const GARBAGE_PORT: u16 = 1179;
/// On the LAN, answered by nobody.
const NOWHERE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 250);

/// What the garbage peer saw on one connection.
struct Contact {
    at: Instant,
    /// Everything the speaker sent until it closed (its OPEN, then its NOTIFICATION).
    received: Vec<u8>,
}

/// Accepts connections on `listener`; on each, reads the speaker's OPEN and answers with
/// garbage: a zero marker on even connections, an oversized length on odd ones.
fn garbage_peer(listener: TcpListener, contacts: Arc<Mutex<Vec<Contact>>>) {
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let at = Instant::now();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut received = vec![0u8; 19];
            if stream.read_exact(&mut received).is_err() {
                continue;
            }
            let length = usize::from(u16::from_be_bytes([received[16], received[17]]));
            let mut body = vec![0u8; length.saturating_sub(19)];
            let _ = stream.read_exact(&mut body);
            received.extend(body);
            let garbage: Vec<u8> = if i % 2 == 0 {
                vec![0u8; 19]
            } else {
                let mut header = vec![0xffu8; 16];
                header.extend([0x20, 0x00, 2]); // length 8192, UPDATE
                header
            };
            let _ = stream.write_all(&garbage);
            let _ = stream.read_to_end(&mut received);
            contacts.lock().unwrap().push(Contact { at, received });
        }
    });
}

/// The NOTIFICATION (code, subcode) after the OPEN in `bytes`, if any.
fn notification_after_open(bytes: &[u8]) -> Option<(u8, u8)> {
    let open_len = usize::from(u16::from_be_bytes([*bytes.get(16)?, *bytes.get(17)?]));
    let rest = bytes.get(open_len..)?;
    (rest.get(..16)? == [0xff; 16] && *rest.get(18)? == 3).then(|| (rest[19], rest[20]))
}

fn peer(name: &str, address: Ipv4Addr, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  peerAddress: \"{address}\"\n  holdTime: 9s\n{spec}"
    )
}

fn pool(name: &str, addresses: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  addresses: [{addresses}]\n"
    )
}

fn advertisement(pool: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: faults\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{pool}]\n"
    )
}

#[test]
fn hostile_and_silent_peers_notifications_and_pool_changes() {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario());
}

#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn scenario() {
    let (cluster, bpffs, lan) = bgp_world("hbx", 1).await;
    let plane = cluster.plane;
    let node = unique("hbx-node");
    let node_v4 = IpAddr::V4(Lan::host_v4(0));
    let router = Router::start(&RouterConfig {
        kind: RouterKind::Frr,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![IpAddr::V4(Lan::ROUTER_V4)],
        neighbors: vec![Neighbor::new(node_v4, NODE_AS)],
    })
    .expect("router");
    lan.router
        .ip(["addr", "add", &format!("{GARBAGE_IP}/24"), "dev", "br0"])
        .unwrap();
    let listener = in_netns(&lan.router.name, || {
        TcpListener::bind((GARBAGE_IP, GARBAGE_PORT)).expect("bind the garbage peer")
    });
    let contacts = Arc::new(Mutex::new(Vec::new()));
    garbage_peer(listener, Arc::clone(&contacts));

    let ns = unique("speaker-bgp-faults");
    cluster.apply(&namespace_yaml(&ns));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    herald-test: \"true\"\n"
    ));
    cluster.apply(&pool("faults", "198.51.100.64/27"));
    cluster.apply(&pool("other", "198.51.100.128/27"));
    cluster.apply(&advertisement("faults"));
    // FRR expects the node in NODE_AS: only localASN makes that true.
    cluster.apply(&peer(
        "frr",
        Lan::ROUTER_V4,
        &format!("  myASN: 64999\n  localASN: {NODE_AS}\n  dynamicASN: external\n"),
    ));
    cluster.apply(&peer(
        "garbage",
        GARBAGE_IP,
        &format!("  myASN: {NODE_AS}\n  peerASN: {ROUTER_AS}\n  peerPort: {GARBAGE_PORT}\n"),
    ));
    cluster.apply(&peer(
        "nowhere",
        NOWHERE_IP,
        &format!("  myASN: {NODE_AS}\n  peerASN: {ROUTER_AS}\n  connectTime: 2s\n"),
    ));
    cluster.announced_web_service(&ns, &[SERVICE_IP], &node);
    let speaker = Speaker::start(plane, &lan.hosts[0], &node, &bpffs);
    let context = || format!("speaker:\n{}\nrouter:\n{}", speaker.logs(), router.logs());
    let prefix = format!("{SERVICE_IP}/32");
    let has_route = |routes: &[Route]| find(routes, &prefix).is_some();
    let no_route = |routes: &[Route]| find(routes, &prefix).is_none();

    // dynamicASN + localASN: the session is up, the route carries the local AS.
    let routes = router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    let route = find(&routes, &prefix).unwrap();
    assert_eq!(route.as_path, [NODE_AS], "{}", context());
    assert_eq!(route.next_hops, [node_v4].into(), "{}", context());

    // The garbage peer: every connection is answered with Message Header Error (Connection
    // Not Synchronized for the marker, Bad Message Length for the length), then retried.
    assert!(
        poll_until(PATIENCE, || contacts.lock().unwrap().len() >= 3),
        "the speaker stopped retrying the garbage peer\n{}",
        context()
    );
    {
        let contacts = contacts.lock().unwrap();
        for (i, contact) in contacts.iter().take(3).enumerate() {
            let want = if i % 2 == 0 { (1, 1) } else { (1, 2) };
            assert_eq!(
                notification_after_open(&contact.received),
                Some(want),
                "connection {i}: {:02x?}\n{}",
                contact.received,
                context()
            );
        }
        // Retries back off: never a busy loop.
        for pair in contacts.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(gap >= Duration::from_millis(500), "retried after {gap:?}");
        }
    }
    for (peer, words) in [("garbage", "Message Header Error"), ("nowhere", "connect")] {
        wait_for(
            &format!("a sessionDown Event on BGPPeer {peer} saying {words:?}"),
            || async {
                let events = cluster.events("metallb-system", "BGPPeer", peer).await;
                events
                    .iter()
                    .any(|(reason, kind, note, _)| {
                        reason == "sessionDown" && kind == "Warning" && note.contains(words)
                    })
                    .then_some(())
            },
            context,
        )
        .await;
    }
    let metrics = speaker.metrics();
    for line in [
        format!("metallb_bgp_session_up{{peer=\"{GARBAGE_IP}:{GARBAGE_PORT}\"}} 0"),
        format!("metallb_bgp_session_up{{peer=\"{NOWHERE_IP}:179\"}} 0"),
        format!(
            "metallb_bgp_session_up{{peer=\"{}:179\"}} 1",
            Lan::ROUTER_V4
        ),
    ] {
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    // The FRR session never noticed.
    assert!(
        has_route(&router.routes(Family::Ipv4).unwrap()),
        "{}",
        context()
    );

    // FRR shuts the neighbor down (Cease NOTIFICATION): reported; enabled again, the speaker
    // reconnects and the route is back.
    let neighbor = |shutdown: &str| {
        router
            .cli(&[
                "configure terminal",
                &format!("router bgp {ROUTER_AS}"),
                &format!("{shutdown}neighbor {node_v4} shutdown"),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
    };
    neighbor("");
    wait_for(
        "a sessionDown Event naming FRR's Cease",
        || async {
            let events = cluster.events("metallb-system", "BGPPeer", "frr").await;
            events
                .iter()
                .any(|(reason, _, note, _)| reason == "sessionDown" && note.contains("Cease"))
                .then_some(())
        },
        context,
    )
    .await;
    // FRR clears a shut-down neighbor's routes in the background: gone first, so that the
    // route seen next is the reconnected session's.
    router
        .wait_routes(Family::Ipv4, no_route, PATIENCE)
        .unwrap_or_else(|e| panic!("route kept after the shutdown: {e}\n{}", context()));
    neighbor("no ");
    router
        .wait_established(node_v4, PATIENCE)
        .unwrap_or_else(|e| panic!("no session after the shutdown: {e}\n{}", context()));
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("route not back after the shutdown: {e}\n{}", context()));

    // A second advertisement of the pool adds 1,100 communities: the merged attributes no
    // longer fit one UPDATE. That route is held back (withdrawn, counted as pending); the
    // session stays up instead of failing on every send.
    let frr_downs = || async {
        let events = cluster.events("metallb-system", "BGPPeer", "frr").await;
        events
            .iter()
            .filter(|(reason, _, _, _)| reason == "sessionDown")
            .count()
    };
    let downs_before = frr_downs().await;
    let communities: Vec<String> = (0..1100).map(|n| format!("\"64512:{n}\"")).collect();
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: crowded\n  namespace: metallb-system\nspec:\n  ipAddressPools: [faults]\n  communities: [{}]\n",
        communities.join(", ")
    ));
    router
        .wait_routes(Family::Ipv4, no_route, PATIENCE)
        .unwrap_or_else(|e| panic!("an unencodable route was not held back: {e}\n{}", context()));
    let pending = format!(
        "metallb_bgp_pending_prefixes_total{{peer=\"{}:179\"}} 1",
        Lan::ROUTER_V4
    );
    assert!(
        poll_until(PATIENCE, || speaker.metrics().contains(&pending)),
        "{pending} missing:\n{}",
        speaker.metrics()
    );
    // Longer than the reconnect backoff's first step: a session failing on the send would
    // have gone down and been reported by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        router.session_established(node_v4).unwrap(),
        "{}",
        context()
    );
    assert_eq!(frr_downs().await, downs_before, "{}", context());
    assert!(
        speaker.logs().contains("its UPDATE cannot be encoded"),
        "{}",
        context()
    );
    cluster.kubectl(&[
        "delete",
        "-n",
        "metallb-system",
        "bgpadvertisement",
        "crowded",
    ]);
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("not sent once it fits again: {e}\n{}", context()));

    // The advertisement moves to another pool: withdrawn, the session stays up.
    cluster.apply(&advertisement("other"));
    router
        .wait_routes(Family::Ipv4, no_route, PATIENCE)
        .unwrap_or_else(|e| panic!("not withdrawn on a pool change: {e}\n{}", context()));
    assert!(
        router.session_established(node_v4).unwrap(),
        "{}",
        context()
    );
    cluster.apply(&advertisement("faults"));
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("not announced again: {e}\n{}", context()));

    // The pool shrinks past the Service's address: withdrawn.
    cluster.apply(&pool("faults", "198.51.100.96/27"));
    router
        .wait_routes(Family::Ipv4, no_route, PATIENCE)
        .unwrap_or_else(|e| panic!("not withdrawn when the pool shrank: {e}\n{}", context()));
    assert!(
        router.session_established(node_v4).unwrap(),
        "{}",
        context()
    );

    drop(speaker);
    drop(router);
    cluster.clear_bgp_objects();
}
