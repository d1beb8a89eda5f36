//! The side-by-side step: Herald's program and the kernel answering on the same interface in
//! the same step. Herald answers for the VIP; the kernel for a second address configured on
//! the interface, whose requests Herald's program passes on. Load and probes alternate between
//! the two (even probe tags ask for the VIP, odd ones for the kernel's address), so both
//! tails are taken under the same host load, second for second. Measured one after the other
//! (the headline table), two tails minutes apart differ by what the shared host did
//! meanwhile, as much as by the responders.
//!
//! Herald's maps hold only the VIPs (the lab announces nothing else), so its program cannot
//! answer the second address: the odd tags' times are the kernel's.
//!
//! The kernel here is not the kernel alone: its requests first pass through Herald's program
//! (and in driver mode are copied into an XDP buffer and back), which costs it a little. The
//! one-after-the-other figures stay beside these for that reason.

use std::time::Duration;

use anyhow::{Result, bail};

use super::frames;
use super::lab::Lab;
use super::measure::Engine;
use super::requests::request;
use super::results::{Beside, Proto};

/// The load (one request for each address, alternating) and the probes (even tags for the VIP,
/// odd ones for the kernel's address) of one protocol.
pub fn traffic(proto: Proto) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let load = (0..2).map(|side| request(proto, None, side)).collect();
    let probes = (0..frames::PROBE_TAGS as u8)
        .map(|t| request(proto, Some(t), usize::from(t % 2)))
        .collect();
    (load, probes)
}

/// Both protocols side by side at `rate` for `time`, with Herald answering for the VIPs (its
/// program attached); the kernel's addresses are removed again whatever happens.
pub fn measure(lab: &Lab, engine: &mut Engine, rate: u64, time: Duration) -> Result<Vec<Beside>> {
    lab.start_kernel_beside()?;
    let out = measure_both(engine, rate, time);
    let removed = lab.stop_kernel_beside();
    let out = out?;
    removed?;
    Ok(out)
}

fn measure_both(engine: &mut Engine, rate: u64, time: Duration) -> Result<Vec<Beside>> {
    let mut out = Vec::new();
    for proto in [Proto::Arp, Proto::Ndp] {
        let (load, probes) = traffic(proto);
        // Tag 0's slot times the check's one probe, so each side is asked with tag 0.
        for (who, side) in [("Herald", 0), ("the kernel", 1)] {
            if !engine.wait_answered(&request(proto, Some(0), side), Duration::from_secs(10))? {
                bail!(
                    "side by side: {who} never answered a {} probe",
                    proto.file()
                );
            }
        }
        engine.warm_up(&load, &probes, rate)?;
        let step = engine.step(&load, &probes, Some(rate), time)?;
        out.push(Beside { proto, step });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::lab;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn probes_alternate_between_the_two_addresses() {
        for proto in [Proto::Arp, Proto::Ndp] {
            let (load, probes) = traffic(proto);
            assert_eq!(load.len(), 2);
            assert_ne!(load[0], load[1]);
            assert_eq!(probes.len(), frames::PROBE_TAGS);
            for (t, p) in probes.iter().enumerate() {
                // Each probe carries its tag in its source MAC, and asks what its load twin asks:
                // the target address sits at the same place in both frames.
                assert_eq!(frames::probe_tag(&p[6..12]), Some(t as u8));
                let twin = &load[t % 2];
                let at = match proto {
                    Proto::Arp => 38..42,
                    Proto::Ndp => 62..78,
                };
                assert_eq!(p[at.clone()], twin[at.clone()], "{proto:?} probe {t}");
                // Even tags ask for the VIP (Herald's), odd ones for the kernel's address.
                let wanted: Vec<u8> = match (proto, t % 2) {
                    (Proto::Arp, 0) => lab::VIP_V4.parse::<Ipv4Addr>().map(|a| a.octets().to_vec()),
                    (Proto::Arp, _) => lab::BESIDE_V4
                        .parse::<Ipv4Addr>()
                        .map(|a| a.octets().to_vec()),
                    (Proto::Ndp, 0) => lab::VIP_V6.parse::<Ipv6Addr>().map(|a| a.octets().to_vec()),
                    (Proto::Ndp, _) => lab::BESIDE_V6
                        .parse::<Ipv6Addr>()
                        .map(|a| a.octets().to_vec()),
                }
                .unwrap_or_default();
                assert_eq!(p[at].to_vec(), wanted, "{proto:?} probe {t}");
            }
        }
    }
}
