//! Any bytes as a gossip datagram from a peer, through authentication, the replay guard and the
//! membership protocol's decoding: never panics, with a key and without one (where the payload
//! goes straight to the decoder), and a datagram refused by authentication changes nothing.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use herald::speaker::auth::GossipKey;
use herald::speaker::membership::{Membership, SpeakerId};
use herald::speaker::timing::Timing;
use libfuzzer_sys::fuzz_target;

fn member(key: Option<&[u8]>) -> Option<Membership> {
    let timing = Timing::from_detect_ms(500)?;
    let id = SpeakerId {
        node: "node-a".into(),
        addr: "198.51.100.1:7946".parse().ok()?,
        bump: 1,
    };
    Some(Membership::new(
        id,
        &timing,
        GossipKey::new(key),
        7,
        1_800_000_000_000,
    ))
}

fuzz_target!(|data: &[u8]| {
    let from: SocketAddr = match "198.51.100.2:7946".parse() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    for key in [None, Some(&b"fuzz-secret-fuzz-secret"[..])] {
        let Some(mut m) = member(key) else { return };
        let _ = m.handle_datagram(from, data, Duration::from_millis(10));
        m.handle_due(Duration::from_millis(20));
    }
    let _ = GossipKey::new(Some(b"k")).open(data, "node-a");
});
