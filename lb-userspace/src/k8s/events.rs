//! Kubernetes Events (events.k8s.io/v1 through kube's `Recorder`), reported as MetalLB's
//! controller does so that `kubectl describe` reads the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The reporting component MetalLB's controller uses.
pub const CONTROLLER_COMPONENT: &str = "metallb-controller";

/// Publishes Events about objects; repeats of one (object, reason, message) within kube's cache
/// window become an event series instead of new objects, and another message is another Event.
#[derive(Clone)]
pub struct EventSink {
    client: Client,
    reporter: Reporter,
    /// One recorder per message. kube's recorder folds every Event of one (object, reason,
    /// action) into one series whatever its note, so a new message — another configuration
    /// error after the first — would only bump the first Event's count and never be read.
    recorders: Arc<Mutex<HashMap<String, Recorder>>>,
}

/// Messages whose recorders are kept; past this the map starts again (a repeat then makes one
/// new Event instead of extending a series).
const MAX_RECORDERS: usize = 1024;

/// Whether the event reports something normal or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl Severity {
    /// `Warning` when `warning`, else `Normal`.
    pub fn warning_if(warning: bool) -> Severity {
        if warning {
            Severity::Warning
        } else {
            Severity::Normal
        }
    }
}

impl EventSink {
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        let reporter = Reporter {
            controller: component.to_string(),
            instance: Some(instance.to_string()),
        };
        EventSink {
            client,
            reporter,
            recorders: Arc::default(),
        }
    }

    /// The recorder for `message` (made on first use).
    fn recorder(&self, message: &str) -> Recorder {
        let mut recorders = self
            .recorders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(recorder) = recorders.get(message) {
            return recorder.clone();
        }
        if recorders.len() >= MAX_RECORDERS {
            recorders.clear();
        }
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        recorders.insert(message.to_string(), recorder.clone());
        recorder
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
        self.recorder(message).publish(&event, &regarding).await
    }
}

/// An Event waiting to be recorded by an [`EventQueue`].
struct Queued {
    /// When it was queued: it is held at most [`MAX_HOLD`] past this.
    since: Instant,
    regarding: ObjectReference,
    severity: Severity,
    reason: String,
    action: String,
    message: String,
}

/// How long an Event may be held back while the writes it explains are still going on.
pub const MAX_HOLD: Duration = Duration::from_secs(5);

/// Waits until no write is in flight (`busy` reads 0) or `until`, whichever comes first.
/// Events then take the API server's capacity only when the status writes users wait for do
/// not need it, yet none waits longer than its deadline under continuous load.
pub async fn hold(busy: &mut watch::Receiver<usize>, until: Instant) {
    let _ = tokio::time::timeout_at(until, busy.wait_for(|writes| *writes == 0)).await;
}

/// Records Events in the background, a few at a time and after the writes in flight, so that
/// explaining a decision never delays the writes that carry it out (during a burst of
/// Services the API server's CPU goes to status writes first; each Event follows within
/// [`MAX_HOLD`]). Failures are logged; an Event is an explanation, not state.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::UnboundedSender<Queued>,
}

impl EventQueue {
    /// Starts the recording task on the current tokio runtime; it ends when every clone of the
    /// queue is dropped and the backlog is recorded. `writes_in_flight` counts the caller's
    /// writes under way (the Events wait for it to read 0, up to [`MAX_HOLD`]).
    pub fn start(
        sink: EventSink,
        concurrency: usize,
        writes_in_flight: watch::Receiver<usize>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            futures::stream::poll_fn(|cx| rx.poll_recv(cx))
                .for_each_concurrent(concurrency.max(1), |event| {
                    let sink = sink.clone();
                    let mut busy = writes_in_flight.clone();
                    async move {
                        hold(&mut busy, event.since + MAX_HOLD).await;
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
            since: Instant::now(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hold_waits_for_writes_to_finish() {
        let (tx, mut rx) = watch::channel(3usize);
        let start = Instant::now();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            tx.send_replace(1);
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send_replace(0);
            tx
        });
        hold(&mut rx, start + MAX_HOLD).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        let _tx = release.await.expect("sender task");
    }

    #[tokio::test(start_paused = true)]
    async fn hold_gives_up_at_the_deadline_under_continuous_writes() {
        let (_tx, mut rx) = watch::channel(1usize);
        let start = Instant::now();
        hold(&mut rx, start + MAX_HOLD).await;
        assert_eq!(start.elapsed(), MAX_HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_passes_at_once_when_idle_or_past_the_deadline() {
        let (tx, mut rx) = watch::channel(0usize);
        let start = Instant::now();
        hold(&mut rx, start + MAX_HOLD).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        tx.send_replace(2);
        hold(&mut rx, start).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
