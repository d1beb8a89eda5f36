//! The speaker's gossip over real UDP sockets on loopback (one process, no privileges): members
//! find each other from seeds, a killed member is removed by the survivors, a member without
//! the shared secret is never admitted and its datagrams are counted, a leaving member is
//! dropped, and a restarted member rejoins; traffic captured on its way to one member is no
//! contact for another, a rotated secret never splits the members, and a member whose clock is
//! 10 s ahead is heard after its start allowance, its drops counted by reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use herald::speaker::auth::AuthError;
use std::time::Duration;
use tokio::net::UdpSocket;

use herald::speaker::auth::GossipKey;
use herald::speaker::gossip::{Gossip, GossipOptions};
use herald::speaker::timing::Timing;

const SECRET: &[u8] = b"0123456789abcdefghijkl";
/// Generous bound for a condition to become true on a loaded CI machine (the protocol's own
/// timing is tested on virtual time in the unit tests).
const PATIENCE: Duration = Duration::from_secs(10);

async fn member(node: &str, key: &[u8], bump: u64) -> Gossip {
    member_with_clock(node, key, bump, None).await
}

async fn member_with_clock(
    node: &str,
    key: &[u8],
    bump: u64,
    wall_start_ms: Option<u64>,
) -> Gossip {
    let own_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    member_at(node, key, bump, wall_start_ms, own_port).await
}

/// A member advertising `advertise` (port 0: its own socket's).
async fn member_at(
    node: &str,
    key: &[u8],
    bump: u64,
    wall_start_ms: Option<u64>,
    advertise: SocketAddr,
) -> Gossip {
    Gossip::start(GossipOptions {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        advertise,
        node: node.to_string(),
        timing: Timing::from_detect_ms(500).unwrap(),
        key: GossipKey::new(Some(key)),
        bump,
        wall_start_ms,
    })
    .await
    .unwrap()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(std::string::ToString::to_string).collect()
}

/// Waits until `member` sees exactly `want`; panics with the last view otherwise.
async fn wait_for(member: &Gossip, want: &BTreeSet<String>) {
    let mut live = member.live();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if *live.borrow_and_update() == *want {
            return;
        }
        if tokio::time::timeout_at(deadline, live.changed())
            .await
            .is_err()
        {
            panic!("expected {want:?}, still {:?}", *live.borrow());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_is_removed_and_outsider_is_ignored() {
    let a = member("node-a", SECRET, 1).await;
    let b = member("node-b", SECRET, 1).await;
    let c = member("node-c", SECRET, 1).await;
    let outsider = member("node-x", b"not-the-shared-secret!", 1).await;
    let seeds: Vec<(String, SocketAddr)> = [("node-a", &a), ("node-b", &b), ("node-c", &c)]
        .iter()
        .map(|(n, m)| (n.to_string(), m.local_addr()))
        .collect();
    for m in [&a, &b, &c, &outsider] {
        m.join(seeds.clone());
    }
    let all = names(&["node-a", "node-b", "node-c"]);
    for m in [&a, &b, &c] {
        wait_for(m, &all).await;
    }
    // The outsider keeps knocking; nobody lets it in and its datagrams are counted as failures.
    let failures = || -> u64 {
        [&a, &b, &c]
            .iter()
            .map(|m| m.health().auth_failures.load(Ordering::Relaxed))
            .sum()
    };
    let before = failures();
    outsider.join(seeds.clone());
    // Counted in the background: poll (within PATIENCE) until this knock shows.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while failures() <= before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures() > before,
        "the outsider's datagrams were not counted ({before} before it knocked again)"
    );
    // Its datagrams have arrived and been refused: nobody admitted it.
    wait_for(&outsider, &names(&["node-x"])).await;
    for m in [&a, &b, &c] {
        assert!(!m.live().borrow().contains("node-x"));
    }

    // Kill node-c (no leave): the survivors remove it.
    c.abort();
    let survivors = names(&["node-a", "node-b"]);
    wait_for(&a, &survivors).await;
    wait_for(&b, &survivors).await;
    assert!(a.health().peers_in_view.load(Ordering::Relaxed));

    // node-c restarts (newer identity) and rejoins.
    let c2 = member("node-c", SECRET, 2).await;
    c2.join(vec![("node-a".to_string(), a.local_addr())]);
    // It binds a new port: the identity address changes, so it joins as a fresh member.
    for m in [&a, &b, &c2] {
        wait_for(m, &all).await;
    }

    // A graceful leave is seen without waiting for failure detection.
    b.leave().await;
    let left = names(&["node-a", "node-c"]);
    wait_for(&a, &left).await;
    wait_for(&c2, &left).await;
}

fn seed(node: &str, m: &Gossip) -> (String, SocketAddr) {
    (node.to_string(), m.local_addr())
}

fn dropped(m: &Gossip, reason: AuthError) -> u64 {
    m.health().dropped[reason.index()].load(Ordering::Relaxed)
}

/// Waits until `cond` holds, for at most `PATIENCE`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A UDP relay in front of a member (which advertises the relay's address, as behind a NAT):
/// forwards every datagram to the member once [`relay`] starts and keeps a copy, as an
/// eavesdropper on the path would.
fn relay(socket: UdpSocket, to: SocketAddr) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let copy = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((len, _)) = socket.recv_from(&mut buf).await {
            copy.lock().unwrap().push(buf[..len].to_vec());
            let _ = socket.send_to(&buf[..len], to).await;
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_captured_on_its_way_to_one_member_is_no_contact_for_another() {
    let a = member("node-a", SECRET, 1).await;
    // node-b is reached through a relay that copies what it carries.
    let tap = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let via_tap = tap.local_addr().unwrap();
    let b = member_at("node-b", SECRET, 1, None, via_tap).await;
    let captured = relay(tap, b.local_addr());
    // node-c holds the secret but is cut off: it never hears a peer.
    let c = member("node-c", SECRET, 1).await;
    a.join(vec![("node-b".to_string(), via_tap)]);
    wait_for(&b, &names(&["node-a", "node-b"])).await;
    wait_for(&a, &names(&["node-a", "node-b"])).await;
    let captured: Vec<Vec<u8>> = captured.lock().unwrap().clone();
    assert!(!captured.is_empty(), "nothing went through the tap");
    // Replayed to node-c from a socket of its own: every datagram fails authentication there.
    let replayer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    for data in &captured {
        replayer.send_to(data, c.local_addr()).await.unwrap();
    }
    let want = captured.len() as u64;
    eventually("the replays were not all refused as bad tags", || {
        dropped(&c, AuthError::BadTag) >= want
    })
    .await;
    let health = c.health();
    assert_eq!(
        health.last_contact_ns.load(Ordering::Relaxed),
        0,
        "a replay counted as contact"
    );
    assert_eq!(health.received.load(Ordering::Relaxed), 0);
    assert!(!health.peers_in_view.load(Ordering::Relaxed));
    assert_eq!(*c.live().borrow(), names(&["node-c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_on_each_member_in_turn_never_splits_them() {
    let a = member("node-a", SECRET, 1).await;
    let b = member("node-b", SECRET, 1).await;
    let c = member("node-c", SECRET, 1).await;
    let seeds = vec![seed("node-a", &a), seed("node-b", &b), seed("node-c", &c)];
    for m in [&a, &b, &c] {
        m.join(seeds.clone());
    }
    let all = names(&["node-a", "node-b", "node-c"]);
    for m in [&a, &b, &c] {
        wait_for(m, &all).await;
    }
    let failures = || -> u64 {
        [&a, &b, &c]
            .iter()
            .map(|m| m.health().auth_failures.load(Ordering::Relaxed))
            .sum()
    };
    let before = failures();
    // Each member sees the new Secret a second after the one before it; through all of it,
    // every member keeps every other in view and refuses nothing.
    let new = GossipKey::new(Some(b"the-next-shared-secret"));
    for m in [&a, &b, &c] {
        m.set_key(new.clone());
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for m in [&a, &b, &c] {
                assert_eq!(
                    *m.live().borrow(),
                    all,
                    "a member dropped out during the rotation"
                );
            }
        }
    }
    assert_eq!(
        failures(),
        before,
        "datagrams were refused during the rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_clock_10s_ahead_is_heard_after_its_start_allowance() {
    let a = member("node-a", SECRET, 1).await;
    let b = member("node-b", SECRET, 1).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ahead = member_with_clock("node-d", SECRET, 1, Some(now_ms + 10_000)).await;
    let seeds = vec![
        seed("node-a", &a),
        seed("node-b", &b),
        seed("node-d", &ahead),
    ];
    for m in [&a, &b, &ahead] {
        m.join(seeds.clone());
    }
    // Its peers' datagrams read 10 s before its start: it drops them as sent before it started
    // (what a replay to a restarted speaker looks like) and counts them under that reason.
    eventually("no datagram dropped as sent before the start", || {
        dropped(&ahead, AuthError::BeforeStart) > 0
    })
    .await;
    assert!(!ahead.live().borrow().contains("node-a"));
    // Its own datagrams are within the 5-minute tolerance: its peers take them.
    assert_eq!(
        dropped(&a, AuthError::Stale) + dropped(&b, AuthError::Stale),
        0
    );
    // Once its peers' clocks pass its start allowance (8 s), it hears them.
    let all = names(&["node-a", "node-b", "node-d"]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    for m in [&a, &b, &ahead] {
        wait_for(m, &all).await;
    }
    let refused = dropped(&ahead, AuthError::BeforeStart);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        dropped(&ahead, AuthError::BeforeStart),
        refused,
        "still dropping"
    );
}
