//! BFD (RFC 5880, asynchronous mode) for BGP peers with a `bfdProfile`, so that a router drops a
//! dead node's routes within the profile's detection time instead of the BGP hold time.
//!
//! Pure: [`packet`] reads and writes the Control packet, [`session`] is one session's state
//! machine and timers, [`PeerBfd::resolve`] turns a BFDProfile into a session's settings.
//! I/O: [`sockets`] (UDP 3784 single hop with TTL 255, 4784 multihop with the profile's minimum
//! TTL, RFC 5881/5883), [`task`] (every session of the node in one task, each BGP session told
//! when its BFD session goes down); [`metrics`] are MetalLB's BFD metrics.

pub mod metrics;
pub mod packet;
pub mod session;
pub mod sockets;
pub mod task;

use std::net::IpAddr;
use std::time::Duration;

use crate::config::BfdProfile;
use session::Timing;

/// MetalLB's (FRR's) BFDProfile defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(300);
pub const DEFAULT_DETECT_MULT: u8 = 3;
pub const DEFAULT_MINIMUM_TTL: u8 = 254;

/// One peer's BFD session as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerBfd {
    /// The BFDProfile's name.
    pub profile: String,
    pub peer: IpAddr,
    /// The BGPPeer's `sourceAddress`, if any (else the kernel picks by route).
    pub source: Option<IpAddr>,
    /// `ebgpMultiHop`: RFC 5883 on port 4784.
    pub multihop: bool,
    pub timing: Timing,
    /// The lowest TTL a packet may arrive with: 255 for single hop (RFC 5881 section 5), the
    /// profile's `minimumTtl` for multihop.
    pub minimum_ttl: u8,
    /// `echoMode` was asked for (not run: see [`session`]).
    pub echo_requested: bool,
}

impl PeerBfd {
    /// The settings `profile` gives a session to `peer`.
    pub fn resolve(
        profile: &BfdProfile,
        peer: IpAddr,
        source: Option<IpAddr>,
        multihop: bool,
    ) -> PeerBfd {
        let ms = |v: Option<u32>| v.map_or(DEFAULT_INTERVAL, |ms| Duration::from_millis(ms.into()));
        let small =
            |v: Option<u32>, default: u8| v.and_then(|v| u8::try_from(v).ok()).unwrap_or(default);
        PeerBfd {
            profile: profile.name.clone(),
            peer,
            source,
            multihop,
            timing: Timing {
                desired_min_tx: ms(profile.transmit_interval),
                required_min_rx: ms(profile.receive_interval),
                detect_mult: small(profile.detect_multiplier, DEFAULT_DETECT_MULT),
                passive: profile.passive_mode,
            },
            minimum_ttl: if multihop {
                small(profile.minimum_ttl, DEFAULT_MINIMUM_TTL)
            } else {
                255
            },
            echo_requested: profile.echo_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> BfdProfile {
        BfdProfile {
            name: "fast".into(),
            receive_interval: None,
            transmit_interval: None,
            echo_interval: None,
            detect_multiplier: None,
            minimum_ttl: None,
            echo_mode: false,
            passive_mode: false,
        }
    }

    #[test]
    fn an_empty_profile_gets_metallb_defaults() {
        let peer: IpAddr = "203.0.113.2".parse().unwrap();
        let p = PeerBfd::resolve(&profile(), peer, None, false);
        assert_eq!(p.timing, Timing::default());
        assert_eq!(p.minimum_ttl, 255, "single hop: GTSM");
        let multi = PeerBfd::resolve(&profile(), peer, None, true);
        assert_eq!(multi.minimum_ttl, DEFAULT_MINIMUM_TTL);
    }

    #[test]
    fn profile_values_are_taken_in_milliseconds() {
        let peer: IpAddr = "2001:db8::2".parse().unwrap();
        let mut prof = profile();
        prof.receive_interval = Some(100);
        prof.transmit_interval = Some(50);
        prof.detect_multiplier = Some(5);
        prof.minimum_ttl = Some(250);
        prof.passive_mode = true;
        let p = PeerBfd::resolve(&prof, peer, None, true);
        assert_eq!(p.timing.required_min_rx, Duration::from_millis(100));
        assert_eq!(p.timing.desired_min_tx, Duration::from_millis(50));
        assert_eq!(p.timing.detect_mult, 5);
        assert!(p.timing.passive);
        assert_eq!(p.minimum_ttl, 250);
    }
}
