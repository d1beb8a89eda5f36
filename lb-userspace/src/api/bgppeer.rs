//! `BGPPeer`: v1beta2 (storage, what the parser reads) and the deprecated v1beta1 (served),
//! with MetalLB's v1beta1 → v1beta2 conversion.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;

/// `dynamicASN`: accept the peer's ASN as long as the session is iBGP or eBGP respectively.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsnMode {
    Internal,
    External,
}

/// A BGP session to open from the selected nodes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta2",
    kind = "BGPPeer",
    plural = "bgppeers",
    namespaced,
    status = "BGPPeerStatus",
    derive = "PartialEq",
    derive = "Default",
    storage = true,
    served = true,
    doc = "BGPPeer is the Schema for the peers API.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "string", json_path = ".spec.peerASN"),
    printcolumn(name = "BFD Profile", type_ = "string", json_path = ".spec.bfdProfile"),
    printcolumn(
        name = "Multi Hops",
        type_ = "string",
        json_path = ".spec.ebgpMultiHop"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// AS number of the local end (must be non-zero).
    #[serde(rename = "myASN")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32), extend("format" = "int64"))]
    pub my_asn: u32,
    /// AS number expected from the peer; exclusive with `dynamicASN`.
    #[serde(rename = "peerASN", default, skip_serializing_if = "is_zero_u32")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32), extend("format" = "int64"))]
    pub peer_asn: u32,
    /// AS number advertised to this peer instead of `myASN` (FRR modes only).
    #[serde(rename = "localASN", default, skip_serializing_if = "is_zero_u32")]
    #[schemars(range(min = 1, max = 4_294_967_295_u32), extend("format" = "int64"))]
    pub local_asn: u32,
    /// Detect the peer ASN (FRR modes only); exclusive with `peerASN`.
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsnMode>,
    /// Address to dial; exclusive with `interface`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_address: String,
    /// Interface for unnumbered BGP (FRR modes only); exclusive with `peerAddress`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Source address of the session.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_address: String,
    /// Port to dial (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16384), extend("default" = 179))]
    pub peer_port: Option<u16>,
    /// Requested hold time (Go duration, e.g. `90s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Requested keepalive time (FRR modes only when non-zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// Time between connection attempts, whole seconds 1..65535 (FRR modes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "connect time should be between 1 seconds to 65535",
         "rule": "duration(self).getSeconds() >= 1 && duration(self).getSeconds() <= 65535"},
        {"message": "connect time should contain a whole number of seconds",
         "rule": "duration(self).getMilliseconds() % 1000 == 0"}
    ]))]
    pub connect_time: Option<String>,
    /// BGP router ID to advertise.
    #[serde(rename = "routerID", default, skip_serializing_if = "String::is_empty")]
    pub router_id: String,
    /// Nodes that open this session; empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP-MD5 password; exclusive with `passwordSecret`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `kubernetes.io/basic-auth` Secret in MetalLB's namespace holding key `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Name of a BFDProfile (FRR modes only).
    #[serde(
        rename = "bfdProfile",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub bfd_profile: String,
    /// Graceful restart (FRR modes only); immutable.
    #[serde(default, skip_serializing_if = "is_false")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "EnableGracefulRestart cannot be changed after creation", "rule": "self == oldSelf"}
    ]))]
    pub enable_graceful_restart: bool,
    /// The peer is multiple hops away (rejected for iBGP).
    #[serde(rename = "ebgpMultiHop", default, skip_serializing_if = "is_false")]
    pub ebgp_multi_hop: bool,
    /// Host VRF the session runs in (FRR modes only).
    #[serde(rename = "vrf", default, skip_serializing_if = "String::is_empty")]
    pub vrf: String,
    /// Deprecated in favour of `dualStackAddressFamily` (FRR modes only).
    #[serde(rename = "disableMP", default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub disable_mp: bool,
    /// Carry both address families on this session (FRR modes only).
    #[serde(default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub dual_stack_address_family: bool,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Empty: MetalLB defines the status subresource but writes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BGPPeerStatus {}

/// The deprecated v1beta1 BGPPeer, served beside v1beta2.
pub mod v1beta1 {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::super::is_false;

    /// v1beta1 spec: `myASN`, `peerASN` and `peerAddress` are required.
    #[derive(
        CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
    )]
    #[kube(
        group = "metallb.io",
        version = "v1beta1",
        kind = "BGPPeer",
        plural = "bgppeers",
        namespaced,
        status = "super::BGPPeerStatus",
        derive = "PartialEq",
        derive = "Default",
        storage = false,
        served = true,
        deprecated = "v1beta1 is deprecated, please use v1beta2",
        doc = "BGPPeer is the Schema for the peers API.",
        printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
        printcolumn(name = "ASN", type_ = "string", json_path = ".spec.peerASN"),
        printcolumn(name = "BFD Profile", type_ = "string", json_path = ".spec.bfdProfile"),
        printcolumn(
            name = "Multi Hops",
            type_ = "string",
            json_path = ".spec.ebgpMultiHop"
        )
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        #[serde(rename = "myASN")]
        #[schemars(range(min = 0, max = 4_294_967_295_u32), extend("format" = "int64"))]
        pub my_asn: u32,
        #[serde(rename = "peerASN")]
        #[schemars(range(min = 0, max = 4_294_967_295_u32), extend("format" = "int64"))]
        pub peer_asn: u32,
        pub peer_address: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub source_address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 16384))]
        pub peer_port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        #[serde(rename = "routerID", default, skip_serializing_if = "String::is_empty")]
        pub router_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_selectors: Vec<NodeSelector>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub password: String,
        #[serde(
            rename = "bfdProfile",
            default,
            skip_serializing_if = "String::is_empty"
        )]
        pub bfd_profile: String,
        #[serde(rename = "ebgpMultiHop", default, skip_serializing_if = "is_false")]
        pub ebgp_multi_hop: bool,
    }

    /// The legacy node selector of v1beta1.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct NodeSelector {
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub match_labels: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub match_expressions: Vec<MatchExpression>,
    }

    /// A legacy match expression; `values` has at least one entry.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
    pub struct MatchExpression {
        pub key: String,
        pub operator: String,
        #[schemars(length(min = 1))]
        pub values: Vec<String>,
    }

    impl From<&NodeSelector> for LabelSelector {
        fn from(selector: &NodeSelector) -> Self {
            // MetalLB maps an empty legacy selector to the empty (match-all) selector.
            if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
                return LabelSelector::default();
            }
            LabelSelector {
                match_labels: Some(selector.match_labels.clone()),
                match_expressions: (!selector.match_expressions.is_empty()).then(|| {
                    selector
                        .match_expressions
                        .iter()
                        .map(|e| LabelSelectorRequirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: Some(e.values.clone()),
                        })
                        .collect()
                }),
            }
        }
    }

    /// MetalLB's conversion to the hub version: the fields are copied, an unset hold or
    /// keepalive time becomes an explicit zero duration, and the selectors are translated.
    impl From<BGPPeer> for super::BGPPeer {
        fn from(old: BGPPeer) -> Self {
            let spec = old.spec;
            super::BGPPeer {
                metadata: old.metadata,
                spec: super::BGPPeerSpec {
                    my_asn: spec.my_asn,
                    peer_asn: spec.peer_asn,
                    peer_address: spec.peer_address,
                    source_address: spec.source_address,
                    peer_port: spec.peer_port,
                    hold_time: Some(spec.hold_time.unwrap_or_else(|| "0s".to_string())),
                    keepalive_time: Some(spec.keepalive_time.unwrap_or_else(|| "0s".to_string())),
                    router_id: spec.router_id,
                    password: spec.password,
                    bfd_profile: spec.bfd_profile,
                    ebgp_multi_hop: spec.ebgp_multi_hop,
                    node_selectors: spec
                        .node_selectors
                        .iter()
                        .map(LabelSelector::from)
                        .collect(),
                    ..Default::default()
                },
                status: old.status,
            }
        }
    }
}
