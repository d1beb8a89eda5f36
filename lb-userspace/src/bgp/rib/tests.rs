use proptest::prelude::*;

use super::*;
use crate::config::Community;

fn ctx() -> Context {
    Context {
        as_path: vec![64513],
        next_hop_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
        next_hop_v6: None,
        families: BTreeSet::from([Family::Ipv4Unicast]),
    }
}

fn policy(local_pref: Option<u32>, communities: Vec<Community>) -> RoutePolicy {
    RoutePolicy {
        local_pref,
        communities,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn routes_get_the_session_next_hop_and_as_path() {
    let routes = BTreeMap::from([(
        net("203.0.113.10/32"),
        policy(None, vec![Community::Standard(64512, 300)]),
    )]);
    let (out, unsendable) = complete(&routes, &ctx());
    assert_eq!(unsendable, []);
    let attrs = &out[&net("203.0.113.10/32")];
    assert_eq!(attrs.next_hop, "203.0.113.2".parse::<IpAddr>().unwrap());
    assert_eq!(attrs.as_path, [64513]);
    assert_eq!(attrs.communities, [Community::Standard(64512, 300)]);
}

#[test]
fn a_family_the_session_lacks_or_without_next_hop_is_reported_not_sent() {
    let routes = BTreeMap::from([(net("2001:db8::10/128"), policy(None, vec![]))]);
    let (out, unsendable) = complete(&routes, &ctx());
    assert!(out.is_empty());
    assert_eq!(
        unsendable[0].reason,
        "the session does not carry this address family"
    );

    let mut both = ctx();
    both.families.insert(Family::Ipv6Unicast);
    let (out, unsendable) = complete(&routes, &both);
    assert!(out.is_empty());
    assert_eq!(
        unsendable[0].reason,
        "the node has no address of this family for the next hop"
    );

    both.next_hop_v6 = Some("2001:db8::2".parse().unwrap());
    let (out, unsendable) = complete(&routes, &both);
    assert_eq!(unsendable, []);
    assert_eq!(
        out[&net("2001:db8::10/128")].next_hop,
        "2001:db8::2".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn changes_group_by_attributes_and_skip_what_was_sent() {
    let c = ctx();
    let routes = BTreeMap::from([
        (net("203.0.113.10/32"), policy(None, vec![])),
        (net("203.0.113.11/32"), policy(None, vec![])),
        (
            net("203.0.113.12/32"),
            policy(None, vec![Community::Standard(1, 2)]),
        ),
    ]);
    let (desired, _) = complete(&routes, &c);
    let mut rib = AdjRibOut::default();
    let changes = rib.changes(&desired);
    assert_eq!(changes.withdraw, []);
    assert_eq!(changes.announce.len(), 2, "two attribute sets");
    assert_eq!(changes.announced(), 3);
    rib.record(&changes);
    assert_eq!(rib.len(), 3);
    assert!(rib.changes(&desired).is_empty(), "nothing left to send");

    // One route changes attributes, one goes away.
    let routes = BTreeMap::from([
        (net("203.0.113.10/32"), policy(None, vec![])),
        (
            net("203.0.113.11/32"),
            policy(None, vec![Community::Standard(1, 2)]),
        ),
    ]);
    let (desired, _) = complete(&routes, &c);
    let changes = rib.changes(&desired);
    assert_eq!(changes.withdraw, [net("203.0.113.12/32")]);
    assert_eq!(changes.announced(), 1);
    rib.record(&changes);
    assert!(rib.changes(&desired).is_empty());
    rib.clear();
    assert_eq!(rib.changes(&desired).announced(), 2);
}

fn arb_routes() -> impl Strategy<Value = BTreeMap<IpNet, RoutePolicy>> {
    prop::collection::btree_map(
        (0u8..40).prop_map(|i| net(&format!("203.0.113.{i}/32"))),
        (
            prop::option::of(0u32..3),
            prop::collection::vec((0u16..3, 0u16..3), 0..3),
        )
            .prop_map(|(lp, cs)| {
                let mut communities: Vec<Community> = cs
                    .into_iter()
                    .map(|(a, b)| Community::Standard(a, b))
                    .collect();
                communities.sort();
                communities.dedup();
                policy(lp, communities)
            }),
        0..30,
    )
}

proptest! {
    /// Whatever was sent before, applying the changes leaves the Adj-RIB-Out equal to the
    /// desired routes, and nothing unchanged is re-sent.
    #[test]
    fn applying_changes_reaches_the_desired_state(before in arb_routes(), after in arb_routes()) {
        let c = ctx();
        let (first, _) = complete(&before, &c);
        let (second, _) = complete(&after, &c);
        let mut rib = AdjRibOut::default();
        rib.record(&rib.changes(&first));
        let changes = rib.changes(&second);
        for prefixes in changes.announce.values() {
            for p in prefixes {
                prop_assert!(first.get(p) != second.get(p));
            }
        }
        for p in &changes.withdraw {
            prop_assert!(!second.contains_key(p));
        }
        rib.record(&changes);
        prop_assert_eq!(rib.sent, second);
    }
}

#[test]
fn a_route_whose_update_cannot_be_encoded_is_held_back_alone() {
    let session = crate::bgp::wire::Session {
        four_octet_as: true,
        families: BTreeSet::from([Family::Ipv4Unicast]),
    };
    // 1,100 standard communities take 4,400 bytes: more than one UPDATE holds.
    let crowded: Vec<Community> = (0..1100).map(|n| Community::Standard(64512, n)).collect();
    let routes = BTreeMap::from([
        (net("203.0.113.10/32"), policy(None, vec![])),
        (net("203.0.113.20/32"), policy(None, crowded.clone())),
        (net("203.0.113.21/32"), policy(None, crowded)),
        (
            net("203.0.113.30/32"),
            policy(None, vec![Community::Standard(64512, 1)]),
        ),
    ]);
    let (mut out, unsendable) = complete(&routes, &ctx());
    assert_eq!(unsendable, []);
    let asked = std::cell::Cell::new(0);
    let refused = keep_encodable(&mut out, |prefix, attrs| {
        asked.set(asked.get() + 1);
        crate::bgp::wire::encode_announce(std::slice::from_ref(prefix), attrs, &session)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    // Three attribute sets, each encoded once.
    assert_eq!(asked.get(), 3);
    assert_eq!(
        refused.iter().map(|u| u.prefix).collect::<Vec<_>>(),
        [net("203.0.113.20/32"), net("203.0.113.21/32")]
    );
    assert!(
        refused[0].reason.contains("more than a message holds"),
        "{}",
        refused[0].reason
    );
    assert_eq!(
        out.keys().copied().collect::<Vec<_>>(),
        [net("203.0.113.10/32"), net("203.0.113.30/32")]
    );
    // Whatever is kept encodes.
    for (prefix, attrs) in &out {
        crate::bgp::wire::encode_announce(std::slice::from_ref(prefix), attrs, &session).unwrap();
    }
}

#[test]
fn multicast_and_broadcast_prefixes_are_reported_not_sent() {
    let mut both = ctx();
    both.families.insert(Family::Ipv6Unicast);
    both.next_hop_v6 = Some("2001:db8::2".parse().unwrap());
    let routes = BTreeMap::from([
        (net("224.0.0.10/32"), policy(None, vec![])),
        (net("255.255.255.255/32"), policy(None, vec![])),
        (net("ff02::10/128"), policy(None, vec![])),
        (net("203.0.113.10/32"), policy(None, vec![])),
    ]);
    let (out, unsendable) = complete(&routes, &both);
    assert_eq!(
        out.keys().copied().collect::<Vec<_>>(),
        [net("203.0.113.10/32")]
    );
    let mut refused: Vec<IpNet> = unsendable.iter().map(|u| u.prefix).collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            net("224.0.0.10/32"),
            net("255.255.255.255/32"),
            net("ff02::10/128")
        ]
    );
    assert!(unsendable.iter().all(|u| u.reason.contains("unicast")));
}
