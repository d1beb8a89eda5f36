//! BGP announcement policy, pure: from the configuration, the cluster's Services, EndpointSlices
//! and Nodes and this node's name to the BGP sessions this node opens and the prefixes (with
//! LOCAL_PREF and communities) it announces on each. MetalLB's `speaker/bgp_controller.go`
//! (`ShouldAnnounce`, `SetBalancer`, `syncPeers`) and its native session
//! (`internal/bgp/native`) decide the same way.
//!
//! Unlike layer 2 there is no election: every node whose advertisements select it announces,
//! and the routers spread the traffic (ECMP).
//!
//! Where this differs from MetalLB, on purpose:
//! * Two advertisements of one prefix to one peer (two Services aggregated into one prefix, or
//!   two advertisements of the same length) are merged into one route: the communities are
//!   unioned (MetalLB's native session does the same) and the LOCAL_PREF is the highest one.
//!   MetalLB keeps the LOCAL_PREF of whichever advertisement its map iteration yields first, so
//!   its choice varies between runs; the maximum is one deterministic answer.
//! * `dynamicASN` and `localASN`, FRR-mode features MetalLB's native mode rejects, work here:
//!   a `dynamicASN` peer is accepted from whatever AS its OPEN names, as long as the session is
//!   internal or external as asked; `localASN` replaces `myASN` on that session.
//! * Peers without `peerAddress` (`interface`, unnumbered BGP) get no session here. They are
//!   left out of [`BgpPlan::sessions`], so no route names them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::negotiate::PeerAs;
use crate::allocator::ServiceInfo;
use crate::config::{BgpAdvertisement, Community, Config, Peer};
use crate::election::{self, Announceable, Cluster};

/// MetalLB's native speaker uses this hold time when the BGPPeer sets none.
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);

/// One BGPPeer this node opens a session to (its nodeSelectors match this node), resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// The BGPPeer's name.
    pub peer: String,
    /// The ASN this node speaks as: `localASN` when set (FRR's `local-as … replace-as`), else
    /// `myASN`.
    pub my_asn: u32,
    pub peer_asn: PeerAs,
    pub peer_address: IpAddr,
    pub peer_port: u16,
    pub source_address: Option<IpAddr>,
    /// [`DEFAULT_HOLD_TIME`] when unset; 0 (no keepalives, no hold timer) is allowed.
    pub hold_time: Duration,
    /// `keepaliveTime` if set, else a third of the hold time (whole seconds: the configuration
    /// stores `holdTime / 3` truncated when only the hold time is set).
    pub keepalive: Duration,
    pub connect_time: Option<Duration>,
    /// `None`: the session picks one (MetalLB: the local IPv4 of the session, else one on the
    /// same interface, else a hash of the node name).
    pub router_id: Option<Ipv4Addr>,
    pub ebgp_multihop: bool,
    /// Name of the `passwordSecret` in MetalLB's namespace.
    pub password_secret: Option<String>,
    /// Whether a TCP-MD5 password (inline or secret) is configured.
    pub has_password: bool,
    pub vrf: Option<String>,
    pub disable_mp: bool,
    pub dual_stack: bool,
    pub graceful_restart: bool,
    pub bfd_profile: Option<String>,
    /// The BFD session `bfd_profile` gives this peer (None without a profile, or while the
    /// profile is missing).
    pub bfd: Option<super::bfd::PeerBfd>,
}

impl SessionSpec {
    /// The session of `peer`, or `None` when Herald opens none for it: no `peerAddress`
    /// (interface/unnumbered, FRR-only) or neither `peerASN` nor `dynamicASN`.
    pub fn of(peer: &Peer) -> Option<SessionSpec> {
        let peer_address = peer.peer_address?;
        let peer_asn = match (peer.peer_asn, peer.dynamic_asn.as_deref()) {
            (0, Some("internal")) => PeerAs::Internal,
            (0, Some("external")) => PeerAs::External,
            (0, _) => return None,
            (asn, _) => PeerAs::Fixed(asn),
        };
        let hold_time = peer
            .hold_time_s
            .map_or(DEFAULT_HOLD_TIME, Duration::from_secs);
        let keepalive = peer
            .keepalive_time_s
            .map_or(hold_time / 3, Duration::from_secs);
        Some(SessionSpec {
            peer: peer.name.clone(),
            my_asn: peer.local_asn.unwrap_or(peer.my_asn),
            peer_asn,
            peer_address,
            peer_port: peer.peer_port,
            source_address: peer.source_address,
            hold_time,
            keepalive,
            connect_time: peer.connect_time_s.map(Duration::from_secs),
            router_id: peer.router_id,
            ebgp_multihop: peer.ebgp_multihop,
            password_secret: peer.password_secret.clone(),
            has_password: peer.has_password,
            vrf: peer.vrf.clone(),
            disable_mp: peer.disable_mp,
            dual_stack: peer.dual_stack_address_family,
            graceful_restart: peer.enable_graceful_restart,
            bfd_profile: peer.bfd_profile.clone(),
            bfd: None,
        })
    }

    /// iBGP: both ends in one AS.
    pub fn is_ibgp(&self) -> bool {
        self.peer_asn.is_internal(self.my_asn)
    }
}

/// The attributes policy decides for one route (next hop and AS path are the session's
/// business).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// LOCAL_PREF, sent to iBGP peers only and always there: the advertisement's `localPref`,
    /// 0 when unset, as MetalLB's native session writes it. `None` on eBGP sessions.
    pub local_pref: Option<u32>,
    /// Sorted (standard before large), without duplicates.
    pub communities: Vec<Community>,
}

impl RoutePolicy {
    /// Folds another advertisement of the same prefix to the same peer into this one:
    /// communities unioned, the higher LOCAL_PREF kept (`None`, the empty route, is below
    /// every value).
    fn merge(&mut self, other: &RoutePolicy) {
        self.local_pref = self.local_pref.max(other.local_pref);
        self.communities.extend(other.communities.iter().cloned());
        self.communities.sort();
        self.communities.dedup();
    }
}

/// What this node does with one Service's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBgp {
    pub namespace: String,
    pub name: String,
    /// The Service's addresses in status order.
    pub ips: Vec<IpAddr>,
    /// The peers this node announces the Service to; empty: not announced from here.
    pub peers: BTreeSet<String>,
    /// Why it is not announced from here (for logs and `herald simulate`).
    pub reason: Option<String>,
    /// A configuration problem worth a warning Event on the Service (conflicting LOCAL_PREFs).
    pub error: Option<String>,
}

/// The whole evaluation for this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPlan {
    /// The sessions this node runs, by BGPPeer name.
    pub sessions: BTreeMap<String, SessionSpec>,
    /// Every session's full set of routes, by BGPPeer name: one entry per session (empty when
    /// nothing is announced to it), none for anything else.
    pub routes: BTreeMap<String, BTreeMap<IpNet, RoutePolicy>>,
    /// By `namespace/name`: every LoadBalancer Service of this class with addresses, and every
    /// Service that could not be read (its `reason` says why).
    pub services: BTreeMap<String, ServiceBgp>,
}

/// The sessions `node` runs: peers whose nodeSelectors select it, minus those Herald cannot
/// open (see [`SessionSpec::of`]).
pub fn sessions(config: &Config, node: &str) -> BTreeMap<String, SessionSpec> {
    config
        .peers
        .iter()
        .filter(|p| p.nodes.contains(node))
        .filter_map(SessionSpec::of)
        .map(|mut s| {
            s.bfd = s
                .bfd_profile
                .as_ref()
                .and_then(|name| config.bfd_profiles.get(name))
                .map(|profile| {
                    super::bfd::PeerBfd::resolve(
                        profile,
                        s.peer_address,
                        s.source_address,
                        s.ebgp_multihop,
                    )
                });
            (s.peer.clone(), s)
        })
        .collect()
}

/// The prefix an advertisement announces for `ip`: the address with its aggregation length
/// (`aggregationLengthV6` for IPv6), host bits cleared. `None` only for a length the
/// configuration cannot hold (over 32/128).
pub fn prefix(ip: IpAddr, ad: &BgpAdvertisement) -> Option<IpNet> {
    let length = match ip {
        IpAddr::V4(_) => ad.aggregation_length,
        IpAddr::V6(_) => ad.aggregation_length_v6,
    };
    IpNet::new(ip, length).ok().map(|net| net.trunc())
}

/// Evaluates every Service. A configuration without BGPPeers and BGPAdvertisements gives the
/// empty plan.
pub fn plan(inputs: &Cluster<'_>) -> BgpPlan {
    let config = inputs.config;
    if config.peers.is_empty() && config.bgp_advertisements.is_empty() {
        return BgpPlan::default();
    }
    let sessions = sessions(config, inputs.node);
    let mut routes: BTreeMap<String, BTreeMap<IpNet, RoutePolicy>> = sessions
        .keys()
        .map(|name| (name.clone(), BTreeMap::new()))
        .collect();
    let mut services = BTreeMap::new();
    let me = inputs
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(inputs.node));

    for service in inputs.services {
        let Announceable { info, ips } = match election::announceable(service, inputs.lb_class) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => {
                let (namespace, name) = e.service.split_once('/').unwrap_or(("", &e.service));
                services.insert(
                    e.service.clone(),
                    ServiceBgp {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        ips: Vec::new(),
                        peers: BTreeSet::new(),
                        reason: Some(format!("cannot be read: {}: {}", e.field, e.message)),
                        error: None,
                    },
                );
                continue;
            }
        };
        let mut entry = ServiceBgp {
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            ips: ips.clone(),
            peers: BTreeSet::new(),
            reason: None,
            error: None,
        };
        match advertisements(inputs, me, inputs.slices.of(&info), &info, &ips) {
            Err(skip) => {
                entry.reason = Some(skip.reason);
                entry.error = skip.error;
            }
            Ok(ads) => {
                add_routes(&mut routes, &sessions, &ips, &ads, &mut entry);
                if entry.peers.is_empty() {
                    entry.reason = Some(format!(
                        "no BGP session of node {:?} takes its advertisements",
                        inputs.node
                    ));
                }
            }
        }
        services.insert(info.key(), entry);
    }
    BgpPlan {
        sessions,
        routes,
        services,
    }
}

/// Adds every (address, advertisement) prefix of one Service to the sessions the advertisement
/// names (all when it names none), merging with what is there; records the peers in `entry`.
fn add_routes(
    routes: &mut BTreeMap<String, BTreeMap<IpNet, RoutePolicy>>,
    sessions: &BTreeMap<String, SessionSpec>,
    ips: &[IpAddr],
    ads: &[&BgpAdvertisement],
    entry: &mut ServiceBgp,
) {
    for ip in ips {
        for ad in ads {
            let Some(prefix) = prefix(*ip, ad) else {
                entry.error = Some(format!(
                    "BGPAdvertisement {:?} has an aggregation length that does not fit {ip}",
                    ad.name
                ));
                continue;
            };
            for (peer, session) in sessions {
                if !ad.peers.is_empty() && !ad.peers.contains(peer) {
                    continue;
                }
                let route = RoutePolicy {
                    local_pref: session.is_ibgp().then_some(ad.local_pref),
                    communities: ad.communities.clone(),
                };
                routes
                    .entry(peer.clone())
                    .or_default()
                    .entry(prefix)
                    .or_default()
                    .merge(&route);
                entry.peers.insert(peer.clone());
            }
        }
    }
}

/// Why a Service is not announced from this node.
struct Skip {
    reason: String,
    error: Option<String>,
}

impl Skip {
    fn because(reason: String) -> Self {
        Skip {
            reason,
            error: None,
        }
    }
}

/// MetalLB's `ShouldAnnounce` for BGP, in its order: the advertisements this node announces the
/// Service with, or why it does not.
fn advertisements<'c>(
    inputs: &Cluster<'c>,
    me: Option<&Node>,
    slices: &[&EndpointSlice],
    info: &ServiceInfo,
    ips: &[IpAddr],
) -> Result<Vec<&'c BgpAdvertisement>, Skip> {
    let config = inputs.config;
    let node = inputs.node;
    let Some(pool_name) = election::pool_for(config, ips, info.allocated_from_pool.as_deref())
    else {
        let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
        return Err(Skip::because(format!(
            "address {} is not in any IPAddressPool",
            list.join(",")
        )));
    };
    let Some(pool) = config.pools.get(pool_name) else {
        return Err(Skip::because(format!(
            "IPAddressPool {pool_name:?} is missing"
        )));
    };
    let of_pool: Vec<&BgpAdvertisement> = config
        .bgp_advertisements
        .iter()
        .filter(|ad| ad.pools.contains(pool_name))
        .collect();
    if of_pool.is_empty() {
        return Err(Skip::because(format!(
            "no BGPAdvertisement covers IPAddressPool {pool_name:?}"
        )));
    }
    let here: Vec<&BgpAdvertisement> = of_pool
        .into_iter()
        .filter(|ad| ad.nodes.contains(node))
        .collect();
    if here.is_empty() {
        return Err(Skip::because(format!(
            "no BGPAdvertisement of IPAddressPool {pool_name:?} selects node {node:?}"
        )));
    }
    let ads: Vec<&BgpAdvertisement> = here
        .into_iter()
        .filter(|ad| election::selects_service(&ad.service_selectors, info))
        .collect();
    if ads.is_empty() {
        return Err(Skip::because(format!(
            "no BGPAdvertisement of IPAddressPool {pool_name:?} selecting node {node:?} matches the Service's labels"
        )));
    }
    for (i, a) in ads.iter().enumerate() {
        for b in &ads[i + 1..] {
            if !a.local_pref_compatible(b, pool) {
                let message = format!(
                    "BGPAdvertisements {:?} and {:?} have conflicting LOCAL_PREF ({} vs {}) for this Service",
                    a.name, b.name, a.local_pref, b.local_pref
                );
                return Err(Skip {
                    reason: message.clone(),
                    error: Some(message),
                });
            }
        }
    }
    if me.is_some_and(election::network_unavailable) {
        return Err(Skip::because(format!(
            "node {node:?} has the condition NetworkUnavailable"
        )));
    }
    if !inputs.ignore_exclude_lb && me.is_some_and(election::excluded_from_lb) {
        return Err(Skip::because(format!(
            "node {node:?} has the label {:?}",
            election::EXCLUDE_LB_LABEL
        )));
    }
    // MetalLB's `hasHealthyEndpoint`: an endpoint that can serve and has addresses.
    let healthy = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| !e.addresses.is_empty() && election::can_serve(e));
    if info.traffic_policy_local {
        if !healthy
            .clone()
            .any(|e| e.node_name.as_deref() == Some(node))
        {
            return Err(Skip::because(format!(
                "externalTrafficPolicy is Local and node {node:?} has no serving endpoint"
            )));
        }
    } else if healthy.clone().next().is_none() {
        return Err(Skip::because(
            "the Service has no serving endpoint".to_string(),
        ));
    }
    Ok(ads)
}

#[cfg(test)]
impl SessionSpec {
    /// What MetalLB's native defaults give an eBGP BGPPeer `router` at 203.0.113.1 (AS 64512)
    /// from a node in AS 64513.
    pub(crate) fn native_defaults() -> SessionSpec {
        SessionSpec {
            peer: "router".into(),
            my_asn: 64513,
            peer_asn: PeerAs::Fixed(64512),
            peer_address: IpAddr::from([203, 0, 113, 1]),
            peer_port: 179,
            source_address: None,
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            connect_time: None,
            router_id: None,
            ebgp_multihop: false,
            password_secret: None,
            has_password: false,
            vrf: None,
            disable_mp: false,
            dual_stack: false,
            graceful_restart: false,
            bfd_profile: None,
            bfd: None,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod route_tests;

#[cfg(test)]
mod proptests;
