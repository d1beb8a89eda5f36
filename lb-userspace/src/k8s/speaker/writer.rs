//! The speaker's writes, in the order it asked for them: ServiceL2Status objects, Events as
//! `metallb-speaker`, and its ConfigurationState. A task applies them so the API server never
//! delays the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

use super::{LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE, SPEAKER_COMPONENT, Watches};
use crate::api::{L2ServiceStatus, ServiceL2Status, ServiceL2StatusSpec};
use crate::k8s::events::{EventSink, Severity};
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, ExistingStatus, PlannedEvent, StatusAction};
use crate::speaker::reconcile::Write;

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
                    Err(e) if crate::k8s::is_not_found(&e) => Ok(None),
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
        let api = crate::k8s::metallb_api(
            client,
            &self.namespace,
            "ConfigurationState",
            "configurationstates",
        );
        let mut object = kube::api::DynamicObject::new(
            &name,
            &crate::k8s::metallb_resource("ConfigurationState", "configurationstates"),
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
        crate::k8s::writes::ensure_dynamic(&api, &object).await?;
        crate::k8s::writes::dynamic_status(&api, &name, status)
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

/// Applies the speaker's writes in order. A status write carries the whole desired set, so only
/// the latest queued one is applied (Events queued between are kept, and written after it).
/// Objects it created are remembered until the watch shows them, so a quick second pass does
/// not create duplicates.
pub async fn write_loop(
    writer: Writer,
    client: Client,
    mut writes: mpsc::UnboundedReceiver<Write>,
    watches: Arc<Watches>,
    metrics: Arc<SpeakerMetrics>,
) {
    let mut created: BTreeMap<String, ExistingStatus> = BTreeMap::new();
    while let Some(write) = writes.recv().await {
        match write {
            Write::ConfigState(errors, owner) => {
                configuration_state(&writer, &client, errors.as_deref(), owner.as_deref(), &metrics)
                    .await;
            }
            Write::Event(event, uid) => event_logged(&writer, &event, uid, &metrics).await,
            Write::Statuses(mut desired, mut owner) => {
                // Skip to the newest status write, keeping the Events in between.
                let mut events = Vec::new();
                while let Ok(next) = writes.try_recv() {
                    match next {
                        Write::Statuses(d, o) => {
                            desired = d;
                            owner = o;
                        }
                        Write::Event(e, u) => events.push((e, u)),
                        // Rare, and a receiver cannot re-queue: written now.
                        Write::ConfigState(errors, owner) => {
                            configuration_state(
                                &writer,
                                &client,
                                errors.as_deref(),
                                owner.as_deref(),
                                &metrics,
                            )
                            .await;
                        }
                    }
                }
                let listed = watches.existing_statuses();
                let listed_names: BTreeSet<String> =
                    listed.iter().map(|e| e.name.clone()).collect();
                created.retain(|name, _| !listed_names.contains(name));
                let mut existing = listed;
                existing.extend(created.values().cloned());
                for action in plan::status_actions(&existing, &desired) {
                    let result = writer.status(&action, owner.as_deref()).await;
                    match (&action, result) {
                        (
                            StatusAction::Create {
                                service_key,
                                status,
                            },
                            Ok(Some(name)),
                        ) => {
                            created.insert(
                                name.clone(),
                                ExistingStatus {
                                    name,
                                    service_key: Some(service_key.clone()),
                                    status: Some(status.clone()),
                                },
                            );
                        }
                        (StatusAction::Delete { name }, Ok(_)) => {
                            created.remove(name);
                        }
                        (_, Ok(_)) => {}
                        (action, Err(error)) => {
                            metrics.update_errors.inc();
                            tracing::warn!(?action, %error, "ServiceL2Status write failed");
                        }
                    }
                }
                for (event, uid) in events {
                    event_logged(&writer, &event, uid, &metrics).await;
                }
            }
        }
    }
}

async fn configuration_state(
    writer: &Writer,
    client: &Client,
    errors: Option<&str>,
    owner: Option<&Pod>,
    metrics: &SpeakerMetrics,
) {
    let now = format!("{:.0}", k8s_openapi::jiff::Timestamp::now());
    let status = plan::configuration_state_status(errors, &now);
    if let Err(error) = writer.configuration_state(client, status, owner).await {
        metrics.update_errors.inc();
        tracing::warn!(%error, "ConfigurationState write failed");
    }
}

async fn event_logged(
    writer: &Writer,
    event: &PlannedEvent,
    uid: Option<String>,
    metrics: &SpeakerMetrics,
) {
    if let Err(error) = writer.event(event, uid).await {
        metrics.update_errors.inc();
        tracing::warn!(service = %format!("{}/{}", event.namespace, event.name), reason = event.reason, %error, "recording event failed");
    }
}
