//! Graceful restart (RFC 4724) between the real `herald speaker` and real routers (FRR, BIRD,
//! GoBGP as helpers),
//! with a real kube-apiserver: with `enableGracefulRestart` (under `METALLB_BGP_TYPE=frr`, whose
//! rules allow it) the speaker offers the capability with the Forwarding State bit; when it is
//! killed (`kill -9`) or stopped (SIGTERM, as a rollout stops it) the router keeps the node's
//! route until the next speaker process has re-established the session and sent its End-of-RIB:
//! the router's table, read every 100 ms throughout, never lacks it, the route comes back with
//! the community the advertisement was given while the speaker was away, and FRR's kernel route
//! is never deleted (`ip monitor route` in the router's namespace). Without graceful restart the
//! same kill takes the route out at once.
//!
//! Needs root, the XDP object, `cargo xtask kube build`, `cargo build -p herald` and the Debian
//! packages frr, bird2 and gobgpd.

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

use std::io::Read;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bgp_cluster::{
    NODE_AS, PATIENCE, ROUTER_AS, SERVICE_IP, base_objects, bgp_world, find, run_serial,
};
use herald_tests::{KillOnDrop, poll_until, unique};
use kube_support::speaker::Speaker;
use routers::{Family, Lan, Neighbor, Route, Router, RouterConfig, RouterKind};

/// `ip monitor route` in a namespace, its output kept until [`RouteMonitor::finish`].
struct RouteMonitor(KillOnDrop);

impl RouteMonitor {
    fn start(netns: &str) -> RouteMonitor {
        RouteMonitor(KillOnDrop(
            Command::new("ip")
                .args(["-n", netns, "monitor", "route"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("ip monitor route"),
        ))
    }

    /// Stops the monitor; what it printed.
    fn finish(mut self) -> String {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.0.id() as i32, libc::SIGTERM) };
        let mut out = String::new();
        if let Some(mut stdout) = self.0.0.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let _ = self.0.0.wait();
        out
    }
}

#[test]
fn frr_keeps_the_routes_across_speaker_restarts() {
    run_serial(scenario(RouterKind::Frr));
}

#[test]
fn bird_keeps_the_routes_across_speaker_restarts() {
    run_serial(scenario(RouterKind::Bird));
}

#[test]
fn gobgp_keeps_the_routes_across_speaker_restarts() {
    run_serial(scenario(RouterKind::Gobgp));
}

async fn scenario(kind: RouterKind) {
    let (cluster, bpffs, lan) = bgp_world("hgr", 1).await;
    let plane = cluster.plane;
    let node = unique("hgr-node");
    let node_v4 = IpAddr::V4(Lan::host_v4(0));
    let frr = kind == RouterKind::Frr;
    let router = Router::start(&RouterConfig {
        kind,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![IpAddr::V4(Lan::ROUTER_V4)],
        neighbors: vec![Neighbor {
            graceful_restart: true,
            ..Neighbor::new(node_v4, NODE_AS)
        }],
    })
    .expect("router");
    let ns = unique("speaker-gr");
    base_objects(&cluster, &ns, &[node.as_str()], "");
    let peer = |name: &str, graceful: bool| {
        format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  myASN: {NODE_AS}\n  peerASN: {ROUTER_AS}\n  peerAddress: \"{}\"\n  enableGracefulRestart: {graceful}\n",
            Lan::ROUTER_V4
        )
    };
    cluster.apply(&peer("router", true));
    cluster.announced_web_service(&ns, &[SERVICE_IP], &node);
    let start = || Speaker::start_with(plane, &lan.hosts[0], &node, &bpffs, &["--bgp-type=frr"]);
    let prefix = format!("{SERVICE_IP}/32");
    let has_route = |routes: &[Route]| find(routes, &prefix).is_some();
    let no_route = |routes: &[Route]| find(routes, &prefix).is_none();
    // FRR installs its routes in the kernel; the test's BIRD exports none.
    let kernel_route = || {
        !frr || lan
            .router
            .ip(["route", "show", &prefix])
            .unwrap_or_default()
            .contains(SERVICE_IP)
    };
    let neighbor_gr = || {
        router
            .cli(&[&format!("show bgp neighbors {node_v4} json")])
            .unwrap_or_default()
    };
    // Whether the router still holds the route as stale (FRR's and GoBGP's path flag; BIRD
    // shows none).
    let stale = || match kind {
        RouterKind::Frr => router
            .cli(&[&format!("show bgp ipv4 unicast {prefix} json")])
            .unwrap_or_default()
            .contains("\"stale\":true"),
        RouterKind::Gobgp => router
            .cli(&["global", "rib", "-a", "ipv4", "-j"])
            .unwrap_or_default()
            .contains("\"stale\":true"),
        RouterKind::Bird => false,
    };

    let mut speaker = start();
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\nspeaker:\n{}", speaker.logs()));
    assert!(poll_until(PATIENCE, kernel_route), "kernel route missing");
    if frr {
        let shown = neighbor_gr();
        assert!(
            shown.contains("\"gracefulRestartInfo\"")
                && shown.contains("\"remoteGrMode\":\"Restart\""),
            "FRR does not see the speaker as a restarting speaker: {shown}"
        );
    }

    // The advertisement's community, changed while the speaker is away: the route carrying
    // the new one shows the next speaker sent it again (BIRD marks no stale paths).
    let advertise = |community: &str| {
        cluster.apply(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: bgp-e2e\n  namespace: metallb-system\nspec:\n  ipAddressPools: [bgp-e2e]\n  communities: [\"{community}\"]\n"
        ));
    };
    for (how, signal, community) in [
        ("kill -9", libc::SIGKILL, (64512, 301)),
        ("SIGTERM", libc::SIGTERM, (64512, 302)),
    ] {
        let monitor = RouteMonitor::start(&lan.router.name);
        let watching = AtomicBool::new(true);
        // The router's table read every 100 ms from before the signal until the new speaker's
        // End-of-RIB has been taken: every read must hold the route.
        let (missing, reads) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let (mut missing, mut reads) = (0usize, 0usize);
                while watching.load(Ordering::SeqCst) {
                    if let Ok(routes) = router.routes(Family::Ipv4) {
                        reads += 1;
                        missing += usize::from(!has_route(&routes));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (missing, reads)
            });
            std::thread::sleep(Duration::from_millis(300));
            speaker.signal(signal);
            let _ = speaker.process.0.wait();
            if signal == libc::SIGTERM {
                assert!(
                    speaker
                        .logs()
                        .contains("without NOTIFICATION (graceful restart"),
                    "{}",
                    speaker.logs()
                );
            }
            advertise(&format!("{}:{}", community.0, community.1));
            // Away for a while: the router holds the route (stale).
            std::thread::sleep(Duration::from_secs(3));
            assert!(
                kernel_route(),
                "{how}: the kernel route went while the speaker was away"
            );
            speaker = start();
            router
                .wait_established(node_v4, PATIENCE)
                .unwrap_or_else(|e| panic!("{how}: {e}\n{}", speaker.logs()));
            // The new speaker's route replaced the held one, and its End-of-RIB cleared FRR's
            // and GoBGP's stale mark.
            router
                .wait_routes(
                    Family::Ipv4,
                    |routes| {
                        find(routes, &prefix).is_some_and(|r| r.communities.contains(&community))
                    },
                    PATIENCE,
                )
                .unwrap_or_else(|e| {
                    panic!(
                        "{how}: the route was not sent again: {e}\n{}",
                        speaker.logs()
                    )
                });
            assert!(
                poll_until(PATIENCE, || !stale()),
                "{how}: the route is still stale after the restart\n{}",
                speaker.logs()
            );
            std::thread::sleep(Duration::from_secs(2));
            watching.store(false, Ordering::SeqCst);
            watcher.join().unwrap()
        });
        let seen = monitor.finish();
        assert!(
            reads >= 30,
            "{how}: only {reads} reads of the router's table"
        );
        assert_eq!(
            missing,
            0,
            "{how}: {missing} of {reads} reads of the router's table lacked the route\n{}\n{}",
            speaker.logs(),
            router.logs()
        );
        assert!(
            !seen
                .lines()
                .any(|l| l.starts_with("Deleted") && l.contains(SERVICE_IP)),
            "{how}: the kernel route was deleted during the restart:\n{seen}"
        );
        eprintln!(
            "{kind:?}, {how}: the route was in all {reads} reads of the router's table through the restart"
        );
    }
    // Without graceful restart the same kill withdraws at once. (`enableGracefulRestart` cannot
    // change on a BGPPeer, as in MetalLB: another peer replaces it.)
    cluster.kubectl(&["-n", "metallb-system", "delete", "bgppeer", "router"]);
    if kind == RouterKind::Gobgp {
        // GoBGP keeps a neighbor's graceful-restart state from its earlier session, capability
        // or not: the neighbor is made again, without graceful restart.
        let address = node_v4.to_string();
        router.cli(&["neighbor", "del", &address]).unwrap();
        router
            .cli(&["neighbor", "add", &address, "as", &NODE_AS.to_string()])
            .unwrap();
    }
    cluster.apply(&peer("router-plain", false));
    assert!(
        poll_until(PATIENCE, || speaker
            .logs()
            .contains("opening BGP session peer=router-plain")),
        "the speaker did not open the session without graceful restart\n{}",
        speaker.logs()
    );
    router.wait_established(node_v4, PATIENCE).unwrap();
    if frr {
        assert!(
            !neighbor_gr().contains("\"remoteGrMode\":\"Restart\""),
            "{}",
            neighbor_gr()
        );
    }
    router
        .wait_routes(Family::Ipv4, has_route, PATIENCE)
        .unwrap();
    assert!(poll_until(PATIENCE, kernel_route), "kernel route missing");
    let monitor = RouteMonitor::start(&lan.router.name);
    std::thread::sleep(Duration::from_millis(300));
    speaker.signal(libc::SIGKILL);
    router
        .wait_routes(Family::Ipv4, no_route, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("without graceful restart the route stayed: {e}"));
    if frr {
        assert!(
            poll_until(PATIENCE, || !kernel_route()),
            "kernel route kept"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    // The monitor sees a deletion when there is one (so its silence above means something).
    let seen = monitor.finish();
    assert!(
        !frr || seen
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains(SERVICE_IP)),
        "ip monitor route saw no deletion: {seen:?}"
    );
}
