//! `herald controller`: the reconcile loop around the pure allocator. It follows Services, the
//! configuration kinds the controller parses (IPAddressPools, Communities) and Namespaces,
//! reconciles each Service with [`crate::allocator::Allocator`], and writes what the allocator
//! decided (ingress, pool annotation, Events, pool status, ConfigurationState). It never talks
//! to the API server itself: it reads snapshots of the watch caches and writes through
//! [`crate::k8s::controller`].
//!
//! Only the replica holding the Lease acts. On gaining leadership the allocator starts empty and
//! nothing new is allocated until one full pass has re-claimed every existing address (Services
//! holding addresses first), as MetalLB does on start. Failed writes are retried with backoff;
//! watches reconnect on their own, so an API server restart only delays work.

mod batch;
pub mod config_input;
pub mod metrics;
pub mod plan;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::BgpMode;
use crate::k8s::controller::{Caches, Cluster};
use crate::k8s::events::EventQueue;
use crate::k8s::lease::LeaseTimings;
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

/// Everything the reconcile loop needs that does not change while it runs.
pub(crate) struct Context {
    /// Every write, and the configuration Events.
    pub cluster: Cluster,
    /// The watch caches the loop reads.
    pub caches: Caches,
    pub settings: Settings,
    /// Events about Services, recorded in the background.
    pub event_queue: EventQueue,
    /// Service writes in flight, published for the event queue (Events wait for writes).
    pub writes_in_flight: watch::Sender<usize>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Runs the controller on `cluster` until `shutdown` becomes true.
pub async fn run(
    cluster: Cluster,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let caches = cluster.watch(tx);
    // Campaign only with every cache listed: a leader that cannot see the cluster must not
    // hold the Lease (another replica that can would wait for nothing). Not ready until then.
    let mut stop = shutdown.clone();
    tokio::select! {
        () = caches.wait_synced() => {}
        _ = stop.wait_for(|stop| *stop) => return,
    }
    health
        .synced
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let (leading_tx, leading_rx) = watch::channel(false);
    let election = cluster.elect(
        &settings.lease_name,
        settings.lease,
        leading_tx,
        shutdown.clone(),
    );

    let (writes_in_flight, writes_seen) = watch::channel(0);
    let context = Context {
        event_queue: cluster.event_queue(EVENT_CONCURRENCY, writes_seen),
        writes_in_flight,
        cluster,
        caches,
        settings,
        metrics,
        health,
    };
    state::drive(&context, rx, leading_rx, shutdown).await;
    // The election task releases the lease once it sees the shutdown.
    let _ = election.await;
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
        assert_eq!(backoff(6), Duration::from_secs(16));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
