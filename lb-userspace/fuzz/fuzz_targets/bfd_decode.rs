//! Any bytes as a UDP payload on the BFD ports: `decode` never panics, what it accepts encodes
//! back to the same mandatory section, and a session handed it never panics either, whatever
//! state it is in.
#![no_main]

use std::time::{Duration, Instant};

use herald::bgp::bfd::packet;
use herald::bgp::bfd::session::{Session, Timing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(control) = packet::decode(data) else {
        return;
    };
    let again = packet::encode(&control);
    assert_eq!(&again[..3], &data[..3]);
    assert_eq!(&again[4..], &data[4..24]);
    let now = Instant::now();
    let mut fresh = Session::new(7, Timing::default());
    let _ = fresh.receive(&control, now);
    let _ = fresh.transmit(now, 0.5);
    let _ = fresh.expire(now + Duration::from_secs(300));
    // The same packet against a session that is Up with a peer.
    let mut peer = Session::new(control.my_discr, Timing::default());
    let mut up = Session::new(7, Timing::default());
    for _ in 0..3 {
        if let Some(p) = up.transmit(now, 0.0) {
            let _ = peer.receive(&p, now);
        }
        if let Some(p) = peer.transmit(now, 0.0) {
            let _ = up.receive(&p, now);
        }
    }
    let _ = up.receive(&control, now);
    let _ = up.transmit(now, 0.99);
    let _ = up.next_deadline(now);
});
