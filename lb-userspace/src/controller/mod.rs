//! `herald controller`: the I/O shell around the pure allocator. It watches Services, the
//! configuration kinds the controller parses (IPAddressPools, Communities) and Namespaces,
//! reconciles each Service with [`crate::allocator::Allocator`], and writes what the allocator
//! decided (ingress, pool annotation, Events, pool status, ConfigurationState).
//!
//! Only the replica holding the Lease acts. On gaining leadership the allocator starts empty and
//! nothing new is allocated until one full pass has re-claimed every existing address (Services
//! holding addresses first), as MetalLB does on start. Failed writes are retried with backoff;
//! watches reconnect on their own, so an API server restart only delays work.

pub mod config_input;
pub mod metrics;
pub mod plan;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use crate::api::{Community, IPAddressPool};
use crate::config::BgpMode;
use crate::k8s;
use crate::k8s::events::{CONTROLLER_COMPONENT, EventQueue, EventSink};
use crate::k8s::lease::{LeaseLock, LeaseTimings};
pub use metrics::Metrics;

/// Events recorded at once by the background queue. Few: during a burst the API server's CPU
/// is better spent on the status writes users wait for; the backlog drains right after.
const EVENT_CONCURRENCY: usize = 2;

/// What the controller was started with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// MetalLB's namespace: configuration objects, Lease, Secret, ConfigurationState.
    pub namespace: String,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// This replica's name in the Lease and on Events.
    pub identity: String,
    pub lease_name: String,
    pub lease: LeaseTimings,
    /// `--ml-secret-name`: the memberlist Secret to create (none when unset).
    pub ml_secret_name: Option<String>,
    /// `--deployment`: owner of that Secret.
    pub deployment: Option<String>,
    /// `METALLB_BGP_TYPE`: which BGP rules the pool parser applies.
    pub bgp_mode: BgpMode,
}

/// Liveness and readiness as the probes see them.
#[derive(Default)]
pub struct Health {
    /// The watch caches have listed everything once.
    pub synced: AtomicBool,
    /// This replica leads and has finished the start pass, or it follows.
    pub serving: AtomicBool,
    pub leader: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.serving.load(Ordering::Relaxed)
    }
}

/// Why the reconcile loop must look again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Trigger {
    /// A Service was added, changed or deleted.
    Service(ObjectRef<Service>),
    /// A configuration object or Namespace changed: rebuild the configuration.
    Config,
    /// The Service watch re-listed: deletions may have been missed.
    Resync,
}

/// The watch caches the loop reads.
pub(crate) struct Caches {
    pub services: Store<Service>,
    pub namespaces: Store<Namespace>,
    pub pools: Store<IPAddressPool>,
    pub communities: Store<Community>,
}

/// Everything the reconcile loop needs that does not change while it runs.
pub(crate) struct Context {
    pub client: Client,
    pub settings: Settings,
    pub caches: Caches,
    pub events: EventSink,
    /// Events about Services, recorded in the background.
    pub event_queue: EventQueue,
    /// Service writes in flight, published for the event queue (Events wait for writes).
    pub writes_in_flight: watch::Sender<usize>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Runs the controller until `shutdown` becomes true.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let caches = start_watches(&client, &settings.namespace, &tx);

    let (leading_tx, leading_rx) = watch::channel(false);
    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &settings.namespace),
        &settings.lease_name,
        &settings.identity,
        settings.lease,
    );
    let election = tokio::spawn(k8s::lease::run(lock, leading_tx, shutdown.clone()));

    let events = EventSink::new(client.clone(), CONTROLLER_COMPONENT, &settings.identity);
    let (writes_in_flight, writes_seen) = watch::channel(0);
    let context = Context {
        event_queue: EventQueue::start(events.clone(), EVENT_CONCURRENCY, writes_seen),
        writes_in_flight,
        events,
        client,
        settings,
        caches,
        metrics,
        health,
    };
    state::drive(&context, rx, leading_rx, shutdown).await;
    // The election task releases the lease once it sees the shutdown.
    let _ = election.await;
}

fn start_watches(client: &Client, namespace: &str, tx: &mpsc::UnboundedSender<Trigger>) -> Caches {
    let services = {
        let tx = tx.clone();
        k8s::spawn_reflector(Api::<Service>::all(client.clone()), (), move |event| {
            let trigger = match event {
                watcher::Event::Apply(svc)
                | watcher::Event::Delete(svc)
                | watcher::Event::InitApply(svc) => {
                    Some(Trigger::Service(ObjectRef::from_obj(svc)))
                }
                watcher::Event::InitDone => Some(Trigger::Resync),
                watcher::Event::Init => None,
            };
            if let Some(trigger) = trigger {
                let _ = tx.send(trigger);
            }
        })
    };
    let namespaces = k8s::spawn_reflector(
        Api::<Namespace>::all(client.clone()),
        (),
        config_trigger(tx.clone()),
    );
    let pools = k8s::spawn_reflector(
        Api::<IPAddressPool>::namespaced(client.clone(), namespace),
        (),
        config_trigger(tx.clone()),
    );
    let communities = k8s::spawn_reflector(
        Api::<Community>::namespaced(client.clone(), namespace),
        (),
        config_trigger(tx.clone()),
    );
    Caches {
        services,
        namespaces,
        pools,
        communities,
    }
}

/// A watch callback asking for a configuration rebuild on any change of a configuration kind
/// (the initial listing counts once, at its end).
fn config_trigger<K>(
    tx: mpsc::UnboundedSender<Trigger>,
) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    move |event: &watcher::Event<K>| {
        if matches!(
            event,
            watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
        ) {
            let _ = tx.send(Trigger::Config);
        }
    }
}

/// Exponential backoff for failed writes: 250 ms doubling to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << attempt.min(7));
    Duration::from_millis(ms.min(30_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(6), Duration::from_millis(16_000));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
