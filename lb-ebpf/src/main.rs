//! Herald's XDP program: answers ARP requests and IPv6 Neighbor Solicitations for announced
//! addresses straight from the NIC (XDP_TX), passes everything else to the kernel.
//!
//! Thin on purpose: all packet logic lives in `lb-common` (shared with host tests and the
//! fuzzer); this file only bounds-checks the frame for the verifier, looks up the maps, applies
//! the guard and the rate limit, records foreign claims (`edges`) and bumps counters.
//!
//! Two programs: `herald_xdp` (the responder) and `herald_pass` (an empty XDP_PASS program, the
//! baseline `cargo xtask bench xdp` measures beside it).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod edges;
#[cfg(target_arch = "bpf")]
mod program;

/// On the host (`cargo clippy --workspace`) the crate is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
