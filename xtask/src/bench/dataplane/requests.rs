//! The requests the bench sends: ARP and NDP requests for the VIP or for the kernel's address
//! beside it, as load (from the generator's MAC) or as tagged probes, and the lab's addresses
//! parsed.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::results::Proto;
use super::{frames, lab};

/// Load frame and the 64 tagged probes for one protocol.
pub struct Traffic {
    pub load: Vec<Vec<u8>>,
    pub probes: Vec<Vec<u8>>,
}

pub fn traffic(proto: Proto) -> Traffic {
    Traffic {
        load: vec![request(proto, None, 0)],
        probes: (0..frames::PROBE_TAGS as u8)
            .map(|t| request(proto, Some(t), 0))
            .collect(),
    }
}

/// A request of `proto` for the VIP (`side` 0) or for the kernel's address beside it (1, the
/// side-by-side step's), from the generator or, with a tag, as that tag's probe.
pub fn request(proto: Proto, tag: Option<u8>, side: usize) -> Vec<u8> {
    let mac = tag.map_or(frames::GENERATOR_MAC, frames::probe_mac);
    match proto {
        Proto::Arp => {
            let target = [lab::VIP_V4, lab::BESIDE_V4][side % 2];
            let from = if tag.is_some() {
                lab::PROBE_V4
            } else {
                lab::CLIENT_V4
            };
            frames::arp_request(mac, ipv4(from), ipv4(target))
        }
        Proto::Ndp => {
            let target = [lab::VIP_V6, lab::BESIDE_V6][side % 2];
            let from = tag.map_or(ipv6(lab::CLIENT_V6), frames::probe_ipv6);
            frames::neighbor_solicitation(mac, from, ipv6(target))
        }
    }
}

pub fn ipv4(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}
pub fn ipv6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or(Ipv6Addr::UNSPECIFIED)
}
