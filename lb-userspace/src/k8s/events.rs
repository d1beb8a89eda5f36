//! Kubernetes Events (events.k8s.io/v1 through kube's `Recorder`), reported as MetalLB's
//! controller does so that `kubectl describe` reads the same.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::mpsc;

/// The reporting component MetalLB's controller uses.
pub const CONTROLLER_COMPONENT: &str = "metallb-controller";

/// Publishes Events about objects; repeats of one (object, reason, message) within kube's cache
/// window become an event series instead of new objects.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
}

/// Whether the event reports something normal or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl EventSink {
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        let reporter = Reporter {
            controller: component.to_string(),
            instance: Some(instance.to_string()),
        };
        EventSink {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Records `reason`/`message` on `object`. `action` says what the controller was doing.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        severity: Severity,
        reason: &str,
        action: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        self.publish_ref(reference(object), severity, reason, action, message)
            .await
    }

    /// Like [`EventSink::publish`] with an explicit reference (dynamic kinds).
    pub async fn publish_ref(
        &self,
        regarding: ObjectReference,
        severity: Severity,
        reason: &str,
        action: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let event = Event {
            type_: match severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(message.to_string()),
            action: action.to_string(),
            secondary: None,
        };
        self.recorder.publish(&event, &regarding).await
    }
}

/// An Event waiting to be recorded by an [`EventQueue`].
struct Queued {
    regarding: ObjectReference,
    severity: Severity,
    reason: String,
    action: String,
    message: String,
}

/// Records Events in the background, a few at a time, so that explaining a decision never
/// delays the writes that carry it out (a burst of Services is served at the API server's pace
/// for status writes alone). Failures are logged; an Event is an explanation, not state.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::UnboundedSender<Queued>,
}

impl EventQueue {
    /// Starts the recording task on the current tokio runtime; it ends when every clone of the
    /// queue is dropped and the backlog is recorded.
    pub fn start(sink: EventSink, concurrency: usize) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            futures::stream::poll_fn(|cx| rx.poll_recv(cx))
                .for_each_concurrent(concurrency.max(1), |event| {
                    let sink = sink.clone();
                    async move {
                        if let Err(error) = sink
                            .publish_ref(
                                event.regarding,
                                event.severity,
                                &event.reason,
                                &event.action,
                                &event.message,
                            )
                            .await
                        {
                            tracing::warn!(%error, reason = %event.reason, "recording an event failed");
                        }
                    }
                })
                .await;
        });
        EventQueue { tx }
    }

    /// Queues `reason`/`message` about `object`.
    pub fn send<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        severity: Severity,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let queued = Queued {
            regarding: reference(object),
            severity,
            reason: reason.to_string(),
            action: action.to_string(),
            message: message.to_string(),
        };
        if self.tx.send(queued).is_err() {
            tracing::warn!(reason, "event recorder stopped; event dropped");
        }
    }
}

/// A reference without resourceVersion, so repeats about one object aggregate into a series.
pub fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let mut reference = object.object_ref(&());
    reference.resource_version = None;
    reference
}
