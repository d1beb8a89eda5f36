//! The speaker process: wires the watches (`k8s::speaker`), the gossip ([`super::gossip`]), the
//! layer-2 announcer over the data plane ([`super::announcer`]) and the BGP sessions beside it
//! ([`super::bgp`]), the guard threads ([`super::guard`]) and the reconcile pass
//! ([`super::reconcile`]) together, until `shutdown`. BGP sessions end with a Cease
//! NOTIFICATION on shutdown: the routers withdraw this node's routes at once.
//!
//! Restarts: the maps and links stay pinned, so a restarted speaker finds its addresses still
//! answered. If the guard was still fresh at start (a quick restart) it keeps it fresh for one
//! detection time while rejoining; otherwise it closes the guard and arms it (with a heartbeat
//! at once) only after its first plan has removed stale claims. While no valid configuration
//! has ever been seen, nothing pinned is justified: the guard is closed and everything
//! withdrawn. Graceful shutdown leaves the gossip first (the survivors take over at
//! once), waits one probe period, then withdraws every address; the links stay pinned.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bgp::{passwords, view};
use crate::daemon::http;
use crate::dataplane::GuardState;
use crate::dataplane::cadence::Cadence;
use crate::dataplane::heartbeat::Guard as _;
use crate::dataplane::plane::{AyaPlane, L2Plane};
use crate::k8s::speaker::{WatchOptions, Watches, Writer};
use crate::speaker::announcer::{Announcer, L2Announcer};
use crate::speaker::auth::{AuthError, GossipKey};
use crate::speaker::bgp::{BgpAnnouncer, Both};
use crate::speaker::gossip::{Gossip, GossipOptions, Health};
use crate::speaker::guard;
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::options::{GossipSettings, Options};
use crate::speaker::reconcile::{Pass, Reconciler, Settings};
use crate::speaker::unanswerable;
use crate::speaker::writer::write_loop;

/// The Event reason of a speaker that stops because no interface can answer.
const REASON_UNANSWERABLE: &str = "cannotAnswer";

/// The shortest wait between a watch event and the pass it causes.
const COALESCE: Duration = Duration::from_millis(5);

/// How long after a change to its status objects the speaker brings them back in line.
const STATUS_RESYNC_AFTER: Duration = Duration::from_secs(1);

/// Runs until `shutdown` resolves (the command passes SIGTERM/SIGINT).
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<()> {
    tracing::info!(node = %options.node, namespace = %options.namespace, pin_dir = %options.pin_dir.display(),
        detect_ms = options.timing.detect.as_millis() as u64,
        guard_budget_ms = options.timing.guard_budget.as_millis() as u64,
        earliest_takeover_ms = options.timing.earliest_takeover().as_millis() as u64,
        "starting herald speaker");
    let client = crate::k8s::client(options.kubeconfig.as_deref()).await?;
    let mut plane = AyaPlane::open(&options.pin_dir, options.dataplane, options.attach_mode)
        .with_context(|| format!("opening the data plane at {}", options.pin_dir.display()))?;
    plane
        .set_rate_limit(options.rate_limit)
        .context("writing the per-source rate limit")?;
    plane
        .set_flood_limit(options.flood_limit)
        .context("writing the flood guard")?;
    let quick_restart = matches!(
        plane.dataplane().guard_state(),
        Ok(GuardState::Fresh { .. })
    );
    // The guard handle of this loop: it closes the guard whenever what is pinned cannot be
    // justified (a slow restart, no valid configuration), so nothing stale is answered.
    let mut guard_handle = plane.guard()?;
    if !quick_restart {
        guard_handle.close()?;
    }
    // A restart that finds the guard still fresh keeps the pinned answers alive from its first
    // instant: connecting to the API server and syncing caches takes longer than the guard budget.
    let bridge = if quick_restart {
        Some(guard::restart_bridge(plane.guard()?, options.timing)?)
    } else {
        None
    };
    let metrics = Arc::new(SpeakerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (bgp_reports, mut bgp_reports_rx) = mpsc::unbounded_channel();
    let mut bgp = BgpAnnouncer::new(
        options.node.clone(),
        options.bgp_mode,
        metrics.bgp.clone(),
        bgp_reports,
    );
    if let Some(addr) = options.metrics_addr {
        let (m, r, board) = (metrics.clone(), ready.clone(), bgp.board());
        let security = crate::k8s::authz::security(&options.metrics_access, &client)?;
        let handler = http::with_json(
            http::endpoints(
                Some(Arc::new(move || m.encode())),
                Some(Arc::new(move || r.load(Ordering::Relaxed))),
            ),
            view::PATH,
            Arc::new(move || {
                serde_json::to_string(&board.status(SystemTime::now())).unwrap_or_default()
            }),
        );
        let bound = http::serve(addr, handler, security)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        tracing::info!(addr = %bound, tls = options.metrics_access.tls.is_some(), token_required = options.metrics_access.authz,
            "metrics on /metrics, BGP sessions on /status/bgp, probes on /healthz and /readyz");
    }

    let watches = Arc::new(Watches::start(
        &client,
        &WatchOptions {
            namespace: options.namespace.clone(),
            node: options.node.clone(),
            ml_labels: options.gossip.as_ref().map(|g| g.labels.clone()),
            ml_secret_name: options
                .gossip
                .as_ref()
                .filter(|g| g.secret_key.is_none())
                .and_then(|g| g.secret_name.clone()),
        },
    ));
    tracing::info!("waiting for the watch caches");
    watches.wait_ready().await;
    tracing::info!("watch caches synced");

    // The interfaces first: a node that cannot answer anywhere must not join the election.
    let mut announcer = L2Announcer::new(
        plane,
        options.filter.clone(),
        options.timing.guard_budget,
        metrics.clone(),
    );
    rescan(&mut announcer);
    let layer2 = !watches.view().l2_advertisements.is_empty();
    if let Some(reason) = cannot_answer(&announcer, &options.node, layer2) {
        return Err(stop_unanswerable(&client, &options, &watches, reason).await);
    }

    let start = Instant::now();
    let mut current_key = options
        .gossip
        .as_ref()
        .and_then(|g| gossip_key(g, &watches));
    let gossip = match &options.gossip {
        None => {
            tracing::info!("memberlist disabled: every Node counts as having a live speaker");
            None
        }
        Some(g) => Some(start_gossip(g, &options, &watches, current_key.as_deref()).await?),
    };
    if let Some(g) = &gossip {
        g.settle(&watches, options.timing.detect * 2).await;
    }
    let health = gossip.as_ref().map(|g| g.gossip.health());

    let armed = Arc::new(AtomicBool::new(quick_restart));
    let heartbeat = guard::regular(
        announcer.plane().guard()?,
        options.timing,
        health.clone(),
        armed.clone(),
        quick_restart,
    )?;
    if let Some(bridge) = bridge
        && let Err(error) = bridge.stop()
    {
        tracing::error!(%error, "the restart guard bridge failed");
    }

    let (writes, write_rx) = mpsc::unbounded_channel();
    let mut reconciler = Reconciler::new(
        Settings {
            node: options.node.clone(),
            lb_class: options.lb_class.clone(),
            ignore_exclude_lb: options.ignore_exclude_lb,
            bgp_mode: options.bgp_mode,
        },
        metrics.clone(),
        writes,
    );
    tokio::spawn(write_loop(
        Writer::new(&client, &options.namespace, &options.node),
        write_rx,
        reconciler.pending_statuses(),
        watches.clone(),
        metrics.clone(),
    ));

    let mut live_rx = gossip.as_ref().map(|g| g.gossip.live());
    let mut rescan_tick = tokio::time::interval(options.rescan_every);
    let mut gratuitous = tokio::time::interval(Cadence::default().interval);
    let mut join_tick = tokio::time::interval(Duration::from_secs(5));
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    let mut handover_tick = tokio::time::interval(options.timing.heartbeat_every);
    let mut reannounce = options.reannounce.map(tokio::time::interval);
    tokio::pin!(shutdown);
    let changed = watches.changed.clone();
    let statuses_changed = watches.statuses_changed.clone();
    // When the status objects this node keeps are next brought back in line: a while after
    // someone else's change to them (each of this speaker's own writes comes back as one too,
    // so they are gathered rather than answered one by one).
    let mut status_resync: Option<Instant> = None;
    let mut dirty = true;
    let mut last_pass = Duration::ZERO;
    let mut unanswerable = None;
    loop {
        if dirty {
            dirty = false;
            let began = Instant::now();
            if let Some(h) = &health {
                h.others_ready
                    .store(watches.others_ready(&options.node), Ordering::Relaxed);
            }
            let live = live_rx.as_mut().map(|rx| rx.borrow_and_update().clone());
            let eligible = announcer.eligible().clone();
            let view = watches.view();
            bgp.set_passwords(passwords::resolve(&view.bgp_peers, &view.password_secrets));
            bgp.set_node_addresses(watches.node_addresses(&options.node));
            let pass = reconciler.reconcile(
                &view,
                live.as_ref(),
                &eligible,
                &mut Both(&mut announcer, &mut bgp),
                start.elapsed(),
            );
            match pass {
                // Stale claims are gone: answer from now on, with a heartbeat at once.
                Pass::Applied => {
                    if !armed.swap(true, Ordering::Relaxed) {
                        heartbeat.wake();
                    }
                }
                // Nothing justifies what a restart found pinned: stop answering it.
                Pass::NoConfig => {
                    armed.store(false, Ordering::Relaxed);
                    if let Err(error) = guard_handle.close() {
                        tracing::error!(%error, "closing the guard failed");
                    }
                    Both(&mut announcer, &mut bgp).withdraw_everything();
                }
            }
            ready.store(true, Ordering::Relaxed);
            last_pass = began.elapsed();
            let layer2 = !view.l2_advertisements.is_empty();
            if let Some(reason) = cannot_answer(&announcer, &options.node, layer2) {
                unanswerable = Some(reason);
                break;
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = changed.notified() => {
                metrics.updates.inc();
                // Coalesce a burst of watch events into one pass: a few milliseconds, and at
                // least as long as the last pass took, so that under a stream of events passes
                // take at most half the time and each one takes in what arrived meanwhile.
                tokio::time::sleep(COALESCE.max(last_pass)).await;
                if let (Some(settings), Some(g)) = (&options.gossip, &gossip) {
                    match next_key(current_key.as_deref(), gossip_key(settings, &watches)) {
                        KeyChange::Same => {}
                        KeyChange::KeptAfterRemoval => tracing::warn!(
                            "the memberlist secret is gone or empty: keeping the last key (gossip stays authenticated)"
                        ),
                        KeyChange::New(key) => {
                            tracing::info!("memberlist secret changed");
                            g.gossip.set_key(GossipKey::new(Some(&key)));
                            current_key = Some(key);
                        }
                    }
                }
                dirty = true;
            }
            changed = async { match live_rx.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                if changed.is_ok() {
                    if let Some(rx) = &live_rx {
                        tracing::info!(live = ?*rx.borrow(), "membership changed");
                    }
                    dirty = true;
                }
            }
            Some(report) = bgp_reports_rx.recv() => reconciler.report_session(&report),
            () = statuses_changed.notified() => {
                status_resync.get_or_insert_with(|| Instant::now() + STATUS_RESYNC_AFTER);
            }
            () = async { match status_resync { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                status_resync = None;
                reconciler.resync_statuses();
            }
            _ = rescan_tick.tick() => dirty |= rescan(&mut announcer),
            _ = join_tick.tick() => {
                if let Some(g) = &gossip {
                    g.gossip.join(g.seeds(&watches));
                }
            }
            _ = handover_tick.tick(), if announcer.handover_pending() => dirty = true,
            _ = gratuitous.tick() => announcer.gratuitous_tick(start.elapsed()),
            () = async { match reannounce.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                announcer.reannounce();
            }
            _ = metrics_tick.tick() => {
                let seen = announcer.observe();
                reconciler.report_claims(&seen.claims, start.elapsed());
                reconciler.report_mode_changes(&seen.mode_changes);
                if let Some(h) = &health {
                    observe_gossip(&metrics, h);
                }
            }
        }
    }

    tracing::info!("shutting down: leaving the gossip, then withdrawing");
    if let Some(g) = &gossip {
        g.gossip.leave().await;
        tokio::time::sleep(options.timing.probe_period).await;
    }
    announcer.withdraw_everything();
    bgp.shutdown().await;
    metrics.set_announced(&options.node, &BTreeSet::new());
    metrics.set_announced_bgp(&options.node, &BTreeSet::new());
    announcer.shutdown();
    if let Err(error) = heartbeat.stop() {
        tracing::error!(%error, "the guard thread failed");
    }
    if let Some(reason) = unanswerable {
        return Err(stop_unanswerable(&client, &options, &watches, reason).await);
    }
    tracing::info!("speaker stopped; XDP links stay pinned for the next start");
    Ok(())
}

/// Why this node cannot answer on any interface while layer 2 is configured, if so.
fn cannot_answer<P: L2Plane>(
    announcer: &L2Announcer<P>,
    node: &str,
    layer2: bool,
) -> Option<String> {
    let (refused, served) = announcer.answerable();
    unanswerable::verdict(node, refused, served, layer2)
}

/// Records why the speaker stops (an Event on its Pod, else on its Node) and returns the error
/// it exits with.
async fn stop_unanswerable(
    client: &kube::Client,
    options: &Options,
    watches: &Watches,
    reason: String,
) -> anyhow::Error {
    tracing::error!(node = %options.node, %reason, "no interface can answer; stopping");
    let writer = Writer::new(client, &options.namespace, &options.node);
    let recorded = match watches.view().own_pod {
        Some(pod) => writer.pod_event(&pod, REASON_UNANSWERABLE, &reason).await,
        None => writer.node_event(true, REASON_UNANSWERABLE, &reason).await,
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, "recording why the speaker stops failed");
    }
    anyhow::anyhow!(reason)
}

/// Lists the interfaces and hands them to the announcer; true when the usable set changed.
fn rescan<P: L2Plane>(announcer: &mut L2Announcer<P>) -> bool {
    match super::scan::scan() {
        Ok(facts) => announcer.rescan(&facts),
        Err(error) => {
            tracing::warn!(%error, "listing interfaces failed; keeping the previous set");
            false
        }
    }
}

/// The running gossip and the address peers reach it at.
struct Joined {
    gossip: Gossip,
    advertise: IpAddr,
    port: u16,
}

impl Joined {
    /// The other speakers' node names and gossip addresses, from their Pods.
    fn seeds(&self, watches: &Watches) -> Vec<(String, SocketAddr)> {
        watches
            .peers()
            .into_iter()
            .filter(|(_, ip)| *ip != self.advertise)
            .map(|(node, ip)| (node, SocketAddr::new(ip, self.port)))
            .collect()
    }

    /// Joins the peers and lets the membership settle (at most `limit`), so the first plan does
    /// not claim what others hold.
    async fn settle(&self, watches: &Watches, limit: Duration) {
        let peers = self.seeds(watches);
        self.gossip.join(peers.clone());
        if peers.is_empty() {
            return;
        }
        let mut live = self.gossip.live();
        let settle = tokio::time::sleep(limit);
        tokio::pin!(settle);
        loop {
            if live.borrow().len() > 1 {
                break;
            }
            tokio::select! {
                () = &mut settle => break,
                changed = live.changed() => if changed.is_err() { break },
            }
        }
    }
}

async fn start_gossip(
    g: &GossipSettings,
    options: &Options,
    watches: &Watches,
    key: Option<&[u8]>,
) -> Result<Joined> {
    if key.is_none() {
        tracing::warn!(
            "no memberlist secret yet: gossip runs unauthenticated until the Secret appears"
        );
    }
    let advertise = advertise_ip(g, watches, &options.node).context(
        "no gossip address: pass --ml-advertise-addr, or bind --ml-bind-addr to the node address",
    )?;
    let bump = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let gossip = Gossip::start(GossipOptions {
        bind: g.bind,
        advertise: SocketAddr::new(advertise, g.bind.port()),
        node: options.node.clone(),
        timing: options.timing,
        key: GossipKey::new(key),
        bump,
        wall_start_ms: None,
    })
    .await
    .with_context(|| format!("binding the gossip socket {}", g.bind))?;
    let port = gossip.local_addr().port();
    tracing::info!(bind = %gossip.local_addr(), %advertise, "gossip started");
    Ok(Joined {
        gossip,
        advertise,
        port,
    })
}

/// What a look at the memberlist secret changes.
#[derive(Debug, PartialEq, Eq)]
enum KeyChange {
    Same,
    /// The secret is gone (deleted, emptied or unreadable): authentication is never switched
    /// off by that; the last key stays until a new one arrives.
    KeptAfterRemoval,
    New(Vec<u8>),
}

fn next_key(current: Option<&[u8]>, seen: Option<Vec<u8>>) -> KeyChange {
    // An emptied key is no key: it never switches authentication off either.
    let seen = seen.filter(|key| !key.is_empty());
    match (current, seen) {
        (Some(_), None) => KeyChange::KeptAfterRemoval,
        (None, None) => KeyChange::Same,
        (Some(current), Some(seen)) if current == seen.as_slice() => KeyChange::Same,
        (_, Some(seen)) => KeyChange::New(seen),
    }
}

fn gossip_key(g: &GossipSettings, watches: &Watches) -> Option<Vec<u8>> {
    match &g.secret_key {
        Some(key) => Some(key.as_bytes().to_vec()),
        None => watches.secret_key(),
    }
}

/// The gossip address: explicit, else the bind address, else this Node's InternalIP, else
/// this node's speaker Pod IP.
fn advertise_ip(g: &GossipSettings, watches: &Watches, node: &str) -> Option<IpAddr> {
    if let Some(ip) = g.advertise {
        return Some(ip);
    }
    if !g.bind.ip().is_unspecified() {
        return Some(g.bind.ip());
    }
    watches
        .node_internal_ip(node)
        .or_else(|| watches.own_pod_ip(node))
}

fn observe_gossip(metrics: &SpeakerMetrics, health: &Health) {
    let sync = |counter: &prometheus_client::metrics::counter::Counter, value: u64| {
        let have = counter.get();
        if value > have {
            counter.inc_by(value - have);
        }
    };
    sync(
        &metrics.gossip_auth_failures,
        health.auth_failures.load(Ordering::Relaxed),
    );
    sync(
        &metrics.gossip_received,
        health.received.load(Ordering::Relaxed),
    );
    sync(&metrics.gossip_sent, health.sent.load(Ordering::Relaxed));
    for (reason, count) in AuthError::ALL.iter().zip(&health.dropped) {
        sync(
            &metrics
                .gossip_dropped
                .get_or_create(&vec![("reason", reason.reason())]),
            count.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_secret_never_switches_authentication_off() {
        assert_eq!(next_key(Some(b"k1"), None), KeyChange::KeptAfterRemoval);
        assert_eq!(next_key(Some(b"k1"), Some(b"k1".to_vec())), KeyChange::Same);
        assert_eq!(
            next_key(Some(b"k1"), Some(b"k2".to_vec())),
            KeyChange::New(b"k2".to_vec())
        );
        assert_eq!(
            next_key(Some(b"k1"), Some(Vec::new())),
            KeyChange::KeptAfterRemoval,
            "an emptied key is a removed one"
        );
        assert_eq!(next_key(None, Some(Vec::new())), KeyChange::Same);
        assert_eq!(next_key(None, None), KeyChange::Same);
        assert_eq!(
            next_key(None, Some(b"k".to_vec())),
            KeyChange::New(b"k".to_vec())
        );
    }
}
