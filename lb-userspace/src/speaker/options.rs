//! What the speaker is started with: everything its command line decides.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::dataplane::{AttachMode, DataplaneChoice};
use crate::speaker::interfaces::InterfaceFilter;
use crate::speaker::timing::Timing;

/// Memberlist settings; absent when memberlist is disabled (every Node counts as live).
#[derive(Clone, Debug)]
pub struct GossipSettings {
    pub bind: SocketAddr,
    /// Address peers reach us at; `None`: the bind address, or this Node's InternalIP when
    /// bound to the unspecified address.
    pub advertise: Option<IpAddr>,
    /// Label selector of the speaker Pods.
    pub labels: String,
    pub secret_name: Option<String>,
    /// The secret itself (overrides the Secret).
    pub secret_key: Option<String>,
}

/// Everything the command line decides.
#[derive(Clone, Debug)]
pub struct Options {
    pub node: String,
    pub namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub gossip: Option<GossipSettings>,
    pub metrics_addr: Option<SocketAddr>,
    pub timing: Timing,
    pub reannounce: Option<Duration>,
    pub filter: InterfaceFilter,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    /// `METALLB_BGP_TYPE`.
    pub bgp_mode: crate::config::BgpMode,
    pub rescan_every: Duration,
    pub attach_mode: AttachMode,
    /// Who answers: XDP, a userspace AF_PACKET responder per interface, or XDP falling back
    /// to userspace on interfaces where it cannot attach.
    pub dataplane: DataplaneChoice,
    /// Answers per second (and burst) the XDP program gives one requester MAC.
    pub rate_limit: lb_common::ratelimit::RateLimit,
    /// Frames per second (and burst) one Ethernet source may have passed to the kernel
    /// unanswered; the XDP program drops the rest.
    pub flood_limit: lb_common::ratelimit::RateLimit,
    /// HTTPS and a token for `/metrics`.
    pub metrics_access: crate::daemon::MetricsAccess,
}
