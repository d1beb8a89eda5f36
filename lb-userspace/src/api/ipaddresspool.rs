//! `IPAddressPool` (metallb.io/v1beta1): the addresses Herald hands out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;

/// A pool of IP addresses that can be allocated to LoadBalancer services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "IPAddressPool represents a pool of IP addresses that can be allocated to LoadBalancer services.",
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(
        name = "Avoid Buggy IPs",
        type_ = "boolean",
        json_path = ".spec.avoidBuggyIPs"
    ),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses")
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// IP ranges over which MetalLB has authority: CIDR prefixes or `start-end` ranges.
    pub addresses: Vec<String>,
    /// When false, the pool is never used for automatic allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub auto_assign: Option<bool>,
    /// Prevents addresses ending with .0 and .255 from being used.
    #[serde(rename = "avoidBuggyIPs", default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to namespaces and/or services, with a priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which services a pool is for, and how strongly it is preferred.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower values are tried first; 0 (unset) sorts after every positive priority.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    // Go `int` (64 bits): no format and no bounds in MetalLB's schema, and every value the API
    // server stores for it decodes here.
    #[schemars(schema_with = "plain_integer")]
    pub priority: i64,
    /// Namespaces whose services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces selected by label, unioned with `namespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services selected by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

fn plain_integer(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer" })
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Counters written by the controller.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// Number of assigned IPv4 addresses.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// Number of assigned IPv6 addresses.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// Number of available IPv4 addresses.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// Number of available IPv6 addresses.
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,
}
