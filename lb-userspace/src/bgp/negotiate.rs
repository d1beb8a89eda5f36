//! The OPEN exchange, pure: what this speaker offers, whether the peer's OPEN is acceptable
//! (RFC 4271 §6.2), and what the two agreed on: hold time, keepalive interval, families and
//! 4-octet AS numbers.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::wire::{Family, Notification, Open, Session};

/// Which AS the peer must speak from: `peerASN`, or `dynamicASN` (`internal`: this node's own
/// AS; `external`: any other, learnt from the peer's OPEN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAs {
    Fixed(u32),
    Internal,
    External,
}

impl PeerAs {
    /// Whether an OPEN from `remote` is acceptable when this node speaks as `local`.
    pub fn accepts(self, local: u32, remote: u32) -> bool {
        match self {
            PeerAs::Fixed(asn) => remote == asn,
            PeerAs::Internal => remote == local,
            PeerAs::External => remote != local,
        }
    }

    /// Whether the session is iBGP when this node speaks as `local`.
    pub fn is_internal(self, local: u32) -> bool {
        match self {
            PeerAs::Fixed(asn) => asn == local,
            PeerAs::Internal => true,
            PeerAs::External => false,
        }
    }
}

impl std::fmt::Display for PeerAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAs::Fixed(asn) => write!(f, "{asn}"),
            PeerAs::Internal => f.write_str("internal"),
            PeerAs::External => f.write_str("external"),
        }
    }
}

/// The smallest non-zero hold time a session accepts (RFC 4271 §4.2: 0 or at least 3 s).
pub const MIN_HOLD_TIME: Duration = Duration::from_secs(3);

/// What one session agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub session: Session,
    /// Zero: no hold timer and no keepalives (RFC 4271 §4.4).
    pub hold_time: Duration,
    /// Zero when the hold time is zero.
    pub keepalive: Duration,
    pub remote_router_id: Ipv4Addr,
}

/// The families this speaker offers: none listed (classic IPv4 BGP, no MP capability) when
/// `disable_mp`; otherwise the transport's family, plus the other one for a dual-stack session.
pub fn offered_families(transport: IpAddr, dual_stack: bool, disable_mp: bool) -> BTreeSet<Family> {
    if disable_mp {
        return BTreeSet::new();
    }
    let mut families = BTreeSet::new();
    families.insert(match transport {
        IpAddr::V4(_) => Family::Ipv4Unicast,
        IpAddr::V6(_) => Family::Ipv6Unicast,
    });
    if dual_stack {
        families.insert(Family::Ipv4Unicast);
        families.insert(Family::Ipv6Unicast);
    }
    families
}

/// The BGP identifier, as MetalLB's native speaker picks it: `routerID` when configured, else
/// the session's local IPv4 address, else the first IPv4 address on the interface that holds
/// the session's local IPv6 address (`beside`, asked only then), else the CRC-32 of the node
/// name (stable across restarts, distinct per node). An all-zero hash, which BGP refuses,
/// becomes 0.0.0.1.
pub fn router_id(
    configured: Option<Ipv4Addr>,
    local: IpAddr,
    node: &str,
    beside: impl FnOnce(IpAddr) -> Option<Ipv4Addr>,
) -> Ipv4Addr {
    if let Some(id) = configured {
        return id;
    }
    if let IpAddr::V4(v4) = local {
        return v4;
    }
    if let Some(v4) = beside(local) {
        return v4;
    }
    let id = Ipv4Addr::from(crc32fast::hash(node.as_bytes()).to_le_bytes());
    if id.is_unspecified() {
        Ipv4Addr::new(0, 0, 0, 1)
    } else {
        id
    }
}

/// The hold time sent in an OPEN: whole seconds, saturating at the field's 16 bits.
pub fn hold_field(hold: Duration) -> u16 {
    u16::try_from(hold.as_secs()).unwrap_or(u16::MAX)
}

/// Checks the peer's OPEN against what this session expects and agrees on the timers.
/// `local` is the OPEN this speaker sent; `keepalive` the configured interval (hold/3 unless
/// `keepaliveTime` said otherwise).
pub fn accept_open(
    local: &Open,
    expected: PeerAs,
    keepalive: Duration,
    remote: &Open,
) -> Result<Negotiated, Notification> {
    if !expected.accepts(local.asn, remote.asn) {
        return Err(Notification::bad_peer_as());
    }
    if remote.hold_time == 1 || remote.hold_time == 2 {
        return Err(Notification::unacceptable_hold_time());
    }
    let internal = local.asn == remote.asn;
    if remote.router_id.is_unspecified() || (internal && remote.router_id == local.router_id) {
        // OPEN Message Error / Bad BGP Identifier.
        return Err(Notification {
            code: 2,
            subcode: 3,
            data: Vec::new(),
        });
    }
    let hold_s = local.hold_time.min(remote.hold_time);
    let hold_time = Duration::from_secs(u64::from(hold_s));
    let keepalive = if hold_time.is_zero() {
        Duration::ZERO
    } else {
        let third = hold_time / 3;
        if keepalive.is_zero() {
            third
        } else {
            keepalive.min(third).max(Duration::from_secs(1))
        }
    };
    Ok(Negotiated {
        session: Session::negotiated(local, remote),
        hold_time,
        keepalive,
        remote_router_id: remote.router_id,
    })
}

#[cfg(test)]
#[path = "negotiate/tests.rs"]
mod tests;
