use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{AsPath, PathAttribute, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use proptest::prelude::*;

use super::*;
use crate::config::Community;

const MARKER: [u8; 16] = [0xff; 16];

/// A message from its type and body, the header written by hand.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = MARKER.to_vec();
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn decode_one(bytes: &[u8], session: Option<&Session>) -> Result<Option<Message>, WireError> {
    let mut buf = BytesMut::from(bytes);
    let decoded = decode(&mut buf, session);
    if matches!(decoded, Ok(Some(_))) {
        assert_eq!(buf.len(), 0, "one message, wholly consumed");
    }
    decoded
}

fn decode_update(bytes: &[u8], session: &Session) -> Update {
    match decode_one(bytes, Some(session)) {
        Ok(Some(Message::Update(update))) => update,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

/// The notification a malformed message is answered with.
fn refusal(bytes: &[u8], session: Option<&Session>) -> Notification {
    match decode_one(bytes, session) {
        Err(WireError::Malformed { notification, .. }) => notification,
        other => panic!("expected a malformed message, got {other:?}"),
    }
}

/// netgauze's own reading of an UPDATE, to look at the attributes Herald does not keep.
fn netgauze_update(bytes: &[u8], asn4: bool) -> BgpUpdateMessage {
    let mut ctx = BgpParsingContext::asn2_default();
    ctx.set_asn4(asn4);
    match BgpMessage::parse(&mut SliceReader::new(bytes), &mut ctx) {
        Ok(BgpMessage::Update(update)) => update,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn families(list: &[Family]) -> BTreeSet<Family> {
    list.iter().copied().collect()
}

fn classic() -> Session {
    Session {
        four_octet_as: false,
        families: families(&[Family::Ipv4Unicast]),
    }
}

fn dual_stack() -> Session {
    Session {
        four_octet_as: true,
        families: families(&[Family::Ipv4Unicast, Family::Ipv6Unicast]),
    }
}

fn attrs(next_hop: &str, as_path: &[u32]) -> RouteAttrs {
    RouteAttrs {
        next_hop: next_hop.parse().unwrap(),
        local_pref: None,
        communities: Vec::new(),
        as_path: as_path.to_vec(),
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn herald_open() -> Open {
    Open {
        asn: 64512,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        four_octet_as: true,
        families: families(&[Family::Ipv4Unicast, Family::Ipv6Unicast]),
        graceful_restart: true,
        restarted: false,
    }
}

// --- fixed bytes, written from the RFC field layouts ---

#[test]
fn keepalive_is_the_bare_header() {
    // RFC 4271 §4.1/§4.4: marker (16 x 0xff), length 19, type 4 (KEEPALIVE), nothing else.
    let mut expected = MARKER.to_vec();
    expected.extend_from_slice(&[0x00, 0x13, 0x04]);
    assert_eq!(encode_keepalive().as_ref(), expected.as_slice());
    assert_eq!(
        decode_one(&expected, None).unwrap(),
        Some(Message::Keepalive)
    );
}

#[test]
fn notification_bytes() {
    // RFC 4271 §4.5: header (type 3), error code, subcode, data. Cease / Administrative
    // Shutdown with an RFC 9003 shutdown communication: length 3, "bye".
    let n = Notification {
        data: vec![3, b'b', b'y', b'e'],
        ..Notification::cease_admin_shutdown()
    };
    let mut expected = MARKER.to_vec();
    expected.extend_from_slice(&[0x00, 0x19, 0x03]); // 19 + 2 + 4 = 25 bytes, NOTIFICATION
    expected.extend_from_slice(&[0x06, 0x02]); // Cease, Administrative Shutdown
    expected.extend_from_slice(&[0x03, b'b', b'y', b'e']);
    assert_eq!(encode_notification(&n).as_ref(), expected.as_slice());
    assert_eq!(
        decode_one(&expected, None).unwrap(),
        Some(Message::Notification(n.clone()))
    );
    assert_eq!(n.describe(), "Cease / Administrative Shutdown: \"bye\"");
}

#[test]
fn open_bytes() {
    // RFC 4271 §4.2 with RFC 5492 capabilities in one optional parameter.
    let mut expected = MARKER.to_vec();
    expected.extend_from_slice(&[0x00, 0x3d, 0x01]); // 19 + 10 + 32 = 61 bytes, OPEN
    expected.extend_from_slice(&[0x04]); // version 4
    expected.extend_from_slice(&[0xfc, 0x00]); // My AS 64512
    expected.extend_from_slice(&[0x00, 0x5a]); // hold time 90
    expected.extend_from_slice(&[192, 0, 2, 1]); // BGP identifier
    expected.extend_from_slice(&[32]); // optional parameters length
    expected.extend_from_slice(&[0x02, 30]); // parameter 2 (capabilities), 30 bytes
    expected.extend_from_slice(&[0x01, 0x04, 0x00, 0x01, 0x00, 0x01]); // MP: AFI 1, SAFI 1
    expected.extend_from_slice(&[0x01, 0x04, 0x00, 0x02, 0x00, 0x01]); // MP: AFI 2, SAFI 1
    expected.extend_from_slice(&[0x41, 0x04, 0x00, 0x00, 0xfc, 0x00]); // 4-octet AS 64512
    // RFC 4724 §3: graceful restart, 10 bytes: no Restart State, 120 s; then per family AFI,
    // SAFI and flags with the Forwarding State bit (0x80).
    expected.extend_from_slice(&[0x40, 0x0a, 0x00, 0x78]);
    expected.extend_from_slice(&[0x00, 0x01, 0x01, 0x80, 0x00, 0x02, 0x01, 0x80]);
    assert_eq!(encode_open(&herald_open()).as_ref(), expected.as_slice());

    // After a restart the Restart State bit (0x8 in the top nibble) is set.
    let restarted = Open {
        restarted: true,
        ..herald_open()
    };
    expected[19 + 10 + 2 + 18 + 2] = 0x80;
    assert_eq!(encode_open(&restarted).as_ref(), expected.as_slice());
    assert_eq!(
        decode_one(&expected, None).unwrap(),
        Some(Message::Open(restarted))
    );

    // A classic IPv4 session (no multiprotocol capability) restarts IPv4 unicast.
    let classic = Open {
        families: BTreeSet::new(),
        ..herald_open()
    };
    let bytes = encode_open(&classic);
    assert!(
        bytes
            .windows(8)
            .any(|w| w == [0x40, 0x06, 0x00, 0x78, 0x00, 0x01, 0x01, 0x80]),
        "{bytes:02x?}"
    );
}

#[test]
fn classic_ipv4_update_bytes() {
    // RFC 4271 §4.3: 192.0.2.10/32 via 198.51.100.1 from AS 64512, community 64512:100, on a
    // 2-octet classic session.
    let attrs = RouteAttrs {
        communities: vec![Community::Standard(64512, 100)],
        ..attrs("198.51.100.1", &[64512])
    };
    let mut expected = MARKER.to_vec();
    expected.extend_from_slice(&[0x00, 0x35, 0x02]); // 53 bytes, UPDATE
    expected.extend_from_slice(&[0x00, 0x00]); // no withdrawn routes
    expected.extend_from_slice(&[0x00, 0x19]); // 25 bytes of path attributes:
    expected.extend_from_slice(&[0x40, 0x01, 0x01, 0x00]); // ORIGIN (well-known) IGP
    expected.extend_from_slice(&[0x40, 0x02, 0x04, 0x02, 0x01, 0xfc, 0x00]); // AS_PATH: SEQUENCE of 1, 64512
    expected.extend_from_slice(&[0x40, 0x03, 0x04, 198, 51, 100, 1]); // NEXT_HOP
    expected.extend_from_slice(&[0xc0, 0x08, 0x04, 0xfc, 0x00, 0x00, 0x64]); // COMMUNITIES (optional transitive)
    expected.extend_from_slice(&[32, 192, 0, 2, 10]); // NLRI: /32 and its 4 octets
    let out = encode_announce(&nets(&["192.0.2.10/32"]), &attrs, &classic()).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].as_ref(), expected.as_slice());
}

#[test]
fn classic_end_of_rib_is_an_empty_update() {
    // RFC 4724 §2: an UPDATE with no withdrawn routes, no attributes, no NLRI: 23 bytes.
    let mut expected = MARKER.to_vec();
    expected.extend_from_slice(&[0x00, 0x17, 0x02, 0x00, 0x00, 0x00, 0x00]);
    let out = encode_end_of_rib(Family::Ipv4Unicast, &classic());
    assert_eq!(out.as_ref(), expected.as_slice());
    assert_eq!(
        decode_update(&out, &classic()).end_of_rib,
        Some(Family::Ipv4Unicast)
    );
}

// --- round trips ---

#[test]
fn open_round_trips_in_every_shape() {
    let family_sets = [
        families(&[]),
        families(&[Family::Ipv4Unicast]),
        families(&[Family::Ipv6Unicast]),
        families(&[Family::Ipv4Unicast, Family::Ipv6Unicast]),
    ];
    for asn in [64512, 4_200_000_000] {
        for four_octet_as in [false, true] {
            for families in &family_sets {
                for graceful_restart in [false, true] {
                    let open = Open {
                        asn,
                        four_octet_as,
                        families: families.clone(),
                        graceful_restart,
                        ..herald_open()
                    };
                    let bytes = encode_open(&open);
                    assert!(bytes.len() > HEADER_LEN, "{open:?} encodes");
                    let Some(Message::Open(back)) = decode_one(&bytes, None).unwrap() else {
                        panic!("not an OPEN");
                    };
                    let expected_asn = if four_octet_as || asn <= 65535 {
                        asn
                    } else {
                        u32::from(AS_TRANS)
                    };
                    assert_eq!(
                        back,
                        Open {
                            asn: expected_asn,
                            ..open
                        }
                    );
                }
            }
        }
    }
}

#[test]
fn large_asn_goes_as_as_trans_in_my_as() {
    let open = Open {
        asn: 4_200_000_000,
        ..herald_open()
    };
    let bytes = encode_open(&open);
    assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
    assert_eq!(decode_one(&bytes, None).unwrap(), Some(Message::Open(open)));
}

#[test]
fn notification_round_trips_even_where_netgauze_has_no_type() {
    for n in [
        Notification::cease_admin_shutdown(),
        Notification::cease_peer_deconfigured(),
        Notification::hold_timer_expired(),
        Notification::fsm_error(),
        Notification::bad_peer_as(),
        Notification::unacceptable_hold_time(),
        Notification {
            code: 1,
            subcode: 2,
            data: vec![0x10, 0x01],
        },
        // Not in netgauze's types: Cease 0, OPEN 5 (deprecated), RFC 9687's code 8, code 99.
        Notification::new(6, 0),
        Notification::new(2, 5),
        Notification::new(8, 0),
        Notification {
            code: 99,
            subcode: 7,
            data: vec![1, 2, 3],
        },
    ] {
        let bytes = encode_notification(&n);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 2], &[n.code, n.subcode]);
        assert_eq!(
            decode_one(&bytes, None).unwrap(),
            Some(Message::Notification(n))
        );
    }
}

#[test]
fn notification_data_is_cut_to_fit() {
    let n = Notification {
        data: vec![7; 5000],
        ..Notification::fsm_error()
    };
    let bytes = encode_notification(&n);
    assert_eq!(bytes.len(), MAX_MESSAGE_LEN);
    let Some(Message::Notification(back)) = decode_one(&bytes, None).unwrap() else {
        panic!("not a NOTIFICATION");
    };
    assert_eq!(back.data.len(), MAX_MESSAGE_LEN - HEADER_LEN - 2);
}

#[test]
fn notification_descriptions() {
    let cases = [
        (
            Notification::cease_admin_shutdown(),
            "Cease / Administrative Shutdown",
        ),
        (
            Notification::cease_peer_deconfigured(),
            "Cease / Peer De-configured",
        ),
        (Notification::hold_timer_expired(), "Hold Timer Expired"),
        (
            Notification::fsm_error(),
            "Finite State Machine Error / Unspecific",
        ),
        (
            Notification::bad_peer_as(),
            "OPEN Message Error / Bad Peer AS",
        ),
        (
            Notification::unacceptable_hold_time(),
            "OPEN Message Error / Unacceptable Hold Time",
        ),
        (
            Notification::new(1, 1),
            "Message Header Error / Connection Not Synchronized",
        ),
        (
            Notification::new(3, 11),
            "UPDATE Message Error / Malformed AS_PATH",
        ),
        (Notification::new(6, 42), "Cease / subcode 42"),
        (Notification::new(77, 1), "error code 77 / subcode 1"),
    ];
    for (n, text) in cases {
        assert_eq!(n.describe(), text);
    }
    // Data that is not a shutdown communication is left out.
    let n = Notification {
        data: vec![9, 1],
        ..Notification::cease_admin_shutdown()
    };
    assert_eq!(n.describe(), "Cease / Administrative Shutdown");
}

#[test]
fn route_refresh_is_read() {
    let request = message(5, &[0x00, 0x01, 0x00, 0x01]); // IPv4 unicast, normal request
    assert_eq!(
        decode_one(&request, None).unwrap(),
        Some(Message::RouteRefresh)
    );
    // RFC 7313: a Begin-of-RIB marker must be exactly 4 bytes; the whole message is the data.
    let long = message(5, &[0x00, 0x01, 0x01, 0x01, 0x00]);
    assert_eq!(
        refusal(&long, None),
        Notification {
            code: 7,
            subcode: 1,
            data: long.clone()
        }
    );
    let short = message(5, &[0x00, 0x01, 0x00]);
    assert_eq!(refusal(&short, None).code, 7);
}

#[test]
fn announce_and_withdraw_round_trip_in_each_encoding() {
    let v4 = nets(&["192.0.2.10/32", "198.51.100.0/24", "203.0.113.128/25"]);
    let v6 = nets(&["2001:db8::10/128", "2001:db8:1::/64"]);
    let cases = [
        (v4.clone(), attrs("198.51.100.1", &[64512]), classic()),
        (v4.clone(), attrs("198.51.100.1", &[64512]), dual_stack()),
        (v6.clone(), attrs("2001:db8::1", &[64512]), dual_stack()),
    ];
    for (prefixes, route, session) in cases {
        let out = encode_announce(&prefixes, &route, &session).unwrap();
        assert_eq!(out.len(), 1);
        let update = decode_update(&out[0], &session);
        assert_eq!(
            update,
            Update {
                announced: prefixes.clone(),
                ..Update::default()
            }
        );
        let out = encode_withdraw(&prefixes, &session).unwrap();
        assert_eq!(out.len(), 1);
        let update = decode_update(&out[0], &session);
        assert_eq!(
            update,
            Update {
                withdrawn: prefixes.clone(),
                ..Update::default()
            }
        );
    }
    // Mixed families in one withdraw: one message per family.
    let mixed: Vec<IpNet> = v4.iter().chain(&v6).copied().collect();
    let out = encode_withdraw(&mixed, &dual_stack()).unwrap();
    assert_eq!(out.len(), 2);
    let withdrawn: Vec<IpNet> = out
        .iter()
        .flat_map(|m| decode_update(m, &dual_stack()).withdrawn)
        .collect();
    assert_eq!(withdrawn, mixed);
}

#[test]
fn mp_end_of_rib_round_trips() {
    for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let out = encode_end_of_rib(family, &dual_stack());
        // UPDATE, no withdrawn routes, 6 bytes of attributes: MP_UNREACH_NLRI (optional,
        // non-transitive, type 15), 3 bytes: AFI and SAFI, no prefixes.
        let afi = if family == Family::Ipv4Unicast { 1 } else { 2 };
        assert_eq!(
            &out[HEADER_LEN..],
            &[0x00, 0x00, 0x00, 0x06, 0x80, 0x0f, 0x03, 0x00, afi, 0x01]
        );
        assert_eq!(
            decode_update(&out, &dual_stack()),
            Update {
                end_of_rib: Some(family),
                ..Update::default()
            }
        );
    }
}

#[test]
fn large_asn_on_a_two_octet_session_goes_through_as4_path() {
    let route = attrs("198.51.100.1", &[64512, 4_200_000_000]);
    let prefixes = nets(&["192.0.2.10/32"]);
    let two = encode_announce(&prefixes, &route, &classic()).unwrap();
    let update = netgauze_update(&two[0], false);
    let mut as_path = None;
    let mut as4_path = None;
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::AsPath(path) => as_path = Some(Vec::<u32>::from(path.clone())),
            PathAttributeValue::As4Path(path) => {
                as4_path = Some(
                    path.segments()
                        .iter()
                        .flat_map(|s| s.as_numbers().to_vec())
                        .collect::<Vec<u32>>(),
                );
                assert!(attr.optional() && attr.transitive());
            }
            _ => {}
        }
    }
    assert_eq!(as_path, Some(vec![64512, u32::from(AS_TRANS)]));
    assert_eq!(as4_path, Some(vec![64512, 4_200_000_000]));
    assert_eq!(decode_update(&two[0], &classic()).announced, prefixes);

    // Both sides 4-octet: the real path in AS_PATH, no AS4_PATH.
    let session = Session {
        four_octet_as: true,
        ..classic()
    };
    let four = encode_announce(&prefixes, &route, &session).unwrap();
    let update = netgauze_update(&four[0], true);
    let paths: Vec<&PathAttributeValue> = update
        .path_attributes()
        .iter()
        .map(PathAttribute::value)
        .filter(|v| {
            matches!(
                v,
                PathAttributeValue::AsPath(_) | PathAttributeValue::As4Path(_)
            )
        })
        .collect();
    assert!(matches!(
        paths.as_slice(),
        [PathAttributeValue::AsPath(AsPath::As4PathSegments(_))]
    ));
    let PathAttributeValue::AsPath(path) = paths[0] else {
        unreachable!()
    };
    assert_eq!(Vec::<u32>::from(path.clone()), vec![64512, 4_200_000_000]);
    // Read as 2-octet, those 4-octet numbers are a malformed AS_PATH: `session` matters.
    assert_eq!(refusal(&four[0], None), Notification::new(3, 11));
}

#[test]
fn ibgp_attributes_and_sorted_communities() {
    let route = RouteAttrs {
        local_pref: Some(150),
        communities: vec![
            Community::Large(64512, 2, 3),
            Community::Standard(65000, 2),
            Community::Standard(65000, 1),
            Community::Large(64512, 1, 9),
            Community::Standard(65000, 1),
        ],
        ..attrs("198.51.100.1", &[])
    };
    let out = encode_announce(&nets(&["192.0.2.10/32"]), &route, &classic()).unwrap();
    // Empty AS_PATH (iBGP): flags, type 2, length 0.
    assert!(out[0].windows(3).any(|w| w == [0x40, 0x02, 0x00]));
    let update = netgauze_update(&out[0], false);
    let types: Vec<u8> = update
        .path_attributes()
        .iter()
        .map(|a| a.path_attribute_type().map_or(0, u8::from))
        .collect();
    // Ascending type order: ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, COMMUNITIES, LARGE_COMMUNITY.
    assert_eq!(types, vec![1, 2, 3, 5, 8, 32]);
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::LocalPreference(pref) => assert_eq!(pref.metric(), 150),
            PathAttributeValue::Communities(c) => {
                let values: Vec<u32> = c
                    .communities()
                    .iter()
                    .map(netgauze_bgp_pkt::community::Community::value)
                    .collect();
                assert_eq!(values, vec![(65000 << 16) | 1, (65000 << 16) | 2]);
            }
            PathAttributeValue::LargeCommunities(c) => {
                let values: Vec<(u32, u32, u32)> = c
                    .communities()
                    .iter()
                    .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                    .collect();
                assert_eq!(values, vec![(64512, 1, 9), (64512, 2, 3)]);
            }
            _ => {}
        }
    }
}

#[test]
fn long_attributes_use_extended_length() {
    // 100 communities are 400 bytes, 300 ASNs need two AS_SEQUENCE segments (255 at most each).
    let as_path: Vec<u32> = (0..300).map(|i| 4_200_000_000 + i).collect();
    let route = RouteAttrs {
        communities: (0..100).map(|i| Community::Standard(65000, i)).collect(),
        ..attrs("198.51.100.1", &as_path)
    };
    let session = Session {
        four_octet_as: true,
        ..classic()
    };
    let out = encode_announce(&nets(&["192.0.2.10/32"]), &route, &session).unwrap();
    let update = netgauze_update(&out[0], true);
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::Communities(c) => {
                assert!(attr.extended_length());
                assert_eq!(c.communities().len(), 100);
            }
            PathAttributeValue::AsPath(AsPath::As4PathSegments(segments)) => {
                assert!(attr.extended_length());
                let lens: Vec<usize> = segments.iter().map(|s| s.as_numbers().len()).collect();
                assert_eq!(lens, vec![255, 45]);
                let flat: Vec<u32> = segments
                    .iter()
                    .flat_map(|s| s.as_numbers().to_vec())
                    .collect();
                assert_eq!(flat, as_path);
            }
            _ => assert!(!attr.extended_length()),
        }
    }
    assert_eq!(
        decode_update(&out[0], &session).announced,
        nets(&["192.0.2.10/32"])
    );
}

#[test]
fn refused_announcements() {
    let v4 = attrs("198.51.100.1", &[64512]);
    let v6 = attrs("2001:db8::1", &[64512]);
    let refused = |prefixes: &[&str], route: &RouteAttrs, session: &Session| {
        matches!(
            encode_announce(&nets(prefixes), route, session),
            Err(WireError::Unencodable(_))
        )
    };
    assert!(refused(
        &["192.0.2.1/32", "2001:db8::1/128"],
        &v4,
        &dual_stack()
    ));
    assert!(refused(&["2001:db8::1/128"], &v4, &dual_stack()));
    assert!(refused(&["2001:db8::1/128"], &v6, &classic()));
    assert!(refused(&["224.0.0.1/32"], &v4, &classic()));
    assert!(refused(&["ff02::1/128"], &v6, &dual_stack()));
    assert_eq!(
        encode_announce(&[], &v4, &classic()).unwrap(),
        Vec::<Bytes>::new()
    );
    assert!(matches!(
        encode_withdraw(&nets(&["2001:db8::1/128"]), &classic()),
        Err(WireError::Unencodable(_))
    ));
    let huge = RouteAttrs {
        communities: (0..1100).map(|i| Community::Standard(65000, i)).collect(),
        ..v4.clone()
    };
    assert!(refused(&["192.0.2.1/32"], &huge, &classic()));
}

#[test]
fn host_bits_are_cleared() {
    let out = encode_announce(
        &nets(&["192.0.2.77/24"]),
        &attrs("198.51.100.1", &[]),
        &classic(),
    )
    .unwrap();
    assert_eq!(
        decode_update(&out[0], &classic()).announced,
        nets(&["192.0.2.0/24"])
    );
}

// --- packing ---

fn many_v4() -> Vec<IpNet> {
    (0..1000u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i * 7), 32).unwrap()))
        .collect()
}

fn many_v6() -> Vec<IpNet> {
    (0..1000u128)
        .map(|i| {
            let addr = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) + i * 13);
            IpNet::V6(ipnet::Ipv6Net::new(addr, 128).unwrap())
        })
        .collect()
}

/// All messages within the limit, all but the last nearly full, and together exactly `prefixes`.
fn check_packed(out: &[Bytes], prefixes: &[IpNet], session: &Session, announced: bool) {
    let prefix_len = if prefixes[0].addr().is_ipv4() { 5 } else { 17 };
    assert!(
        out.len() <= (prefixes.len() * prefix_len).div_ceil(3900),
        "{} messages",
        out.len()
    );
    for (i, m) in out.iter().enumerate() {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        if i + 1 < out.len() {
            assert!(
                m.len() > MAX_MESSAGE_LEN - prefix_len,
                "message {i} is {} bytes",
                m.len()
            );
        }
    }
    let decoded: Vec<IpNet> = out
        .iter()
        .flat_map(|m| {
            let update = decode_update(m, session);
            if announced {
                update.announced
            } else {
                update.withdrawn
            }
        })
        .collect();
    assert_eq!(decoded, prefixes);
}

#[test]
fn a_thousand_prefixes_pack_into_few_messages() {
    let route = RouteAttrs {
        local_pref: Some(100),
        communities: vec![Community::Standard(64512, 1), Community::Large(64512, 1, 1)],
        ..attrs("198.51.100.1", &[64512, 4_200_000_000])
    };
    let v4 = many_v4();
    for session in [classic(), dual_stack()] {
        check_packed(
            &encode_announce(&v4, &route, &session).unwrap(),
            &v4,
            &session,
            true,
        );
        check_packed(
            &encode_withdraw(&v4, &session).unwrap(),
            &v4,
            &session,
            false,
        );
    }
    let route6 = RouteAttrs {
        next_hop: "2001:db8::1".parse().unwrap(),
        ..route
    };
    let v6 = many_v6();
    let session = dual_stack();
    check_packed(
        &encode_announce(&v6, &route6, &session).unwrap(),
        &v6,
        &session,
        true,
    );
    check_packed(
        &encode_withdraw(&v6, &session).unwrap(),
        &v6,
        &session,
        false,
    );
}

// --- negotiation ---

#[test]
fn session_negotiation() {
    let local = herald_open();
    let v4_only = Open {
        families: families(&[Family::Ipv4Unicast]),
        ..herald_open()
    };
    let classic_peer = Open {
        families: families(&[]),
        four_octet_as: false,
        ..herald_open()
    };
    let v6_only = Open {
        families: families(&[Family::Ipv6Unicast]),
        ..herald_open()
    };
    assert_eq!(Session::negotiated(&local, &local), dual_stack());
    assert_eq!(
        Session::negotiated(&local, &v4_only),
        Session {
            four_octet_as: true,
            families: families(&[Family::Ipv4Unicast])
        }
    );
    assert_eq!(Session::negotiated(&local, &classic_peer), classic());
    assert_eq!(Session::negotiated(&classic_peer, &local), classic());
    assert_eq!(
        Session::negotiated(&v4_only, &v6_only).families,
        families(&[])
    );
}

// --- what peers send ---

/// An OPEN from a peer, capabilities given raw, each parameter a list of them.
fn peer_open(my_as: u16, hold: u16, id: [u8; 4], params: &[&[&[u8]]]) -> Vec<u8> {
    let mut body = vec![4];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id);
    let mut opt = Vec::new();
    for caps in params {
        let value: Vec<u8> = caps.concat();
        opt.push(2);
        opt.push(value.len() as u8);
        opt.extend_from_slice(&value);
    }
    body.push(opt.len() as u8);
    body.extend_from_slice(&opt);
    message(1, &body)
}

#[test]
fn unknown_and_unparsable_capabilities_are_ignored() {
    let bytes = peer_open(
        23456,
        180,
        [10, 0, 0, 1],
        &[
            &[
                &[200, 2, 0xaa, 0xbb],           // unassigned capability code
                &[1, 4, 0x00, 0x01, 0x00, 73],   // MP: IPv4 SR Policy (no netgauze type)
                &[1, 4, 0x00, 0x63, 0x00, 0x01], // MP: AFI 99 (unknown to netgauze)
                &[2, 0],                         // route refresh
            ],
            &[
                &[1, 4, 0x00, 0x02, 0x00, 0x01],  // MP: IPv6 unicast
                &[65, 4, 0xfa, 0x56, 0xea, 0x00], // 4-octet AS 4200000000
                &[9, 1, 0x77],                    // BGP Role with an unassigned value
                &[73, 3, 1, b'r', 0],             // hostname "r", no domain
            ],
        ],
    );
    assert_eq!(
        decode_one(&bytes, None).unwrap(),
        Some(Message::Open(Open {
            asn: 4_200_000_000,
            hold_time: 180,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            four_octet_as: true,
            families: families(&[Family::Ipv6Unicast]),
            graceful_restart: false,
            restarted: false,
        }))
    );
}

#[test]
fn bad_opens() {
    let id = [10, 0, 0, 1];
    let mut version3 = peer_open(64512, 90, id, &[]);
    version3[HEADER_LEN] = 3;
    assert_eq!(refusal(&version3, None).subcode, 1); // 2/1 with the version Herald speaks
    assert_eq!(refusal(&version3, None).code, 2);
    assert_eq!(
        refusal(&peer_open(64512, 2, id, &[]), None),
        Notification {
            data: vec![0, 2],
            ..Notification::unacceptable_hold_time()
        }
    );
    assert_eq!(refusal(&peer_open(64512, 90, [0; 4], &[]), None).subcode, 3);
    // An optional parameter other than capabilities: Unsupported Optional Parameter.
    let mut odd = peer_open(64512, 90, id, &[&[&[2, 0]]]);
    odd[HEADER_LEN + 10] = 1;
    assert_eq!(refusal(&odd, None).subcode, 4);
    // A malformed 4-octet AS capability is not skipped: the peer's AS would be unknown.
    let bytes = peer_open(64512, 90, id, &[&[&[65, 2, 0, 1]]]);
    assert_eq!(refusal(&bytes, None).code, 2);
    // An OPEN shorter than its fixed part.
    assert_eq!(
        refusal(&message(1, &[4, 0, 1]), None),
        Notification {
            code: 1,
            subcode: 2,
            data: vec![0, 22],
        }
    );
}

#[test]
fn non_unicast_prefixes_from_peers_are_ignored() {
    // No withdrawn routes; 14 bytes of attributes: ORIGIN, an empty AS_PATH, NEXT_HOP.
    let mut body = vec![0x00, 0x00, 0x00, 0x0e];
    body.extend_from_slice(&[0x40, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&[0x40, 0x02, 0x00]);
    body.extend_from_slice(&[0x40, 0x03, 0x04, 10, 0, 0, 1]);
    // NLRI: 224.0.0.0/4 (multicast: ignored, RFC 4271 §6.3), then 192.0.2.0/24.
    body.extend_from_slice(&[4, 0xe0, 24, 192, 0, 2]);
    let update = decode_update(&message(2, &body), &classic());
    assert_eq!(update.announced, nets(&["192.0.2.0/24"]));
}

#[test]
fn malformed_headers() {
    let keepalive = encode_keepalive();
    // Bad marker: 1/1, and the framing is lost, so everything goes.
    let mut bytes = keepalive.to_vec();
    bytes[3] = 0;
    bytes.extend_from_slice(&keepalive);
    let mut buf = BytesMut::from(bytes.as_slice());
    assert!(matches!(
        decode(&mut buf, None),
        Err(WireError::Malformed { ref notification, .. }) if *notification == Notification::new(1, 1)
    ));
    assert!(buf.is_empty());
    // ... even before the header is whole.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0x00][..]);
    assert!(decode(&mut buf, None).is_err());
    assert!(buf.is_empty());

    // Length out of range: 1/2 with the length as data.
    for len in [0u16, 18, 4097, 0xffff] {
        let mut bytes = MARKER.to_vec();
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(4);
        let mut buf = BytesMut::from(bytes.as_slice());
        match decode(&mut buf, None) {
            Err(WireError::Malformed { notification, .. }) => {
                assert_eq!(
                    notification,
                    Notification {
                        code: 1,
                        subcode: 2,
                        data: len.to_be_bytes().to_vec()
                    }
                );
            }
            other => panic!("length {len}: {other:?}"),
        }
        assert!(buf.is_empty());
    }
    // Per-type lengths: a KEEPALIVE of 20 bytes, a NOTIFICATION of 20, an UPDATE of 22.
    assert_eq!(
        refusal(&message(4, &[0]), None),
        Notification {
            code: 1,
            subcode: 2,
            data: vec![0, 20]
        }
    );
    assert_eq!(refusal(&message(3, &[6]), None).subcode, 2);
    assert_eq!(refusal(&message(2, &[0, 0, 0]), None).subcode, 2);

    // Unknown type: 1/3 with the type; only that message is dropped.
    let mut bytes = message(9, &[]);
    bytes.extend_from_slice(&keepalive);
    let mut buf = BytesMut::from(bytes.as_slice());
    match decode(&mut buf, None) {
        Err(WireError::Malformed { notification, .. }) => {
            assert_eq!(
                notification,
                Notification {
                    code: 1,
                    subcode: 3,
                    data: vec![9]
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decode(&mut buf, None).unwrap(), Some(Message::Keepalive));
}

#[test]
fn messages_arrive_in_pieces() {
    let open = encode_open(&herald_open());
    let update = encode_announce(
        &nets(&["192.0.2.1/32"]),
        &attrs("198.51.100.1", &[1]),
        &classic(),
    )
    .unwrap()
    .remove(0);
    let stream: Vec<u8> = [open.as_ref(), update.as_ref(), &encode_keepalive()].concat();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in stream {
        buf.extend_from_slice(&[byte]);
        if let Some(m) = decode(&mut buf, Some(&classic())).unwrap() {
            got.push(m);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Message::Open(herald_open()));
    assert!(matches!(&got[1], Message::Update(u) if u.announced == nets(&["192.0.2.1/32"])));
    assert_eq!(got[2], Message::Keepalive);
}

#[test]
fn bad_updates() {
    let session = classic();
    // Withdrawn routes length runs past the message: Malformed Attribute List.
    assert_eq!(
        refusal(&message(2, &[0x00, 0x09, 0x00, 0x00]), Some(&session)),
        Notification::new(3, 1)
    );
    // A /33 in the NLRI: Invalid Network Field.
    assert_eq!(
        refusal(
            &message(2, &[0, 0, 0, 0, 33, 1, 2, 3, 4, 5]),
            Some(&session)
        ),
        Notification::new(3, 10)
    );
    // ORIGIN 7: Invalid ORIGIN Attribute.
    let body = [0, 0, 0, 4, 0x40, 0x01, 0x01, 0x07];
    assert_eq!(refusal(&message(2, &body), Some(&session)).subcode, 6);
    // LOCAL_PREF of no bytes: netgauze calls it an Optional Attribute Error.
    let body = [0, 0, 0, 3, 0x40, 0x05, 0x00];
    assert_eq!(refusal(&message(2, &body), Some(&session)).code, 3);
}

#[test]
fn fuzz_seeds_are_what_they_say() {
    let seed_on = |bytes: &[u8], session: &Session| -> Vec<Message> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = decode(&mut buf, Some(session)).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty());
        out
    };
    let seed = |bytes: &[u8]| seed_on(bytes, &dual_stack());
    let open = seed(include_bytes!("../../../fuzz/seeds/bgp_decode/open"));
    assert!(
        matches!(&open[..], [Message::Open(o)] if o.asn == 4_200_000_001 && o.graceful_restart)
    );
    // A 2-octet classic session's UPDATE.
    let update = seed_on(
        include_bytes!("../../../fuzz/seeds/bgp_decode/update_ipv4"),
        &classic(),
    );
    assert!(matches!(&update[..], [Message::Update(u)] if u.announced == nets(&["192.0.2.10/32"])));
    let update = seed(include_bytes!("../../../fuzz/seeds/bgp_decode/update_ipv6"));
    assert_eq!(
        update,
        vec![
            Message::Update(Update {
                announced: nets(&["2001:db8::10/128"]),
                ..Update::default()
            }),
            Message::Update(Update {
                withdrawn: nets(&["2001:db8:1::/64"]),
                ..Update::default()
            }),
            Message::Update(Update {
                end_of_rib: Some(Family::Ipv6Unicast),
                ..Update::default()
            }),
        ]
    );
    let keepalive = seed(include_bytes!("../../../fuzz/seeds/bgp_decode/keepalive"));
    assert_eq!(keepalive, vec![Message::Keepalive]);
    let notification = seed(include_bytes!(
        "../../../fuzz/seeds/bgp_decode/notification"
    ));
    assert!(
        matches!(&notification[..], [Message::Notification(n)] if n.describe() == "Cease / Administrative Shutdown: \"upgrade\"")
    );
}

// --- never panics ---

/// Drives `decode` to the end of `bytes`; each step consumes something or waits for more.
fn drain(bytes: &[u8], session: Option<&Session>) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode(&mut buf, session) {
            Ok(Some(_)) | Err(_) => assert!(buf.len() < before, "no progress on {bytes:?}"),
            Ok(None) => {
                assert_eq!(buf.len(), before);
                // Only a header still arriving or a message shorter than its length asks for more.
                let declared = buf
                    .get(16..18)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
                assert!(buf.len() < HEADER_LEN || declared.is_some_and(|d| buf.len() < d));
                return;
            }
        }
    }
}

fn framed() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=6, proptest::collection::vec(any::<u8>(), 0..300))
        .prop_map(|(kind, body)| message(kind, &body))
}

proptest! {
    #[test]
    fn decode_never_panics(
        raw in proptest::collection::vec(any::<u8>(), 0..200),
        frames in proptest::collection::vec(framed(), 0..4),
        four in any::<bool>(),
    ) {
        let session = Session { four_octet_as: four, ..dual_stack() };
        drain(&raw, None);
        drain(&raw, Some(&session));
        let stream: Vec<u8> = frames.concat();
        drain(&stream, None);
        drain(&stream, Some(&session));
        // A valid message with bytes flipped.
        let update = encode_withdraw(&nets(&["192.0.2.1/32", "2001:db8::/64"]), &session).unwrap().concat();
        let mut flipped = [encode_open(&herald_open()).to_vec(), update].concat();
        for (i, b) in raw.iter().enumerate().take(8) {
            let at = usize::from(*b) * 7 % flipped.len();
            flipped[at] ^= u8::try_from(i).unwrap() + 1;
        }
        drain(&flipped, Some(&session));
    }
}
