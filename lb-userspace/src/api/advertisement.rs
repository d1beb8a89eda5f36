//! `L2Advertisement` and `BGPAdvertisement` (metallb.io/v1beta1): how pools are announced.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Announces the IPs of the selected pools over layer 2 (ARP/NDP).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    namespaced,
    status = "L2AdvertisementStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "L2Advertisement allows to advertise the LoadBalancer IPs provided by the selected pools via L2.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools advertised, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools advertised, by label. With `ipAddressPools` also empty: all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes allowed to announce; empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce from; empty: all interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services advertised; empty: all services of the selected pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Soft, weighted preferences for the announcing node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A weighted soft node preference (like PreferredSchedulingTerm).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// 1..=100; weights of all matching entries are summed per node.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// Nodes receiving this weight; the empty selector matches every node.
    pub preference: LabelSelector,
}

/// Empty: MetalLB defines the status subresource but writes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct L2AdvertisementStatus {}

/// Announces the IPs of the selected pools to BGP peers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    namespaced,
    status = "BGPAdvertisementStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "BGPAdvertisement allows to advertise the IPs coming from the selected IPAddressPools via BGP, setting the parameters of the BGP Advertisement.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "serviceSelectors and aggregationLength are mutually exclusive, can only be used together with default aggregationLength (32) and aggregationLengthV6 (128)",
    "rule": "!has(self.serviceSelectors) || self.serviceSelectors.size() == 0 || ((!has(self.aggregationLength) || self.aggregationLength == 32) && (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))"
}]))]
pub struct BGPAdvertisementSpec {
    /// Prefix length the IPv4 /32s are rolled up into (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_147_483_647), extend("default" = 32))]
    pub aggregation_length: Option<i32>,
    /// Prefix length the IPv6 /128s are rolled up into (default 128).
    #[serde(
        rename = "aggregationLengthV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = -2_147_483_648, max = 2_147_483_647), extend("default" = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// BGP LOCAL_PREF (sent to iBGP peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // MetalLB's schema says int32 for this uint32, which kube-apiserver 1.37 refuses with a
    // uint32 bound: int64, bounded to what it decodes into.
    #[schemars(range(min = 0, max = 4_294_967_295_u32), extend("format" = "int64"))]
    pub local_pref: Option<u32>,
    /// `A:B`, `large:A:B:C` or the name of a Community alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Pools advertised, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools advertised, by label. With `ipAddressPools` also empty: all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes announcing; empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeer names to announce to; empty: all peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Services advertised; only with the default aggregation lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// Empty: MetalLB defines the status subresource but writes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BGPAdvertisementStatus {}
