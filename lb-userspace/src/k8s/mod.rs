//! The only module that talks to the Kubernetes API server: client construction, watches
//! (reflectors), the writes the controller makes (Service status and annotation, pool status,
//! ConfigurationState, memberlist Secret), Events, and Lease leader election.
//!
//! Everything here is I/O with no allocation decisions; `controller` decides what to write and
//! reaches the API server only through [`controller::Cluster`] and its caches.

pub mod authz;
pub mod checked;
pub mod config_state;
pub mod controller;
pub mod events;
pub mod lease;
pub mod speaker;
pub mod writes;

use std::fmt::Debug;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;

/// The API group of MetalLB's (and Herald's) custom resources.
pub const METALLB_GROUP: &str = "metallb.io";
/// The version the controller reads and writes (IPAddressPool, Community, ConfigurationState).
pub const METALLB_VERSION: &str = "v1beta1";

/// Why talking to the API server could not even start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no usable Kubernetes configuration (no --kubeconfig, KUBECONFIG or in-cluster service account): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from an explicit kubeconfig file, else the usual inference (KUBECONFIG, then the
/// in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let wrap = |source| ClientError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(wrap)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(wrap)?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// The `ApiResource` of a metallb.io kind at the version the controller uses, so that reads and
/// writes of status do not depend on how the typed CRD structs evolve.
pub fn metallb_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: METALLB_GROUP.into(),
        version: METALLB_VERSION.into(),
        api_version: format!("{METALLB_GROUP}/{METALLB_VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Namespaced API for a metallb.io kind as dynamic objects.
pub fn metallb_api(
    client: &Client,
    namespace: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &metallb_resource(kind, plural))
}

/// Longest wait between two attempts to re-establish a failed watch, jitter included.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The retry policy of every watch: exponential from 500 ms, capped so that with jitter (up to
/// twice the delay) no wait exceeds [`WATCH_BACKOFF_MAX`], forever, reset after two quiet
/// minutes. kube's default caps at 30 s before jitter, so after an API server restart a watch
/// could stay down for a minute while Services wait; a controller watching a handful of
/// kinds can afford to knock every few seconds.
pub fn watch_backoff() -> impl Backoff {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(WATCH_BACKOFF_MAX / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(exponential),
        Duration::from_secs(120),
    )
}

/// What the caches keep of an object: everything but `managedFields`, which no decision reads
/// and which is often the largest part of an object (the speaker caches every Service, Node
/// and EndpointSlice of the cluster).
pub fn strip<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Starts a reflector (watch + local cache) on its own task. `on_event` sees every watch event
/// after the cache applied it; it must not block. Watch errors are retried with
/// [`watch_backoff`], forever: an API server that restarts or drops the watch only delays.
pub fn spawn_reflector<K, F>(api: Api<K>, dyntype: K::DynamicType, mut on_event: F) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
    F: FnMut(&watcher::Event<K>) + Send + 'static,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .backoff(watch_backoff())
            .modify(strip),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => on_event(&event),
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    store
}

/// A failed API call, as code outside `k8s` sees it: displayed as kube's error, classified by
/// [`ApiError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// A leader-only write refused because this replica's leadership has run out (its last
    /// renewal is older than the renew deadline): another replica may lead by now.
    #[error("not written: this replica no longer holds the lease")]
    NotLeading,
}

/// What a failed API call means to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the object does not exist (any more).
    NotFound,
    /// 409: it already exists, or the write carried a stale resourceVersion.
    Conflict,
    /// Anything else: the API server refused or could not be reached.
    Other,
    /// Not sent: this replica no longer leads.
    NotLeading,
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        let ApiError::Api(error) = self else {
            return ErrorKind::NotLeading;
        };
        match status_code(error) {
            Some(404) => ErrorKind::NotFound,
            Some(409) => ErrorKind::Conflict,
            _ => ErrorKind::Other,
        }
    }
}

/// Whether an API error is a 404 (the object does not exist).
pub fn is_not_found(error: &kube::Error) -> bool {
    status_code(error) == Some(404)
}

/// Whether an API error is a 409 (already exists, or a stale resourceVersion).
pub fn is_conflict(error: &kube::Error) -> bool {
    status_code(error) == Some(409)
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> ApiError {
        ApiError::Api(kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Reason").with_code(code),
        )))
    }

    #[test]
    fn caches_keep_no_managed_fields() {
        let mut service: k8s_openapi::api::core::v1::Service = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "s", "managedFields": [
                {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {}}}
            ]}}),
        )
        .unwrap();
        strip(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        assert_eq!(service.metadata.name.as_deref(), Some("s"));
    }

    #[test]
    fn api_errors_are_classified_by_status_code() {
        assert_eq!(api_error(404).kind(), ErrorKind::NotFound);
        assert_eq!(api_error(409).kind(), ErrorKind::Conflict);
        assert_eq!(api_error(500).kind(), ErrorKind::Other);
        assert_eq!(ApiError::NotLeading.kind(), ErrorKind::NotLeading);
        assert_eq!(api_error(403).kind(), ErrorKind::Other);
        let transport = ApiError::Api(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(transport.kind(), ErrorKind::Other);
    }

    /// However long a watch keeps failing, it is retried within the cap: the delays grow from
    /// the first one and never exceed [`WATCH_BACKOFF_MAX`] (jitter included).
    #[tokio::test]
    async fn watch_retries_grow_but_never_exceed_the_cap() {
        let mut backoff = watch_backoff();
        let delays: Vec<Duration> = (0..200).map_while(|_| backoff.next()).collect();
        assert_eq!(delays.len(), 200, "retries forever");
        assert!(delays.iter().all(|d| *d <= WATCH_BACKOFF_MAX), "{delays:?}");
        assert!(delays[0] < Duration::from_secs(1), "{delays:?}");
        assert!(
            delays[10..].iter().all(|d| *d >= WATCH_BACKOFF_MAX / 2),
            "grows to the cap: {delays:?}"
        );
    }
}
