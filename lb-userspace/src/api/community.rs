//! `Community` and `BFDProfile` (metallb.io/v1beta1): named values the BGP objects refer to.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A collection of aliases for BGP communities, usable in BGPAdvertisement.communities.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    namespaced,
    status = "CommunityStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Community is a collection of aliases for communities. Users can define named aliases to be used in the BGPPeer CRD."
)]
pub struct CommunitySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// One alias: a name and a standard (`A:B`) or large (`large:A:B:C`) community value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommunityAlias {
    /// The name of the alias.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The community value the alias stands for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Empty: MetalLB defines the status subresource but writes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommunityStatus {}

/// BFD session settings a BGPPeer can refer to (FRR modes only). Intervals in ms.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    namespaced,
    status = "BFDProfileStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "BFDProfile represents the settings of the bfd session that can be optionally associated with a BGP session.",
    printcolumn(
        name = "Passive Mode",
        type_ = "boolean",
        json_path = ".spec.passiveMode"
    ),
    printcolumn(
        name = "Transmit Interval",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(
        name = "Receive Interval",
        type_ = "integer",
        json_path = ".spec.receiveInterval"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Minimum receive interval in ms (FRR default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000), extend("format" = "int32"))]
    pub receive_interval: Option<u32>,
    /// Minimum transmit interval in ms (FRR default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000), extend("format" = "int32"))]
    pub transmit_interval: Option<u32>,
    /// Detection multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255), extend("format" = "int32"))]
    pub detect_multiplier: Option<u32>,
    /// Minimum echo receive interval in ms (FRR default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000), extend("format" = "int32"))]
    pub echo_interval: Option<u32>,
    /// Echo transmission mode (not for multi-hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Wait for the peer's control packets before replying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// Multi-hop only: minimum expected incoming TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254), extend("format" = "int32"))]
    pub minimum_ttl: Option<u32>,
}

/// Empty: MetalLB defines the status subresource but writes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BFDProfileStatus {}
