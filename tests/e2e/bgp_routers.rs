//! The router harness (`support/routers`) against real routers only: BIRD, FRR and GoBGP each
//! play the router under test, passive as they will be for Herald, and GoBGP daemons in other
//! namespaces (`passive: false`) play the speakers, announcing 203.0.113.200/32 and, over the
//! same IPv4 session (MP-BGP), 2001:db8:ff::1/128 with a community, a large community and a
//! local preference. What each router learned is read back through the harness and compared
//! whole. When GoBGP is the router under test its peers are other gobgpd processes: the
//! announcers only originate routes, so what is checked is still the router's own table.
//!
//! - eBGP: two announcers in one AS give two next hops per prefix (FRR's multipath also puts
//!   both into the kernel's table), the AS path is the announcer's AS, LOCAL_PREF does not cross
//!   the AS boundary; a third announcer with the wrong TCP MD5 key never gets a session, by the
//!   router's own status; a withdrawal and a stopped announcer take their next hops away.
//! - iBGP: LOCAL_PREF arrives, the AS path is empty.
//!
//! All on a bridge in the router's namespace (203.0.113.0/24, 2001:db8::/64); each test owns
//! its namespaces and daemons, dropped even when it fails.
//!
//! Run: `cargo test -p herald-tests --test bgp_routers` (as root; needs bird2, frr, gobgpd).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/routers/mod.rs"]
mod routers;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use herald_tests::{poll_until, require_root};
use routers::{Family, Lan, Neighbor, Route, Router, RouterConfig, RouterKind};

const ROUTER_AS: u32 = 64512;
const SPEAKER_AS: u32 = 64513;
const OTHER_AS: u32 = 64514;
const KEY: &str = "herald-md5-key";
const PREFIX_V4: &str = "203.0.113.200/32";
const PREFIX_V6: &str = "2001:db8:ff::1/128";
/// GoBGP's first connection attempt comes 5–10 s after it starts; everything else is faster.
const PATIENCE: Duration = Duration::from_secs(40);

/// The router under test in the LAN's router namespace, passive towards every host listed.
fn router_under_test(kind: RouterKind, lan: &Lan, peers: &[(usize, u32)]) -> Router {
    let neighbors = peers
        .iter()
        .map(|&(i, asn)| Neighbor {
            password: Some(KEY.to_string()),
            hold_time: Some(9),
            ipv6: true,
            ..Neighbor::new(Lan::host_v4(i).into(), asn)
        })
        .collect();
    Router::start(&RouterConfig {
        kind,
        netns: lan.router.name.clone(),
        asn: ROUTER_AS,
        router_id: Lan::ROUTER_V4,
        listen: vec![Lan::ROUTER_V4.into(), Lan::ROUTER_V6.into()],
        neighbors,
    })
    .expect("router under test")
}

/// A GoBGP announcer on host `i` that connects to the router with `key`, announcing both
/// prefixes with its own addresses as next hops.
fn announcer(lan: &Lan, i: usize, asn: u32, key: &str) -> Router {
    let router = Router::start(&RouterConfig {
        kind: RouterKind::Gobgp,
        netns: lan.hosts[i].name.clone(),
        asn,
        router_id: Lan::host_v4(i),
        listen: vec![Lan::host_v4(i).into()],
        neighbors: vec![Neighbor {
            password: Some(key.to_string()),
            passive: false,
            ipv6: true,
            ..Neighbor::new(Lan::ROUTER_V4.into(), ROUTER_AS)
        }],
    })
    .expect("announcer");
    for (afi, prefix, next_hop) in [
        ("ipv4", PREFIX_V4, IpAddr::from(Lan::host_v4(i))),
        ("ipv6", PREFIX_V6, IpAddr::from(Lan::host_v6(i))),
    ] {
        router
            .cli(&[
                "global",
                "rib",
                "add",
                "-a",
                afi,
                prefix,
                "nexthop",
                &next_hop.to_string(),
                "origin",
                "igp",
                "community",
                "64512:300",
                "large-community",
                "64512:1:2",
                "local-pref",
                "120",
            ])
            .expect("announce");
    }
    router
}

fn expected(prefix: &str, next_hops: &[IpAddr], as_path: &[u32], local_pref: Option<u32>) -> Route {
    Route {
        prefix: prefix.parse().unwrap(),
        next_hops: next_hops.iter().copied().collect(),
        as_path: as_path.to_vec(),
        local_pref,
        communities: vec![(64512, 300)],
        large_communities: vec![(64512, 1, 2)],
        origin: Some("igp".to_string()),
    }
}

fn next_hops(routes: &[Route]) -> BTreeSet<IpAddr> {
    routes
        .iter()
        .flat_map(|r| r.next_hops.iter().copied())
        .collect()
}

fn ebgp(kind: RouterKind) {
    require_root();
    let started = Instant::now();
    let lan = Lan::new("hb", 3).expect("LAN");
    let router = router_under_test(
        kind,
        &lan,
        &[(0, SPEAKER_AS), (1, SPEAKER_AS), (2, OTHER_AS)],
    );
    let a0 = announcer(&lan, 0, SPEAKER_AS, KEY);
    let a1 = announcer(&lan, 1, SPEAKER_AS, KEY);
    let _wrong = announcer(&lan, 2, OTHER_AS, "not-the-key");

    let h = |i: usize| -> (IpAddr, IpAddr) { (Lan::host_v4(i).into(), Lan::host_v6(i).into()) };
    let ((v4_0, v6_0), (v4_1, v6_1), (v4_2, _)) = (h(0), h(1), h(2));
    router.wait_established(v4_0, PATIENCE).unwrap();
    router.wait_established(v4_1, PATIENCE).unwrap();

    // Both announcers' paths, nothing else; LOCAL_PREF 120 stayed behind the AS boundary.
    let v4 = router
        .wait_routes(Family::Ipv4, |r| next_hops(r).len() == 2, PATIENCE)
        .unwrap();
    assert_ne!(v4[0].local_pref, Some(120), "{v4:?}");
    let lp = v4[0].local_pref;
    assert_eq!(v4, [expected(PREFIX_V4, &[v4_0, v4_1], &[SPEAKER_AS], lp)]);
    let v6 = router
        .wait_routes(Family::Ipv6, |r| next_hops(r).len() == 2, PATIENCE)
        .unwrap();
    assert_eq!(v6, [expected(PREFIX_V6, &[v6_0, v6_1], &[SPEAKER_AS], lp)]);

    if kind == RouterKind::Frr {
        // maximum-paths: zebra installed both next hops.
        let ecmp = |args: &[&str], hops: [IpAddr; 2]| {
            poll_until(PATIENCE, || {
                let table = lan.router.ip(args).unwrap_or_default();
                hops.iter()
                    .all(|h| table.contains(&format!("nexthop via {h} ")))
            })
        };
        assert!(
            ecmp(&["-4", "route", "show", PREFIX_V4], [v4_0, v4_1]),
            "{}",
            lan.router.ip(["-4", "route"]).unwrap()
        );
        assert!(
            ecmp(&["-6", "route", "show", PREFIX_V6], [v6_0, v6_1]),
            "{}",
            lan.router.ip(["-6", "route"]).unwrap()
        );
    }

    // The wrong key: the router's kernel drops every SYN, so by the router's own status the
    // session never comes up, while the other two have been up for a while.
    let came_up = poll_until(Duration::from_secs(6), || {
        router.session_established(v4_2).unwrap()
    });
    assert!(!came_up, "session with the wrong MD5 key came up");
    assert!(router.session_established(v4_0).unwrap());

    // A withdrawal takes one next hop away; a stopped announcer (cease) the other.
    a1.cli(&["global", "rib", "del", "-a", "ipv4", PREFIX_V4])
        .unwrap();
    let v4 = router
        .wait_routes(
            Family::Ipv4,
            |r| next_hops(r) == BTreeSet::from([v4_0]),
            PATIENCE,
        )
        .unwrap();
    assert_eq!(v4, [expected(PREFIX_V4, &[v4_0], &[SPEAKER_AS], lp)]);
    a0.stop();
    router
        .wait_routes(Family::Ipv4, <[Route]>::is_empty, PATIENCE)
        .unwrap();
    let v6 = router
        .wait_routes(
            Family::Ipv6,
            |r| next_hops(r) == BTreeSet::from([v6_1]),
            PATIENCE,
        )
        .unwrap();
    assert_eq!(v6, [expected(PREFIX_V6, &[v6_1], &[SPEAKER_AS], lp)]);
    eprintln!("{kind:?} eBGP: {:.1?}", started.elapsed());
}

fn ibgp(kind: RouterKind) {
    require_root();
    let started = Instant::now();
    let lan = Lan::new("hi", 1).expect("LAN");
    let router = router_under_test(kind, &lan, &[(0, ROUTER_AS)]);
    let _a0 = announcer(&lan, 0, ROUTER_AS, KEY);
    let (v4_0, v6_0): (IpAddr, IpAddr) = (Lan::host_v4(0).into(), Lan::host_v6(0).into());
    router.wait_established(v4_0, PATIENCE).unwrap();
    let v4 = router
        .wait_routes(Family::Ipv4, |r| !r.is_empty(), PATIENCE)
        .unwrap();
    assert_eq!(v4, [expected(PREFIX_V4, &[v4_0], &[], Some(120))]);
    let v6 = router
        .wait_routes(Family::Ipv6, |r| !r.is_empty(), PATIENCE)
        .unwrap();
    assert_eq!(v6, [expected(PREFIX_V6, &[v6_0], &[], Some(120))]);
    eprintln!("{kind:?} iBGP: {:.1?}", started.elapsed());
}

/// One `#[test]` per router kind for a `fn name(RouterKind)`: `name::bird`, `name::frr`,
/// `name::gobgp`.
macro_rules! each_router {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::RouterKind;
            #[test]
            fn bird() {
                super::$name(RouterKind::Bird)
            }
            #[test]
            fn frr() {
                super::$name(RouterKind::Frr)
            }
            #[test]
            fn gobgp() {
                super::$name(RouterKind::Gobgp)
            }
        }
    )*};
}

each_router!(ebgp, ibgp);

/// The parsers on output captured from the routers above (two eBGP paths per prefix), so a
/// format change shows up without root or routers.
mod parse {
    use super::routers::{parse_bird_routes, parse_frr_routes, parse_gobgp_routes};
    use super::{PREFIX_V4, PREFIX_V6, Route, SPEAKER_AS, expected};

    fn two_paths(prefix: &str, a: &str, b: &str, local_pref: Option<u32>) -> Vec<Route> {
        let hops = [a.parse().unwrap(), b.parse().unwrap()];
        vec![expected(prefix, &hops, &[SPEAKER_AS], local_pref)]
    }

    #[test]
    fn bird() {
        // `show route table master6 where source = RTS_BGP all`; the second path's global
        // next hop comes with a link-local one here.
        let text = "BIRD 2.0.12 ready.
Table master6:
2001:db8:ff::1/128   unicast [n0 22:01:13.932 from 203.0.113.2] * (100) [AS64513i]
\tvia 2001:db8::2 on br0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64513
\tBGP.next_hop: 2001:db8::2
\tBGP.local_pref: 100
\tBGP.community: (64512,300)
\tBGP.large_community: (64512, 1, 2)
                     unicast [n1 22:01:13.073 from 203.0.113.3] (100) [AS64513i]
\tvia 2001:db8::3 on br0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64513
\tBGP.next_hop: 2001:db8::3 fe80::3
\tBGP.local_pref: 100
\tBGP.community: (64512,300)
\tBGP.large_community: (64512, 1, 2)
";
        assert_eq!(
            parse_bird_routes(text).unwrap(),
            two_paths(PREFIX_V6, "2001:db8::2", "2001:db8::3", Some(100))
        );
        assert_eq!(parse_bird_routes("BIRD 2.0.12 ready.\n").unwrap(), []);
    }

    #[test]
    fn frr() {
        // `show bgp ipv4 unicast json detail`: the prefix's first element has no path.
        let text = r#"{
 "vrfId": 0, "vrfName": "default", "tableVersion": 2, "routerId": "203.0.113.1",
 "defaultLocPrf": 100, "localAS": 64512,
 "routes": { "203.0.113.200/32": [{"prefix":"203.0.113.200/32","version":2,"advertisedTo":{"203.0.113.2":{"hostname":"vm"},"203.0.113.3":{"hostname":"vm"}}},{"aspath":{"string":"64513","segments":[{"type":"as-sequence","list":[64513]}],"length":1},"origin":"IGP","valid":true,"version":2,"multipath":true,"community":{"string":"64512:300","list":["64512:300"]},"largeCommunity":{"string":"64512:1:2","list":["64512:1:2"]},"nexthops":[{"ip":"203.0.113.3","hostname":"vm","afi":"ipv4","metric":0,"accessible":true,"used":true}],"peer":{"peerId":"203.0.113.3","routerId":"203.0.113.3","hostname":"vm","type":"external"}},{"aspath":{"string":"64513","segments":[{"type":"as-sequence","list":[64513]}],"length":1},"origin":"IGP","valid":true,"version":2,"multipath":true,"bestpath":{"overall":true,"selectionReason":"Older Path"},"community":{"string":"64512:300","list":["64512:300"]},"largeCommunity":{"string":"64512:1:2","list":["64512:1:2"]},"nexthops":[{"ip":"203.0.113.2","hostname":"vm","afi":"ipv4","metric":0,"accessible":true,"used":true}],"peer":{"peerId":"203.0.113.2","routerId":"203.0.113.2","hostname":"vm","type":"external"}}]
 }  }"#;
        assert_eq!(
            parse_frr_routes(text).unwrap(),
            two_paths(PREFIX_V4, "203.0.113.2", "203.0.113.3", None)
        );
        assert_eq!(parse_frr_routes(r#"{"routes": {  }  }"#).unwrap(), []);
    }

    #[test]
    fn gobgp() {
        // `gobgp global rib -a ipv6 -j`: the next hop is in MP_REACH_NLRI (type 14).
        let text = r#"{"2001:db8:ff::1/128":[{"nlri":{"prefix":"2001:db8:ff::1/128"},"age":1796421681,"best":true,"attrs":[{"type":1,"value":0},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[64513]}]},{"type":8,"communities":[4227858732]},{"type":32,"value":[{"ASN":64512,"LocalData1":1,"LocalData2":2}]},{"type":14,"nexthop":"2001:db8::2","afi":2,"safi":1,"value":[{"prefix":"2001:db8:ff::1/128"}]}],"stale":false,"source-id":"203.0.113.2","neighbor-ip":"203.0.113.2"},{"nlri":{"prefix":"2001:db8:ff::1/128"},"age":1796421681,"best":false,"attrs":[{"type":1,"value":0},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[64513]}]},{"type":8,"communities":[4227858732]},{"type":32,"value":[{"ASN":64512,"LocalData1":1,"LocalData2":2}]},{"type":14,"nexthop":"2001:db8::3","afi":2,"safi":1,"value":[{"prefix":"2001:db8:ff::1/128"}]}],"stale":false,"source-id":"203.0.113.3","neighbor-ip":"203.0.113.3"}]}"#;
        assert_eq!(
            parse_gobgp_routes(text).unwrap(),
            two_paths(PREFIX_V6, "2001:db8::2", "2001:db8::3", None)
        );
        assert_eq!(parse_gobgp_routes("{}").unwrap(), []);
    }
}
