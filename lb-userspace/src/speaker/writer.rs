//! The speaker's API writes, applied in the order reconcile queued them, on a task of their own
//! so the API server never delays the data plane. A status write carries the whole desired set,
//! so only the latest queued one is applied (Events queued between are kept, and written after
//! it). Objects it created are remembered until the watch shows them, so a quick second pass
//! does not create duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use crate::k8s::speaker::{ServiceEvent, Watches, Writer};
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, ExistingStatus, PlannedEvent, StatusAction};
use crate::speaker::reconcile::{PeerEvent, Write};

/// Applies `writes` until the sender goes away.
pub async fn write_loop(
    writer: Writer,
    mut writes: mpsc::UnboundedReceiver<Write>,
    watches: Arc<Watches>,
    metrics: Arc<SpeakerMetrics>,
) {
    let mut created: BTreeMap<String, ExistingStatus> = BTreeMap::new();
    while let Some(write) = writes.recv().await {
        match write {
            Write::ConfigState(errors, owner) => {
                configuration_state(&writer, errors.as_deref(), owner.as_deref(), &metrics).await;
            }
            Write::Event(event, uid) => event_logged(&writer, &event, uid, &metrics).await,
            Write::PeerEvent(event) => peer_event(&writer, &event, &metrics).await,
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
                        Write::PeerEvent(event) => peer_event(&writer, &event, &metrics).await,
                        // Rare, and a receiver cannot re-queue: written now.
                        Write::ConfigState(errors, owner) => {
                            configuration_state(
                                &writer,
                                errors.as_deref(),
                                owner.as_deref(),
                                &metrics,
                            )
                            .await;
                        }
                    }
                }
                let listed: Vec<ExistingStatus> = watches
                    .existing_statuses()
                    .into_iter()
                    .map(|l| ExistingStatus {
                        name: l.name,
                        service_key: l.service_key,
                        status: l.status,
                    })
                    .collect();
                let listed_names: BTreeSet<String> =
                    listed.iter().map(|e| e.name.clone()).collect();
                created.retain(|name, _| !listed_names.contains(name));
                let mut existing = listed;
                existing.extend(created.values().cloned());
                for action in plan::status_actions(&existing, &desired) {
                    apply_status(&writer, &action, owner.as_deref(), &mut created, &metrics).await;
                }
                for (event, uid) in events {
                    event_logged(&writer, &event, uid, &metrics).await;
                }
            }
        }
    }
}

async fn apply_status(
    writer: &Writer,
    action: &StatusAction,
    owner: Option<&Pod>,
    created: &mut BTreeMap<String, ExistingStatus>,
    metrics: &SpeakerMetrics,
) {
    let result = match action {
        StatusAction::Create {
            service_key,
            status,
        } => writer
            .create_status(service_key, status, owner)
            .await
            .map(|name| {
                created.insert(
                    name.clone(),
                    ExistingStatus {
                        name,
                        service_key: Some(service_key.clone()),
                        status: Some(status.clone()),
                    },
                );
            }),
        StatusAction::UpdateStatus { name, status } => writer.update_status(name, status).await,
        StatusAction::Delete { name } => writer.delete_status(name).await.map(|()| {
            created.remove(name);
        }),
    };
    if let Err(error) = result {
        metrics.update_errors.inc();
        tracing::warn!(?action, %error, "ServiceL2Status write failed");
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
