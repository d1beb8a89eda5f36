//! Shared between the XDP program (`lb-ebpf`), userspace (`herald`), host tests and fuzzers.
//!
//! `maps` fixes the layout of every BPF map key and value: the kernel program and userspace must
//! agree byte for byte, so both sides use these `#[repr(C)]` types and nothing else.
#![no_std]

pub mod maps;
