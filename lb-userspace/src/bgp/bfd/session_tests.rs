//! Two sessions talking through a simulated link (a clock in 1 ms steps, a latency, a loss rule),
//! checked against RFC 5880's handshake, timers and Poll Sequence.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::bgp::bfd::packet::{self, Diag, State};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What one side saw: its events with their times, and the packets it sent.
#[derive(Default)]
struct Log {
    events: Vec<(Duration, Event)>,
    sent: Vec<(Duration, Control)>,
    /// The state each delivered packet from the peer said, by arrival.
    received: Vec<(Duration, State)>,
}

struct Link {
    start: Instant,
    now: Instant,
    a: Session,
    b: Session,
    log_a: Log,
    log_b: Log,
    /// Packets in flight: (arrival, to_b, bytes).
    flight: Vec<(Instant, bool, [u8; packet::LEN])>,
    latency: Duration,
    /// Jitter fed to `transmit`, cycling.
    jitter: f64,
}

impl Link {
    fn new(a: Timing, b: Timing) -> Link {
        let start = Instant::now();
        Link {
            start,
            now: start,
            a: Session::new(0x0a, a),
            b: Session::new(0x0b, b),
            log_a: Log::default(),
            log_b: Log::default(),
            flight: Vec::new(),
            latency: ms(2),
            jitter: 0.0,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    /// Runs for `span`; `deliver(to_b, t)` says whether a packet sent at `t` arrives.
    fn run(&mut self, span: Duration, deliver: &mut dyn FnMut(bool, Duration) -> bool) {
        let end = self.now + span;
        while self.now < end {
            let t = self.t();
            let now = self.now;
            // Arrivals (bytes through the real decoder, as a socket would hand them).
            let (due, later): (Vec<_>, Vec<_>) =
                self.flight.drain(..).partition(|(at, _, _)| *at <= now);
            self.flight = later;
            for (_, to_b, bytes) in due {
                let p = packet::decode(&bytes).expect("a session sends valid packets");
                let (session, log) = if to_b {
                    (&mut self.b, &mut self.log_b)
                } else {
                    (&mut self.a, &mut self.log_a)
                };
                log.received.push((t, p.state));
                if let Ok(Some(e)) = session.receive(&p, now) {
                    log.events.push((t, e));
                }
            }
            for to_b in [false, true] {
                // Side A sends to B (to_b = true), side B to A.
                let (session, log) = if to_b {
                    (&mut self.a, &mut self.log_a)
                } else {
                    (&mut self.b, &mut self.log_b)
                };
                if let Some(e) = session.expire(now) {
                    log.events.push((t, e));
                }
                self.jitter = (self.jitter + 0.37) % 1.0;
                if let Some(p) = session.transmit(now, self.jitter) {
                    assert!(!(p.poll && p.fin), "Poll and Final in one packet: {p:?}");
                    log.sent.push((t, p));
                    if deliver(to_b, t) {
                        self.flight
                            .push((now + self.latency, to_b, packet::encode(&p)));
                    }
                }
            }
            self.now += MS;
        }
    }

    fn run_clean(&mut self, span: Duration) {
        self.run(span, &mut |_, _| true);
    }
}

fn timing(tx_ms: u64, rx_ms: u64, mult: u8) -> Timing {
    Timing {
        desired_min_tx: ms(tx_ms),
        required_min_rx: ms(rx_ms),
        detect_mult: mult,
        passive: false,
    }
}

#[test]
fn two_sessions_come_up_and_settle_on_the_profile_rate() {
    let mut link = Link::new(Timing::default(), Timing::default());
    link.run_clean(Duration::from_secs(4));
    assert_eq!(link.a.state(), State::Up);
    assert_eq!(link.b.state(), State::Up);
    assert_eq!(link.log_a.events.len(), 1, "{:?}", link.log_a.events);
    assert_eq!(link.log_a.events[0].1, Event::Up);
    assert_eq!(link.a.remote_discriminator(), 0x0b);
    assert_eq!(link.b.remote_discriminator(), 0x0a);
    assert_eq!(link.a.negotiated(), (ms(300), ms(300)));
    assert_eq!(link.a.detection_time(), Some(ms(900)));
    // The first packets go at the slow rate (at least 750 ms apart: 1 s less jitter)...
    let sent = &link.log_a.sent;
    let first_up = sent
        .iter()
        .position(|(_, p)| p.state == State::Up)
        .expect("A sent Up");
    for w in sent[..first_up].windows(2) {
        if !w[1].1.fin {
            assert!(
                w[1].0.saturating_sub(w[0].0) >= ms(750),
                "slow rate before Up: {w:?}"
            );
        }
    }
    assert_eq!(
        sent[0].1.your_discr, 0,
        "the first packet knows no peer yet"
    );
    // ...the first Up packets poll for the profile's rate (the very first may be the Final that
    // answers the peer's Poll), and the rate holds once acknowledged.
    assert!(sent[first_up..first_up + 2].iter().any(|(_, p)| p.poll));
    let tail: Vec<_> = sent.iter().rev().take(5).collect();
    for w in tail.windows(2) {
        let gap = w[0].0.saturating_sub(w[1].0);
        assert!(
            (ms(225)..=ms(300)).contains(&gap),
            "interval {gap:?} outside 75-100 % of 300 ms"
        );
        assert!(!w[0].1.poll, "the Poll Sequence ended");
        assert_eq!(w[0].1.desired_min_tx, ms(300));
    }
}

#[test]
fn silence_takes_the_session_down_after_the_detection_time() {
    let mut link = Link::new(timing(100, 100, 3), timing(100, 100, 3));
    link.run_clean(Duration::from_secs(4));
    assert_eq!(link.a.state(), State::Up);
    let cut = link.t();
    link.run(Duration::from_secs(2), &mut |to_b, _| to_b);
    let last_to_a = link
        .log_b
        .sent
        .iter()
        .rev()
        .map(|(t, _)| *t)
        .find(|t| *t < cut)
        .expect("B sent before the cut");
    let (at, event) = *link.log_a.events.last().expect("A went down");
    assert_eq!(
        event,
        Event::Down {
            diag: Diag::DetectionTimeExpired,
            remote_admin_down: false
        }
    );
    assert_eq!(link.a.state(), State::Down);
    assert_eq!(link.a.remote_discriminator(), 0);
    // Down exactly 3 × 100 ms after B's last packet arrived (sent just before the cut, 2 ms on
    // the wire), within one interval of the cut.
    assert_eq!(at, last_to_a + ms(2) + ms(300));
    assert!(
        cut.saturating_sub(last_to_a) <= ms(100),
        "B's last packet {last_to_a:?}, cut {cut:?}"
    );
    // B hears A's Down (diagnostic 1) and goes down too, as a neighbor-signalled Down.
    assert_eq!(
        link.log_b.events.last().map(|e| e.1),
        Some(Event::Down {
            diag: Diag::NeighborDown,
            remote_admin_down: false
        })
    );
    assert!(
        link.log_a
            .sent
            .iter()
            .any(|(_, p)| p.state == State::Down && p.diag == Diag::DetectionTimeExpired)
    );
}

#[test]
fn an_admin_down_peer_is_not_a_failure() {
    let mut link = Link::new(Timing::default(), Timing::default());
    link.run_clean(Duration::from_secs(4));
    let bye = link.b.shut_down();
    assert_eq!(bye.state, State::AdminDown);
    assert_eq!(bye.diag, Diag::AdministrativelyDown);
    let event = link.a.receive(&bye, link.now).expect("taken");
    assert_eq!(
        event,
        Some(Event::Down {
            diag: Diag::NeighborDown,
            remote_admin_down: true
        })
    );
    // B ignores what comes after its shutdown.
    let from_a = link.a.transmit(link.now + Duration::from_secs(2), 0.0);
    let from_a = from_a.expect("A keeps sending (slowly)");
    assert_eq!(link.b.receive(&from_a, link.now), Err(Refused::AdminDown));
    assert_eq!(link.b.state(), State::AdminDown);
}

#[test]
fn a_passive_session_waits_for_the_first_packet() {
    let passive = Timing {
        passive: true,
        ..Timing::default()
    };
    let mut b = Session::new(0x0b, passive);
    let now = Instant::now();
    for t in [0u64, 1000, 5000] {
        assert_eq!(b.transmit(now + ms(t), 0.0), None);
    }
    let mut a = Session::new(0x0a, Timing::default());
    let hello = a.transmit(now, 0.0).expect("active sends at once");
    assert_eq!(b.receive(&hello, now), Ok(None));
    assert_eq!(b.state(), State::Init);
    let answer = b.transmit(now, 0.0).expect("answers once heard from");
    assert_eq!(answer.your_discr, 0x0a);
    assert_eq!(answer.state, State::Init);
    assert_eq!(a.receive(&answer, now), Ok(Some(Event::Up)));
}

#[test]
fn a_peer_asking_for_no_packets_gets_none() {
    let now = Instant::now();
    let mut a = Session::new(0x0a, Timing::default());
    let mut b = Session::new(0x0b, Timing::default());
    let p = a.transmit(now, 0.0).expect("first");
    b.receive(&p, now).expect("taken");
    let mut quiet = b.transmit(now, 0.0).expect("B answers");
    quiet.required_min_rx = Duration::ZERO;
    a.receive(&quiet, now).expect("taken");
    for s in 1..10 {
        assert_eq!(
            a.transmit(now + Duration::from_secs(s), 0.0),
            None,
            "no periodic packets to a peer that asks for none"
        );
    }
    quiet.required_min_rx = ms(300);
    a.receive(&quiet, now + Duration::from_secs(10))
        .expect("taken");
    assert!(a.transmit(now + Duration::from_secs(10), 0.0).is_some());
}

#[test]
fn packets_for_another_session_are_refused() {
    let now = Instant::now();
    let mut a = Session::new(0x0a, Timing::default());
    let mut b = Session::new(0x0b, Timing::default());
    let mut p = b.transmit(now, 0.0).expect("first");
    p.your_discr = 0x99;
    assert_eq!(a.receive(&p, now), Err(Refused::WrongDiscriminator(0x99)));
    assert_eq!(a.remote_discriminator(), 0, "nothing learned from it");
}

#[test]
fn a_poll_is_answered_with_final_at_once() {
    let mut link = Link::new(Timing::default(), Timing::default());
    link.run_clean(Duration::from_secs(4));
    let now = link.now;
    link.a.set_timing(timing(50, 50, 3), now);
    let poll = link.a.transmit(now, 0.0).expect("a Poll goes at once");
    assert!(poll.poll && poll.desired_min_tx == ms(50));
    link.b.receive(&poll, now).expect("taken");
    assert_eq!(link.b.next_deadline(now), Some(now), "Final due now");
    let fin = link.b.transmit(now, 0.0).expect("Final");
    assert!(fin.fin && !fin.poll);
    link.a.receive(&fin, now).expect("taken");
    link.run_clean(Duration::from_secs(1));
    assert_eq!(link.a.negotiated().0, ms(300), "B still asks for 300 ms");
    assert!(link.log_a.sent.iter().rev().take(3).all(|(_, p)| !p.poll));
}

#[test]
fn detect_mult_one_jitters_between_75_and_90_percent() {
    let one = Session::new(1, timing(100, 100, 1));
    assert_eq!(one.jittered(0.0), SLOW_TX);
    let mut up = one.clone();
    up.state = State::Up;
    up.tx_interval = ms(100);
    assert_eq!(up.jittered(0.0), ms(100));
    assert_eq!(up.jittered(0.999_999).as_millis(), 85);
    let three = Session {
        tx_interval: ms(100),
        ..Session::new(1, timing(100, 100, 3))
    };
    assert_eq!(three.jittered(0.999_999).as_millis(), 75);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the two profiles, a clean link brings both sessions Up, and they stay Up.
    #[test]
    fn a_clean_link_comes_up_and_stays_up(
        a in (10u64..400, 10u64..400, 2u8..6),
        b in (10u64..400, 10u64..400, 2u8..6),
    ) {
        let mut link = Link::new(timing(a.0, a.1, a.2), timing(b.0, b.1, b.2));
        link.run_clean(Duration::from_secs(6));
        prop_assert_eq!(link.a.state(), State::Up);
        prop_assert_eq!(link.b.state(), State::Up);
        prop_assert_eq!(link.log_a.events.len(), 1);
        prop_assert_eq!(link.log_b.events.len(), 1);
        // Each side sends at the larger of its own rate and what the other requires.
        let (tx, rx) = link.a.negotiated();
        prop_assert_eq!(tx, ms(a.0.max(b.1)));
        prop_assert_eq!(rx, ms(a.1.max(b.0)));
    }

    /// Under any loss pattern after a clean start, Up and Down alternate, starting with Up,
    /// and a session reports Up only on a packet from the peer that says Init or Up.
    #[test]
    fn events_alternate_under_loss(drops in proptest::collection::vec(any::<bool>(), 64)) {
        let mut link = Link::new(timing(50, 50, 2), timing(50, 50, 2));
        link.run_clean(Duration::from_secs(1));
        let mut n = 0usize;
        link.run(Duration::from_secs(8), &mut |_, _| {
            n += 1;
            !drops[n % drops.len()]
        });
        for log in [&link.log_a, &link.log_b] {
            prop_assert!(!log.events.is_empty(), "the clean start brings it Up");
            for (i, (t, e)) in log.events.iter().enumerate() {
                let expect_up = i % 2 == 0;
                prop_assert_eq!(matches!(e, Event::Up), expect_up, "{:?}", log.events);
                if expect_up {
                    let told = log
                        .received
                        .iter()
                        .any(|(at, state)| at == t && matches!(state, State::Init | State::Up));
                    prop_assert!(told, "Up at {:?} without an Init or Up from the peer", t);
                }
            }
        }
    }
}

/// A packet saying Up that reaches a session in Down belongs to an older session (the peer
/// restarted its side, or it waited in a socket while this process was stopped): it must not
/// bring the session up, only the three-way handshake may.
#[test]
fn a_stale_up_does_not_bring_a_down_session_up() {
    let mut link = Link::new(Timing::default(), Timing::default());
    link.run_clean(Duration::from_secs(4));
    let stale = link.b.transmit(link.now + Duration::from_secs(1), 0.0);
    let stale = stale.expect("B sends");
    assert_eq!(stale.state, State::Up);
    let mut fresh = Session::new(0x0a, Timing::default());
    assert_eq!(fresh.receive(&stale, link.now), Ok(None));
    assert_eq!(fresh.state(), State::Down);
    // What it sends next tells the peer it is Down, so the peer starts over.
    let next = fresh.transmit(link.now, 0.0).expect("sends");
    assert_eq!(next.state, State::Down);
}
