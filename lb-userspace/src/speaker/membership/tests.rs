//! A whole cluster in one process on virtual time: datagrams are delivered between members
//! through an in-memory network that can drop links.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

const STEP: Duration = Duration::from_millis(2);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 11 + i as u8], 7946))
}

fn name(i: usize) -> String {
    format!("node-{}", (b'a' + i as u8) as char)
}

struct Net {
    timing: Timing,
    members: Vec<Option<Membership>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(usize, usize)>,
    now: Duration,
    /// Every datagram delivered, as (from, to, bytes), when set: an eavesdropper's capture.
    tap: Option<Vec<(usize, usize, Vec<u8>)>>,
}

/// Wall-clock time every member's virtual clock starts at.
const WALL_BASE_MS: u64 = 1_700_000_000_000;

impl Net {
    fn new(n: usize, key: &[u8]) -> Net {
        let timing = Timing::from_detect_ms(500).unwrap();
        let members = (0..n)
            .map(|i| Some(Net::member(&timing, i, key, 1)))
            .collect();
        Net {
            timing,
            members,
            cut: BTreeSet::new(),
            now: Duration::ZERO,
            tap: None,
        }
    }

    fn member(timing: &Timing, i: usize, key: &[u8], bump: u64) -> Membership {
        let id = SpeakerId {
            node: name(i),
            addr: addr(i),
            bump,
        };
        Membership::new(
            id,
            timing,
            GossipKey::new(Some(key)),
            42 + i as u64 + bump,
            WALL_BASE_MS,
        )
    }

    /// Three members that have converged, and one more second of every datagram sent to member
    /// `to`, as an eavesdropper on its segment captures them.
    fn converged_then_captured(key: &[u8], to: usize) -> (Net, Vec<Vec<u8>>) {
        let mut net = Net::new(3, key);
        net.join_all();
        net.run(Duration::from_secs(1));
        net.tap = Some(Vec::new());
        net.run(Duration::from_secs(1));
        let captured: Vec<Vec<u8>> = net
            .tap
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, dest, _)| *dest == to)
            .map(|(_, _, data)| data)
            .collect();
        assert!(captured.len() > 10, "captured {}", captured.len());
        (net, captured)
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        (0..self.members.len()).find(|i| addr(*i) == a)
    }

    fn join_all(&mut self) {
        let seeds: Vec<(String, SocketAddr)> = (0..self.members.len())
            .map(|i| (name(i), addr(i)))
            .collect();
        let now = self.now;
        for m in self.members.iter_mut().flatten() {
            m.join(&seeds, now);
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for m in self.members.iter_mut().flatten() {
            m.handle_due(now);
        }
        // Deliver until quiet (zero latency within a step).
        for _ in 0..16 {
            let mut batch = Vec::new();
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(m) = m {
                    for (to, data) in m.take_outgoing() {
                        batch.push((i, to, data));
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            for (from, to, data) in batch {
                let Some(j) = self.index_of(to) else { continue };
                if self.cut.contains(&(from, j)) {
                    continue;
                }
                if let Some(tap) = self.tap.as_mut() {
                    tap.push((from, j, data.clone()));
                }
                if let Some(m) = self.members[j].as_mut() {
                    let _ = m.handle_datagram(addr(from), &data, now);
                }
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `cond` holds (checked every step) or `limit` passes; returns the time taken.
    fn until(&mut self, limit: Duration, mut cond: impl FnMut(&Net) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now.checked_sub(start).unwrap() < limit {
            if cond(self) {
                return Some(self.now.checked_sub(start).unwrap());
            }
            self.step();
        }
        cond(self).then(|| self.now.checked_sub(start).unwrap())
    }

    fn live(&self, i: usize) -> BTreeSet<String> {
        self.members[i]
            .as_ref()
            .map(super::Membership::live_nodes)
            .unwrap_or_default()
    }

    fn names(ids: &[usize]) -> BTreeSet<String> {
        ids.iter().map(|i| name(*i)).collect()
    }
}

#[test]
fn three_members_converge() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    net.join_all();
    let t = net.until(Duration::from_secs(2), |n| {
        (0..3).all(|i| n.live(i) == Net::names(&[0, 1, 2]))
    });
    assert!(
        t.is_some(),
        "views: {:?}",
        (0..3).map(|i| net.live(i)).collect::<Vec<_>>()
    );
    assert!((0..3).all(|i| net.members[i].as_ref().unwrap().peers_in_view()));
}

#[test]
fn killed_member_is_removed_after_the_guard_bound_and_within_a_second() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    net.join_all();
    net.run(Duration::from_secs(2));
    assert_eq!(net.live(0), Net::names(&[0, 1, 2]));
    // Kill node-c: it sends nothing from now on.
    net.members[2] = None;
    let takeover = net.timing.earliest_takeover();
    let first = net
        .until(Duration::from_secs(2), |n| {
            !n.live(0).contains(&name(2)) || !n.live(1).contains(&name(2))
        })
        .expect("node-c never declared down");
    assert!(
        first >= takeover,
        "declared down after {first:?}, before the guard bound {takeover:?}"
    );
    let both = net
        .until(Duration::from_secs(2), |n| {
            n.live(0) == Net::names(&[0, 1]) && n.live(1) == Net::names(&[0, 1])
        })
        .expect("survivors never agreed");
    assert!(
        first + both <= Duration::from_millis(900),
        "detection took {:?}",
        first + both
    );
}

#[test]
fn member_without_the_secret_is_ignored_and_counted() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    // node-c has another key.
    net.members[2] = Some(Net::member(&net.timing, 2, b"wrong-wrong-wrong-wrong", 1));
    net.join_all();
    net.run(Duration::from_secs(2));
    assert_eq!(net.live(0), Net::names(&[0, 1]));
    assert_eq!(net.live(1), Net::names(&[0, 1]));
    assert_eq!(net.live(2), Net::names(&[2]));
    let failures: u64 = (0..2)
        .map(|i| net.members[i].as_ref().unwrap().stats().auth_failures)
        .sum();
    assert!(failures > 0);
    // The outsider hears nothing it can use either.
    assert!(net.members[2].as_ref().unwrap().stats().auth_failures > 0);
    assert_eq!(net.members[2].as_ref().unwrap().last_contact(), None);
}

#[test]
fn partitioned_member_rejoins_after_heal() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    net.join_all();
    net.run(Duration::from_secs(2));
    for other in [0, 1] {
        net.cut.insert((2, other));
        net.cut.insert((other, 2));
    }
    let contact_before = net.members[2].as_ref().unwrap().last_contact();
    net.until(Duration::from_secs(3), |n| {
        n.live(0) == Net::names(&[0, 1]) && n.live(2) == Net::names(&[2])
    })
    .expect("partition not detected on both sides");
    // Cut off: no contact since the cut, and no peers once it declared them down.
    assert_eq!(
        net.members[2].as_ref().unwrap().last_contact(),
        contact_before
    );
    assert!(!net.members[2].as_ref().unwrap().peers_in_view());
    net.cut.clear();
    let healed = net
        .until(Duration::from_secs(5), |n| {
            (0..3).all(|i| n.live(i) == Net::names(&[0, 1, 2]))
        })
        .expect("no rejoin after heal");
    // Down members are re-announced to every guard budget: the views merge about that fast.
    assert!(
        healed <= net.timing.guard_budget * 2,
        "heal took {healed:?}"
    );
}

#[test]
fn restarted_member_replaces_its_old_identity() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    net.join_all();
    net.run(Duration::from_secs(2));
    // Crash and immediate restart with a newer bump.
    net.members[2] = Some(Net::member(&net.timing, 2, b"secret-secret-secret00", 1000));
    let seeds = [(name(0), addr(0)), (name(1), addr(1))];
    let now = net.now;
    net.members[2].as_mut().unwrap().join(&seeds, now);
    net.until(Duration::from_secs(1), |n| {
        (0..3).all(|i| n.live(i) == Net::names(&[0, 1, 2]))
    })
    .expect("restart not accepted");
    // It stays: the old identity's timers must not take the node down.
    net.run(Duration::from_secs(2));
    assert!((0..3).all(|i| net.live(i) == Net::names(&[0, 1, 2])));
}

#[test]
fn leaving_member_is_dropped_at_once() {
    let mut net = Net::new(3, b"secret-secret-secret00");
    net.join_all();
    net.run(Duration::from_secs(2));
    let now = net.now;
    net.members[1].as_mut().unwrap().leave(now);
    assert!(
        !net.members[1]
            .as_ref()
            .unwrap()
            .live_nodes()
            .contains(&name(1))
    );
    let t = net
        .until(Duration::from_secs(1), |n| {
            !n.live(0).contains(&name(1)) && !n.live(2).contains(&name(1))
        })
        .expect("leave not seen");
    assert!(t < net.timing.probe_period, "leave took {t:?}");
}

#[test]
fn replayed_datagrams_do_not_keep_a_cut_off_member_in_contact() {
    let key = b"secret-secret-secret00";
    let (mut net, captured) = Net::converged_then_captured(key, 2);
    // node-c is cut off; an attacker on its segment replays what it captured, every step.
    for other in [0, 1] {
        net.cut.insert((2, other));
        net.cut.insert((other, 2));
    }
    let contact_before = net.members[2].as_ref().unwrap().last_contact();
    let failures_before = net.members[2].as_ref().unwrap().stats().auth_failures;
    let mut replays = 0;
    let mut refused = 0;
    let alone = loop {
        net.step();
        let now = net.now;
        let m = net.members[2].as_mut().unwrap();
        for data in &captured {
            replays += 1;
            if m.handle_datagram(addr(0), data, now) == Err(AuthError::Replayed) {
                refused += 1;
            }
        }
        if m.live_nodes() == Net::names(&[2]) {
            break now;
        }
        assert!(
            now < Duration::from_secs(10),
            "node-c never saw its peers go"
        );
    };
    assert_eq!(refused, replays, "every replay refused");
    let m = net.members[2].as_ref().unwrap();
    assert_eq!(
        m.last_contact(),
        contact_before,
        "a replay counted as contact"
    );
    assert!(!m.peers_in_view());
    assert!(m.stats().auth_failures >= failures_before + replays);
    assert!(alone > Duration::ZERO);

    // What the stamp prevents: the same payloads with fresh stamps (only a key holder can make
    // them) are accepted and count as contact, so the refusal above is the replay guard's doing.
    let sealer = GossipKey::new(Some(key));
    let now = net.now + STEP;
    let m = net.members[2].as_mut().unwrap();
    let mut accepted = 0;
    for (seq, data) in captured.iter().enumerate() {
        let Ok((_, payload)) = sealer.open(data, &name(2)) else {
            continue;
        };
        let fresh = sealer.seal(
            payload,
            Stamp {
                epoch: 0xfeed,
                seq: seq as u64,
                sent_ms: WALL_BASE_MS + now.as_millis() as u64,
            },
            &name(2),
        );
        if m.handle_datagram(addr(0), &fresh, now).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, captured.len());
    assert_ne!(m.last_contact(), contact_before);
}

#[test]
fn datagrams_from_a_skewed_clock_are_refused() {
    let key = b"secret-secret-secret00";
    let timing = Timing::from_detect_ms(500).unwrap();
    let id = |i: usize| SpeakerId {
        node: name(i),
        addr: addr(i),
        bump: 1,
    };
    let skew = u64::try_from(auth::REPLAY_TOLERANCE.as_millis()).unwrap() + 1;
    let mut a = Membership::new(id(0), &timing, GossipKey::new(Some(key)), 1, WALL_BASE_MS);
    let mut b = Membership::new(
        id(1),
        &timing,
        GossipKey::new(Some(key)),
        2,
        WALL_BASE_MS + skew,
    );
    a.join(&[(name(1), addr(1))], Duration::ZERO);
    let sent = a.take_outgoing();
    assert!(!sent.is_empty());
    for (_, data) in sent {
        assert_eq!(
            b.handle_datagram(addr(0), &data, Duration::ZERO),
            Err(AuthError::Stale)
        );
    }
    assert_eq!(b.last_contact(), None);
}

#[test]
fn datagrams_captured_before_a_restart_are_refused_by_the_restarted_member() {
    let key = b"secret-secret-secret00";
    let (mut net, captured) = Net::converged_then_captured(key, 2);
    net.run(auth::START_SKEW_ALLOWANCE + Duration::from_secs(1));
    // node-c restarts: a new process whose clock reads the cluster's time, remembering nothing.
    let restarted_at = WALL_BASE_MS + net.now.as_millis() as u64;
    let restarted = |wall_base_ms| {
        let id = SpeakerId {
            node: name(2),
            addr: addr(2),
            bump: 1000,
        };
        Membership::new(id, &net.timing, GossipKey::new(Some(key)), 99, wall_base_ms)
    };
    let mut m = restarted(restarted_at);
    for data in &captured {
        assert_eq!(
            m.handle_datagram(addr(0), data, Duration::ZERO),
            Err(AuthError::BeforeStart)
        );
    }
    assert_eq!(m.last_contact(), None, "a replay counted as contact");
    assert_eq!(m.stats().auth_failures, captured.len() as u64);
    // What the start horizon prevents: a member that started before the capture (its replay
    // memory empty all the same) takes them, each once.
    let capture_start = restarted_at - 3_000;
    let mut early = restarted(capture_start);
    let now = Duration::from_millis(restarted_at - capture_start);
    let accepted = captured
        .iter()
        .filter(|data| early.handle_datagram(addr(0), data, now).is_ok())
        .count();
    assert_eq!(accepted, captured.len());
}

#[test]
fn datagrams_between_two_peers_are_no_contact_for_a_third() {
    let key = b"secret-secret-secret00";
    // What node-a received from node-b, captured on the segment.
    let (mut net, captured) = Net::converged_then_captured(key, 0);
    for other in [0, 1] {
        net.cut.insert((2, other));
        net.cut.insert((other, 2));
    }
    let contact_before = net.members[2].as_ref().unwrap().last_contact();
    // Replayed to the cut-off node-c, whose replay guard has never seen these stamps.
    let mut bad_tags = 0;
    let alone = loop {
        net.step();
        let now = net.now;
        let m = net.members[2].as_mut().unwrap();
        for data in &captured {
            if m.handle_datagram(addr(1), data, now) == Err(AuthError::BadTag) {
                bad_tags += 1;
            }
        }
        if m.live_nodes() == Net::names(&[2]) {
            break now;
        }
        assert!(
            now < Duration::from_secs(10),
            "node-c never saw its peers go"
        );
    };
    let m = net.members[2].as_ref().unwrap();
    assert!(bad_tags >= captured.len(), "{bad_tags} refused");
    assert_eq!(
        m.last_contact(),
        contact_before,
        "another pair's traffic counted as contact"
    );
    assert!(!m.peers_in_view());
    assert!(m.stats().dropped[AuthError::BadTag.index()] >= captured.len() as u64);
    assert!(alone > Duration::ZERO);
}

#[test]
fn a_key_rotated_on_each_member_in_turn_never_splits_the_cluster() {
    let old = b"old-secret-old-secret0";
    let new = GossipKey::new(Some(b"new-secret-new-secret0"));
    let mut net = Net::new(3, old);
    net.join_all();
    net.run(Duration::from_secs(2));
    let all = Net::names(&[0, 1, 2]);
    assert!((0..3).all(|i| net.live(i) == all));
    let failures = |net: &Net| -> u64 {
        net.members
            .iter()
            .flatten()
            .map(|m| m.stats().auth_failures)
            .sum()
    };
    let before = failures(&net);
    // Each speaker sees the new Secret 10 s after the one before it.
    for i in 0..3 {
        net.members[i].as_mut().unwrap().set_key(new.clone());
        for _ in 0..10 {
            net.run(Duration::from_secs(1));
            assert!(
                (0..3).all(|j| net.live(j) == all),
                "split after member {i} rotated"
            );
        }
    }
    net.run(auth::ROTATION_OVERLAP);
    assert!((0..3).all(|j| net.live(j) == all));
    assert_eq!(
        failures(&net),
        before,
        "a datagram was refused during the rotation"
    );
    // A member left on the old key past the overlap is out.
    net.members[0]
        .as_mut()
        .unwrap()
        .set_key(GossipKey::new(Some(b"third-secret-third-sec")));
    net.run(auth::ROTATION_OVERLAP + Duration::from_secs(2));
    assert_eq!(net.live(1), Net::names(&[1, 2]));
}
