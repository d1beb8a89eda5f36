//! The `metallb.io` API types, field for field as MetalLB's, with kube's `CustomResource`
//! derive so the same structs give the CRD manifests (`crds()`) and the typed objects the
//! configuration builder reads.

// kube's `printcolumn(name = .., type_ = ..)` attributes repeat keys inside separate lists;
// clippy's duplicated_attributes mistakes those for one attribute written twice.
#![allow(clippy::duplicated_attributes)]

mod advertisement;
mod bgppeer;
mod community;
mod ipaddresspool;
mod status;

#[cfg(test)]
mod tests;

pub use advertisement::*;
pub use bgppeer::v1beta1;
pub use bgppeer::{BGPPeer, BGPPeerSpec, BGPPeerStatus, DynamicAsnMode};
pub use community::*;
pub use ipaddresspool::*;
pub use status::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kind here.
pub const GROUP: &str = "metallb.io";

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// Every CRD, with the file name `cargo xtask manifests` writes it to (MetalLB's names).
/// BGPPeer carries both versions (v1beta2 storage, v1beta1 served and deprecated).
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let bgppeer =
        kube::core::crd::merge_crds(vec![v1beta1::BGPPeer::crd(), BGPPeer::crd()], "v1beta2")
            // Both inputs are generated from this crate's types with the same names and scope.
            .unwrap_or_else(|e| panic!("BGPPeer versions disagree: {e}"));
    let mut all = vec![
        ("metallb.io_bfdprofiles.yaml", BFDProfile::crd(), false),
        (
            "metallb.io_bgpadvertisements.yaml",
            BGPAdvertisement::crd(),
            false,
        ),
        ("metallb.io_bgppeers.yaml", bgppeer, false),
        ("metallb.io_communities.yaml", Community::crd(), false),
        (
            "metallb.io_configurationstates.yaml",
            ConfigurationState::crd(),
            false,
        ),
        ("metallb.io_ipaddresspools.yaml", IPAddressPool::crd(), true),
        (
            "metallb.io_l2advertisements.yaml",
            L2Advertisement::crd(),
            false,
        ),
        (
            "metallb.io_servicebgpstatuses.yaml",
            ServiceBGPStatus::crd(),
            false,
        ),
        (
            "metallb.io_servicel2statuses.yaml",
            ServiceL2Status::crd(),
            false,
        ),
    ];
    all.iter_mut()
        .map(|(file, crd, spec_required)| {
            finish(crd, *spec_required);
            (*file, crd.clone())
        })
        .collect()
}

/// Every CRD rendered as the YAML text of its manifest file, headed by a comment saying where
/// it comes from. `cargo xtask manifests` writes these; a test compares them with the files.
pub fn crd_manifests() -> Result<Vec<(&'static str, String)>, serde_saphyr::SerializeError> {
    crds()
        .into_iter()
        .map(|(file, crd)| {
            let body = crate::yaml::to_string(&crd)?;
            Ok((file, format!("{MANIFEST_HEADER}---\n{body}")))
        })
        .collect()
}

/// First line of every generated CRD manifest.
pub const MANIFEST_HEADER: &str =
    "# Generated from lb-userspace/src/api by `cargo xtask manifests`; do not edit.\n";

/// Brings the generated schemas to what controller-gen emits for MetalLB: no `nullable`
/// (Go omits unset fields instead of writing null), no Rust-only integer formats, and `spec`
/// required only where MetalLB requires it (an L2Advertisement without spec is common).
fn finish(crd: &mut CustomResourceDefinition, spec_required: bool) {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut value = serde_json::to_value(&*schema).unwrap_or_default();
        clean_schema(&mut value);
        if !spec_required
            && let Some(required) = value.get_mut("required").and_then(|r| r.as_array_mut())
        {
            required.retain(|r| r != "spec");
            if required.is_empty() {
                value.as_object_mut().map(|o| o.remove("required"));
            }
        }
        if let Ok(cleaned) = serde_json::from_value(value) {
            *schema = cleaned;
        }
    }
}

fn clean_schema(value: &mut serde_json::Value) {
    const STANDARD_FORMATS: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "date-time",
        "date",
        "duration",
    ];
    match value {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            // `Option<enum>` lists `null` among the values; unset is expressed by omission.
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            mark_apimachinery_types(map);
            for (key, child) in map.iter_mut() {
                // `default` and `enum` hold data, not schemas.
                if key != "default" && key != "enum" && key != "x-kubernetes-validations" {
                    clean_schema(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_schema),
        _ => {}
    }
}

/// The markers Kubernetes puts on its own types, which k8s-openapi's schemas lack but
/// controller-gen copies into MetalLB's CRDs: label selectors and secret references are
/// atomic for server-side apply, and `metav1.Condition` fields are validated.
fn mark_apimachinery_types(map: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::json;
    let Some(properties) = map.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    let has = |names: &[&str]| names.iter().all(|n| properties.contains_key(*n));
    // MetalLB's own legacy selector (v1beta1 BGPPeer, `values` with minItems) has no markers.
    let legacy_selector = properties
        .get("matchExpressions")
        .and_then(|m| m.pointer("/items/properties/values/minItems"))
        .is_some();
    let is_selector =
        properties.len() == 2 && has(&["matchLabels", "matchExpressions"]) && !legacy_selector;
    let is_secret_reference = properties.len() == 2 && has(&["name", "namespace"]);
    let is_condition = has(&["lastTransitionTime", "message", "reason", "status", "type"]);
    if is_selector || is_secret_reference {
        map.insert("x-kubernetes-map-type".into(), json!("atomic"));
    }
    let Some(properties) = map.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let mut set = |path: &[&str], key: &str, value: serde_json::Value| {
        let mut node = Some(&mut *properties);
        for (i, step) in path.iter().enumerate() {
            let next = node.and_then(|n| n.get_mut(*step));
            node = if i + 1 == path.len() {
                next.and_then(|n| n.as_object_mut())
            } else {
                next.and_then(|n| n.pointer_mut("/items/properties"))
                    .and_then(|n| n.as_object_mut())
            };
        }
        if let Some(node) = node {
            node.insert(key.into(), value);
        }
    };
    if is_selector {
        set(
            &["matchExpressions"],
            "x-kubernetes-list-type",
            json!("atomic"),
        );
        set(
            &["matchExpressions", "values"],
            "x-kubernetes-list-type",
            json!("atomic"),
        );
    }
    if is_condition {
        set(&["message"], "maxLength", json!(32768));
        set(&["observedGeneration"], "minimum", json!(0));
        set(&["reason"], "maxLength", json!(1024));
        set(&["reason"], "minLength", json!(1));
        set(
            &["reason"],
            "pattern",
            json!("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        );
        set(&["status"], "enum", json!(["True", "False", "Unknown"]));
        set(&["type"], "maxLength", json!(316));
        set(
            &["type"],
            "pattern",
            json!(
                "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
            ),
        );
    }
}
