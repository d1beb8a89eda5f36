//! BFD (RFC 5880, asynchronous mode) for BGP peers with a `bfdProfile`: [`packet`] reads and
//! writes the Control packet, [`session`] is one session's state machine and timers. Both are
//! pure; the sockets (UDP 3784 single hop with TTL 255, 4784 multihop with the profile's
//! minimum TTL, RFC 5881/5883) belong to the speaker's BFD task.

pub mod packet;
pub mod session;
