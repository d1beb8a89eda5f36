//! The speaker's API writes, applied in the order reconcile queued them, on a task of their own
//! so the API server never delays the data plane. A status write applies the newest desired sets
//! (ServiceL2Status and ServiceBGPStatus) pending when the writer gets to it, however many passes
//! replaced them meanwhile. Objects it created are remembered, per kind, until the watch shows
//! them, so a quick second pass does not create duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use crate::api::{ServiceBGPStatus, ServiceL2Status};
use crate::k8s::speaker::{ServiceEvent, StatusKind, Watches, Writer};
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, PlannedEvent};
use crate::speaker::reconcile::{PeerEvent, PendingStatuses, Write};
use crate::speaker::status::{self, ExistingStatus, ServiceStatus, StatusAction};

/// Applies `writes` until the sender goes away.
pub async fn write_loop(
    writer: Writer,
    mut writes: mpsc::UnboundedReceiver<Write>,
    pending: PendingStatuses,
    watches: Arc<Watches>,
    metrics: Arc<SpeakerMetrics>,
) {
    let mut l2: Kept<ServiceL2Status> = Kept::default();
    let mut bgp: Kept<ServiceBGPStatus> = Kept::default();
    while let Some(write) = writes.recv().await {
        match write {
            Write::ConfigState(errors, owner) => {
                configuration_state(&writer, errors.as_deref(), owner.as_deref(), &metrics).await;
            }
            Write::Event(event, uid) => event_logged(&writer, &event, uid, &metrics).await,
            Write::PeerEvent(event) => peer_event(&writer, &event, &metrics).await,
            Write::NodeEvent(warning, reason, message) => {
                if let Err(error) = writer.node_event(warning, reason, &message).await {
                    metrics.update_errors.inc();
                    tracing::warn!(reason, %error, "recording an Event on the Node failed");
                }
            }
            Write::Statuses => {
                let Some((desired, owner)) = pending.take() else {
                    continue;
                };
                let owner = owner.as_deref();
                l2.sync(
                    &writer,
                    watches.existing_l2_statuses(),
                    &desired.l2,
                    owner,
                    &metrics,
                )
                .await;
                bgp.sync(
                    &writer,
                    watches.existing_bgp_statuses(),
                    &desired.bgp,
                    owner,
                    &metrics,
                )
                .await;
            }
        }
    }
}

/// One kind's objects this task created that the watch has not shown yet.
struct Kept<K: StatusKind> {
    created: BTreeMap<String, ExistingStatus<K::Status>>,
}

impl<K: StatusKind> Default for Kept<K> {
    fn default() -> Self {
        Kept {
            created: BTreeMap::new(),
        }
    }
}

impl<K: StatusKind> Kept<K> {
    /// Brings this node's objects of kind `K` (`listed` by the watch, plus those created since)
    /// to `desired`.
    async fn sync(
        &mut self,
        writer: &Writer,
        listed: Vec<ExistingStatus<K::Status>>,
        desired: &BTreeMap<String, K::Status>,
        owner: Option<&Pod>,
        metrics: &SpeakerMetrics,
    ) {
        let listed_names: BTreeSet<String> = listed.iter().map(|e| e.name.clone()).collect();
        self.created.retain(|name, _| !listed_names.contains(name));
        let mut existing = listed;
        existing.extend(self.created.values().cloned());
        for action in status::status_actions(&existing, desired) {
            self.apply(writer, &action, owner, metrics).await;
        }
    }

    async fn apply(
        &mut self,
        writer: &Writer,
        action: &StatusAction<K::Status>,
        owner: Option<&Pod>,
        metrics: &SpeakerMetrics,
    ) {
        let result = match action {
            StatusAction::Create {
                service_key,
                status,
            } => writer
                .create_status::<K>(service_key, status, owner)
                .await
                .map(|name| {
                    self.created.insert(
                        name.clone(),
                        ExistingStatus {
                            name,
                            service_key: Some(service_key.clone()),
                            status: Some(status.clone()),
                        },
                    );
                }),
            StatusAction::UpdateStatus { name, status } => {
                writer.update_status::<K>(name, status).await
            }
            StatusAction::Delete { name } => writer.delete_status::<K>(name).await.map(|()| {
                self.created.remove(name);
            }),
        };
        if let Err(error) = result {
            metrics.update_errors.inc();
            tracing::warn!(kind = <K::Status as ServiceStatus>::KIND, ?action, %error, "status write failed");
        }
    }
}

async fn configuration_state(
    writer: &Writer,
    errors: Option<&str>,
    owner: Option<&Pod>,
    metrics: &SpeakerMetrics,
) {
    let status = plan::configuration_state(errors, k8s_openapi::jiff::Timestamp::now());
    if let Err(error) = writer.configuration_state(status, owner).await {
        metrics.update_errors.inc();
        tracing::warn!(%error, "ConfigurationState write failed");
    }
    // A new verdict only reaches here when it changed: one Event per refused configuration.
    if let Some(errors) = errors
        && let Err(error) = writer.configuration_error(errors).await
    {
        metrics.update_errors.inc();
        tracing::warn!(%error, "recording the configuration Event failed");
    }
}

async fn event_logged(
    writer: &Writer,
    event: &PlannedEvent,
    uid: Option<String>,
    metrics: &SpeakerMetrics,
) {
    let recorded = writer
        .event(&ServiceEvent {
            namespace: &event.namespace,
            name: &event.name,
            uid: uid.as_deref(),
            warning: event.warning,
            reason: event.reason,
            message: &event.message,
        })
        .await;
    if let Err(error) = recorded {
        metrics.update_errors.inc();
        tracing::warn!(service = %format!("{}/{}", event.namespace, event.name), reason = event.reason, %error, "recording event failed");
    }
}

async fn peer_event(writer: &Writer, event: &PeerEvent, metrics: &SpeakerMetrics) {
    if let Err(error) = writer
        .peer_event(&event.peer, event.warning, event.reason, &event.message)
        .await
    {
        metrics.update_errors.inc();
        tracing::warn!(peer = %event.peer, reason = event.reason, %error, "recording an Event on the BGPPeer failed");
    }
}
