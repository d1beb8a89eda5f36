//! BGP mode: Herald announcing its LoadBalancer addresses to routers over BGP sessions.
//!
//! `wire` turns Herald's own message types into bytes and back; it is the only module that names
//! the BGP packet library (netgauze), so nothing else depends on that pre-1.0 API.

pub mod wire;
