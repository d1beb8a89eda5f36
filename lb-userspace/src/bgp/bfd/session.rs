//! One BFD session in asynchronous mode (RFC 5880 section 6), as a value: it is handed each
//! received Control packet and the time, and says what to send and when the session went Up or
//! Down. No sockets or clocks here; the caller owns both.
//!
//! What follows the RFC closely: the three-way handshake (section 6.2), the reception rules of
//! section 6.8.6, the detection time (section 6.8.4), the transmission interval with jitter
//! (section 6.8.7), the slow rate of at least one second while not Up and the Poll Sequence that
//! moves to the profile's rate once Up (section 6.8.3), passive mode (section 6.1), and a
//! remote that asks for no packets (Required Min RX 0). Not implemented: Demand mode (a remote
//! that sets D is treated as asynchronous; its packets keep the session up), the Echo function
//! (Herald advertises a Required Min Echo RX of 0, which tells the peer not to send echoes),
//! and authentication (see [`super::packet`]).

use std::time::{Duration, Instant};

use super::packet::{Control, Diag, State};

/// Transmission interval while the session is not Up (section 6.8.3: at least one second).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// What a session runs with: a BFDProfile's values (MetalLB's defaults: 300 ms both ways,
/// multiplier 3, not passive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Desired Min TX Interval once Up (`transmitInterval`).
    pub desired_min_tx: Duration,
    /// Required Min RX Interval (`receiveInterval`).
    pub required_min_rx: Duration,
    /// Detect Mult (`detectMultiplier`).
    pub detect_mult: u8,
    /// Wait for the peer's first packet before sending any (`passiveMode`).
    pub passive: bool,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
        }
    }
}

/// A change of the session's state the BGP session must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Up,
    /// The session left Init or Up. `remote_admin_down`: the peer stopped it on purpose
    /// (RFC 5882 section 3.2: not a forwarding failure, so the BGP session is left alone).
    Down {
        diag: Diag,
        remote_admin_down: bool,
    },
}

/// A packet the session does not take (the caller counts it, with [`Refused::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("Your Discriminator {0:#x} is not this session's")]
    WrongDiscriminator(u32),
    #[error("the session is administratively down")]
    AdminDown,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::WrongDiscriminator(_) => "wrong_discriminator",
            Refused::AdminDown => "admin_down",
        }
    }
}

/// One session's state variables (section 6.8.1) and timers.
#[derive(Clone, Debug)]
pub struct Session {
    timing: Timing,
    local_discr: u32,
    state: State,
    diag: Diag,
    remote_discr: u32,
    remote_state: State,
    /// The peer's Required Min RX Interval (1 µs until heard from, as section 6.8.1 says).
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    /// Desired Min TX Interval advertised now (slow until Up).
    advertised_tx: Duration,
    /// The interval the transmission timer uses; an increase waits for the Poll Sequence.
    tx_interval: Duration,
    /// Sending Poll until a Final comes back.
    polling: bool,
    /// A Poll arrived: the next packet carries Final and goes at once.
    final_due: bool,
    last_rx: Option<Instant>,
    next_tx: Option<Instant>,
}

impl Session {
    /// A session in state Down with `local_discr` (non-zero, unique on this node).
    pub fn new(local_discr: u32, timing: Timing) -> Session {
        let slow = SLOW_TX.max(timing.desired_min_tx);
        Session {
            timing,
            local_discr,
            state: State::Down,
            diag: Diag::None,
            remote_discr: 0,
            remote_state: State::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            advertised_tx: slow,
            tx_interval: slow,
            polling: false,
            final_due: false,
            last_rx: None,
            next_tx: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn diag(&self) -> Diag {
        self.diag
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The negotiated intervals as routers print them: (transmit, receive) — what this side
    /// sends at and what it expects the peer to send at.
    pub fn negotiated(&self) -> (Duration, Duration) {
        (
            self.tx_interval.max(self.remote_min_rx),
            self.timing.required_min_rx.max(self.remote_desired_tx),
        )
    }

    /// The detection time for the peer (section 6.8.4): its Detect Mult times the agreed
    /// interval it sends at. None until heard from.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| {
            self.timing
                .required_min_rx
                .max(self.remote_desired_tx)
                .saturating_mul(u32::from(self.remote_detect_mult))
        })
    }

    /// When the session next needs the caller: a packet due or the detection time running out.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let tx = if self.final_due {
            Some(now)
        } else {
            self.next_tx
        };
        let detect = match (self.state, self.last_rx, self.detection_time()) {
            (State::Init | State::Up, Some(at), Some(d)) => Some(at + d),
            _ => None,
        };
        match (tx, detect) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes a decoded packet from the peer (section 6.8.6, after the stateless checks).
    pub fn receive(&mut self, packet: &Control, now: Instant) -> Result<Option<Event>, Refused> {
        if packet.your_discr != 0 && packet.your_discr != self.local_discr {
            return Err(Refused::WrongDiscriminator(packet.your_discr));
        }
        self.remote_discr = packet.my_discr;
        self.remote_state = packet.state;
        self.remote_min_rx = packet.required_min_rx;
        self.remote_desired_tx = packet.desired_min_tx;
        self.remote_detect_mult = packet.detect_mult;
        self.last_rx = Some(now);
        if self.polling && packet.fin {
            self.polling = false;
            self.tx_interval = self.advertised_tx;
        }
        if self.state == State::AdminDown {
            return Err(Refused::AdminDown);
        }
        if packet.poll {
            self.final_due = true;
        }
        if self.next_tx.is_none() && self.remote_min_rx > Duration::ZERO {
            // First packet heard (passive mode) or the peer wants packets again.
            self.next_tx = Some(now);
        }
        if packet.required_min_rx.is_zero() {
            // Section 6.8.7: no periodic transmission to a peer that asks for none.
            self.next_tx = None;
        }
        let event = match (self.state, packet.state) {
            (State::Down | State::Init | State::Up, State::AdminDown) => {
                self.remote_went_down(true)
            }
            (State::Down, State::Down) => {
                self.state = State::Init;
                None
            }
            // Down moves up only on Init: an Up from the peer while this side is Down is a
            // packet of an older session (section 6.8.6's table).
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.went_up(now);
                Some(Event::Up)
            }
            (State::Up, State::Down) => self.remote_went_down(false),
            _ => None,
        };
        Ok(event)
    }

    fn went_up(&mut self, now: Instant) {
        self.state = State::Up;
        self.diag = Diag::None;
        if self.advertised_tx != self.timing.desired_min_tx {
            // The profile's rate, through a Poll Sequence (section 6.8.3); a faster rate may be
            // used at once, a slower one only once the peer has acknowledged it.
            self.advertised_tx = self.timing.desired_min_tx;
            if self.advertised_tx < self.tx_interval {
                self.tx_interval = self.advertised_tx;
            }
            self.polling = true;
            self.send_now(now);
        }
    }

    /// The next packet goes at `now`, unless the peer asked for no packets at all.
    fn send_now(&mut self, now: Instant) {
        if !self.remote_min_rx.is_zero() {
            self.next_tx = Some(now);
        }
    }

    fn remote_went_down(&mut self, admin: bool) -> Option<Event> {
        let was = self.state;
        self.go_down(Diag::NeighborDown);
        (was == State::Up).then_some(Event::Down {
            diag: Diag::NeighborDown,
            remote_admin_down: admin,
        })
    }

    fn go_down(&mut self, diag: Diag) {
        self.state = State::Down;
        self.diag = diag;
        self.polling = false;
        let slow = SLOW_TX.max(self.timing.desired_min_tx);
        self.advertised_tx = slow;
        self.tx_interval = slow;
    }

    /// Checks the detection time at `now`: a session in Init or Up that has heard nothing for
    /// that long goes Down with diagnostic 1, and forgets the peer's discriminator.
    pub fn expire(&mut self, now: Instant) -> Option<Event> {
        let (Some(at), Some(detect)) = (self.last_rx, self.detection_time()) else {
            return None;
        };
        if now < at + detect {
            return None;
        }
        self.remote_discr = 0;
        match self.state {
            State::Up | State::Init => {
                let was = self.state;
                self.go_down(Diag::DetectionTimeExpired);
                self.last_rx = None;
                (was == State::Up).then_some(Event::Down {
                    diag: Diag::DetectionTimeExpired,
                    remote_admin_down: false,
                })
            }
            State::Down | State::AdminDown => None,
        }
    }

    /// The packet to send at `now`, if one is due; `jitter` in [0, 1) picks the next interval
    /// within 75–100 % of the agreed one (75–90 % when Detect Mult is 1, section 6.8.7).
    pub fn transmit(&mut self, now: Instant, jitter: f64) -> Option<Control> {
        if self.timing.passive && self.last_rx.is_none() && self.remote_discr == 0 {
            return None;
        }
        if self.next_tx.is_none() && self.last_rx.is_none() && !self.timing.passive {
            self.next_tx = Some(now);
        }
        let due = self.final_due || self.next_tx.is_some_and(|at| at <= now);
        if !due {
            return None;
        }
        let fin = std::mem::take(&mut self.final_due);
        let packet = self.packet(fin);
        if !self.remote_min_rx.is_zero() {
            self.next_tx = Some(now + self.jittered(jitter));
        }
        Some(packet)
    }

    fn jittered(&self, jitter: f64) -> Duration {
        let interval = self.tx_interval.max(self.remote_min_rx);
        let span = if self.timing.detect_mult == 1 {
            0.15
        } else {
            0.25
        };
        interval.mul_f64(1.0 - span * jitter.clamp(0.0, 1.0))
    }

    /// New profile values; once Up, a change of the transmit interval runs a Poll Sequence.
    pub fn set_timing(&mut self, timing: Timing, now: Instant) {
        if timing == self.timing {
            return;
        }
        self.timing = timing;
        if self.state == State::Up {
            if timing.desired_min_tx < self.tx_interval {
                self.tx_interval = timing.desired_min_tx;
            }
            self.advertised_tx = timing.desired_min_tx;
            self.polling = true;
            self.send_now(now);
        } else {
            let slow = SLOW_TX.max(timing.desired_min_tx);
            self.advertised_tx = slow;
            self.tx_interval = slow;
        }
    }

    /// Stops the session on purpose (the BGPPeer or its profile went away): AdminDown with
    /// diagnostic 7; returns the packet that tells the peer.
    pub fn shut_down(&mut self) -> Control {
        self.state = State::AdminDown;
        self.diag = Diag::AdministrativelyDown;
        self.polling = false;
        self.final_due = false;
        self.packet(false)
    }

    /// The packet the session's variables describe now; `fin` answers a Poll.
    fn packet(&self, fin: bool) -> Control {
        Control {
            diag: self.diag,
            state: self.state,
            // Never Poll and Final in one packet (section 6.8.7).
            poll: self.polling && !fin,
            fin,
            cpi: false,
            demand: false,
            detect_mult: self.timing.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.advertised_tx,
            required_min_rx: self.timing.required_min_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
