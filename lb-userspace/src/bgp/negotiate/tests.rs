use super::*;

fn open(asn: u32, hold: u16, id: [u8; 4]) -> Open {
    Open {
        asn,
        hold_time: hold,
        router_id: Ipv4Addr::from(id),
        four_octet_as: true,
        families: BTreeSet::from([Family::Ipv4Unicast]),
        graceful_restart: false,
        restarted: false,
    }
}

/// `remote`'s OPEN at a session configured for peer AS 64512 with `keepalive`.
fn from_64512(
    local: &Open,
    keepalive: Duration,
    remote: &Open,
) -> Result<Negotiated, Notification> {
    accept_open(local, PeerAs::Fixed(64512), keepalive, remote)
}

#[test]
fn the_smaller_hold_time_wins_and_keepalive_is_a_third() {
    let local = open(64513, 90, [203, 0, 113, 2]);
    let remote = open(64512, 9, [203, 0, 113, 1]);
    let n = from_64512(&local, Duration::from_secs(30), &remote).unwrap();
    assert_eq!(n.hold_time, Duration::from_secs(9));
    assert_eq!(n.keepalive, Duration::from_secs(3));
    assert_eq!(n.remote_router_id, Ipv4Addr::new(203, 0, 113, 1));

    let remote = open(64512, 240, [203, 0, 113, 1]);
    let n = from_64512(&local, Duration::from_secs(30), &remote).unwrap();
    assert_eq!(n.hold_time, Duration::from_secs(90));
    assert_eq!(n.keepalive, Duration::from_secs(30));
}

#[test]
fn a_shorter_configured_keepalive_is_kept() {
    let local = open(64513, 90, [203, 0, 113, 2]);
    let remote = open(64512, 90, [203, 0, 113, 1]);
    let n = from_64512(&local, Duration::from_secs(10), &remote).unwrap();
    assert_eq!(n.keepalive, Duration::from_secs(10));
    // Unset (zero) keepalive: a third of the hold time.
    let n = from_64512(&local, Duration::ZERO, &remote).unwrap();
    assert_eq!(n.keepalive, Duration::from_secs(30));
}

#[test]
fn hold_time_zero_on_either_side_turns_timers_off() {
    let local = open(64513, 0, [203, 0, 113, 2]);
    let remote = open(64512, 90, [203, 0, 113, 1]);
    let n = from_64512(&local, Duration::from_secs(30), &remote).unwrap();
    assert_eq!((n.hold_time, n.keepalive), (Duration::ZERO, Duration::ZERO));
    let local = open(64513, 90, [203, 0, 113, 2]);
    let remote = open(64512, 0, [203, 0, 113, 1]);
    let n = from_64512(&local, Duration::from_secs(30), &remote).unwrap();
    assert_eq!((n.hold_time, n.keepalive), (Duration::ZERO, Duration::ZERO));
}

#[test]
fn dynamic_asn_accepts_any_as_of_the_asked_kind() {
    let local = open(64513, 90, [203, 0, 113, 2]);
    for (expected, remote_as, ok) in [
        (PeerAs::External, 64512, true),
        (PeerAs::External, 4_200_000_000, true),
        (PeerAs::External, 64513, false),
        (PeerAs::Internal, 64513, true),
        (PeerAs::Internal, 64512, false),
        (PeerAs::Fixed(64512), 64512, true),
        (PeerAs::Fixed(64512), 64511, false),
    ] {
        let remote = open(remote_as, 90, [203, 0, 113, 1]);
        let got = accept_open(&local, expected, Duration::ZERO, &remote);
        match got {
            Ok(_) => assert!(ok, "{expected} accepted AS {remote_as}"),
            Err(n) => {
                assert!(!ok, "{expected} refused AS {remote_as}");
                assert_eq!((n.code, n.subcode), (2, 2), "Bad Peer AS");
            }
        }
    }
    assert!(PeerAs::Internal.is_internal(64513) && !PeerAs::External.is_internal(64513));
    assert!(PeerAs::Fixed(64513).is_internal(64513) && !PeerAs::Fixed(64512).is_internal(64513));
}

#[test]
fn a_wrong_asn_is_bad_peer_as() {
    let local = open(64513, 90, [203, 0, 113, 2]);
    let remote = open(64999, 90, [203, 0, 113, 1]);
    let err = from_64512(&local, Duration::ZERO, &remote).unwrap_err();
    assert_eq!((err.code, err.subcode), (2, 2));
}

#[test]
fn hold_times_of_one_or_two_seconds_are_refused() {
    let local = open(64513, 90, [203, 0, 113, 2]);
    for hold in [1, 2] {
        let remote = open(64512, hold, [203, 0, 113, 1]);
        let err = from_64512(&local, Duration::ZERO, &remote).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 6), "hold {hold}");
    }
    let remote = open(64512, 3, [203, 0, 113, 1]);
    assert!(from_64512(&local, Duration::ZERO, &remote).is_ok());
}

#[test]
fn identifiers_zero_or_equal_on_ibgp_are_refused() {
    let local = open(64512, 90, [203, 0, 113, 2]);
    let remote = open(64512, 90, [0, 0, 0, 0]);
    let err = from_64512(&local, Duration::ZERO, &remote).unwrap_err();
    assert_eq!((err.code, err.subcode), (2, 3));
    let remote = open(64512, 90, [203, 0, 113, 2]);
    let err = from_64512(&local, Duration::ZERO, &remote).unwrap_err();
    assert_eq!((err.code, err.subcode), (2, 3));
    // eBGP: the same identifier is allowed (RFC 6286 §2.1).
    let remote = open(64999, 90, [203, 0, 113, 2]);
    assert!(accept_open(&local, PeerAs::Fixed(64999), Duration::ZERO, &remote).is_ok());
}

#[test]
fn router_id_prefers_configuration_then_local_ipv4_then_its_interface_then_node_hash() {
    let v4: IpAddr = "203.0.113.2".parse().unwrap();
    let v6: IpAddr = "2001:db8::2".parse().unwrap();
    let configured = Ipv4Addr::new(198, 51, 100, 9);
    let beside = Ipv4Addr::new(198, 51, 100, 2);
    let asked = std::cell::Cell::new(None);
    let asked = &asked;
    let lookup = |found: Option<Ipv4Addr>| {
        move |local: IpAddr| {
            asked.set(Some(local));
            found
        }
    };
    assert_eq!(
        router_id(Some(configured), v4, "node-a", lookup(Some(beside))),
        configured
    );
    assert_eq!(
        router_id(None, v4, "node-a", lookup(Some(beside))),
        Ipv4Addr::new(203, 0, 113, 2)
    );
    assert_eq!(asked.get(), None, "the interfaces are read only for IPv6");
    assert_eq!(router_id(None, v6, "node-a", lookup(Some(beside))), beside);
    assert_eq!(asked.get(), Some(v6));
    // MetalLB's values (Go: crc32.ChecksumIEEE of the name, little-endian, as an IPv4).
    for (node, id) in [
        ("node-a", Ipv4Addr::new(171, 77, 153, 120)),
        ("node-b", Ipv4Addr::new(17, 28, 144, 225)),
        ("kind-worker", Ipv4Addr::new(192, 61, 154, 117)),
    ] {
        assert_eq!(router_id(None, v6, node, lookup(None)), id, "{node}");
    }
}

#[test]
fn families_follow_transport_dual_stack_and_disable_mp() {
    let v4: IpAddr = "203.0.113.1".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        offered_families(v4, false, false),
        BTreeSet::from([Family::Ipv4Unicast])
    );
    assert_eq!(
        offered_families(v6, false, false),
        BTreeSet::from([Family::Ipv6Unicast])
    );
    assert_eq!(
        offered_families(v4, true, false),
        BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast])
    );
    assert_eq!(offered_families(v4, true, true), BTreeSet::new());
}

#[test]
fn hold_field_saturates() {
    assert_eq!(hold_field(Duration::from_secs(90)), 90);
    assert_eq!(hold_field(Duration::from_secs(1 << 20)), u16::MAX);
}
