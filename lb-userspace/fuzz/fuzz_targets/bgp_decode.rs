//! Any bytes as what a BGP peer sends: `decode` never panics, each call takes bytes off the
//! buffer or waits for more, before the OPEN exchange (2-octet AS numbers) and on a 4-octet
//! dual-stack session; an OPEN or NOTIFICATION it returns encodes back to itself.
#![no_main]

use std::collections::BTreeSet;

use bytes::BytesMut;
use herald::bgp::wire::{self, Family, Message, Session};
use libfuzzer_sys::fuzz_target;

fn round_trip(message: &Message) {
    let bytes = match message {
        Message::Open(open) => wire::encode_open(open),
        Message::Notification(n) => wire::encode_notification(n),
        _ => return,
    };
    let mut buf = BytesMut::from(bytes.as_ref());
    match wire::decode(&mut buf, None) {
        Ok(Some(back)) => assert_eq!(&back, message),
        other => panic!("{message:?} encoded to {bytes:?}, read back as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let negotiated = Session {
        four_octet_as: true,
        families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
    };
    for session in [None, Some(&negotiated)] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match wire::decode(&mut buf, session) {
                Ok(Some(message)) => {
                    assert!(buf.len() < before);
                    round_trip(&message);
                }
                Err(_) => assert!(buf.len() < before),
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
    }
});
