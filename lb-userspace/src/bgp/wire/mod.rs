//! Herald's BGP messages on the wire: its own small types, encoded and decoded with
//! netgauze-bgp-pkt (pre-1.0, pinned, wrapped here so nothing else in Herald names it).
//!
//! Herald frames messages itself (`decode` takes whole messages off a `BytesMut`) and checks the
//! header (marker, length, type) before netgauze sees a byte. Messages are never larger than
//! 4096 bytes: Herald does not offer the Extended Message capability (RFC 8654).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::decode;
pub use encode::{
    encode_announce, encode_end_of_rib, encode_keepalive, encode_notification, encode_open,
    encode_withdraw, is_unicast,
};

/// RFC 4271 §4.1: the fixed header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1: the largest message without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 6793: what a 2-octet field carries for an AS number above 65535.
pub const AS_TRANS: u16 = 23456;
/// The restart time Herald offers in its graceful restart capability (RFC 4724), in seconds.
pub const GRACEFUL_RESTART_TIME_S: u16 = 120;

/// An address family Herald announces (AFI/SAFI unicast).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// The family a prefix belongs to.
    pub fn of(net: &ipnet::IpNet) -> Family {
        match net {
            ipnet::IpNet::V4(_) => Family::Ipv4Unicast,
            ipnet::IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

/// An OPEN message, as Herald sends it or reads it from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The speaker's AS number: on decode, the 4-octet AS capability's value when present, else
    /// the 2-octet My AS field. On encode, an ASN above 65535 goes out as AS_TRANS in My AS and
    /// reaches the peer only through the 4-octet capability (so it needs `four_octet_as`).
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    /// The 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// One multiprotocol capability (RFC 4760) per family; empty = none sent (classic IPv4 BGP).
    /// On decode, families other than IPv4/IPv6 unicast are left out.
    pub families: BTreeSet<Family>,
    /// The graceful restart capability (RFC 4724): sent with a restart time of
    /// [`GRACEFUL_RESTART_TIME_S`] and every family of the session (IPv4 unicast on a classic
    /// one) with the Forwarding State bit set: the node's forwarding (kube-proxy's rules, the
    /// XDP program) does not depend on the speaker process.
    pub graceful_restart: bool,
    /// The capability's Restart State bit (R): the sender has restarted.
    pub restarted: bool,
}

/// A NOTIFICATION message (RFC 4271 §4.5): error code, subcode, data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown (6/2, RFC 4486).
    pub fn cease_admin_shutdown() -> Notification {
        Notification::new(6, 2)
    }

    /// Cease / Peer De-configured (6/3, RFC 4486).
    pub fn cease_peer_deconfigured() -> Notification {
        Notification::new(6, 3)
    }

    /// Cease / BFD Down (6/10, RFC 9384).
    pub fn cease_bfd_down() -> Notification {
        Notification::new(6, 10)
    }

    /// Hold Timer Expired (4/0).
    pub fn hold_timer_expired() -> Notification {
        Notification::new(4, 0)
    }

    /// Finite State Machine Error (5/0).
    pub fn fsm_error() -> Notification {
        Notification::new(5, 0)
    }

    /// OPEN Message Error / Bad Peer AS (2/2).
    pub fn bad_peer_as() -> Notification {
        Notification::new(2, 2)
    }

    /// OPEN Message Error / Unacceptable Hold Time (2/6).
    pub fn unacceptable_hold_time() -> Notification {
        Notification::new(2, 6)
    }

    /// The RFC names of the code and subcode, e.g. "Cease / Administrative Shutdown"; the
    /// shutdown communication (RFC 9003) follows when the data carries one.
    pub fn describe(&self) -> String {
        let code = match self.code {
            1 => "Message Header Error",
            2 => "OPEN Message Error",
            3 => "UPDATE Message Error",
            4 => "Hold Timer Expired",
            5 => "Finite State Machine Error",
            6 => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            8 => "Send Hold Timer Expired",
            other => return format!("error code {other} / subcode {}", self.subcode),
        };
        let subcode = match (self.code, self.subcode) {
            // No subcodes are defined for these codes: the code alone names the error.
            (4 | 8, 0) => return code.to_string(),
            (_, 0) => "Unspecific",
            (1, 1) => "Connection Not Synchronized",
            (1, 2) => "Bad Message Length",
            (1, 3) => "Bad Message Type",
            (2, 1) => "Unsupported Version Number",
            (2, 2) => "Bad Peer AS",
            (2, 3) => "Bad BGP Identifier",
            (2, 4) => "Unsupported Optional Parameter",
            (2, 6) => "Unacceptable Hold Time",
            (2, 7) => "Unsupported Capability",
            (2, 11) => "Role Mismatch",
            (3, 1) => "Malformed Attribute List",
            (3, 2) => "Unrecognized Well-known Attribute",
            (3, 3) => "Missing Well-known Attribute",
            (3, 4) => "Attribute Flags Error",
            (3, 5) => "Attribute Length Error",
            (3, 6) => "Invalid ORIGIN Attribute",
            (3, 8) => "Invalid NEXT_HOP Attribute",
            (3, 9) => "Optional Attribute Error",
            (3, 10) => "Invalid Network Field",
            (3, 11) => "Malformed AS_PATH",
            (5, 1) => "Receive Unexpected Message in OpenSent State",
            (5, 2) => "Receive Unexpected Message in OpenConfirm State",
            (5, 3) => "Receive Unexpected Message in Established State",
            (6, 1) => "Maximum Number of Prefixes Reached",
            (6, 2) => "Administrative Shutdown",
            (6, 3) => "Peer De-configured",
            (6, 4) => "Administrative Reset",
            (6, 5) => "Connection Rejected",
            (6, 6) => "Other Configuration Change",
            (6, 7) => "Connection Collision Resolution",
            (6, 8) => "Out of Resources",
            (6, 9) => "Hard Reset",
            (6, 10) => "BFD Down",
            (7, 1) => "Invalid Message Length",
            (_, other) => return format!("{code} / subcode {other}"),
        };
        match self.shutdown_communication() {
            Some(text) => format!("{code} / {subcode}: {text:?}"),
            None => format!("{code} / {subcode}"),
        }
    }

    /// RFC 9003: Cease / Administrative Shutdown or Reset may carry a length-prefixed UTF-8 text.
    fn shutdown_communication(&self) -> Option<&str> {
        if self.code != 6 || !matches!(self.subcode, 2 | 4) {
            return None;
        }
        let (&len, text) = self.data.split_first()?;
        if text.is_empty() || usize::from(len) != text.len() {
            return None;
        }
        std::str::from_utf8(text).ok()
    }
}

/// What a route is announced with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttrs {
    pub next_hop: IpAddr,
    /// LOCAL_PREF, for iBGP peers.
    pub local_pref: Option<u32>,
    /// COMMUNITIES and LARGE_COMMUNITY values; sent sorted, without duplicates.
    pub communities: Vec<crate::config::Community>,
    /// The AS_PATH as one AS_SEQUENCE, nearest AS first; empty for iBGP.
    pub as_path: Vec<u32>,
}

/// What both OPENs agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Both sides sent the 4-octet AS capability: AS numbers in UPDATEs are 4 octets wide.
    pub four_octet_as: bool,
    /// The families both sides offered, or {IPv4 unicast} when either sent no multiprotocol
    /// capability (classic BGP). May be empty when the two offers do not meet.
    pub families: BTreeSet<Family>,
}

impl Session {
    pub fn negotiated(local: &Open, remote: &Open) -> Session {
        let families = if local.families.is_empty() || remote.families.is_empty() {
            BTreeSet::from([Family::Ipv4Unicast])
        } else {
            local
                .families
                .intersection(&remote.families)
                .copied()
                .collect()
        };
        Session {
            four_octet_as: local.four_octet_as && remote.four_octet_as,
            families,
        }
    }

    /// Only IPv4 unicast: its routes travel in the UPDATE's own NLRI and withdrawn fields.
    fn is_classic(&self) -> bool {
        self.families.len() == 1 && self.families.contains(&Family::Ipv4Unicast)
    }
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Keepalive,
    Notification(Notification),
    RouteRefresh,
}

/// What Herald reads from a peer's UPDATE: the prefixes (Herald learns no routes, so their
/// attributes are checked but not kept) and End-of-RIB markers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 from the withdrawn-routes field and both families from MP_UNREACH_NLRI.
    pub withdrawn: Vec<ipnet::IpNet>,
    /// IPv4 from the NLRI field and both families from MP_REACH_NLRI.
    pub announced: Vec<ipnet::IpNet>,
    /// RFC 4724: this UPDATE is the End-of-RIB marker of that family.
    pub end_of_rib: Option<Family>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A peer's bytes break the protocol: send `notification` and close the session.
    #[error("malformed BGP message ({}): {detail}", notification.describe())]
    Malformed {
        notification: Notification,
        detail: String,
    },
    /// Herald's own request cannot be put on the wire as asked.
    #[error("cannot encode BGP message: {0}")]
    Unencodable(String),
}

impl WireError {
    fn malformed(code: u8, subcode: u8, data: Vec<u8>, detail: impl Into<String>) -> WireError {
        WireError::Malformed {
            notification: Notification {
                code,
                subcode,
                data,
            },
            detail: detail.into(),
        }
    }
}
