//! The XDP object (`lb-ebpf`, built by `cargo xtask build-ebpf`), embedded so `herald` is a
//! single file. Aligned as aya's ELF parser requires.

/// The compiled XDP object: programs `herald_xdp` (`lb_common::maps::PROG_NAME`) and
/// `herald_pass` (the empty baseline), and the `HERALD_*` maps of `lb_common::maps`.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HERALD_XDP_OBJECT"));
