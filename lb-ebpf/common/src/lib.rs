//! Shared between the XDP program (`lb-ebpf`), userspace (`herald`), host tests and fuzzers.
//!
//! `maps` fixes the layout of every BPF map key and value: the kernel program and userspace must
//! agree byte for byte, so both sides use these `#[repr(C)]` types and nothing else.
//!
//! The packet logic (`arp`, `ndp`) works on fixed-size arrays with constant offsets and bounded
//! loops, without allocation, so the same functions run in the XDP program (where the verifier
//! must prove every access) and on the host (`respond`, tests, the fuzzer). Userspace uses
//! [`write_gratuitous_arp`] and [`write_unsolicited_na`] for the packets sent on announce.
//! `ratelimit` is the per-source token bucket the program applies before answering.
#![no_std]

pub mod arp;
pub mod checksum;
pub mod maps;
pub mod ndp;
pub mod ratelimit;
pub mod respond;
pub mod wire;

pub use arp::write_gratuitous_arp;
pub use ndp::write_unsolicited_na;

/// Why a frame is not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not a request Herald answers; the kernel gets it untouched.
    Ignore,
    /// A request that fails validation; passed untouched and counted as malformed.
    Malformed,
}

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod tests;
