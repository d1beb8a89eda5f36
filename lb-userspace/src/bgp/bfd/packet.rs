//! The BFD Control packet (RFC 5880 section 4.1): its 24-byte mandatory section, decoded from a
//! UDP payload with the reception checks of section 6.8.6 that need no session state, and
//! encoded back. There is no maintained Rust crate for BFD's wire format; the format is one
//! fixed 24-byte header.
//!
//! The authentication section (A bit) is recognised and refused: MetalLB's BFDProfile has no
//! authentication fields and FRR's bfdd does not implement BFD authentication, so a session
//! never has it configured, and section 6.8.6 says a packet with the A bit set then MUST be
//! discarded.

use std::time::Duration;

/// Length of the mandatory section; the only length Herald sends.
pub const LEN: usize = 24;

/// A session state as carried in the State field (section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The name FRR and BIRD print (`up`, `down`, `init`, `admin-down`).
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin-down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

/// The Diagnostic code (section 4.1): why the sender's session last left Up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    None,
    DetectionTimeExpired,
    EchoFailed,
    NeighborDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// A code RFC 5880 does not define (9–31): kept as received.
    Other(u8),
}

impl Diag {
    pub fn from_code(code: u8) -> Diag {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::DetectionTimeExpired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Other(other),
        }
    }

    /// RFC 5880's name for the code.
    pub fn describe(self) -> String {
        match self {
            Diag::None => "no diagnostic".into(),
            Diag::DetectionTimeExpired => "control detection time expired".into(),
            Diag::EchoFailed => "echo function failed".into(),
            Diag::NeighborDown => "neighbor signaled session down".into(),
            Diag::ForwardingPlaneReset => "forwarding plane reset".into(),
            Diag::PathDown => "path down".into(),
            Diag::ConcatenatedPathDown => "concatenated path down".into(),
            Diag::AdministrativelyDown => "administratively down".into(),
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down".into(),
            Diag::Other(code) => format!("diagnostic {code}"),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::DetectionTimeExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(code) => code & 0x1f,
        }
    }
}

/// A BFD Control packet without authentication (the only kind a session accepts or sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Control {
    pub diag: Diag,
    pub state: State,
    /// Poll (P): the sender asks for a packet with Final set.
    pub poll: bool,
    /// Final (F): the answer to a Poll.
    pub fin: bool,
    /// Control Plane Independent (C).
    pub cpi: bool,
    /// Demand (D).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub required_min_echo_rx: Duration,
}

/// Why a received payload is not a Control packet a session may look at (section 6.8.6: each
/// is "discarded"). The names are the `reason` label of the drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than the 24-byte mandatory section ({0} bytes)")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("Length field {length} outside 24..={received} (the bytes received)")]
    Length { length: u8, received: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("Multipoint bit set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscr,
    #[error("Your Discriminator is zero in state {}", .0.name())]
    ZeroYourDiscr(State),
    #[error("authentication section present (no session here uses BFD authentication)")]
    Authenticated,
}

impl DecodeError {
    /// The drop counter's `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::Short(_) | DecodeError::Length { .. } => "bad_length",
            DecodeError::Version(_) => "bad_version",
            DecodeError::ZeroDetectMult => "zero_detect_mult",
            DecodeError::Multipoint => "multipoint",
            DecodeError::ZeroMyDiscr => "zero_my_discriminator",
            DecodeError::ZeroYourDiscr(_) => "zero_your_discriminator",
            DecodeError::Authenticated => "authenticated",
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn micros(value: u32) -> Duration {
    Duration::from_micros(u64::from(value))
}

/// Microseconds of `d` in the packet's 32-bit field (saturating: intervals are at most 60 s).
fn field(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Decodes one UDP payload with the stateless checks of section 6.8.6, in its order.
pub fn decode(payload: &[u8]) -> Result<Control, DecodeError> {
    if payload.len() < LEN {
        return Err(DecodeError::Short(payload.len()));
    }
    let version = payload[0] >> 5;
    if version != 1 {
        return Err(DecodeError::Version(version));
    }
    let flags = payload[1];
    let auth = flags & 0b0000_0100 != 0;
    let length = payload[3];
    let min = if auth { LEN + 2 } else { LEN };
    if usize::from(length) < min || usize::from(length) > payload.len() {
        return Err(DecodeError::Length {
            length,
            received: payload.len(),
        });
    }
    let detect_mult = payload[2];
    if detect_mult == 0 {
        return Err(DecodeError::ZeroDetectMult);
    }
    if flags & 0b0000_0001 != 0 {
        return Err(DecodeError::Multipoint);
    }
    let my_discr = be32(payload, 4);
    if my_discr == 0 {
        return Err(DecodeError::ZeroMyDiscr);
    }
    let state = State::from_bits(flags >> 6);
    let your_discr = be32(payload, 8);
    if your_discr == 0 && !matches!(state, State::Down | State::AdminDown) {
        return Err(DecodeError::ZeroYourDiscr(state));
    }
    if auth {
        return Err(DecodeError::Authenticated);
    }
    Ok(Control {
        diag: Diag::from_code(payload[0]),
        state,
        poll: flags & 0b0010_0000 != 0,
        fin: flags & 0b0001_0000 != 0,
        cpi: flags & 0b0000_1000 != 0,
        demand: flags & 0b0000_0010 != 0,
        detect_mult,
        my_discr,
        your_discr,
        desired_min_tx: micros(be32(payload, 12)),
        required_min_rx: micros(be32(payload, 16)),
        required_min_echo_rx: micros(be32(payload, 20)),
    })
}

/// Encodes `packet` as a 24-byte payload (version 1, no authentication, Multipoint clear).
pub fn encode(packet: &Control) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[0] = (1 << 5) | packet.diag.code();
    out[1] = (packet.state.bits() << 6)
        | (u8::from(packet.poll) << 5)
        | (u8::from(packet.fin) << 4)
        | (u8::from(packet.cpi) << 3)
        | (u8::from(packet.demand) << 1);
    out[2] = packet.detect_mult;
    out[3] = LEN as u8;
    out[4..8].copy_from_slice(&packet.my_discr.to_be_bytes());
    out[8..12].copy_from_slice(&packet.your_discr.to_be_bytes());
    out[12..16].copy_from_slice(&field(packet.desired_min_tx).to_be_bytes());
    out[16..20].copy_from_slice(&field(packet.required_min_rx).to_be_bytes());
    out[20..24].copy_from_slice(&field(packet.required_min_echo_rx).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn up() -> Control {
        Control {
            diag: Diag::None,
            state: State::Up,
            poll: false,
            fin: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 0x0a0b_0c0d,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::from_millis(50),
        }
    }

    #[test]
    fn encodes_the_layout_of_section_4_1() {
        let mut p = up();
        p.poll = true;
        p.diag = Diag::NeighborDown;
        let bytes = encode(&p);
        assert_eq!(bytes[0], 0x23, "version 1, diag 3");
        assert_eq!(bytes[1], 0xe0, "state Up (3), Poll");
        assert_eq!(bytes[2], 3);
        assert_eq!(bytes[3], 24);
        assert_eq!(&bytes[4..8], &[1, 2, 3, 4]);
        assert_eq!(&bytes[8..12], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&bytes[12..16], &300_000u32.to_be_bytes());
        assert_eq!(&bytes[16..20], &300_000u32.to_be_bytes());
        assert_eq!(&bytes[20..24], &50_000u32.to_be_bytes());
        assert_eq!(decode(&bytes), Ok(p));
    }

    /// A session's first packet, byte by byte: Down, no remote discriminator yet, 300 ms
    /// intervals, echo 50 ms (FRR's defaults).
    #[test]
    fn decodes_a_first_packet() {
        let bytes = [
            0x20, 0x40, 0x03, 0x18, 0x2c, 0x1e, 0x53, 0x8b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
            0x93, 0xe0, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0xc3, 0x50,
        ];
        let p = decode(&bytes).expect("valid");
        assert_eq!(p.state, State::Down);
        assert_eq!(p.your_discr, 0);
        assert_eq!(p.my_discr, 0x2c1e_538b);
        assert_eq!(p.desired_min_tx, Duration::from_millis(300));
        assert_eq!(p.required_min_echo_rx, Duration::from_millis(50));
    }

    #[test]
    fn refuses_what_section_6_8_6_discards() {
        let good = encode(&up());
        let with = |at: usize, value: u8| {
            let mut b = good;
            b[at] = value;
            b
        };
        assert_eq!(decode(&good[..23]), Err(DecodeError::Short(23)));
        assert_eq!(decode(&with(0, 0x40)), Err(DecodeError::Version(2)));
        assert_eq!(
            decode(&with(3, 23)),
            Err(DecodeError::Length {
                length: 23,
                received: 24
            })
        );
        assert_eq!(
            decode(&with(3, 25)),
            Err(DecodeError::Length {
                length: 25,
                received: 24
            }),
            "a Length past the bytes received"
        );
        assert_eq!(decode(&with(2, 0)), Err(DecodeError::ZeroDetectMult));
        assert_eq!(decode(&with(1, 0xc1)), Err(DecodeError::Multipoint));
        let mut no_mine = good;
        no_mine[4..8].fill(0);
        assert_eq!(decode(&no_mine), Err(DecodeError::ZeroMyDiscr));
        let mut no_yours = good;
        no_yours[8..12].fill(0);
        assert_eq!(
            decode(&no_yours),
            Err(DecodeError::ZeroYourDiscr(State::Up))
        );
        no_yours[1] = 0x40;
        assert!(
            decode(&no_yours).is_ok(),
            "Down may not know the remote yet"
        );
        let mut auth = with(1, 0xc4).to_vec();
        auth.extend_from_slice(&[1, 9, 0, b'k', b'e', b'y', b's', b'x', b'y']);
        auth[3] = 33;
        assert_eq!(decode(&auth), Err(DecodeError::Authenticated));
    }

    #[test]
    fn trailing_bytes_past_length_are_ignored() {
        let mut bytes = encode(&up()).to_vec();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(decode(&bytes), Ok(up()));
    }

    fn control() -> impl Strategy<Value = Control> {
        (
            (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255),
            (1u32.., 1u32.., any::<u32>(), any::<u32>(), any::<u32>()),
        )
            .prop_map(
                |((diag, state, [poll, fin, cpi, demand], mult), (mine, yours, tx, rx, echo))| {
                    Control {
                        diag: Diag::from_code(diag),
                        state: State::from_bits(state),
                        poll,
                        fin,
                        cpi,
                        demand,
                        detect_mult: mult,
                        my_discr: mine,
                        your_discr: yours,
                        desired_min_tx: micros(tx),
                        required_min_rx: micros(rx),
                        required_min_echo_rx: micros(echo),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_packet_reads_back_as_itself(p in control()) {
            prop_assert_eq!(decode(&encode(&p)), Ok(p));
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = decode(&bytes) {
                // What is accepted re-encodes to the same mandatory section (bit 2 of byte 1,
                // A, is clear, so only Length may differ when the payload was longer).
                let again = encode(&p);
                prop_assert_eq!(&again[..3], &bytes[..3]);
                prop_assert_eq!(&again[4..], &bytes[4..24]);
            }
        }
    }
}
