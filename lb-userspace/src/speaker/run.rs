//! The speaker process: wires the watches (`k8s::speaker`), the gossip ([`super::gossip`]), the
//! data plane and the pure [`super::plan`] together.
//!
//! Order of events on a change: recompute the plan, withdraw what this node no longer owns,
//! announce what it newly owns (map write, then an immediate gratuitous round), then queue the
//! ServiceL2Status writes and Events for a writer task so the API server never delays the data
//! plane. A separate OS thread refreshes the XDP guard (see [`super::timing`] for the bound).
//!
//! Restarts: the maps and links stay pinned, so a restarted speaker finds its addresses still
//! answered. If the guard was still fresh at start (a quick restart) it keeps it fresh for one
//! detection time while rejoining; otherwise it refreshes nothing until its first plan has
//! removed stale claims. Graceful shutdown leaves the gossip first (the survivors take over at
//! once), waits one probe period, then withdraws every address; the links stay pinned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{self, Config, Snapshot};
use crate::dataplane::cadence::{Cadence, Windows};
use crate::dataplane::fallback::{Fallback, FallbackStats, Marker};
use crate::dataplane::gratuitous::Sender;
use crate::dataplane::keys::Mac;
use crate::dataplane::netdev::{self, Interface};
use crate::dataplane::{self, AttachMode, Dataplane, DataplaneChoice, GuardState, ServedBy};
use crate::k8s::speaker::{WatchOptions, Watches, Writer};
use crate::speaker::auth::GossipKey;
use crate::speaker::gossip::{Gossip, GossipOptions, Health};
use crate::speaker::interfaces::{self, Eligible, InterfaceFilter};
use crate::speaker::metrics::SpeakerMetrics;
use crate::speaker::plan::{self, ExistingStatus, Inputs, Plan, PlannedEvent, Target};
use crate::speaker::timing::{GuardInput, Timing, guard_timeout};

/// Memberlist settings; absent when memberlist is disabled (every Node counts as live).
#[derive(Clone, Debug)]
pub struct GossipSettings {
    pub bind: SocketAddr,
    /// Address peers reach us at; `None`: the bind address, or this Node's InternalIP when
    /// bound to the unspecified address.
    pub advertise: Option<IpAddr>,
    /// Label selector of the speaker Pods.
    pub labels: String,
    pub secret_name: Option<String>,
    /// The secret itself (overrides the Secret).
    pub secret_key: Option<String>,
}

/// Everything the command line decides.
#[derive(Clone, Debug)]
pub struct Options {
    pub node: String,
    pub namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub gossip: Option<GossipSettings>,
    pub metrics_addr: Option<SocketAddr>,
    pub timing: Timing,
    pub reannounce: Option<Duration>,
    pub filter: InterfaceFilter,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    pub rescan_every: Duration,
    pub attach_mode: AttachMode,
    /// Who answers: XDP, a userspace AF_PACKET responder per interface, or XDP falling back
    /// to userspace on interfaces where it cannot attach.
    pub dataplane: DataplaneChoice,
}

/// Work for the API writer task.
enum Job {
    Statuses(
        BTreeMap<String, crate::api::L2ServiceStatus>,
        Option<Box<Pod>>,
    ),
    Event(PlannedEvent, Option<String>),
    /// ConfigurationState `speaker-<node>`: `None` = valid, else the error summary.
    ConfigState(Option<String>, Option<Box<Pod>>),
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(options: Options) -> Result<()> {
    tracing::info!(node = %options.node, namespace = %options.namespace, pin_dir = %options.pin_dir.display(),
        detect_ms = options.timing.detect.as_millis() as u64,
        guard_budget_ms = options.timing.guard_budget.as_millis() as u64,
        earliest_takeover_ms = options.timing.earliest_takeover().as_millis() as u64,
        "starting herald speaker");
    let client = crate::k8s::client(options.kubeconfig.as_deref()).await?;
    let dp = Dataplane::open(&options.pin_dir)
        .with_context(|| format!("opening the data plane at {}", options.pin_dir.display()))?;
    let quick_restart = matches!(dp.guard_state(), Ok(GuardState::Fresh { .. }));
    // A restart that finds the guard still fresh keeps the pinned answers alive from its first
    // instant: connecting to the API server and syncing caches takes longer than the guard budget.
    let bridge = if quick_restart {
        Some(spawn_restart_bridge(&options)?)
    } else {
        None
    };
    let metrics = Arc::new(SpeakerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = options.metrics_addr {
        serve_metrics(addr, metrics.clone(), ready.clone()).await?;
    }

    let watch_options = WatchOptions {
        namespace: options.namespace.clone(),
        node: options.node.clone(),
        ml_labels: options.gossip.as_ref().map(|g| g.labels.clone()),
        ml_secret_name: options
            .gossip
            .as_ref()
            .filter(|g| g.secret_key.is_none())
            .and_then(|g| g.secret_name.clone()),
    };
    let watches = Watches::start(&client, &watch_options);
    tracing::info!("waiting for the watch caches");
    watches.wait_ready().await;
    tracing::info!("watch caches synced");

    // Gossip.
    let start = Instant::now();
    let mut gossip_port = 0;
    let mut current_key: Option<Vec<u8>> = None;
    let gossip = match &options.gossip {
        None => {
            tracing::info!("memberlist disabled: every Node counts as having a live speaker");
            None
        }
        Some(g) => {
            current_key = gossip_key(g, &watches);
            if current_key.is_none() {
                tracing::warn!(
                    "no memberlist secret yet: gossip runs unauthenticated until the Secret appears"
                );
            }
            let advertise_ip = advertise_ip(g, &watches, &options.node)
                .context("no gossip address: pass --ml-advertise-addr, or bind --ml-bind-addr to the node address")?;
            let bump = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1);
            let started = Gossip::start(GossipOptions {
                bind: g.bind,
                advertise: SocketAddr::new(advertise_ip, g.bind.port()),
                node: options.node.clone(),
                timing: options.timing,
                key: GossipKey::new(current_key.as_deref()),
                bump,
            })
            .await
            .with_context(|| format!("binding the gossip socket {}", g.bind))?;
            gossip_port = started.local_addr().port();
            tracing::info!(bind = %started.local_addr(), advertise = %advertise_ip, "gossip started");
            Some((started, advertise_ip))
        }
    };
    let seeds = |watches: &Watches| -> Vec<SocketAddr> {
        let own = gossip.as_ref().map(|(_, ip)| *ip);
        watches
            .peer_ips()
            .into_iter()
            .filter(|ip| Some(*ip) != own)
            .map(|ip| SocketAddr::new(ip, gossip_port))
            .collect()
    };
    let health = gossip.as_ref().map(|(g, _)| g.health());
    if let Some((g, _)) = &gossip {
        let peers = seeds(&watches);
        g.join(peers.clone());
        if !peers.is_empty() {
            // Let the membership settle so the first plan does not claim what others hold.
            let mut live = g.live();
            let settle = tokio::time::sleep(options.timing.detect * 2);
            tokio::pin!(settle);
            loop {
                if live.borrow().len() > 1 {
                    break;
                }
                tokio::select! {
                    _ = &mut settle => break,
                    changed = live.changed() => if changed.is_err() { break },
                }
            }
        }
    }

    // Guard refresh thread.
    let armed = Arc::new(AtomicBool::new(quick_restart));
    let stop_heartbeat = Arc::new(AtomicBool::new(false));
    let heartbeat = spawn_heartbeat(
        &options,
        health.clone(),
        armed.clone(),
        stop_heartbeat.clone(),
        quick_restart,
    )?;
    if let Some((stop, handle)) = bridge {
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }

    // Writer task.
    let (jobs, job_rx) = mpsc::unbounded_channel();
    let writer = Writer::new(&client, &options.namespace, &options.node);
    tokio::spawn(write_loop(
        writer,
        client.clone(),
        job_rx,
        watches_statuses(&watches),
        metrics.clone(),
    ));

    let mut speaker = Speaker {
        options: options.clone(),
        dp,
        sender: Sender::open()
            .map_err(|e| tracing::warn!(error = %e, "no gratuitous sender"))
            .ok(),
        windows: Windows::new(Cadence::default()),
        ifaces: BTreeMap::new(),
        served: BTreeMap::new(),
        responders: BTreeMap::new(),
        fallback_stats: BTreeMap::new(),
        eligible: Eligible::default(),
        config: None,
        verdict: None,
        events: BTreeSet::new(),
        plan: Plan::default(),
        handover: BTreeMap::new(),
        metrics: metrics.clone(),
        jobs,
        start,
    };
    speaker.rescan();

    let mut live_rx = gossip.as_ref().map(|(g, _)| g.live());
    let mut rescan = tokio::time::interval(options.rescan_every);
    let mut gratuitous = tokio::time::interval(Cadence::default().interval);
    let mut join_tick = tokio::time::interval(Duration::from_secs(5));
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    let mut handover_tick = tokio::time::interval(options.timing.heartbeat_every);
    let mut reannounce = options.reannounce.map(tokio::time::interval);
    let shutdown = crate::cli::wait_for_signal();
    tokio::pin!(shutdown);
    let changed = watches.changed.clone();
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            let live = live_rx.as_mut().map(|rx| rx.borrow_and_update().clone());
            speaker.reconcile(&watches, live.as_ref());
            armed.store(true, Ordering::Relaxed);
            ready.store(true, Ordering::Relaxed);
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {
                metrics.updates.inc();
                // Coalesce a burst of watch events into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let (Some(g), Some((gossip, _))) = (&options.gossip, &gossip) {
                    let key = gossip_key(g, &watches);
                    if key != current_key {
                        tracing::info!(authenticated = key.is_some(), "memberlist secret changed");
                        gossip.set_key(GossipKey::new(key.as_deref()));
                        current_key = key;
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
            _ = rescan.tick() => {
                if speaker.rescan() {
                    dirty = true;
                }
            }
            _ = join_tick.tick() => {
                if let Some((g, _)) = &gossip {
                    g.join(seeds(&watches));
                }
            }
            _ = handover_tick.tick(), if !speaker.handover.is_empty() => dirty = true,
            _ = gratuitous.tick() => speaker.gratuitous_tick(),
            _ = async { match reannounce.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                speaker.reannounce();
            }
            _ = metrics_tick.tick() => {
                speaker.observe();
                if let Some(h) = &health {
                    observe_gossip(&metrics, h);
                }
            }
        }
    }

    tracing::info!("shutting down: leaving the gossip, then withdrawing");
    if let Some((g, _)) = &gossip {
        g.leave().await;
        tokio::time::sleep(options.timing.probe_period).await;
    }
    speaker.withdraw_everything();
    speaker.stop_all_responders();
    stop_heartbeat.store(true, Ordering::Relaxed);
    let _ = heartbeat.join();
    tracing::info!("speaker stopped; XDP links stay pinned for the next start");
    Ok(())
}

fn watches_statuses(
    watches: &Watches,
) -> kube::runtime::reflector::Store<crate::api::ServiceL2Status> {
    watches.l2_statuses.clone()
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
    let from_node = watches.nodes.state().iter().find_map(|n| {
        if n.metadata.name.as_deref() != Some(node) {
            return None;
        }
        n.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse().ok())
    });
    from_node.or_else(|| {
        watches
            .own_pod(node)?
            .status
            .as_ref()?
            .pod_ip
            .as_deref()?
            .parse()
            .ok()
    })
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
}

/// The guard refresh: its own thread and its own map handles, so nothing in the async runtime
/// can delay it (and a hung runtime cannot keep it alive: it reads the gossip's last contact).
/// Beats the guard during start-up after a quick restart, until the regular guard thread takes
/// over; never longer than `startup_grace` (the same bound the regular thread's grace has).
fn spawn_restart_bridge(
    options: &Options,
) -> Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let mut dp = Dataplane::open(&options.pin_dir)
        .with_context(|| format!("opening the guard at {}", options.pin_dir.display()))?;
    let timing = options.timing;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name("guard-bridge".into())
        .spawn(move || {
            let started = Instant::now();
            while !stop_flag.load(Ordering::Relaxed) && started.elapsed() < timing.startup_grace {
                if let Err(error) = dp.heartbeat(timing.guard_budget) {
                    tracing::error!(%error, "guard heartbeat failed");
                }
                std::thread::sleep(timing.heartbeat_every);
            }
        })
        .context("starting the restart guard bridge")?;
    Ok((stop, handle))
}

fn spawn_heartbeat(
    options: &Options,
    health: Option<Arc<Health>>,
    armed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    quick_restart: bool,
) -> Result<std::thread::JoinHandle<()>> {
    let mut dp = Dataplane::open(&options.pin_dir)
        .with_context(|| format!("opening the guard at {}", options.pin_dir.display()))?;
    let timing = options.timing;
    let start_ns = dataplane::monotonic_ns();
    let grace_until = quick_restart.then(|| Duration::from_nanos(start_ns) + timing.startup_grace);
    std::thread::Builder::new()
        .name("guard".into())
        .spawn(move || {
            let mut silent = false;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(timing.heartbeat_every);
                if !armed.load(Ordering::Relaxed) {
                    continue;
                }
                let now = Duration::from_nanos(dataplane::monotonic_ns());
                let input = match &health {
                    None => GuardInput {
                        now,
                        last_contact: None,
                        peers_in_view: false,
                        grace_until: None,
                    },
                    Some(h) => {
                        let contact = h.last_contact_ns.load(Ordering::Relaxed);
                        GuardInput {
                            now,
                            last_contact: (contact != 0).then(|| Duration::from_nanos(contact)),
                            peers_in_view: h.peers_in_view.load(Ordering::Relaxed),
                            grace_until,
                        }
                    }
                };
                match guard_timeout(&timing, &input) {
                    Some(timeout) => {
                        if let Err(error) = dp.heartbeat(timeout) {
                            tracing::error!(%error, "guard heartbeat failed");
                        } else if silent {
                            silent = false;
                            tracing::info!("peers heard again: answering");
                        }
                    }
                    None if !silent => {
                        silent = true;
                        tracing::warn!(
                            "no contact with any peer: letting the guard run out (stop answering)"
                        );
                    }
                    None => {}
                }
            }
        })
        .context("starting the guard thread")
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<SpeakerMetrics>,
    ready: Arc<AtomicBool>,
) -> Result<()> {
    let bound = crate::controller::http::serve(
        addr,
        Arc::new(move |path: &str| match path {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.encode(),
            ),
            "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if ready.load(Ordering::Relaxed) => {
                (StatusCode::OK, "text/plain", "ok\n".into())
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }),
    )
    .await
    .with_context(|| format!("listening for metrics on {addr}"))?;
    tracing::info!(addr = %bound, "metrics on /metrics, probes on /healthz and /readyz");
    Ok(())
}

/// Applies status and event jobs in order. Status jobs carry the whole desired set; only the
/// latest queued one is applied. Objects it created are remembered until the watch shows
/// them, so a quick second pass does not create duplicates.
async fn write_loop(
    writer: Writer,
    client: kube::Client,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    store: kube::runtime::reflector::Store<crate::api::ServiceL2Status>,
    metrics: Arc<SpeakerMetrics>,
) {
    let mut created: BTreeMap<String, ExistingStatus> = BTreeMap::new();
    while let Some(job) = jobs.recv().await {
        match job {
            Job::ConfigState(errors, owner) => {
                let now = format!("{:.0}", k8s_openapi::jiff::Timestamp::now());
                let status = plan::configuration_state_status(errors.as_deref(), &now);
                if let Err(error) = writer
                    .configuration_state(&client, status, owner.as_deref())
                    .await
                {
                    metrics.update_errors.inc();
                    tracing::warn!(%error, "ConfigurationState write failed");
                }
            }
            Job::Event(event, uid) => {
                if let Err(error) = writer.event(&event, uid).await {
                    metrics.update_errors.inc();
                    tracing::warn!(service = %format!("{}/{}", event.namespace, event.name), reason = event.reason, %error, "recording event failed");
                }
            }
            Job::Statuses(mut desired, mut owner) => {
                // Skip to the newest status job, keeping events in between.
                let mut events = Vec::new();
                while let Ok(next) = jobs.try_recv() {
                    match next {
                        Job::Statuses(d, o) => {
                            desired = d;
                            owner = o;
                        }
                        Job::Event(e, u) => events.push((e, u)),
                        Job::ConfigState(errors, owner) => {
                            // Rare; apply after this pass by re-queueing is not possible on
                            // a receiver, so write it now.
                            let now = format!("{:.0}", k8s_openapi::jiff::Timestamp::now());
                            let status = plan::configuration_state_status(errors.as_deref(), &now);
                            if let Err(error) = writer
                                .configuration_state(&client, status, owner.as_deref())
                                .await
                            {
                                metrics.update_errors.inc();
                                tracing::warn!(%error, "ConfigurationState write failed");
                            }
                        }
                    }
                }
                let listed = existing_from(&store);
                let listed_names: BTreeSet<String> =
                    listed.iter().map(|e| e.name.clone()).collect();
                created.retain(|name, _| !listed_names.contains(name));
                let mut existing = listed;
                existing.extend(created.values().cloned());
                for action in plan::status_actions(&existing, &desired) {
                    let result = writer.status(&action, owner.as_deref()).await;
                    match (&action, result) {
                        (
                            plan::StatusAction::Create {
                                service_key,
                                status,
                            },
                            Ok(Some(name)),
                        ) => {
                            created.insert(
                                name.clone(),
                                ExistingStatus {
                                    name,
                                    service_key: Some(service_key.clone()),
                                    status: Some(status.clone()),
                                },
                            );
                        }
                        (plan::StatusAction::Delete { name }, Ok(_)) => {
                            created.remove(name);
                        }
                        (_, Ok(_)) => {}
                        (action, Err(error)) => {
                            metrics.update_errors.inc();
                            tracing::warn!(?action, %error, "ServiceL2Status write failed");
                        }
                    }
                }
                for (event, uid) in events {
                    if let Err(error) = writer.event(&event, uid).await {
                        metrics.update_errors.inc();
                        tracing::warn!(reason = event.reason, %error, "recording event failed");
                    }
                }
            }
        }
    }
}

fn existing_from(
    store: &kube::runtime::reflector::Store<crate::api::ServiceL2Status>,
) -> Vec<ExistingStatus> {
    use crate::k8s::speaker::{LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE};
    store
        .state()
        .iter()
        .filter_map(|s| {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            Some(ExistingStatus {
                name: s.metadata.name.clone()?,
                service_key: match (
                    labels.get(LABEL_SERVICE_NAMESPACE),
                    labels.get(LABEL_SERVICE_NAME),
                ) {
                    (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
                    _ => None,
                },
                status: s.status.clone(),
            })
        })
        .collect()
}

/// A userspace responder thread of the speaker.
struct Responder {
    index: u32,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<dataplane::Result<()>>,
}

/// The data-plane side of the speaker.
struct Speaker {
    options: Options,
    dp: Dataplane,
    sender: Option<Sender>,
    windows: Windows<Target>,
    /// Eligible interfaces with a responder (XDP or userspace), by name.
    ifaces: BTreeMap<String, Interface>,
    /// Who answers on each of `ifaces` (with the index it was decided for).
    served: BTreeMap<String, (u32, ServedBy)>,
    /// Userspace responders of this process, by interface.
    responders: BTreeMap<String, Responder>,
    /// Their counters, kept across a restarted responder (metrics stay monotonic).
    fallback_stats: BTreeMap<String, Arc<FallbackStats>>,
    eligible: Eligible,
    config: Option<Config>,
    /// The last ConfigurationState verdict sent (`Some(None)` = valid).
    verdict: Option<Option<String>>,
    events: BTreeSet<PlannedEvent>,
    plan: Plan,
    /// Withdrawals waiting out the hand-over overlap, with when they were first planned.
    handover: BTreeMap<Target, Duration>,
    metrics: Arc<SpeakerMetrics>,
    jobs: mpsc::UnboundedSender<Job>,
    start: Instant,
}

impl Speaker {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Rescans interfaces and attaches XDP to newly eligible ones; true when the set changed.
    fn rescan(&mut self) -> bool {
        let facts = match super::scan::scan() {
            Ok(facts) => facts,
            Err(error) => {
                tracing::warn!(%error, "listing interfaces failed; keeping the previous set");
                return false;
            }
        };
        let mut eligible = interfaces::eligible(&facts, &self.options.filter);
        let mut ifaces = BTreeMap::new();
        let mut served = BTreeMap::new();
        for name in eligible.all() {
            let result = Interface::by_name(&name)
                .map_err(|e| e.to_string())
                .and_then(|iface| self.serve(&iface).map(|by| (iface, by)));
            match result {
                Ok((iface, by)) => {
                    served.insert(name.clone(), (iface.index, by));
                    ifaces.insert(name, iface);
                }
                Err(error) if self.options.dataplane == DataplaneChoice::Xdp => {
                    tracing::warn!(iface = %name, %error, "cannot attach XDP; interface not used");
                    eligible.ipv4.remove(&name);
                    eligible.ipv6.remove(&name);
                }
                Err(error) => {
                    tracing::warn!(iface = %name, %error, "cannot answer in userspace; interface not used");
                    eligible.ipv4.remove(&name);
                    eligible.ipv6.remove(&name);
                }
            }
        }
        for gone in self.ifaces.keys().filter(|n| !ifaces.contains_key(*n)) {
            tracing::warn!(iface = %gone, "interface no longer eligible (gone, down or excluded)");
        }
        let stale: Vec<String> = self
            .responders
            .keys()
            .filter(|n| served.get(*n).map(|(_, by)| *by) != Some(ServedBy::Userspace))
            .cloned()
            .collect();
        for name in stale {
            self.stop_responder(&name);
        }
        self.metrics.set_dataplane_modes(
            &served
                .iter()
                .map(|(name, (_, by))| (name.clone(), by.as_str()))
                .collect::<Vec<_>>(),
        );
        self.served = served;
        let changed = eligible != self.eligible
            || ifaces
                .iter()
                .any(|(n, i)| self.ifaces.get(n).map(|o| o.index) != Some(i.index));
        if changed {
            tracing::info!(ipv4 = ?eligible.ipv4, ipv6 = ?eligible.ipv6, "eligible interfaces");
        }
        self.eligible = eligible;
        self.ifaces = ifaces;
        changed
    }

    /// Makes sure something answers on `iface`, per `--dataplane`; says who.
    fn serve(&mut self, iface: &Interface) -> std::result::Result<ServedBy, String> {
        let userspace = match self.options.dataplane {
            DataplaneChoice::Userspace => true,
            DataplaneChoice::Xdp => false,
            // Once fallen back, stay: retrying XDP would load the program again every rescan.
            DataplaneChoice::Auto => {
                self.served.get(&iface.name) == Some(&(iface.index, ServedBy::Userspace))
            }
        };
        if !userspace {
            match self.dp.attach(iface, self.options.attach_mode) {
                Ok(a) => {
                    if !a.already {
                        tracing::info!(iface = %iface.name, mode = %a.mode, "XDP attached");
                    }
                    return Ok(a.mode.into());
                }
                Err(error) if self.options.dataplane == DataplaneChoice::Auto => {
                    tracing::warn!(iface = %iface.name, %error, "XDP cannot attach; falling back to userspace (AF_PACKET responder)");
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        self.ensure_responder(iface)?;
        Ok(ServedBy::Userspace)
    }

    /// Starts this process's userspace responder on `iface` unless it runs already.
    fn ensure_responder(&mut self, iface: &Interface) -> std::result::Result<(), String> {
        if self
            .responders
            .get(&iface.name)
            .is_some_and(|r| r.index == iface.index && !r.handle.is_finished())
        {
            return Ok(());
        }
        self.stop_responder(&iface.name);
        // XDP and userspace must not both answer (every reply would go out twice).
        if self
            .dp
            .release_link(&iface.name)
            .map_err(|e| e.to_string())?
        {
            tracing::warn!(iface = %iface.name, "unpinned the XDP link: this interface is answered in userspace now");
        }
        let stats = self
            .fallback_stats
            .entry(iface.name.clone())
            .or_default()
            .clone();
        let fallback = Fallback::open_with_stats(iface, stats).map_err(|e| e.to_string())?;
        let mut own = Dataplane::open(&self.options.pin_dir).map_err(|e| e.to_string())?;
        let marker =
            Marker::create(&self.options.pin_dir, &iface.name).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("fallback".into())
            .spawn(move || {
                let result = fallback.serve(&mut own, &flag);
                drop(marker);
                result
            })
            .map_err(|e| format!("starting the userspace responder: {e}"))?;
        self.dp.serve_in_userspace(iface);
        tracing::info!(iface = %iface.name, "answering in userspace (AF_PACKET)");
        self.responders.insert(
            iface.name.clone(),
            Responder {
                index: iface.index,
                stop,
                handle,
            },
        );
        Ok(())
    }

    /// Stops this process's userspace responder on `name` (it ends within its poll interval).
    fn stop_responder(&mut self, name: &str) {
        let Some(r) = self.responders.remove(name) else {
            return;
        };
        r.stop.store(true, Ordering::Relaxed);
        self.dp.stop_serving_in_userspace(r.index);
        if r.handle.is_finished() {
            match r.handle.join() {
                Ok(Err(error)) => {
                    tracing::error!(iface = %name, %error, "userspace responder ended")
                }
                Err(_) => tracing::error!(iface = %name, "userspace responder panicked"),
                Ok(Ok(())) => {}
            }
        }
    }

    fn stop_all_responders(&mut self) {
        let all: Vec<Responder> = std::mem::take(&mut self.responders).into_values().collect();
        for r in &all {
            r.stop.store(true, Ordering::Relaxed);
        }
        for r in all {
            let _ = r.handle.join();
        }
    }

    /// What the maps hold, as targets; entries of interfaces we do not know are `Err(key)`.
    fn current(&self) -> (BTreeSet<Target>, Vec<(u32, IpAddr)>) {
        let mut known = BTreeSet::new();
        let mut stale = Vec::new();
        match self.dp.keys() {
            Ok(keys) => {
                for key in keys {
                    let found = self.ifaces.iter().find(|(_, i)| i.index == key.ifindex());
                    match found {
                        Some((name, _)) => {
                            known.insert(Target {
                                iface: name.clone(),
                                ip: key.ip(),
                            });
                        }
                        None => stale.push((key.ifindex(), key.ip())),
                    }
                }
            }
            Err(error) => tracing::error!(%error, "reading the announced addresses failed"),
        }
        (known, stale)
    }

    fn reconcile(&mut self, watches: &Watches, live: Option<&BTreeSet<String>>) {
        let snapshot = Snapshot {
            pools: cloned(&watches.pools),
            l2_advertisements: cloned(&watches.l2_advertisements),
            namespaces: cloned(&watches.namespaces),
            nodes: cloned(&watches.nodes),
            ..Snapshot::default()
        };
        let verdict = match config::build(&snapshot) {
            Ok(config) => {
                self.config = Some(config);
                self.metrics.config_loaded.set(1);
                self.metrics.config_stale.set(0);
                None
            }
            Err(errors) => {
                self.metrics.config_stale.set(1);
                for e in &errors {
                    tracing::error!(error = %e, "configuration rejected; keeping the last good one");
                }
                Some(
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            }
        };
        if self.verdict.as_ref() != Some(&verdict) {
            let owner = watches
                .own_pod(&self.options.node)
                .map(|p| Box::new((*p).clone()));
            let _ = self.jobs.send(Job::ConfigState(verdict.clone(), owner));
            self.verdict = Some(verdict);
        }
        let Some(config) = &self.config else {
            tracing::warn!("no valid configuration yet: not announcing anything");
            return;
        };
        let services = cloned(&watches.services);
        let plan = plan::plan(&Inputs {
            node: &self.options.node,
            config,
            services: &services,
            endpoint_slices: &cloned(&watches.endpoint_slices),
            nodes: &snapshot.nodes,
            live_speakers: live,
            interfaces: &self.eligible,
            lb_class: self.options.lb_class.as_deref(),
            ignore_exclude_lb: self.options.ignore_exclude_lb,
        });
        for p in &plan.problems {
            tracing::warn!(service = %p.service, problem = %p.message, "service skipped");
        }

        // Data plane first.
        let (current, stale) = self.current();
        for (ifindex, ip) in stale {
            let ghost = ghost_interface(ifindex);
            // The entry goes even when leaving the multicast group fails (interface gone).
            let _ = self.dp.withdraw(&ghost, ip);
            tracing::info!(ifindex, %ip, "withdrew an address on an interface no longer used");
        }
        let desired = plan.targets();
        let changes = plan::diff(&current, &desired);
        let mut failed_events = BTreeSet::new();
        let now = self.now();
        let due = plan::due_withdrawals(
            &mut self.handover,
            &changes.withdraw,
            now,
            self.options.timing.guard_budget,
        );
        for t in &due {
            self.windows.forget(t);
            if let Some(iface) = self.ifaces.get(&t.iface)
                && let Err(error) = self.dp.withdraw(iface, t.ip)
            {
                tracing::error!(iface = %t.iface, ip = %t.ip, %error, "withdraw failed");
            }
            tracing::info!(iface = %t.iface, ip = %t.ip, "withdrawn");
        }
        for t in &changes.announce {
            let Some(iface) = self.ifaces.get(&t.iface).cloned() else {
                continue;
            };
            match self.dp.announce(&iface, t.ip, None) {
                Ok(announced) => {
                    tracing::info!(iface = %t.iface, ip = %t.ip, "announced");
                    if self.windows.apply(t.clone(), now) {
                        self.send_round(&iface, t.ip, announced.mac);
                    }
                }
                Err(error) => {
                    tracing::error!(iface = %t.iface, ip = %t.ip, %error, "announce failed");
                    if let Some(s) = plan.services.values().find(|s| s.targets.contains(t)) {
                        failed_events.insert(PlannedEvent {
                            namespace: s.namespace.clone(),
                            name: s.name.clone(),
                            warning: true,
                            reason: "announceFailed",
                            message: format!("announcing {} on {}: {error}", t.ip, t.iface),
                        });
                    }
                }
            }
        }

        // Then the API server, through the writer task.
        self.metrics
            .set_announced(&self.options.node, &plan.announced());
        let mut events = plan.events(&self.options.node);
        events.extend(failed_events);
        let uids: BTreeMap<String, String> = services
            .iter()
            .filter_map(|s| {
                Some((
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or("default"),
                        s.metadata.name.as_deref()?
                    ),
                    s.metadata.uid.clone()?,
                ))
            })
            .collect();
        for event in plan::new_events(&self.events, &events) {
            if event.warning {
                tracing::warn!(service = %format!("{}/{}", event.namespace, event.name), reason = event.reason, message = %event.message, "event");
            }
            let uid = uids
                .get(&format!("{}/{}", event.namespace, event.name))
                .cloned();
            let _ = self.jobs.send(Job::Event(event, uid));
        }
        self.events = events;
        let owner = watches
            .own_pod(&self.options.node)
            .map(|p| Box::new((*p).clone()));
        let _ = self
            .jobs
            .send(Job::Statuses(plan.statuses(&self.options.node), owner));
        self.plan = plan;
    }

    fn send_round(&self, iface: &Interface, ip: IpAddr, mac: Mac) {
        let Some(sender) = &self.sender else { return };
        match sender.announce(iface, ip, mac) {
            Ok(packets) => self.metrics.gratuitous_sent(ip, u64::from(packets)),
            Err(error) => {
                tracing::warn!(iface = %iface.name, %ip, %error, "gratuitous send failed")
            }
        }
    }

    fn gratuitous_tick(&mut self) {
        let now = self.now();
        let due = self.windows.tick(now);
        let targets = self.plan.targets();
        for t in due.into_iter().filter(|t| targets.contains(t)) {
            if let Some(iface) = self.ifaces.get(&t.iface) {
                self.send_round(iface, t.ip, iface.mac);
            }
        }
    }

    fn reannounce(&mut self) {
        for t in self.plan.targets() {
            if let Some(iface) = self.ifaces.get(&t.iface) {
                self.send_round(iface, t.ip, iface.mac);
            }
        }
    }

    fn observe(&mut self) {
        match self.dp.snapshot() {
            Ok(snapshot) => {
                let readings: Vec<_> = snapshot
                    .addresses
                    .iter()
                    .map(|a| (a.ifindex, a.ip, a.requests, a.replies))
                    .collect();
                self.metrics.observe_addresses(&readings);
            }
            Err(error) => tracing::warn!(%error, "reading data-plane counters failed"),
        }
        let fallback: Vec<_> = self
            .fallback_stats
            .iter()
            .map(|(name, stats)| (name.clone(), stats.counts()))
            .collect();
        self.metrics.observe_fallback(&fallback);
        // A responder ends on its own only when its socket is gone: restart it at once if the
        // interface is still the same one (a deleted or re-created one is left to the rescan).
        let ended: Vec<Interface> = self
            .responders
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .filter_map(|(name, r)| {
                Interface::by_name(name)
                    .ok()
                    .filter(|iface| iface.index == r.index)
            })
            .collect();
        for iface in ended {
            if let Err(error) = self.ensure_responder(&iface) {
                tracing::warn!(iface = %iface.name, %error, "restarting the userspace responder failed");
            }
        }
    }

    fn withdraw_everything(&mut self) {
        let (current, stale) = self.current();
        for t in current {
            if let Some(iface) = self.ifaces.get(&t.iface)
                && let Err(error) = self.dp.withdraw(iface, t.ip)
            {
                tracing::error!(iface = %t.iface, ip = %t.ip, %error, "withdraw failed");
            }
        }
        for (ifindex, ip) in stale {
            let ghost = ghost_interface(ifindex);
            let _ = self.dp.withdraw(&ghost, ip);
        }
        self.metrics
            .set_announced(&self.options.node, &BTreeSet::new());
    }
}

fn cloned<K: Clone + kube::Resource + 'static>(store: &kube::runtime::reflector::Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// Just enough of an interface to withdraw an address entered on `ifindex`, which may be gone or
/// no longer eligible (the map key is the index; the name is only for leaving multicast groups).
fn ghost_interface(ifindex: u32) -> Interface {
    Interface {
        name: netdev::name_of(ifindex).unwrap_or_default(),
        index: ifindex,
        mac: Mac([0; 6]),
        hw_type: libc::ARPHRD_ETHER,
        noarp: false,
        loopback: false,
    }
}
