//! The reconcile loop: follower/leader switching, batching of watch triggers, the allocator's
//! decisions turned into writes, and retries.
//!
//! Decisions are made one after the other in this loop (the allocator is not shared); the writes
//! that carry them out run in the background, at most [`WRITE_CONCURRENCY`] at once and one at a
//! time per Service (in decision order), so a Service created while others' writes are in flight
//! is decided and written at once instead of waiting for them. Pool status, ConfigurationState
//! and the memberlist Secret are written in the background too: they never delay a Service.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use super::plan::{self, ConfigVerdict};
use super::{Context, Trigger, backoff, config_input};
use crate::allocator::{
    Allocator, EventType, Outcome, PoolCounters, ServiceInfo, Status, restart_order,
};
use crate::config::Config;
use crate::k8s::events::Severity;
use crate::k8s::{self, is_not_found, metallb_api, writes};

/// Service writes in flight at once (the API server handles them concurrently).
const WRITE_CONCURRENCY: usize = 32;
/// Pool status is written at most once per this interval (the counters of a burst coalesce).
const POOL_STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Passes repeated while a pass frees addresses (pending Services may take them).
const MAX_FOLLOW_UP_PASSES: usize = 3;

pub(crate) async fn drive(
    ctx: &Context,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Readiness: every cache has listed once.
    tokio::select! {
        _ = wait_caches(ctx) => {}
        _ = shutdown.wait_for(|stop| *stop) => return,
    }
    ctx.health.synced.store(true, Ordering::Relaxed);
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
                _ = sleep_until(due), if due.is_some() => leader.retry_due().await,
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
}

async fn wait_caches(ctx: &Context) {
    let c = &ctx.caches;
    let _ = tokio::join!(
        c.services.wait_until_ready(),
        c.namespaces.wait_until_ready(),
        c.pools.wait_until_ready(),
        c.communities.wait_until_ready()
    );
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

/// A Service write in the background; reports back when done.
type WriteFuture<'a> = BoxFuture<'a, WriteDone>;

/// What a finished Service write reports to the loop.
struct WriteDone {
    service: ObjectRef<Service>,
    /// When the loop took the Service up (for the reconcile latency histogram).
    taken_up: Instant,
    /// The Service as the write left it (`None`: nothing written, or it was deleted meanwhile).
    result: Result<Option<Service>, kube::Error>,
}

/// A decision waiting for the write in flight for the same Service.
struct Queued {
    svc: Arc<Service>,
    outcome: Outcome,
    taken_up: Instant,
}

/// What a background side write achieved.
struct SideDone {
    secret_done: bool,
    verdict_written: Option<ConfigVerdict>,
    pools_written: Vec<(String, (Option<String>, PoolCounters))>,
    failed: bool,
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
    retries: HashMap<ObjectRef<Service>, Retry>,
    /// Service writes in flight, one per Service at most.
    writes: FuturesUnordered<WriteFuture<'a>>,
    in_flight: HashSet<ObjectRef<Service>>,
    /// Later decisions about a Service whose write is in flight, in order.
    queued: HashMap<ObjectRef<Service>, VecDeque<Queued>>,
    /// The Service as our last write returned it, until the watch cache shows that version:
    /// planning against a cache that lags behind our own write would repeat it.
    written: HashMap<ObjectRef<Service>, Service>,
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
        let services = &self.ctx.caches.services;
        self.written.retain(|service, ours| {
            services
                .get(service)
                .is_some_and(|cached| std::ptr::eq(plan::fresher(&cached, Some(ours)), ours))
        });
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ObjectRef<Service>> = self
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
            &c.pools.state(),
            &c.communities.state(),
            &c.namespaces.state(),
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
                if !repeated {
                    let regarding = configuration_state_ref(&self.ctx.settings.namespace);
                    if let Err(error) = self
                        .ctx
                        .events
                        .publish_ref(
                            regarding,
                            Severity::Warning,
                            "ConfigurationError",
                            "LoadConfiguration",
                            &summary,
                        )
                        .await
                    {
                        tracing::warn!(%error, "recording the configuration event failed");
                    }
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
                    Some((uid, status)) if *uid == svc.metadata.uid => info.with_status(status),
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

    /// Reconciles the given Services (releasing deleted ones): decisions one after the other,
    /// releases first (see [`decide_batch`]), their writes dispatched to the background.
    async fn reconcile_some(&mut self, services: Vec<ObjectRef<Service>>) {
        let taken_up = Instant::now();
        let mut batch = Vec::with_capacity(services.len());
        for service in services {
            let Some(svc) = self.ctx.caches.services.get(&service) else {
                let key = format!(
                    "{}/{}",
                    service.namespace.as_deref().unwrap_or(""),
                    service.name
                );
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
    async fn full_pass(&mut self, restart: bool) {
        let started = Instant::now();
        for round in 0..=MAX_FOLLOW_UP_PASSES {
            let services = self.ctx.caches.services.state();
            let present: HashSet<String> = services
                .iter()
                .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
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
            let service = ObjectRef::from_obj(svc.as_ref());
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
    fn start_write(&mut self, service: ObjectRef<Service>, item: Queued) {
        let Queued {
            svc,
            outcome,
            taken_up,
        } = item;
        // The cache may hold a newer copy than the one the decision was made on (a queued one).
        let cached = match self.ctx.caches.services.get(&service) {
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
        let patch = plan::service_patch(&plan::service_writes(current, &outcome.status));
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
                Ok(_permit) => write_service(ctx, &cached, &outcome, &patch).await,
                // The semaphore is never closed; write anyway rather than lose the decision.
                Err(_) => write_service(ctx, &cached, &outcome, &patch).await,
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
    fn write_done(&mut self, done: WriteDone) {
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
    fn finish(
        &mut self,
        service: &ObjectRef<Service>,
        taken_up: Instant,
        result: Result<(), kube::Error>,
    ) {
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

    /// Starts the side writes that are due (memberlist Secret, ConfigurationState, pool status)
    /// as one background task; with one already running, once more after it.
    fn schedule_side_writes(&mut self) {
        if !self.side_task.is_empty() {
            self.side_again = true;
            return;
        }
        self.side_again = false;
        let ctx = self.ctx;
        let settings = &ctx.settings;
        let secret = (!self.secret_done)
            .then(|| settings.ml_secret_name.clone())
            .flatten();
        let verdict = if self.verdict != self.verdict_written {
            self.verdict.clone()
        } else {
            None
        };
        let mut pools = Vec::new();
        if self.started {
            let counters = self.allocator.pool_counters();
            ctx.metrics.set_pools(&counters);
            self.pool_status_written
                .retain(|name, _| counters.contains_key(name));
            let uids: HashMap<String, Option<String>> = ctx
                .caches
                .pools
                .state()
                .iter()
                .map(|p| (p.name_any(), p.metadata.uid.clone()))
                .collect();
            let wanted: BTreeMap<String, (Option<String>, PoolCounters)> = counters
                .iter()
                .map(|(name, c)| (name.clone(), (uids.get(name).cloned().flatten(), *c)))
                .collect();
            let changed = plan::changed_pools(&wanted, &self.pool_status_written);
            let now = Instant::now();
            let next_allowed = self.pool_status_at.map(|at| at + POOL_STATUS_INTERVAL);
            if changed.is_empty() {
                self.pool_status_due = None;
            } else if let Some(at) = next_allowed.filter(|at| now < *at) {
                // Coalesce: a burst of Services changes the counters once per interval.
                self.pool_status_due = Some(at);
            } else {
                self.pool_status_due = None;
                self.pool_status_at = Some(now);
                pools = changed
                    .into_iter()
                    .map(|(name, written)| (name.clone(), written.clone()))
                    .collect();
            }
        }
        if secret.is_none() && verdict.is_none() && pools.is_empty() {
            self.side_retry = None;
            return;
        }
        self.side_task
            .push(Box::pin(side_writes(ctx, secret, verdict, pools)));
    }

    /// A background side write finished: remember what was written; retry the rest later.
    fn side_done(&mut self, done: SideDone) {
        if done.secret_done {
            self.secret_done = true;
        }
        if done.verdict_written.is_some() {
            self.verdict_written = done.verdict_written;
        }
        self.pool_status_written.extend(done.pools_written);
        self.side_retry = done.failed.then(|| Retry::after_failure(self.side_retry));
        if self.side_again {
            self.schedule_side_writes();
        }
    }
}

/// One Service of a batch of watch triggers as the loop found it.
enum BatchItem<S> {
    /// Gone from the cache: its addresses are released (the key is `namespace/name`).
    Deleted(String),
    /// Present, with the allocator's view of it.
    Present(S, Box<ServiceInfo>),
}

impl<S> BatchItem<S> {
    /// Whether reconciling this item can only give addresses back: a deleted Service, or one
    /// that is no longer of type LoadBalancer. (A Service whose class moved away from
    /// `--lb-class` is ignored, never cleared, as MetalLB does: it frees nothing.)
    fn only_releases(&self) -> bool {
        match self {
            BatchItem::Deleted(_) => true,
            BatchItem::Present(_, info) => !info.is_load_balancer,
        }
    }
}

/// The decisions of one batch.
struct BatchDecisions<S> {
    items: Vec<(S, Outcome)>,
    /// Addresses were freed or sharing keys changed: MetalLB then reprocesses every Service.
    reprocess_all: bool,
}

/// Decides a batch against the allocator, releases first. MetalLB's work queue takes events in
/// order, so a Service deleted just before another is created has freed its address when the
/// new one allocates; a batch is gathered in a set and has no order, so the releases it holds
/// are made before any allocation (a release never takes an address, so moving it earlier can
/// only leave more free). The rest keep their order.
fn decide_batch<S>(allocator: &mut Allocator, batch: Vec<BatchItem<S>>) -> BatchDecisions<S> {
    let (releases, others): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(BatchItem::only_releases);
    let mut decided = BatchDecisions {
        items: Vec::with_capacity(others.len() + releases.len()),
        reprocess_all: false,
    };
    for item in releases.into_iter().chain(others) {
        let (svc, info) = match item {
            BatchItem::Deleted(key) => {
                let freed = allocator.release(&key);
                if !freed.is_empty() {
                    tracing::info!(service = %key, freed = ?freed, "service deleted: addresses freed");
                    decided.reprocess_all = true;
                }
                continue;
            }
            BatchItem::Present(svc, info) => (svc, info),
        };
        let key = info.key();
        let keys_before = allocator
            .allocation(&key)
            .map(|a| (a.sharing_key.clone(), a.backend_key.clone()));
        let outcome = allocator.reconcile(&info);
        let keys_after = allocator
            .allocation(&key)
            .map(|a| (a.sharing_key.clone(), a.backend_key.clone()));
        // MetalLB reprocesses everything when addresses free up or sharing keys change.
        if !outcome.freed.is_empty() || (keys_before.is_some() && keys_before != keys_after) {
            decided.reprocess_all = true;
        }
        decided.items.push((svc, outcome));
    }
    decided
}

/// Memberlist Secret, ConfigurationState and pool status, in that order; what succeeded is
/// reported so that only the rest is retried.
async fn side_writes(
    ctx: &Context,
    secret: Option<String>,
    verdict: Option<ConfigVerdict>,
    pools: Vec<(String, (Option<String>, PoolCounters))>,
) -> SideDone {
    let settings = &ctx.settings;
    let mut done = SideDone {
        secret_done: false,
        verdict_written: None,
        pools_written: Vec::new(),
        failed: false,
    };
    if let Some(name) = &secret {
        match writes::ensure_memberlist_secret(
            &ctx.client,
            &settings.namespace,
            name,
            settings.deployment.as_deref(),
        )
        .await
        {
            Ok(created) => {
                if created {
                    tracing::info!(secret = %name, "created the memberlist secret");
                }
                done.secret_done = true;
            }
            Err(error) => {
                tracing::warn!(secret = %name, %error, "creating the memberlist secret failed");
                done.failed = true;
            }
        }
    }
    if let Some(verdict) = verdict {
        match write_configuration_state(ctx, &verdict).await {
            Ok(()) => done.verdict_written = Some(verdict),
            Err(error) => {
                tracing::warn!(%error, "writing ConfigurationState failed");
                done.failed = true;
            }
        }
    }
    let api = metallb_api(
        &ctx.client,
        &settings.namespace,
        "IPAddressPool",
        "ipaddresspools",
    );
    for (name, (uid, counters)) in pools {
        match writes::dynamic_status(&api, &name, plan::pool_status(&counters)).await {
            Ok(_) => {
                ctx.metrics.api_writes.inc();
                done.pools_written.push((name, (uid, counters)));
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                ctx.metrics.update_errors.inc();
                tracing::warn!(pool = %name, %error, "writing pool status failed");
                done.failed = true;
            }
        }
    }
    done
}

/// Writes one decision: ingress and pool annotation in one patch of the status subresource,
/// then (only once that succeeded) its Events. Returns the Service as written; `None` when it
/// was deleted meanwhile (the delete event releases it).
async fn write_service(
    ctx: &Context,
    svc: &Service,
    outcome: &Outcome,
    patch: &serde_json::Value,
) -> Result<Option<Service>, kube::Error> {
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
        let namespace = svc.namespace().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        let written = match count(
            ctx,
            writes::service_status_patch(&api, &svc.name_any(), patch).await,
        ) {
            Ok(written) => written,
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => return Err(error),
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

fn count<T>(ctx: &Context, result: Result<T, kube::Error>) -> Result<T, kube::Error> {
    match &result {
        Ok(_) => ctx.metrics.api_writes.inc(),
        Err(_) => ctx.metrics.update_errors.inc(),
    };
    result
}

/// The `controller` ConfigurationState object in MetalLB's namespace.
const CONFIGURATION_STATE: &str = "controller";

fn configuration_state_ref(namespace: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", k8s::METALLB_GROUP, k8s::METALLB_VERSION)),
        kind: Some("ConfigurationState".into()),
        name: Some(CONFIGURATION_STATE.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

async fn write_configuration_state(
    ctx: &Context,
    verdict: &ConfigVerdict,
) -> Result<(), kube::Error> {
    let namespace = &ctx.settings.namespace;
    let api = metallb_api(
        &ctx.client,
        namespace,
        "ConfigurationState",
        "configurationstates",
    );
    let mut object = DynamicObject::new(
        CONFIGURATION_STATE,
        &k8s::metallb_resource("ConfigurationState", "configurationstates"),
    )
    .within(namespace);
    object.metadata.labels = Some(BTreeMap::from([(
        "metallb.io/component-type".to_string(),
        "controller".to_string(),
    )]));
    writes::ensure_dynamic(&api, &object).await?;
    let now = format!("{:.0}", Timestamp::now());
    writes::dynamic_status(
        &api,
        CONFIGURATION_STATE,
        plan::configuration_state_status(verdict, &now),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use k8s_openapi::api::core::v1::Service;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::Pool;

    /// One pool holding exactly `cidr`.
    fn allocator(cidr: &str) -> Allocator {
        let pool = Pool {
            name: "p".into(),
            labels: BTreeMap::new(),
            ranges: vec![vec![cidr.parse().unwrap()]],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        };
        Allocator::new(&BTreeMap::from([(pool.name.clone(), pool)]), None)
    }

    /// The allocator's view of Service `t/name` of `kind`, with `extra` merged into its spec.
    fn info(name: &str, kind: &str, extra: Value) -> ServiceInfo {
        let mut spec = json!({"type": kind, "clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}]});
        if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
            spec.extend(extra);
        }
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t"},
            "spec": spec,
        }))
        .unwrap();
        ServiceInfo::from_service(&svc).unwrap()
    }

    /// Allocates for a new LoadBalancer Service; returns its view once its status is written.
    fn holding(allocator: &mut Allocator, name: &str, ip: &str) -> ServiceInfo {
        let new = info(name, "LoadBalancer", json!({}));
        let outcome = allocator.reconcile(&new);
        assert_eq!(ips(&outcome), vec![ip.parse::<IpAddr>().unwrap()], "{name}");
        new.with_status(&outcome.status)
    }

    fn ips(outcome: &Outcome) -> Vec<IpAddr> {
        match &outcome.status {
            Status::Assigned { ips, .. } => ips.clone(),
            _ => Vec::new(),
        }
    }

    fn outcome_of<'a>(decided: &'a BatchDecisions<&str>, name: &str) -> &'a Outcome {
        &decided
            .items
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no decision for {name}"))
            .1
    }

    /// `kubectl delete svc api; kubectl create svc api2` land in one batch, the create first
    /// (a set's order): the only address of the pool is the one the delete frees, and api2 gets
    /// it in this very batch.
    #[test]
    fn a_delete_in_the_batch_frees_its_address_before_a_create_allocates() {
        let mut allocator = allocator("198.51.100.10/32");
        holding(&mut allocator, "api", "198.51.100.10");
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Deleted("t/api".to_string()),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert_eq!(
            ips(outcome_of(&decided, "api2")),
            vec!["198.51.100.10".parse::<IpAddr>().unwrap()],
            "{:?}",
            outcome_of(&decided, "api2")
        );
        assert!(decided.reprocess_all, "a freed address reprocesses all");
        assert!(allocator.allocation("t/api").is_none());
    }

    /// The same for a Service that stops being a LoadBalancer in the batch.
    #[test]
    fn a_type_change_in_the_batch_frees_its_address_before_a_create_allocates() {
        let mut allocator = allocator("198.51.100.10/32");
        let web = holding(&mut allocator, "web", "198.51.100.10");
        let mut now_cluster_ip = info("web", "ClusterIP", json!({}));
        now_cluster_ip.ingress_ips = web.ingress_ips.clone();
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Present("web", Box::new(now_cluster_ip)),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert!(matches!(
            outcome_of(&decided, "web").status,
            Status::Cleared { .. }
        ));
        assert_eq!(
            ips(outcome_of(&decided, "api2")),
            vec!["198.51.100.10".parse::<IpAddr>().unwrap()]
        );
    }

    /// A class moving away from `--lb-class` is ignored, not cleared (MetalLB): it keeps its
    /// address, so nothing is freed for the create and the create waits.
    #[test]
    fn a_class_change_frees_nothing() {
        let mut allocator = allocator("198.51.100.10/32");
        let web = holding(&mut allocator, "web", "198.51.100.10");
        let mut other_class = info(
            "web",
            "LoadBalancer",
            json!({"loadBalancerClass": "example.com/other"}),
        );
        other_class.ingress_ips = web.ingress_ips.clone();
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Present("web", Box::new(other_class)),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert_eq!(outcome_of(&decided, "web").status, Status::Ignored);
        assert!(matches!(
            outcome_of(&decided, "api2").status,
            Status::Pending { .. }
        ));
        assert!(!decided.reprocess_all);
    }

    /// Whatever order the batch comes in, the releases it holds are made first: the new
    /// Service gets the first address of the pool (freed by the delete), never the last one
    /// (freed by the type change, but after it in the pool) or nothing.
    #[test]
    fn every_order_of_a_batch_decides_alike() {
        let orders: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut allocator = allocator("198.51.100.10/31");
            holding(&mut allocator, "api", "198.51.100.10");
            let web = holding(&mut allocator, "web", "198.51.100.11");
            let mut now_cluster_ip = info("web", "ClusterIP", json!({}));
            now_cluster_ip.ingress_ips = web.ingress_ips.clone();
            let mut items: Vec<Option<BatchItem<&str>>> = vec![
                Some(BatchItem::Deleted("t/api".to_string())),
                Some(BatchItem::Present(
                    "api2",
                    Box::new(info("api2", "LoadBalancer", json!({}))),
                )),
                Some(BatchItem::Present("web", Box::new(now_cluster_ip))),
            ];
            let batch = order.iter().filter_map(|&i| items[i].take()).collect();
            let decided = decide_batch(&mut allocator, batch);
            assert_eq!(
                ips(outcome_of(&decided, "api2")),
                vec!["198.51.100.10".parse::<IpAddr>().unwrap()],
                "batch order {order:?}"
            );
            assert!(allocator.allocation("t/web").is_none(), "{order:?}");
        }
    }
}
