//! `herald speaker`: decides which addresses this node answers for (layer 2) and announces to
//! its BGP peers, keeps the XDP responder's maps and the BGP sessions in line, and gossips with
//! the other speakers to agree on who is alive.
//!
//! Pure parts, tested without I/O: [`plan`] (election over the cluster objects → targets,
//! Events, and the BGP plan from `crate::bgp::policy`; diffs), [`status`] (the ServiceL2Status
//! and ServiceBGPStatus objects this node keeps, and the writes to get there), [`interfaces`]
//! (eligibility and MetalLB's exclusion list), [`timing`] (failure detection and the guard bound), [`auth`] (gossip datagram HMAC).
//! [`reconcile`] (one pass from cluster values to data-plane changes and API writes) and
//! [`announcer`] (layer-2 announcing over the data-plane seam) are unit-tested against an
//! in-memory data plane; [`bgp`] puts the BGP sessions on the same seam, beside it.
//! I/O: [`membership`] (SWIM with foca over UDP), [`guard`] (the heartbeat threads), [`run`] (the
//! process: watches from `k8s::speaker`, the data plane, metrics), [`writer`] (the API writes,
//! in order, on their own task); [`options`] is what the command line decides.

pub mod announcer;
pub mod auth;
pub mod bgp;
pub mod gossip;
pub mod guard;
pub mod interfaces;
pub mod membership;
pub mod metrics;
pub mod options;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod scan;
pub mod status;
pub mod timing;
pub mod unanswerable;
pub mod writer;
