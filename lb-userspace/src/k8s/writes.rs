//! The writes the controller makes. Each is a JSON merge patch of exactly the fields the
//! controller owns, so concurrent edits of other fields by users are never overwritten.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Sends a JSON merge patch to a Service's status subresource. The API server applies its
/// `status` and `metadata` (labels, annotations) and ignores `spec`, so the controller's ingress
/// and pool annotation change in one write (see `controller::plan::service_patch`).
pub async fn service_status_patch(
    api: &Api<Service>,
    name: &str,
    patch: &Value,
) -> Result<Service, kube::Error> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// Merges `status` into a metallb.io object's status subresource.
pub async fn dynamic_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> Result<DynamicObject, kube::Error> {
    let patch = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Creates a metallb.io object with only metadata if it does not exist yet.
pub async fn ensure_dynamic(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<(), kube::Error> {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(e) if super::is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The memberlist key: 16 random bytes, base64 without padding (22 characters), as MetalLB's
/// controller generates it; the speakers use the string itself as key material.
pub fn memberlist_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
}

/// Why the memberlist Secret could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    #[error("no randomness for the memberlist key: {0}")]
    Random(getrandom::Error),
    #[error("Deployment {0} has no uid")]
    NoUid(String),
}

/// Creates Secret `name` (key `secretkey`) in `namespace` unless it exists; owned by Deployment
/// `owner` when given, so it goes away with the installation. Returns whether it was created.
pub async fn ensure_memberlist_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    owner: Option<&str>,
) -> Result<bool, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if secrets.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let owner_references = match owner {
        Some(deployment) => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let found = deployments.get(deployment).await?;
            let uid = found
                .uid()
                .ok_or_else(|| SecretError::NoUid(deployment.to_string()))?;
            Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: deployment.to_string(),
                uid,
                ..Default::default()
            }])
        }
        None => None,
    };
    let key = memberlist_key().map_err(SecretError::Random)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            owner_references,
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "secretkey".to_string(),
            ByteString(key.into_bytes()),
        )])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        Err(e) if super::is_conflict(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberlist_key_is_16_bytes_base64_without_padding() {
        let a = memberlist_key().unwrap();
        let b = memberlist_key().unwrap();
        assert_eq!(a.len(), 22);
        assert!(!a.contains('='));
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(decoded.len(), 16);
        assert_ne!(a, b, "two keys must differ (random)");
    }
}
