//! Status-only kinds (metallb.io/v1beta1): ServiceL2Status and ServiceBGPStatus (written by
//! speakers) and ConfigurationState (written by the controller and speakers), and what the two
//! per-(node, Service) kinds have in common ([`ServiceStatus`], [`ExistingStatus`]).

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Empty spec: these objects only carry status.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    namespaced,
    status = "L2ServiceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ServiceL2Status reveals the actual traffic status of loadbalancer services in layer2 mode.",
    printcolumn(name = "Allocated Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    )
)]
pub struct ServiceL2StatusSpec {}

/// Which node announces a service over layer 2, and on which interfaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2ServiceStatus {
    /// The node that receives the traffic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub node: String,
    /// The service this status is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub service_name: String,
    /// The namespace of the service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub service_namespace: String,
    /// Listed only when the announcement is restricted to named interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// A network interface that receives the traffic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct InterfaceInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Empty spec: these objects only carry status.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    plural = "servicebgpstatuses",
    namespaced,
    status = "BgpServiceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ServiceBGPStatus exposes the BGP peers a service is configured to be advertised to, per relevant node.",
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    )
)]
pub struct ServiceBGPStatusSpec {}

/// Which BGPPeers a node is configured to advertise a service to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpServiceStatus {
    /// The node announcing the service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub node: String,
    /// The service this status is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub service_name: String,
    /// The namespace of the service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "Value is immutable", "rule": "self == oldSelf"}]))]
    pub service_namespace: String,
    /// Sorted BGPPeer names (configured, not necessarily established).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// ConfigurationState has no spec: the object is `metadata` plus `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ConfigurationState",
    plural = "configurationstates",
    namespaced,
    no_spec,
    status = "ConfigurationStateStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ConfigurationState is a status-only CRD that reports configuration validation results from MetalLB components.",
    printcolumn(name = "Result", type_ = "string", json_path = ".status.result"),
    printcolumn(
        name = "ErrorSummary",
        type_ = "string",
        json_path = ".status.errorSummary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ConfigurationStateFields {}

/// Outcome of the last configuration reconcile.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigurationResult {
    Valid,
    Invalid,
    Unknown,
}

/// What a component last concluded about the configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStateStatus {
    /// Valid, Invalid or Unknown (no conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ConfigurationResult>,
    /// Messages of the failing conditions, one per line; empty when valid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_summary: String,
    /// One condition per reconciler, keyed by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl ConfigurationStateStatus {
    /// The status a MetalLB component writes after parsing the configuration: `result`,
    /// `errorSummary` and the one condition `condition_type` of its reconciler, transited `now`.
    /// `errors` is `None` when the configuration was accepted, else the summary of its errors.
    pub fn reported(condition_type: &str, errors: Option<&str>, now: Timestamp) -> Self {
        let (result, status, reason) = match errors {
            None => (ConfigurationResult::Valid, "True", "Reconciled"),
            Some(_) => (ConfigurationResult::Invalid, "False", "ConfigurationError"),
        };
        let summary = errors.unwrap_or_default();
        ConfigurationStateStatus {
            result: Some(result),
            error_summary: summary.to_string(),
            conditions: vec![Condition {
                type_: condition_type.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: summary.to_string(),
                last_transition_time: Time(now),
                observed_generation: None,
            }],
        }
    }
}

/// The status of one per-(node, Service) object kind. `node`, `serviceName` and
/// `serviceNamespace` are immutable (CEL); anything else may be updated in place.
pub trait ServiceStatus: Clone + Debug + Default + PartialEq {
    /// The kind, for logs.
    const KIND: &'static str;
    /// `(node, serviceName, serviceNamespace)`.
    fn identity(&self) -> (&str, &str, &str);
}

impl ServiceStatus for L2ServiceStatus {
    const KIND: &'static str = "ServiceL2Status";
    fn identity(&self) -> (&str, &str, &str) {
        (&self.node, &self.service_name, &self.service_namespace)
    }
}

impl ServiceStatus for BgpServiceStatus {
    const KIND: &'static str = "ServiceBGPStatus";
    fn identity(&self) -> (&str, &str, &str) {
        (&self.node, &self.service_name, &self.service_namespace)
    }
}

/// A status object of this node as listed from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingStatus<S> {
    pub name: String,
    /// From the labels `metallb.io/service-namespace` / `metallb.io/service-name`.
    pub service_key: Option<String>,
    pub status: Option<S>,
}
