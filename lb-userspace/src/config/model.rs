//! The validated configuration: what `config::build` produces from a snapshot of objects and what
//! `allocator` and `election` consume. Everything is resolved (selectors parsed, pool references
//! and namespace selectors resolved against the snapshot) so the consumers never see raw CRDs.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::selector::Selector;

/// A validated IPAddressPool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// Labels of the IPAddressPool object (for `ipAddressPoolSelectors`).
    pub labels: BTreeMap<String, String>,
    /// The `addresses` entries in written order; each entry is its minimal CIDR cover in
    /// ascending order (a CIDR entry is one net with host bits dropped).
    pub ranges: Vec<Vec<IpNet>>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub service_allocation: Option<ServiceAllocation>,
}

impl Pool {
    /// Every CIDR of the pool, in allocation order.
    pub fn cidrs(&self) -> impl Iterator<Item = &IpNet> {
        self.ranges.iter().flatten()
    }

    pub fn has_v4(&self) -> bool {
        self.cidrs().any(|n| matches!(n, IpNet::V4(_)))
    }

    pub fn has_v6(&self) -> bool {
        self.cidrs().any(|n| matches!(n, IpNet::V6(_)))
    }
}

/// A pool's `serviceAllocation`, with namespaceSelectors already resolved to names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// `priority`; 0 (unset) sorts after every positive priority.
    pub priority: i64,
    /// `namespaces` ∪ namespaces matched by `namespaceSelectors`. Empty means any namespace
    /// (MetalLB's quirk: selectors matching nothing also leave it empty).
    pub namespaces: BTreeSet<String>,
    /// `serviceSelectors`; empty means no service restriction.
    pub service_selectors: Vec<Selector>,
}

/// A validated L2Advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Advertisement {
    pub name: String,
    /// Names of the pools this advertisement applies to (resolved from names and selectors;
    /// all pools when both fields are empty).
    pub pools: BTreeSet<String>,
    /// Empty: all services.
    pub service_selectors: Vec<Selector>,
    /// Names of the Nodes selected by `nodeSelectors` (all Nodes when empty), resolved against
    /// the Node labels of the snapshot.
    pub nodes: BTreeSet<String>,
    /// Empty: all (eligible) interfaces.
    pub interfaces: Vec<String>,
    pub preferred_nodes: Vec<NodePreference>,
}

/// One `preferredNodeSelectors` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePreference {
    /// 1..=100.
    pub weight: i32,
    pub selector: Selector,
}

/// A validated BGPAdvertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub pools: BTreeSet<String>,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub local_pref: u32,
    /// Resolved community values (aliases replaced), sorted.
    pub communities: Vec<Community>,
    pub service_selectors: Vec<Selector>,
    pub nodes: BTreeSet<String>,
    /// Empty: all peers.
    pub peers: Vec<String>,
}

impl BgpAdvertisement {
    /// MetalLB's `BGPAdvertisementsHaveCompatibleLocalPref`: two advertisements of `pool` may
    /// differ in LOCAL_PREF only when their aggregation lengths differ (for the pool's
    /// families; both lengths for a dual-stack pool), their peer lists are both set and
    /// disjoint, or their node sets are disjoint. The parser applies it to advertisements
    /// without serviceSelectors; the speaker re-applies it per Service.
    pub fn local_pref_compatible(&self, other: &BgpAdvertisement, pool: &Pool) -> bool {
        if self.local_pref == other.local_pref {
            return true;
        }
        let v4_differs = self.aggregation_length != other.aggregation_length;
        let v6_differs = self.aggregation_length_v6 != other.aggregation_length_v6;
        let aggregation_differs = match (pool.has_v4(), pool.has_v6()) {
            (false, false) => true,
            (true, false) => v4_differs,
            (false, true) => v6_differs,
            (true, true) => v4_differs && v6_differs,
        };
        if aggregation_differs {
            return true;
        }
        if !self.peers.is_empty()
            && !other.peers.is_empty()
            && !self.peers.iter().any(|p| other.peers.contains(p))
        {
            return true;
        }
        self.nodes.is_disjoint(&other.nodes)
    }
}

/// A BGP community value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

/// A validated BGPPeer (v1beta2 semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub my_asn: u32,
    pub peer_asn: u32,
    pub dynamic_asn: Option<String>,
    pub peer_address: Option<std::net::IpAddr>,
    pub interface: Option<String>,
    pub source_address: Option<std::net::IpAddr>,
    pub peer_port: u16,
    /// Whole seconds; `None` when unset (native default 90 s applies at session time).
    pub hold_time_s: Option<u64>,
    pub keepalive_time_s: Option<u64>,
    pub router_id: Option<std::net::Ipv4Addr>,
    pub nodes: BTreeSet<String>,
    /// Whether a password (inline or secret) is configured; the value itself never lands here.
    pub has_password: bool,
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: bool,
    pub vrf: Option<String>,
    /// `localASN` (FRR modes): the ASN announced to this peer instead of `my_asn`.
    pub local_asn: Option<u32>,
    /// `connectTime` in whole seconds (FRR modes).
    pub connect_time_s: Option<u64>,
    pub enable_graceful_restart: bool,
    pub dual_stack_address_family: bool,
    /// Deprecated `disableMP` (FRR modes).
    pub disable_mp: bool,
    /// Name of the `passwordSecret` (its value is read by the speaker, never stored here).
    pub password_secret: Option<String>,
}

/// A validated BFDProfile (values in ms; `None` = FRR default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval: Option<u32>,
    pub transmit_interval: Option<u32>,
    pub echo_interval: Option<u32>,
    pub detect_multiplier: Option<u32>,
    pub minimum_ttl: Option<u32>,
    pub echo_mode: bool,
    pub passive_mode: bool,
}

/// The whole validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Pools by name.
    pub pools: BTreeMap<String, Pool>,
    pub l2_advertisements: Vec<L2Advertisement>,
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    pub peers: Vec<Peer>,
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
    /// Community aliases by name.
    pub communities: BTreeMap<String, Community>,
}

/// A peer as validated, with the spec it came from: for the rules that look at fields the
/// model does not keep (the mode rules, conflicts between peers).
pub(crate) struct ParsedPeer {
    pub peer: Peer,
    pub spec: crate::api::BGPPeerSpec,
}
