//! The speaker's Kubernetes side: the watches it decides from (Services, EndpointSlices, Nodes,
//! Namespaces, IPAddressPools, L2Advertisements, speaker Pods, the memberlist Secret and its own
//! ServiceL2Status objects) and its writes (ServiceL2Status, Events as `metallb-speaker`).
//! No decisions here: `speaker::plan` decides, this module lists and writes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

use crate::api::{self, L2ServiceStatus, ServiceL2Status, ServiceL2StatusSpec};
use crate::speaker::plan::{ExistingStatus, PlannedEvent, StatusAction};

use super::events::{EventSink, Severity};

/// The component name on the speaker's Events (MetalLB's).
pub const SPEAKER_COMPONENT: &str = "metallb-speaker";
/// ServiceL2Status labels (MetalLB's).
pub const LABEL_NODE: &str = "metallb.io/node";
pub const LABEL_SERVICE_NAME: &str = "metallb.io/service-name";
pub const LABEL_SERVICE_NAMESPACE: &str = "metallb.io/service-namespace";
/// The key of the memberlist Secret holding the shared secret.
pub const SECRET_KEY: &str = "secretkey";

/// What to watch.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// MetalLB's namespace: pools, advertisements, speaker Pods, the Secret, ServiceL2Status.
    pub namespace: String,
    pub node: String,
    /// Label selector of the speaker Pods (`--ml-labels`); `None`: no peer discovery.
    pub ml_labels: Option<String>,
    /// Name of the memberlist Secret; `None`: not watched.
    pub ml_secret_name: Option<String>,
}

/// Local caches of every watched kind; `changed` wakes the speaker after any event.
pub struct Watches {
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    pub pools: Store<api::IPAddressPool>,
    pub l2_advertisements: Store<api::L2Advertisement>,
    pub pods: Option<Store<Pod>>,
    pub secrets: Option<Store<Secret>>,
    pub l2_statuses: Store<ServiceL2Status>,
    pub changed: Arc<Notify>,
}

fn spawn<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let writer = reflector::store::Writer::new(Default::default());
    let store = writer.as_reader();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, config).backoff(super::watch_backoff()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    store
}

impl Watches {
    /// Starts every watch on its own task.
    pub fn start(client: &Client, options: &WatchOptions) -> Watches {
        let changed = Arc::new(Notify::new());
        let ns = options.namespace.as_str();
        let all = watcher::Config::default;
        Watches {
            services: spawn(Api::all(client.clone()), all(), changed.clone()),
            endpoint_slices: spawn(Api::all(client.clone()), all(), changed.clone()),
            nodes: spawn(Api::all(client.clone()), all(), changed.clone()),
            namespaces: spawn(Api::all(client.clone()), all(), changed.clone()),
            pools: spawn(Api::namespaced(client.clone(), ns), all(), changed.clone()),
            l2_advertisements: spawn(Api::namespaced(client.clone(), ns), all(), changed.clone()),
            pods: options.ml_labels.as_ref().map(|labels| {
                spawn(
                    Api::namespaced(client.clone(), ns),
                    all().labels(labels),
                    changed.clone(),
                )
            }),
            secrets: options.ml_secret_name.as_ref().map(|name| {
                spawn(
                    Api::namespaced(client.clone(), ns),
                    all().fields(&format!("metadata.name={name}")),
                    changed.clone(),
                )
            }),
            l2_statuses: spawn(
                Api::namespaced(client.clone(), ns),
                all().labels(&format!("{LABEL_NODE}={}", options.node)),
                changed.clone(),
            ),
            changed,
        }
    }

    /// Waits until every cache holds its initial list.
    pub async fn wait_ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.endpoint_slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.pools.wait_until_ready().await;
        let _ = self.l2_advertisements.wait_until_ready().await;
        let _ = self.l2_statuses.wait_until_ready().await;
        if let Some(pods) = &self.pods {
            let _ = pods.wait_until_ready().await;
        }
        if let Some(secrets) = &self.secrets {
            let _ = secrets.wait_until_ready().await;
        }
    }

    /// The shared secret from the memberlist Secret, if present.
    pub fn secret_key(&self) -> Option<Vec<u8>> {
        let secrets = self.secrets.as_ref()?;
        secrets.state().iter().find_map(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .map(|v| v.0.clone())
                .or_else(|| {
                    s.string_data
                        .as_ref()
                        .and_then(|d| d.get(SECRET_KEY))
                        .map(|v| v.as_bytes().to_vec())
                })
        })
    }

    /// Addresses of the speaker Pods (status.podIP) other than this node's, as MetalLB seeds
    /// memberlist.
    pub fn peer_ips(&self) -> Vec<IpAddr> {
        let Some(pods) = &self.pods else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = pods
            .state()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// This node's speaker Pod (owner of its ServiceL2Status objects), when listed.
    pub fn own_pod(&self, node: &str) -> Option<Arc<Pod>> {
        self.pods.as_ref()?.state().into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        })
    }

    /// This node's ServiceL2Status objects, for [`crate::speaker::plan::status_actions`].
    pub fn existing_statuses(&self) -> Vec<ExistingStatus> {
        self.l2_statuses
            .state()
            .iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let labels = s.metadata.labels.clone().unwrap_or_default();
                let service_key = match (
                    labels.get(LABEL_SERVICE_NAMESPACE),
                    labels.get(LABEL_SERVICE_NAME),
                ) {
                    (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
                    _ => None,
                };
                Some(ExistingStatus {
                    name,
                    service_key,
                    status: s.status.clone(),
                })
            })
            .collect()
    }
}

/// Writes ServiceL2Status objects and Events for one node.
#[derive(Clone)]
pub struct Writer {
    statuses: Api<ServiceL2Status>,
    namespace: String,
    node: String,
    events: EventSink,
}

impl Writer {
    pub fn new(client: &Client, namespace: &str, node: &str) -> Writer {
        Writer {
            statuses: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            node: node.to_string(),
            events: EventSink::new(client.clone(), SPEAKER_COMPONENT, node),
        }
    }

    /// Applies one status action. `owner` is this node's speaker Pod (MetalLB's owner).
    /// Returns the generated name of a created object.
    pub async fn status(
        &self,
        action: &StatusAction,
        owner: Option<&Pod>,
    ) -> Result<Option<String>, kube::Error> {
        match action {
            StatusAction::Create {
                service_key,
                status,
            } => {
                let (svc_ns, svc_name) = service_key.split_once('/').unwrap_or(("", service_key));
                let labels: BTreeMap<String, String> = [
                    (LABEL_NODE.to_string(), self.node.clone()),
                    (LABEL_SERVICE_NAME.to_string(), svc_name.to_string()),
                    (LABEL_SERVICE_NAMESPACE.to_string(), svc_ns.to_string()),
                ]
                .into();
                let owner_references = owner.and_then(owner_reference).map(|o| vec![o]);
                let object = ServiceL2Status {
                    metadata: ObjectMeta {
                        generate_name: Some("l2-".into()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(labels),
                        owner_references,
                        ..ObjectMeta::default()
                    },
                    spec: ServiceL2StatusSpec {},
                    status: None,
                };
                let created = self
                    .statuses
                    .create(&PostParams::default(), &object)
                    .await?;
                let name = created.metadata.name.unwrap_or_default();
                self.write_status(&name, status).await?;
                Ok(Some(name))
            }
            StatusAction::UpdateStatus { name, status } => {
                self.write_status(name, status).await.map(|()| None)
            }
            StatusAction::Delete { name } => {
                match self.statuses.delete(name, &DeleteParams::default()).await {
                    Err(e) if super::is_not_found(&e) => Ok(None),
                    other => other.map(|_| None),
                }
            }
        }
    }

    async fn write_status(&self, name: &str, status: &L2ServiceStatus) -> Result<(), kube::Error> {
        let patch = json!({ "status": status });
        self.statuses
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Records a planned Event on its Service (`uid` from the watch cache when known).
    pub async fn event(
        &self,
        event: &PlannedEvent,
        uid: Option<String>,
    ) -> Result<(), kube::Error> {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(event.name.clone()),
            namespace: Some(event.namespace.clone()),
            uid,
            ..ObjectReference::default()
        };
        let severity = if event.warning {
            Severity::Warning
        } else {
            Severity::Normal
        };
        self.events
            .publish_ref(
                regarding,
                severity,
                event.reason,
                "Announce",
                &event.message,
            )
            .await
    }
}

impl Writer {
    /// Creates `ConfigurationState speaker-<node>` when absent (labels
    /// `metallb.io/component-type=speaker`, `metallb.io/node-name`, owner = speaker Pod) and
    /// writes its status.
    pub async fn configuration_state(
        &self,
        client: &Client,
        status: serde_json::Value,
        owner: Option<&Pod>,
    ) -> Result<(), kube::Error> {
        let name = format!("speaker-{}", self.node);
        let api = super::metallb_api(
            client,
            &self.namespace,
            "ConfigurationState",
            "configurationstates",
        );
        let mut object = kube::api::DynamicObject::new(
            &name,
            &super::metallb_resource("ConfigurationState", "configurationstates"),
        )
        .within(&self.namespace);
        object.metadata.labels = Some(BTreeMap::from([
            (
                "metallb.io/component-type".to_string(),
                "speaker".to_string(),
            ),
            ("metallb.io/node-name".to_string(), self.node.clone()),
        ]));
        object.metadata.owner_references = owner.and_then(owner_reference).map(|o| vec![o]);
        super::writes::ensure_dynamic(&api, &object).await?;
        super::writes::dynamic_status(&api, &name, status)
            .await
            .map(|_| ())
    }
}

fn owner_reference(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}
