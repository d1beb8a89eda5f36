//! The real `herald speaker` in BGP mode against real routers: BIRD, FRR and GoBGP, each in a
//! network namespace on a bridge with the node namespaces, and a real kube-apiserver (the
//! speaker runs as the speaker service account, so `manifests/rbac-speaker.yaml` is what the
//! server enforces). What is checked is each router's own table, read with its own CLI.
//!
//! - Every router: eBGP over IPv4 and over IPv6 (MP-BGP), the Service's /32 and /128 with the
//!   node's address as next hop, AS path [node AS], the advertisement's standard and large
//!   communities; deleting the Service withdraws both at once.
//! - FRR one forwarding hop away: an eBGP session without `ebgpMultiHop` comes up in native
//!   mode (the system's TTL, as MetalLB's native speaker sends), and over IPv6 the node's BGP
//!   identifier is the IPv4 address on the same interface.
//! - FRR: iBGP carries LOCAL_PREF and an empty AS path; an OPEN from an unexpected AS is
//!   refused (Bad Peer AS, a `sessionDown` Event) while the other sessions carry on; TCP MD5 from
//!   a `passwordSecret` brings the session up, a wrong password keeps it down with a
//!   `sessionDown` Event on the BGPPeer and `metallb_bgp_session_up 0`; a frozen speaker (SIGSTOP) loses its routes when the router's
//!   hold timer expires; three speakers give three ECMP next hops, and the exclusion label on one
//!   node takes its next hop away.
//!
//! Needs root, the XDP object, `cargo xtask kube build`, `cargo build -p herald` and the
//! Debian packages bird2, frr, gobgpd.

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

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use herald_tests::{Bpffs, Netns, poll_until, require_root, unique, veth_between};
use kube_support::cluster::Cluster;
use kube_support::netns::forward_api_into;
use kube_support::speaker::Speaker;
use routers::{Family, Lan, Neighbor, Router, RouterConfig, RouterKind};

use bgp_cluster::*;

#[test]
fn bird_frr_and_gobgp_learn_and_lose_the_service_routes() {
    run_serial(each_router());
}

async fn each_router() {
    require_root();
    let cluster = Cluster::reset().await;
    let plane = cluster.plane;
    let bpffs = Bpffs::new().expect("bpffs");
    for kind in [RouterKind::Frr, RouterKind::Bird, RouterKind::Gobgp] {
        cluster.clear_bgp_objects();
        let lan = Lan::new("hbg", 1).expect("lan");
        let node = unique("hbg-node");
        let node_v4 = IpAddr::V4(Lan::host_v4(0));
        let node_v6 = IpAddr::V6(Lan::host_v6(0));
        forward_api_into(&lan.hosts[0].name, plane.apiserver_port);
        let router = dual_stack_router(kind, &lan).expect("router");

        let ns = unique("speaker-bgp");
        base_objects(&cluster, &ns, &[&node], "");
        cluster.apply(&peer_yaml("r4", IpAddr::V4(Lan::ROUTER_V4), NODE_AS, ""));
        cluster.apply(&peer_yaml("r6", IpAddr::V6(Lan::ROUTER_V6), NODE_AS, ""));
        cluster.announced_web_service(&ns, &[SERVICE_IP, SERVICE_IP6], &node);
        let speaker = Speaker::start(plane, &lan.hosts[0], &node, &bpffs);
        let context = || {
            format!(
                "{kind:?}\nspeaker:\n{}\nrouter:\n{}",
                speaker.logs(),
                router.logs()
            )
        };

        let v4 = router
            .wait_routes(Family::Ipv4, |r| find(r, &v4_prefix()).is_some(), PATIENCE)
            .unwrap_or_else(|e| panic!("{e}\n{}", context()));
        let route = find(&v4, &v4_prefix()).unwrap();
        assert_eq!(route.next_hops, BTreeSet::from([node_v4]), "{}", context());
        assert_eq!(route.as_path, [NODE_AS], "{}", context());
        assert_eq!(route.communities, [(64512, 300)], "{}", context());
        assert_eq!(route.large_communities, [(64512, 1, 2)], "{}", context());
        assert_eq!(v4.len(), 1, "only the Service's route: {v4:?}");

        let v6 = router
            .wait_routes(Family::Ipv6, |r| find(r, &v6_prefix()).is_some(), PATIENCE)
            .unwrap_or_else(|e| panic!("{e}\n{}", context()));
        let route = find(&v6, &v6_prefix()).unwrap();
        assert_eq!(route.next_hops, BTreeSet::from([node_v6]), "{}", context());
        assert_eq!(route.as_path, [NODE_AS], "{}", context());
        assert_eq!(route.communities, [(64512, 300)], "{}", context());

        // The IPv6 session's BGP identifier is the IPv4 address on the same interface, as
        // MetalLB's native speaker picks it.
        if kind == RouterKind::Frr {
            let shown = router
                .cli(&[&format!("show bgp neighbors {node_v6} json")])
                .unwrap_or_else(|e| panic!("{e}\n{}", context()));
            let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
            assert_eq!(
                json[node_v6.to_string()]["remoteRouterId"],
                node_v4.to_string(),
                "{shown}"
            );
        }

        // The speaker's own view: both sessions up, one prefix each.
        assert!(
            poll_until(PATIENCE, || {
                let m = speaker.metrics();
                m.contains("metallb_bgp_session_up{peer=\"203.0.113.1:179\"} 1")
                    && m.contains("metallb_bgp_session_up{peer=\"[2001:db8::1]:179\"} 1")
                    && m.contains(
                        "metallb_bgp_announced_prefixes_total{peer=\"203.0.113.1:179\"} 1",
                    )
                    && m.contains("protocol=\"bgp\"")
            }),
            "metrics:\n{}\n{}",
            speaker.metrics(),
            context()
        );
        kube_support::cluster::wait_for(
            "a nodeAssigned Event with protocol bgp",
            || async {
                let events = cluster.events(&ns, "Service", "web").await;
                events
                    .iter()
                    .any(|(reason, _, note, _)| {
                        reason == "nodeAssigned" && note.contains("\"bgp\"")
                    })
                    .then_some(())
            },
            context,
        )
        .await;

        // Service deleted: both routes leave the router's table.
        cluster.kubectl(&["delete", "service", "web", "-n", &ns]);
        router
            .wait_routes(Family::Ipv4, |r| find(r, &v4_prefix()).is_none(), PATIENCE)
            .unwrap_or_else(|e| panic!("v4 route not withdrawn: {e}\n{}", context()));
        router
            .wait_routes(Family::Ipv6, |r| find(r, &v6_prefix()).is_none(), PATIENCE)
            .unwrap_or_else(|e| panic!("v6 route not withdrawn: {e}\n{}", context()));
        drop(speaker);
        drop(router);
    }
    cluster.clear_bgp_objects();
}

#[test]
fn native_ebgp_reaches_a_router_two_hops_away() {
    run_serial(two_hops());
}

/// The router's address behind a forwarding hop (the LAN's router namespace).
const FAR_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const HOP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 253);

/// MetalLB's native speaker sends eBGP at the system's TTL, so a router one forwarding hop away
/// is reached without `ebgpMultiHop` (a TTL of 1 would die at the hop).
async fn two_hops() {
    let (cluster, bpffs, lan) = bgp_world("hb2", 1).await;
    let plane = cluster.plane;
    let node = unique("hb2-node");
    let node_v4 = IpAddr::V4(Lan::host_v4(0));
    let far = Netns::new("hb2f").expect("netns");
    veth_between(&lan.router, "far0", &far, "eth0").unwrap();
    lan.router
        .ip(["addr", "add", &format!("{HOP_V4}/30"), "dev", "far0"])
        .unwrap();
    lan.router.ip(["link", "set", "far0", "up"]).unwrap();
    lan.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    far.ip(["addr", "add", &format!("{FAR_V4}/30"), "dev", "eth0"])
        .unwrap();
    far.ip(["link", "set", "eth0", "up"]).unwrap();
    far.ip(["route", "add", "default", "via", &HOP_V4.to_string()])
        .unwrap();
    lan.hosts[0]
        .ip([
            "route",
            "add",
            &format!("{FAR_V4}/32"),
            "via",
            &Lan::ROUTER_V4.to_string(),
        ])
        .unwrap();
    // The router's side allows a neighbor that is not on its network (FRR's ebgp-multihop);
    // the speaker's BGPPeer does not set ebgpMultiHop.
    let router = Router::start(&RouterConfig {
        kind: RouterKind::Frr,
        netns: far.name.clone(),
        asn: ROUTER_AS,
        router_id: FAR_V4,
        listen: vec![IpAddr::V4(FAR_V4)],
        neighbors: vec![Neighbor {
            multihop: true,
            ..Neighbor::new(node_v4, NODE_AS)
        }],
    })
    .expect("router");
    let ns = unique("speaker-bgp-hops");
    base_objects(&cluster, &ns, &[&node], "");
    cluster.apply(&peer_yaml("far", IpAddr::V4(FAR_V4), NODE_AS, ""));
    cluster.announced_web_service(&ns, &[SERVICE_IP], &node);
    let speaker = Speaker::start(plane, &lan.hosts[0], &node, &bpffs);
    let context = || format!("speaker:\n{}\nrouter:\n{}", speaker.logs(), router.logs());
    let routes = router
        .wait_routes(Family::Ipv4, |r| find(r, &v4_prefix()).is_some(), PATIENCE)
        .unwrap_or_else(|e| panic!("no route over two hops: {e}\n{}", context()));
    let route = find(&routes, &v4_prefix()).unwrap();
    assert_eq!(route.next_hops, BTreeSet::from([node_v4]), "{}", context());
    drop(speaker);
    drop(router);
    cluster.clear_bgp_objects();
}

#[test]
fn frr_ibgp_md5_hold_time_and_ecmp() {
    run_serial(frr_scenarios());
}

async fn frr_scenarios() {
    // Nodes 0-2 peer over eBGP (0 and 1 with the TCP MD5 key from a passwordSecret, 2 without
    // one); node 3 over iBGP, first with a wrong inline password.
    let (cluster, bpffs, lan) = bgp_world("hbf", 5).await;
    let plane = cluster.plane;
    let nodes: Vec<String> = (0..5).map(|_| unique("hbf-node")).collect();
    let v4 = |i| IpAddr::V4(Lan::host_v4(i));
    let keyed = |i, asn| Neighbor {
        password: Some("right-key".into()),
        ..Neighbor::new(v4(i), asn)
    };
    let router = Router::start(&RouterConfig {
        kind: RouterKind::Frr,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![IpAddr::V4(Lan::ROUTER_V4)],
        neighbors: vec![
            keyed(0, NODE_AS),
            keyed(1, NODE_AS),
            Neighbor::new(v4(2), NODE_AS),
            keyed(3, ROUTER_AS),
            Neighbor::new(v4(4), NODE_AS),
        ],
    })
    .expect("router");
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let ns = unique("speaker-bgp");
    base_objects(&cluster, &ns, &node_refs, "  localPref: 150\n");
    for node in &nodes {
        cluster.kubectl(&[
            "label",
            "node",
            node,
            &format!("kubernetes.io/hostname={node}"),
            "--overwrite",
        ]);
    }
    cluster.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bgp-right\n  namespace: metallb-system\ntype: kubernetes.io/basic-auth\nstringData:\n  password: right-key\n",
    );
    let on_nodes = |which: &[usize]| {
        let names: Vec<&str> = which.iter().map(|i| nodes[*i].as_str()).collect();
        format!(
            "  nodeSelectors: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{}]}}]}}]\n",
            names.join(", ")
        )
    };
    let router_ip = IpAddr::V4(Lan::ROUTER_V4);
    cluster.apply(&peer_yaml(
        "keyed",
        router_ip,
        NODE_AS,
        &format!(
            "{}  passwordSecret: {{name: bgp-right}}\n",
            on_nodes(&[0, 1])
        ),
    ));
    cluster.apply(&peer_yaml("plain", router_ip, NODE_AS, &on_nodes(&[2])));
    let ibgp = |password: &str| {
        peer_yaml(
            "ibgp",
            router_ip,
            ROUTER_AS,
            &format!("{}  password: {password}\n", on_nodes(&[3])),
        )
    };
    cluster.apply(&ibgp("wrong-key"));
    // Node 4 expects the router in AS 64999: the router's OPEN says 64512.
    let wrong_asn = peer_yaml("wrong-asn", router_ip, NODE_AS, &on_nodes(&[4]))
        .replace(&format!("peerASN: {ROUTER_AS}"), "peerASN: 64999");
    cluster.apply(&wrong_asn);
    cluster.announced_web_service(&ns, &[SERVICE_IP, SERVICE_IP6], &nodes[0]);
    let speakers: Vec<Speaker> = (0..5)
        .map(|i| Speaker::start(plane, &lan.hosts[i], &nodes[i], &bpffs))
        .collect();
    let context = || {
        let mut out = String::new();
        for (i, s) in speakers.iter().enumerate() {
            out.push_str(&format!("--- speaker {i}\n{}\n", s.logs()));
        }
        out.push_str(&format!("--- router\n{}", router.logs()));
        out
    };
    let hops = |want: &[usize]| -> BTreeSet<IpAddr> { want.iter().map(|i| v4(*i)).collect() };

    // Three eBGP speakers: three ECMP next hops, in FRR's table and in the kernel's.
    router
        .wait_routes(
            Family::Ipv4,
            |r| find(r, &v4_prefix()).is_some_and(|r| r.next_hops == hops(&[0, 1, 2])),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    // zebra installs the kernel route after bgpd's table changes: wait for it.
    let kernel = || {
        lan.router
            .ip(["route", "show", &v4_prefix()])
            .unwrap_or_default()
    };
    assert!(
        poll_until(PATIENCE, || kernel().matches("nexthop via").count() == 3),
        "kernel route: {}",
        kernel()
    );

    // The wrong key never gets a session: a Warning Event on the BGPPeer, metric 0.
    assert!(!router.session_established(v4(3)).unwrap(), "{}", context());
    let events = kube_support::cluster::wait_for(
        "a sessionDown Event on BGPPeer ibgp",
        || async {
            let events = cluster.events("metallb-system", "BGPPeer", "ibgp").await;
            events
                .iter()
                .any(|(reason, kind, _, _)| reason == "sessionDown" && kind == "Warning")
                .then_some(events)
        },
        context,
    )
    .await;
    assert!(
        speakers[3]
            .metrics()
            .contains("metallb_bgp_session_up{peer=\"203.0.113.1:179\"} 0"),
        "{}\n{events:?}",
        speakers[3].metrics()
    );

    // An OPEN from an unexpected AS: Herald answers Bad Peer AS, says so on the BGPPeer, and
    // the other sessions carry on (node 0-2's next hops are still there).
    kube_support::cluster::wait_for(
        "a sessionDown Event naming Bad Peer AS on BGPPeer wrong-asn",
        || async {
            let events = cluster
                .events("metallb-system", "BGPPeer", "wrong-asn")
                .await;
            events
                .iter()
                .any(|(reason, _, note, _)| reason == "sessionDown" && note.contains("Bad Peer AS"))
                .then_some(())
        },
        context,
    )
    .await;
    assert!(!router.session_established(v4(4)).unwrap(), "{}", context());
    let routes = router.routes(Family::Ipv4).unwrap();
    assert_eq!(
        find(&routes, &v4_prefix()).map(|r| r.next_hops.clone()),
        Some(hops(&[0, 1, 2])),
        "{}",
        context()
    );

    // The right password: the session comes up, and the iBGP path carries LOCAL_PREF 150 and
    // an empty AS path.
    cluster.apply(&ibgp("right-key"));
    router
        .wait_established(v4(3), PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert!(
        poll_until(PATIENCE, || router
            .cli(&["show bgp ipv4 unicast 198.51.100.77/32 json"])
            .unwrap_or_default()
            .contains("\"locPrf\":150")),
        "no iBGP path with LOCAL_PREF 150: {}\n{}",
        router
            .cli(&["show bgp ipv4 unicast 198.51.100.77/32 json"])
            .unwrap_or_default(),
        context()
    );

    // The exclusion label on node 2 takes its next hop away.
    cluster.kubectl(&[
        "label",
        "node",
        &nodes[2],
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ]);
    router
        .wait_routes(
            Family::Ipv4,
            |r| find(r, &v4_prefix()).is_some_and(|r| !r.next_hops.contains(&v4(2))),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("excluded node still announces: {e}\n{}", context()));

    // A frozen speaker keeps its TCP session open: the router drops its path only when the
    // hold timer (9 s) runs out; thawed, it reconnects and announces again.
    speakers[0].signal(libc::SIGSTOP);
    router
        .wait_routes(
            Family::Ipv4,
            |r| find(r, &v4_prefix()).is_some_and(|r| !r.next_hops.contains(&v4(0))),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("frozen speaker's path kept: {e}\n{}", context()));
    speakers[0].signal(libc::SIGCONT);
    router
        .wait_routes(
            Family::Ipv4,
            |r| find(r, &v4_prefix()).is_some_and(|r| r.next_hops.contains(&v4(0))),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("no path after thaw: {e}\n{}", context()));
    drop(speakers);
    drop(router);
    cluster.clear_bgp_objects();
}
