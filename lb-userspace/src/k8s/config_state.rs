//! ConfigurationState (metallb.io/v1beta1): what a component last concluded about the
//! configuration, as MetalLB's components report it. The controller keeps `controller`, each
//! speaker `speaker-<node>`; both build the status with
//! [`ConfigurationStateStatus::reported`] and write it with [`write`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};

use crate::api::{ConfigurationState, ConfigurationStateFields, ConfigurationStateStatus};

/// The label naming the component that keeps the object (`controller`, `speaker`).
pub const LABEL_COMPONENT_TYPE: &str = "metallb.io/component-type";
/// The label naming a speaker's node.
pub const LABEL_NODE_NAME: &str = "metallb.io/node-name";

/// Creates ConfigurationState `name` in `namespace` with `labels` and `owner` unless it exists
/// (an existing object keeps its own), then writes `status` to its status subresource as one
/// JSON merge patch ([`status_patch`]). Needs `create` on `configurationstates` and `patch` on
/// `configurationstates/status`, which both the controller's and the speakers' RBAC grant.
pub async fn write(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    status: ConfigurationStateStatus,
) -> Result<(), kube::Error> {
    let api: Api<ConfigurationState> = Api::namespaced(client.clone(), namespace);
    let mut object = ConfigurationState::new(name, ConfigurationStateFields {});
    object.metadata.namespace = Some(namespace.to_string());
    object.metadata.labels = Some(labels);
    object.metadata.owner_references = owner.map(|o| vec![o]);
    match api.create(&PostParams::default(), &object).await {
        Err(e) if !super::is_conflict(&e) => return Err(e),
        _ => {}
    }
    let patch = status_patch(&status);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// The merge patch that makes an object's status `status`, whole: a field the typed status
/// leaves out would otherwise keep its previous value, so it is written out too, `errorSummary`
/// as an empty string (a summary from an earlier invalid configuration goes away) and the
/// others as null (removed).
pub fn status_patch(status: &ConfigurationStateStatus) -> Value {
    let mut fields = match serde_json::to_value(status) {
        Ok(Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    fields.entry("result").or_insert(Value::Null);
    fields
        .entry("errorSummary")
        .or_insert_with(|| Value::String(String::new()));
    fields.entry("conditions").or_insert(Value::Null);
    json!({ "status": fields })
}

/// A reference to ConfigurationState `name`, for Events about it.
pub fn reference(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(ConfigurationState::api_version(&()).into_owned()),
        kind: Some(ConfigurationState::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field is written (an empty summary as ""), and the transition time to the second
    /// as MetalLB writes it (`controller::plan` checks whole statuses).
    #[test]
    fn status_patch_writes_every_field() {
        let now = "2026-01-01T00:00:00.75Z".parse().unwrap();
        let valid = ConfigurationStateStatus::reported("poolReconcilerValid", None, now);
        let patch = status_patch(&valid);
        let written = patch["status"].as_object().unwrap();
        let mut fields: Vec<&str> = written.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["conditions", "errorSummary", "result"]);
        assert_eq!(written["result"], "Valid");
        assert_eq!(written["errorSummary"], "");
        assert_eq!(
            written["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert!(written["conditions"][0].get("observedGeneration").is_none());
    }

    #[test]
    fn status_patch_clears_what_the_status_leaves_out() {
        assert_eq!(
            status_patch(&ConfigurationStateStatus::default()),
            json!({"status": {"result": null, "errorSummary": "", "conditions": null}})
        );
    }

    #[test]
    fn references_name_the_metallb_kind() {
        let r = reference("metallb-system", "controller");
        assert_eq!(r.api_version.as_deref(), Some("metallb.io/v1beta1"));
        assert_eq!(r.kind.as_deref(), Some("ConfigurationState"));
        assert_eq!(r.name.as_deref(), Some("controller"));
        assert_eq!(r.namespace.as_deref(), Some("metallb-system"));
        assert_eq!(r.uid, None);
    }
}
