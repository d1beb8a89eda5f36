//! The reconcile loop: follower/leader switching, batching of watch triggers, the allocator's
//! decisions turned into writes, and retries.
//!
//! Decisions are made one after the other in this loop (the allocator is not shared); the writes
//! that carry them out run in the background, at most [`WRITE_CONCURRENCY`] at once and one at a
//! time per Service (in decision order), so a Service created while others' writes are in flight
//! is decided and written at once instead of waiting for them. Pool status, ConfigurationState
//! and the memberlist Secret are written in the background too: they never delay a Service.
//!
//! The loop reads the cluster through the watch caches' snapshots and writes it through
//! [`crate::k8s::controller::Cluster`]; the decisions are the pure ones of [`super::plan`] and
//! [`super::batch`]. [`services`] carries out the Service decisions, [`side`] the rest.

mod services;
mod side;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Service;
use tokio::sync::{Semaphore, mpsc, watch};

use super::plan::{self, ConfigVerdict};
use super::{Context, backoff, config_input};
use crate::allocator::{Allocator, PoolCounters, ServiceInfo, Status};
use crate::config::Config;
use crate::k8s::controller::{ServiceRef, Trigger};
use crate::k8s::events::Severity;
use services::{Queued, WriteFuture};
use side::SideDone;

/// Service writes in flight at once (the API server handles them concurrently).
const WRITE_CONCURRENCY: usize = 32;

pub(crate) async fn drive(
    ctx: &Context,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // `run` starts this once every cache has listed.
    loop {
        ctx.health.leader.store(false, Ordering::Relaxed);
        ctx.health.serving.store(true, Ordering::Relaxed);
        // Follow: discard triggers until we lead (the start pass covers everything).
        loop {
            if *shutdown.borrow() {
                return;
            }
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = leading.changed() => {}
                _ = shutdown.changed() => {}
                Some(_) = rx.recv() => {}
            }
        }
        while rx.try_recv().is_ok() {}
        ctx.health.leader.store(true, Ordering::Relaxed);
        ctx.health.serving.store(false, Ordering::Relaxed);
        tracing::info!(identity = %ctx.settings.identity, "leading: re-claiming existing addresses before allocating");
        let mut leader = Leader::new(ctx);
        leader.start().await;
        ctx.health.serving.store(true, Ordering::Relaxed);
        loop {
            let due = leader.next_due();
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        tracing::warn!("lost leadership: stopping all writes");
                        break;
                    }
                }
                Some(done) = leader.writes.next() => leader.write_done(done),
                Some(done) = leader.side_task.next() => leader.side_done(done),
                Some(first) = rx.recv() => {
                    let mut batch = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        batch.push(next);
                    }
                    leader.handle(batch).await;
                }
                () = sleep_until(due), if due.is_some() => leader.retry_due().await,
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// A pending retry: when, and how many attempts failed so far.
#[derive(Clone, Copy, Debug)]
struct Retry {
    due: Instant,
    attempt: u32,
}

impl Retry {
    fn after_failure(previous: Option<Retry>) -> Retry {
        let attempt = previous.map_or(0, |r| r.attempt.saturating_add(1));
        Retry {
            due: Instant::now() + backoff(attempt),
            attempt,
        }
    }
}

/// State held only while leading; dropped (and rebuilt from the cluster) on leadership loss.
/// Dropping it cancels the writes in flight: only the leader writes.
struct Leader<'a> {
    ctx: &'a Context,
    allocator: Allocator,
    /// The configuration serving now: the last valid one.
    config: Option<Config>,
    /// The start pass has run (it waits for a first valid configuration).
    started: bool,
    /// What this leader decided per Service (uid, status): authoritative over the cache, which
    /// may not show our own writes yet.
    decisions: HashMap<String, (Option<String>, Status)>,
    retries: HashMap<ServiceRef, Retry>,
    /// Service writes in flight, one per Service at most.
    writes: FuturesUnordered<WriteFuture<'a>>,
    in_flight: HashSet<ServiceRef>,
    /// Later decisions about a Service whose write is in flight, in order.
    queued: HashMap<ServiceRef, VecDeque<Queued>>,
    /// The Service as our last write returned it, until the watch cache shows that version:
    /// planning against a cache that lags behind our own write would repeat it.
    written: HashMap<ServiceRef, Service>,
    write_slots: Arc<Semaphore>,
    /// The side write in flight (at most one) and whether another is wanted after it.
    side_task: FuturesUnordered<BoxFuture<'a, SideDone>>,
    side_again: bool,
    /// Side writes (pool status, ConfigurationState, Secret) failed: retry them.
    side_retry: Option<Retry>,
    /// When pool status was last written, and when deferred counters are due.
    pool_status_at: Option<Instant>,
    pool_status_due: Option<Instant>,
    /// Pool status last written, with the uid of the pool object it went to (a pool deleted and
    /// created again under the same name needs its status written again).
    pool_status_written: BTreeMap<String, (Option<String>, PoolCounters)>,
    verdict: Option<ConfigVerdict>,
    verdict_written: Option<ConfigVerdict>,
    secret_done: bool,
}

impl Drop for Leader<'_> {
    /// A term's writes end with it (lost leadership, shutdown): Events need not wait for them.
    fn drop(&mut self) {
        self.ctx.writes_in_flight.send_replace(0);
    }
}

impl<'a> Leader<'a> {
    fn new(ctx: &'a Context) -> Self {
        Leader {
            ctx,
            allocator: Allocator::new(&BTreeMap::new(), ctx.settings.lb_class.clone()),
            config: None,
            started: false,
            decisions: HashMap::new(),
            retries: HashMap::new(),
            writes: FuturesUnordered::new(),
            in_flight: HashSet::new(),
            queued: HashMap::new(),
            written: HashMap::new(),
            write_slots: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            side_task: FuturesUnordered::new(),
            side_again: false,
            side_retry: None,
            pool_status_at: None,
            pool_status_due: None,
            pool_status_written: BTreeMap::new(),
            verdict: None,
            verdict_written: None,
            secret_done: ctx.settings.ml_secret_name.is_none(),
        }
    }

    /// Gains leadership: loads the configuration and runs the start pass, its writes included
    /// (readiness follows it).
    async fn start(&mut self) {
        self.load_config().await;
        self.start_pass_if_ready().await;
        self.schedule_side_writes();
        while let Some(done) = self.side_task.next().await {
            self.side_done(done);
        }
    }

    async fn start_pass_if_ready(&mut self) {
        if self.started || self.config.is_none() {
            return;
        }
        self.full_pass(true).await;
        self.started = true;
    }

    /// The next retry or deferred pool status write (none for side writes while one runs).
    fn next_due(&self) -> Option<Instant> {
        let side = if self.side_task.is_empty() {
            self.side_retry
                .map(|r| r.due)
                .into_iter()
                .chain(self.pool_status_due)
        } else {
            None.into_iter().chain(None)
        };
        self.retries.values().map(|r| r.due).chain(side).min()
    }

    async fn handle(&mut self, batch: Vec<Trigger>) {
        self.ctx
            .metrics
            .updates
            .inc_by(u64::try_from(batch.len()).unwrap_or(u64::MAX));
        let mut config = false;
        let mut resync = false;
        let mut services = HashSet::new();
        for trigger in batch {
            match trigger {
                Trigger::Config => config = true,
                Trigger::Resync => resync = true,
                Trigger::Service(r) => {
                    services.insert(r);
                }
            }
        }
        let mut full = false;
        if config {
            full = self.load_config().await;
        }
        if !self.started {
            self.start_pass_if_ready().await;
        } else if full || resync {
            self.full_pass(false).await;
        } else {
            self.reconcile_some(services.into_iter().collect()).await;
        }
        self.forget_seen_writes();
        self.schedule_side_writes();
    }

    /// Drops remembered writes the watch cache already shows (or whose Service is gone), so the
    /// memory held stays proportional to the writes still in transit.
    fn forget_seen_writes(&mut self) {
        if self.written.len() < 256 {
            return;
        }
        let caches = &self.ctx.caches;
        self.written.retain(|service, ours| {
            caches
                .service(service)
                .is_some_and(|cached| std::ptr::eq(plan::fresher(&cached, Some(ours)), ours))
        });
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ServiceRef> = self
            .retries
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if self.started {
            // The timer is spent; the attempt count stays until a write succeeds.
            for service in &due {
                if let Some(retry) = self.retries.get_mut(service) {
                    retry.due = now + backoff(retry.attempt.saturating_add(1));
                }
            }
            self.reconcile_some(due).await;
        }
        if self.side_retry.is_some_and(|r| r.due <= now)
            || self.pool_status_due.is_some_and(|due| due <= now)
        {
            self.schedule_side_writes();
        }
    }

    /// Rebuilds the configuration from the caches. Returns whether the serving configuration
    /// changed (every Service must then be reprocessed). An invalid configuration changes
    /// nothing: the last valid one keeps serving.
    async fn load_config(&mut self) -> bool {
        let c = &self.ctx.caches;
        let built = config_input::build(
            &c.pools(),
            &c.communities(),
            &c.namespaces(),
            &c.rejected(),
            self.ctx.settings.bgp_mode,
        );
        let metrics = &self.ctx.metrics;
        match built {
            Ok(config) => {
                metrics.config_loaded.set(1);
                metrics.config_stale.set(0);
                self.verdict = Some(ConfigVerdict::Valid);
                if self.config.as_ref() == Some(&config) {
                    return false;
                }
                let change = self.allocator.set_config(&config.pools);
                tracing::info!(
                    pools = config.pools.len(),
                    forgotten = change.forgotten.len(),
                    moved = change.moved.len(),
                    "configuration loaded"
                );
                self.config = Some(config);
                true
            }
            Err(summary) => {
                metrics.config_stale.set(1);
                tracing::error!(error = %summary, "invalid configuration: the last valid one keeps serving");
                let repeated =
                    self.verdict.as_ref() == Some(&ConfigVerdict::Invalid(summary.clone()));
                if !repeated
                    && let Err(error) = self
                        .ctx
                        .cluster
                        .configuration_event(
                            Severity::Warning,
                            "ConfigurationError",
                            "LoadConfiguration",
                            &summary,
                        )
                        .await
                {
                    tracing::warn!(%error, "recording the configuration event failed");
                }
                self.verdict = Some(ConfigVerdict::Invalid(summary));
                false
            }
        }
    }

    /// The allocator's view of `svc`, with this leader's own decision in place of a cache that
    /// may lag behind our writes. `None` when the Service cannot even be read (an Event says why).
    fn info(&self, svc: &Service) -> Option<ServiceInfo> {
        match ServiceInfo::from_service(svc) {
            Ok(info) => {
                let key = info.key();
                Some(match self.decisions.get(&key) {
                    Some((uid, status)) if *uid == svc.metadata.uid => status.applied_to(&info),
                    _ => info,
                })
            }
            Err(error) => {
                tracing::warn!(service = %error.service, %error, "service skipped");
                self.ctx.event_queue.send(
                    svc,
                    Severity::Warning,
                    "LoadBalancerFailed",
                    "Allocate",
                    &error.to_string(),
                );
                None
            }
        }
    }
}
