//! Kubernetes Events (events.k8s.io/v1 through kube's `Recorder`), reported as MetalLB's
//! controller does so that `kubectl describe` reads the same.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

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

/// A reference without resourceVersion, so repeats about one object aggregate into a series.
pub fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let mut reference = object.object_ref(&());
    reference.resource_version = None;
    reference
}
