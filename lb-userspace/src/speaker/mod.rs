//! `herald speaker` (layer 2): decides which addresses this node answers for, keeps the XDP
//! responder's maps in line, and gossips with the other speakers to agree on who is alive.
//!
//! Pure parts, tested without I/O: [`plan`] (election over the cluster objects → targets,
//! ServiceL2Status, Events; diffs), [`interfaces`] (eligibility and MetalLB's exclusion list),
//! [`timing`] (failure detection and the guard bound), [`auth`] (gossip datagram HMAC).
//! I/O: [`membership`] (SWIM with foca over UDP), [`run`] (the process: watches from
//! `k8s::speaker`, the data plane, metrics).

pub mod auth;
pub mod gossip;
pub mod interfaces;
pub mod membership;
pub mod metrics;
pub mod plan;
pub mod run;
pub mod scan;
pub mod timing;
