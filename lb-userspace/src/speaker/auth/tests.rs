use super::*;
use proptest::prelude::*;

const STAMP: Stamp = Stamp {
    epoch: 0x1122_3344_5566_7788,
    seq: 9,
    sent_ms: 1_700_000_000_000,
};

/// The node the datagrams in these tests are sent to.
const TO: &str = "node-b";

fn stamp(epoch: u64, seq: u64, sent_ms: u64) -> Stamp {
    Stamp {
        epoch,
        seq,
        sent_ms,
    }
}

#[test]
fn roundtrip_and_rejections() {
    let a = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
    let b = GossipKey::new(Some(b"another-secret-value00"));
    let none = GossipKey::new(None);
    let sealed = a.seal(b"payload", STAMP, TO);
    assert_eq!(sealed.len(), OVERHEAD + 7);
    assert_eq!(a.open(&sealed, TO), Ok((Some(STAMP), &b"payload"[..])));
    assert_eq!(b.open(&sealed, TO), Err(AuthError::BadTag));
    assert_eq!(none.open(&sealed, TO), Err(AuthError::NoKey));
    let plain = none.seal(b"payload", STAMP, TO);
    assert_eq!(plain.len(), MAGIC.len() + 1 + 7);
    assert_eq!(none.open(&plain, TO), Ok((None, &b"payload"[..])));
    assert_eq!(a.open(&plain, TO), Err(AuthError::Unauthenticated));
    assert_eq!(a.open(b"junk", TO), Err(AuthError::NotGossip));
    assert_eq!(a.open(b"HRLD", TO), Err(AuthError::NotGossip));
    assert_eq!(a.open(b"HRLD\x02short", TO), Err(AuthError::NotGossip));
    assert_eq!(a.open(b"HRLD\x07", TO), Err(AuthError::NotGossip));
    // The earlier layouts (mode 1: tag over the payload only; mode 2: no destination in
    // the tag) are not gossip.
    for mode in [1, 2] {
        let mut old = vec![b'H', b'R', b'L', b'D', mode];
        old.extend_from_slice(&sealed[5..]);
        assert_eq!(a.open(&old, TO), Err(AuthError::NotGossip));
    }
    assert!(
        GossipKey::new(Some(b"")).open(&plain, TO).is_ok(),
        "empty = none"
    );
    assert_eq!(format!("{a:?}"), "GossipKey(<set>)");
}

#[test]
fn a_datagram_opens_only_at_its_destination() {
    let key = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
    let sealed = key.seal(b"payload", STAMP, "node-b");
    assert!(key.open(&sealed, "node-b").is_ok());
    // Captured on its way to node-b and replayed to node-c (or to a name sharing a prefix).
    for other in ["node-c", "node-", "node-bb", ""] {
        assert_eq!(
            key.open(&sealed, other),
            Err(AuthError::BadTag),
            "{other:?}"
        );
    }
}

#[test]
fn a_rotated_key_overlaps_with_the_previous_one() {
    let old = GossipKey::new(Some(b"old-secret-old-secret0"));
    let new = GossipKey::new(Some(b"new-secret-new-secret0"));
    let at = Duration::from_secs(100);
    let mut ring = Keyring::new(old.clone());
    ring.rotate(new.clone(), at);
    let by_old = old.seal(b"p", STAMP, TO);
    let by_new = new.seal(b"p", STAMP, TO);
    // Both keys open during the overlap; only the new one after it.
    let ms = Duration::from_millis(1);
    for now in [at, at + ROTATION_OVERLAP.saturating_sub(ms)] {
        assert!(ring.open(&by_old, TO, now).is_ok());
        assert!(ring.open(&by_new, TO, now).is_ok());
    }
    let after = at + ROTATION_OVERLAP;
    assert_eq!(ring.open(&by_old, TO, after), Err(AuthError::BadTag));
    assert!(ring.open(&by_new, TO, after).is_ok());
    // The old key is still sent with for the first half, so peers that have not seen the
    // new Secret yet keep hearing this member.
    let sent_early = ring.sealing(at + (ROTATION_OVERLAP / 2).saturating_sub(ms));
    assert!(old.open(&sent_early.seal(b"p", STAMP, TO), TO).is_ok());
    let sent_late = ring.sealing(at + ROTATION_OVERLAP / 2);
    assert!(new.open(&sent_late.seal(b"p", STAMP, TO), TO).is_ok());
    // Rotating to the same key changes nothing; a third key drops the first at once.
    ring.rotate(new.clone(), after);
    assert!(ring.open(&by_new, TO, after).is_ok());
    let third = GossipKey::new(Some(b"third-secret-third-sec"));
    ring.rotate(third, after);
    assert_eq!(ring.open(&by_old, TO, after), Err(AuthError::BadTag));
    assert!(ring.open(&by_new, TO, after).is_ok());
}

#[test]
fn the_first_key_has_no_overlap_with_unauthenticated_gossip() {
    let mut ring = Keyring::new(GossipKey::new(None));
    let plain = GossipKey::new(None).seal(b"p", STAMP, TO);
    assert!(ring.open(&plain, TO, Duration::ZERO).is_ok());
    ring.rotate(
        GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk")),
        Duration::ZERO,
    );
    assert_eq!(
        ring.open(&plain, TO, Duration::ZERO),
        Err(AuthError::Unauthenticated)
    );
    assert!(ring.sealing(Duration::ZERO).is_set());
}

#[test]
fn every_reason_has_its_own_label() {
    let labels: std::collections::BTreeSet<&str> =
        AuthError::ALL.iter().map(|e| e.reason()).collect();
    assert_eq!(labels.len(), AuthError::ALL.len());
    for (i, e) in AuthError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
    }
}

#[test]
fn the_stamp_is_authenticated() {
    let key = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
    let sealed = key.seal(b"payload", STAMP, TO);
    // A replayer rewriting the sequence number or the send time breaks the tag.
    for at in [OVERHEAD - STAMP_LEN + 8, OVERHEAD - STAMP_LEN + 16] {
        let mut forged = sealed.clone();
        forged[at] ^= 1;
        assert_eq!(key.open(&forged, TO), Err(AuthError::BadTag));
    }
}

#[test]
fn replay_guard_accepts_each_stamp_once() {
    let now = 1_700_000_000_000;
    let mut guard = ReplayGuard::default();
    assert_eq!(guard.check(stamp(1, 5, now), now), Ok(()));
    assert_eq!(guard.check(stamp(1, 5, now), now), Err(AuthError::Replayed));
    // Later numbers, and earlier ones not yet seen (reordering), are fresh.
    assert_eq!(guard.check(stamp(1, 7, now), now), Ok(()));
    assert_eq!(guard.check(stamp(1, 6, now), now), Ok(()));
    assert_eq!(guard.check(stamp(1, 6, now), now), Err(AuthError::Replayed));
    assert_eq!(guard.check(stamp(1, 4, now), now), Ok(()));
    // Another epoch (the same node restarted) has its own numbers.
    assert_eq!(guard.check(stamp(2, 5, now), now), Ok(()));
    // Far behind the window: refused even if never seen.
    assert_eq!(guard.check(stamp(1, 1000, now), now), Ok(()));
    assert_eq!(
        guard.check(stamp(1, 1000 - WINDOW, now), now),
        Err(AuthError::Replayed)
    );
    assert_eq!(guard.check(stamp(1, 1000 - WINDOW + 1, now), now), Ok(()));
    assert_eq!(guard.senders(), 2);
}

#[test]
fn replay_guard_refuses_stale_and_future_stamps() {
    let now = 1_700_000_000_000;
    let tolerance = 300_000;
    let mut guard = ReplayGuard::new(Duration::from_millis(tolerance));
    assert_eq!(
        guard.check(stamp(1, 0, now - tolerance - 1), now),
        Err(AuthError::Stale)
    );
    assert_eq!(
        guard.check(stamp(1, 0, now + tolerance + 1), now),
        Err(AuthError::Stale)
    );
    assert_eq!(guard.check(stamp(1, 0, now - tolerance), now), Ok(()));
    assert_eq!(guard.check(stamp(1, 1, now + tolerance), now), Ok(()));
}

#[test]
fn replay_guard_refuses_stamps_from_before_its_member_started() {
    let started = 1_700_000_000_000;
    let allowance = START_SKEW_ALLOWANCE.as_millis() as u64;
    let mut guard = ReplayGuard::default().started_at(started);
    let now = started + 1_000;
    assert_eq!(
        guard.check(stamp(1, 0, started - allowance - 1), now),
        Err(AuthError::BeforeStart)
    );
    assert_eq!(
        guard.check(stamp(1, 1, started - 60_000), now),
        Err(AuthError::BeforeStart)
    );
    // A peer whose clock is a little behind is still heard right after the start.
    assert_eq!(guard.check(stamp(1, 2, started - allowance), now), Ok(()));
    assert_eq!(guard.check(stamp(1, 3, now), now), Ok(()));
}

#[test]
fn replay_guard_memory_is_bounded() {
    let now = 1_700_000_000_000;
    let mut guard = ReplayGuard::default();
    for epoch in 0..(MAX_SENDERS as u64 * 3) {
        assert_eq!(
            guard.check(stamp(epoch, 0, now + epoch), now + epoch),
            Ok(())
        );
        assert!(guard.senders() <= MAX_SENDERS);
    }
    // The newest epochs are the ones kept: their replays are still refused.
    let last = MAX_SENDERS as u64 * 3 - 1;
    assert_eq!(
        guard.check(stamp(last, 0, now + last), now + last),
        Err(AuthError::Replayed)
    );
}

proptest! {
    /// Flipping any bit of an authenticated datagram makes it fail.
    #[test]
    fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<usize>()) {
        let key = GossipKey::new(Some(b"0123456789abcdefghijkl"));
        let mut sealed = key.seal(&payload, STAMP, TO);
        prop_assert_eq!(key.open(&sealed, TO), Ok((Some(STAMP), &payload[..])));
        let bit = bit % (sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(key.open(&sealed, TO).is_err());
    }

    /// Whatever order stamps of one epoch arrive in, each number is accepted at most once,
    /// and every number within the window of the highest is accepted the first time.
    #[test]
    fn replay_guard_accepts_each_number_at_most_once(seqs in proptest::collection::vec(0u64..200, 0..400)) {
        let now = 1_700_000_000_000;
        let mut guard = ReplayGuard::default();
        let mut accepted = std::collections::HashSet::new();
        let mut highest = None::<u64>;
        for seq in seqs {
            let fresh_in_window = !accepted.contains(&seq)
                && highest.is_none_or(|h| seq + WINDOW > h);
            let result = guard.check(stamp(7, seq, now), now);
            prop_assert_eq!(result.is_ok(), fresh_in_window, "seq {}", seq);
            if result.is_ok() {
                accepted.insert(seq);
                highest = Some(highest.map_or(seq, |h| h.max(seq)));
            }
        }
    }
}
