//! The Service decisions of a leader: taken from the caches, decided in batches, and written
//! in the background, one write at a time per Service and in decision order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Service;
use tracing::Instrument;

use super::super::Context;
use super::super::batch::{BatchItem, decide_batch};
use super::super::plan::{self, WriteFailed};
use super::{Leader, Retry};
use crate::allocator::{EventType, Outcome, Status, restart_order};
use crate::k8s::ApiError;
use crate::k8s::controller::ServiceRef;
use crate::k8s::events::Severity;

/// Passes repeated while a pass frees addresses (pending Services may take them).
const MAX_FOLLOW_UP_PASSES: usize = 3;

/// A Service write in the background; reports back when done.
pub(super) type WriteFuture<'a> = BoxFuture<'a, WriteDone>;

/// What a finished Service write reports to the loop.
pub(super) struct WriteDone {
    service: ServiceRef,
    /// When the loop took the Service up (for the reconcile latency histogram).
    taken_up: Instant,
    /// The Service as the write left it (`None`: nothing written, or it was deleted meanwhile).
    result: Result<Option<Service>, ApiError>,
}

/// A decision waiting for the write in flight for the same Service.
pub(super) struct Queued {
    svc: Arc<Service>,
    outcome: Outcome,
    taken_up: Instant,
}

impl Leader<'_> {
    /// Reconciles the given Services (releasing deleted ones): decisions one after the other,
    /// releases first (see [`decide_batch`]), their writes dispatched to the background.
    pub(super) async fn reconcile_some(&mut self, services: Vec<ServiceRef>) {
        let taken_up = Instant::now();
        let mut batch = Vec::with_capacity(services.len());
        for service in services {
            let Some(svc) = self.ctx.caches.service(&service) else {
                let key = service.key();
                self.retries.remove(&service);
                self.written.remove(&service);
                self.queued.remove(&service);
                self.decisions.remove(&key);
                batch.push(BatchItem::Deleted(key));
                continue;
            };
            match self.info(&svc) {
                Some(info) => batch.push(BatchItem::Present(svc, Box::new(info))),
                None => {
                    self.retries.remove(&service);
                }
            }
        }
        let decided = decide_batch(&mut self.allocator, batch);
        self.dispatch_all(decided.items, taken_up);
        if decided.reprocess_all {
            self.full_pass(false).await;
        }
    }

    /// Reconciles every Service. `restart` is the start pass: Services holding addresses
    /// re-claim them before anything is allocated, and it waits for its writes (it is what
    /// readiness and the full-pass histogram report); later passes leave theirs in the
    /// background like any other.
    pub(super) async fn full_pass(&mut self, restart: bool) {
        let started = Instant::now();
        for round in 0..=MAX_FOLLOW_UP_PASSES {
            let services = self.ctx.caches.services();
            let present: HashSet<String> =
                services.iter().map(|s| ServiceRef::of(s).key()).collect();
            let vanished: Vec<String> = self
                .decisions
                .keys()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect();
            for key in vanished {
                self.decisions.remove(&key);
                self.allocator.release(&key);
            }
            let mut infos = Vec::with_capacity(services.len());
            let mut objects = HashMap::with_capacity(services.len());
            for svc in services {
                if let Some(info) = self.info(&svc) {
                    objects.insert(info.key(), svc);
                    infos.push(info);
                }
            }
            let outcomes = if restart && round == 0 {
                self.allocator.reconcile_all(&infos)
            } else {
                restart_order(&infos)
                    .into_iter()
                    .map(|i| self.allocator.reconcile(&infos[i]))
                    .collect()
            };
            let freed = outcomes.iter().any(|o| !o.freed.is_empty());
            let items: Vec<(Arc<Service>, Outcome)> = outcomes
                .into_iter()
                .filter_map(|o| objects.get(&o.service).map(|svc| (svc.clone(), o)))
                .collect();
            self.dispatch_all(items, started);
            if !freed {
                break;
            }
        }
        if restart {
            while let Some(done) = self.writes.next().await {
                self.write_done(done);
            }
        }
        self.ctx
            .metrics
            .full_pass_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records the decisions and starts their writes (queued behind a write in flight for the
    /// same Service).
    fn dispatch_all(&mut self, items: Vec<(Arc<Service>, Outcome)>, taken_up: Instant) {
        for (svc, outcome) in items {
            match &outcome.status {
                Status::Ignored => {
                    self.decisions.remove(&outcome.service);
                }
                Status::Unchanged { .. } => {}
                status => {
                    self.decisions.insert(
                        outcome.service.clone(),
                        (svc.metadata.uid.clone(), status.clone()),
                    );
                }
            }
            let service = ServiceRef::of(&svc);
            let queued = Queued {
                svc,
                outcome,
                taken_up,
            };
            if self.in_flight.contains(&service) {
                self.queued.entry(service).or_default().push_back(queued);
            } else {
                self.start_write(service, queued);
            }
        }
    }

    /// Plans the write of one decision against the freshest copy of the Service we know (the
    /// watch cache's, or what our own last write returned) and starts it; with nothing to
    /// write, only its Events are recorded.
    fn start_write(&mut self, service: ServiceRef, item: Queued) {
        let Queued {
            svc,
            outcome,
            taken_up,
        } = item;
        // The cache may hold a newer copy than the one the decision was made on (a queued one).
        let cached = match self.ctx.caches.service(&service) {
            // Deleted and created again under the same name: the new object's own watch event
            // brings its own decision.
            Some(now) if now.metadata.uid != svc.metadata.uid => {
                self.finish(&service, taken_up, Ok(()));
                return;
            }
            Some(now) => now,
            None => svc,
        };
        let current = plan::fresher(&cached, self.written.get(&service));
        let cache_current = std::ptr::eq(current, cached.as_ref());
        let patch = plan::service_patch(&plan::service_writes(current, &outcome.status))
            .map(|patch| plan::conditional(patch, current.metadata.resource_version.as_deref()));
        if cache_current {
            // The cache has caught up with (or moved past) our last write.
            self.written.remove(&service);
        }
        let Some(patch) = patch else {
            record_events(self.ctx, &cached, &outcome);
            self.finish(&service, taken_up, Ok(()));
            return;
        };
        let ctx = self.ctx;
        let slots = self.write_slots.clone();
        self.in_flight.insert(service.clone());
        self.ctx.writes_in_flight.send_replace(self.in_flight.len());
        self.writes.push(Box::pin(async move {
            let result = match slots.acquire().await {
                Ok(_permit) => write_service(ctx, &service, &cached, &outcome, &patch).await,
                // The semaphore is never closed; write anyway rather than lose the decision.
                Err(_) => write_service(ctx, &service, &cached, &outcome, &patch).await,
            };
            WriteDone {
                service,
                taken_up,
                result,
            }
        }));
    }

    /// A background write finished: remember what it wrote, schedule a retry on failure, and
    /// start the next decision queued for the same Service.
    pub(super) fn write_done(&mut self, done: WriteDone) {
        let WriteDone {
            service,
            taken_up,
            result,
        } = done;
        self.in_flight.remove(&service);
        self.ctx.writes_in_flight.send_replace(self.in_flight.len());
        let result = match result {
            Ok(Some(updated)) => {
                self.ctx
                    .metrics
                    .service_write_seconds
                    .observe(taken_up.elapsed().as_secs_f64());
                self.written.insert(service.clone(), updated);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        self.finish(&service, taken_up, result);
        let next = self.queued.get_mut(&service).and_then(VecDeque::pop_front);
        if self.queued.get(&service).is_some_and(VecDeque::is_empty) {
            self.queued.remove(&service);
        }
        if let Some(next) = next {
            self.start_write(service, next);
        }
    }

    /// Accounts for one finished decision: latency, and the retry state.
    fn finish(&mut self, service: &ServiceRef, taken_up: Instant, result: Result<(), ApiError>) {
        self.ctx
            .metrics
            .reconcile_seconds
            .observe(taken_up.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.retries.remove(service);
            }
            Err(error) => {
                let retry = Retry::after_failure(self.retries.get(service).copied());
                tracing::warn!(service = %service, %error, attempt = retry.attempt, "write failed; retrying");
                self.retries.insert(service.clone(), retry);
            }
        }
    }
}

/// Writes one decision: ingress and pool annotation in one patch of the status subresource,
/// then (only once that succeeded) its Events. Returns the Service as written; `None` when it
/// was deleted meanwhile (the delete event releases it).
async fn write_service(
    ctx: &Context,
    service: &ServiceRef,
    svc: &Service,
    outcome: &Outcome,
    patch: &serde_json::Value,
) -> Result<Option<Service>, ApiError> {
    let (pool, ips) = match &outcome.status {
        Status::Assigned { ips, pool } => (
            pool.as_str(),
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => ("", String::new()),
    };
    let span = tracing::info_span!("service", service = %outcome.service, pool = %pool, ip = %ips);
    async {
        let written = match count(ctx, ctx.cluster.write_service(service, patch).await) {
            Ok(written) => written,
            Err(error) => {
                return match plan::write_failed(error.kind()) {
                    WriteFailed::Gone => Ok(None),
                    WriteFailed::Retry => Err(error),
                };
            }
        };
        match &outcome.status {
            Status::Assigned { .. } => tracing::info!("address assigned"),
            other => tracing::info!(state = ?other, "address cleared"),
        }
        record_events(ctx, svc, outcome);
        Ok(Some(written))
    }
    .instrument(span)
    .await
}

/// Queues the Events explaining a decision (recorded in the background).
fn record_events(ctx: &Context, svc: &Service, outcome: &Outcome) {
    for event in &outcome.events {
        let severity = match event.event_type {
            EventType::Normal => Severity::Normal,
            EventType::Warning => Severity::Warning,
        };
        ctx.event_queue.send(
            svc,
            severity,
            event.reason.as_str(),
            "Allocate",
            &event.message,
        );
    }
}

fn count<T>(ctx: &Context, result: Result<T, ApiError>) -> Result<T, ApiError> {
    match &result {
        Ok(_) => ctx.metrics.api_writes.inc(),
        Err(_) => ctx.metrics.update_errors.inc(),
    };
    result
}
