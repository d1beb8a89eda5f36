//! The speaker's gossip over real UDP sockets on loopback (one process, no privileges): members
//! find each other from seeds, a killed member is removed by the survivors, a member without
//! the shared secret is never admitted and its datagrams are counted, a leaving member is
//! dropped, and a restarted member rejoins.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald::speaker::auth::GossipKey;
use herald::speaker::gossip::{Gossip, GossipOptions};
use herald::speaker::timing::Timing;

const SECRET: &[u8] = b"0123456789abcdefghijkl";
/// Generous bound for a condition to become true on a loaded CI machine (the protocol's own
/// timing is tested on virtual time in the unit tests).
const PATIENCE: Duration = Duration::from_secs(10);

async fn member(node: &str, key: &[u8], bump: u64) -> Gossip {
    Gossip::start(GossipOptions {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        advertise: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        node: node.to_string(),
        timing: Timing::from_detect_ms(500).unwrap(),
        key: GossipKey::new(Some(key)),
        bump,
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
    let seeds: Vec<SocketAddr> = [&a, &b, &c].iter().map(|m| m.local_addr()).collect();
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
    c2.join(vec![a.local_addr()]);
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
