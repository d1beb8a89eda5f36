//! Herald: a bare-metal LoadBalancer for Kubernetes, drop-in for MetalLB, answering ARP/NDP from XDP.
//!
//! Pure modules (`api`, `config`, `allocator`, `election`) take values and return plans; I/O lives
//! in `k8s` (the only module that talks to the API server) and `dataplane` (the only one that
//! touches aya and the kernel). `controller` and `speaker` wire the two together.

pub mod allocator;
pub mod api;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod election;
pub mod k8s;
pub mod speaker;
pub mod yaml;
