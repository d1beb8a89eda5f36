//! Every BFD session of this node in one task: the sessions follow the configured peers
//! ([`Bfd::apply`]), packets arriving on the BFD ports are checked (decoder, GTSM TTL, source,
//! discriminator) and handed to their session, each session's timers run, and each BGP session
//! with BFD watches its peer's [`Liveness`] ([`Bfd::watch`]) to go down with it.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::PeerBfd;
use super::metrics::BfdMetrics;
use super::packet::{self, Diag};
use super::session::{Event, Session};
use super::sockets::{Listener, MULTIHOP_PORT, Received, SINGLE_HOP_PORT, Sender};

/// What a BGP session knows of its peer's BFD session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Not up yet since the session was configured.
    Unknown,
    Up,
    /// It left Up. `remote_admin_down`: the peer stopped BFD on purpose, which is no forwarding
    /// failure (RFC 5882 section 3.2).
    Down {
        diag: Diag,
        remote_admin_down: bool,
    },
}

/// Waits until `bfd` says the peer's BFD session went down by a failure (never without BFD).
pub async fn failure(bfd: &mut Option<watch::Receiver<Liveness>>) -> Diag {
    let Some(rx) = bfd else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            // BFD removed from this peer: nothing to wait for any more.
            return std::future::pending().await;
        }
        if let Liveness::Down {
            diag,
            remote_admin_down: false,
        } = *rx.borrow_and_update()
        {
            return diag;
        }
    }
}

impl Liveness {
    /// As `herald bgp status` shows it: `up`, `down: <diagnostic>`, `waiting`.
    pub fn describe(self) -> String {
        match self {
            Liveness::Unknown => "waiting".to_string(),
            Liveness::Up => "up".to_string(),
            Liveness::Down {
                remote_admin_down: true,
                ..
            } => "down: the peer stopped BFD".to_string(),
            Liveness::Down { diag, .. } => format!("down: {}", diag.describe()),
        }
    }
}

type Channels = Arc<Mutex<BTreeMap<String, watch::Sender<Liveness>>>>;

/// The node's BFD sessions, by BGPPeer name.
pub struct Bfd {
    desired: watch::Sender<BTreeMap<String, PeerBfd>>,
    channels: Channels,
    task: tokio::task::JoinHandle<()>,
}

impl Bfd {
    /// Starts the task on the current Tokio runtime, with no sessions.
    pub fn start(metrics: BfdMetrics) -> Bfd {
        let (desired, rx) = watch::channel(BTreeMap::new());
        let channels = Channels::default();
        let task = tokio::spawn(run(rx, channels.clone(), metrics));
        Bfd {
            desired,
            channels,
            task,
        }
    }

    /// The sessions to run from now on: new ones start Down, removed ones send AdminDown.
    pub fn apply(&self, wanted: BTreeMap<String, PeerBfd>) {
        {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            channels.retain(|name, _| wanted.contains_key(name));
            for name in wanted.keys() {
                channels
                    .entry(name.clone())
                    .or_insert_with(|| watch::channel(Liveness::Unknown).0);
            }
        }
        self.desired.send_if_modified(|current| {
            if *current == wanted {
                false
            } else {
                *current = wanted;
                true
            }
        });
    }

    /// The liveness of `peer`'s BFD session, if it has one.
    pub fn watch(&self, peer: &str) -> Option<watch::Receiver<Liveness>> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .map(watch::Sender::subscribe)
    }

    /// Tells every peer AdminDown and stops, waiting at most `limit`.
    pub async fn shutdown(self, limit: Duration) {
        self.desired.send_replace(BTreeMap::new());
        drop(self.desired);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// One running session.
struct Entry {
    spec: PeerBfd,
    session: Session,
    sender: Option<Sender>,
    /// Why the sender could not be made (logged once per reason).
    sender_error: Option<String>,
    liveness: Option<watch::Sender<Liveness>>,
    /// The metrics label: the peer's address.
    label: String,
}

/// The four receiving sockets, bound when a session needs one.
#[derive(Default)]
struct Listeners {
    /// Single hop IPv4, IPv6; multihop IPv4, IPv6.
    sockets: [Option<Listener>; 4],
    errors: [Option<String>; 4],
}

fn slot(multihop: bool, v6: bool) -> usize {
    usize::from(multihop) * 2 + usize::from(v6)
}

impl Listeners {
    fn ensure(&mut self, multihop: bool, v6: bool) {
        let i = slot(multihop, v6);
        if self.sockets[i].is_some() {
            return;
        }
        let port = if multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        match Listener::bind(port, v6) {
            Ok(l) => {
                self.sockets[i] = Some(l);
                self.errors[i] = None;
            }
            Err(e) => {
                let why = e.to_string();
                if self.errors[i].as_ref() != Some(&why) {
                    tracing::error!(port, v6, error = %why, "cannot listen for BFD packets");
                }
                self.errors[i] = Some(why);
            }
        }
    }
}

async fn recv_on(listener: Option<&Listener>, buf: &mut [u8]) -> io::Result<Received> {
    match listener {
        Some(l) => l.recv(buf).await,
        None => std::future::pending().await,
    }
}

enum Woke {
    Config(bool),
    Packet(usize, io::Result<Received>),
    Timer,
}

async fn run(
    mut desired: watch::Receiver<BTreeMap<String, PeerBfd>>,
    channels: Channels,
    metrics: BfdMetrics,
) {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut listeners = Listeners::default();
    let mut bufs = [[0u8; 256]; 4];
    let mut open = true;
    while open {
        let wanted = desired.borrow_and_update().clone();
        sync(&wanted, &mut entries, &channels, &metrics, &mut listeners);
        loop {
            let now = Instant::now();
            tick(&mut entries, now, &metrics);
            let deadline = entries
                .values()
                .filter_map(|e| e.session.next_deadline(now))
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            let [b0, b1, b2, b3] = &mut bufs;
            let [l0, l1, l2, l3] = &listeners.sockets;
            let woke = tokio::select! {
                changed = desired.changed() => Woke::Config(changed.is_ok()),
                r = recv_on(l0.as_ref(), b0) => Woke::Packet(0, r),
                r = recv_on(l1.as_ref(), b1) => Woke::Packet(1, r),
                r = recv_on(l2.as_ref(), b2) => Woke::Packet(2, r),
                r = recv_on(l3.as_ref(), b3) => Woke::Packet(3, r),
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Woke::Timer,
            };
            match woke {
                Woke::Config(still_open) => {
                    open = still_open;
                    break;
                }
                Woke::Packet(i, Ok(received)) => {
                    let len = received.len.min(bufs[i].len());
                    accept(
                        &mut entries,
                        i >= 2,
                        received,
                        &bufs[i][..len],
                        Instant::now(),
                        &metrics,
                    );
                }
                Woke::Packet(_, Err(e)) => {
                    tracing::debug!(error = %e, "BFD receive failed");
                    metrics.dropped("receive_error");
                }
                Woke::Timer => {}
            }
        }
    }
    // Configuration gone (shutdown): every peer hears AdminDown.
    sync(
        &BTreeMap::new(),
        &mut entries,
        &channels,
        &metrics,
        &mut listeners,
    );
}

/// A random 32-bit value (the clock's nanoseconds should the kernel's generator fail).
fn random_u32() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos())
    })
}

/// A jitter draw in [0, 1).
fn random_unit() -> f64 {
    f64::from(random_u32()) / (f64::from(u32::MAX) + 1.0)
}

fn new_discriminator(entries: &BTreeMap<String, Entry>) -> u32 {
    loop {
        let d = random_u32();
        if d != 0
            && entries
                .values()
                .all(|e| e.session.local_discriminator() != d)
        {
            return d;
        }
    }
}

/// Makes `entries` match `wanted`.
fn sync(
    wanted: &BTreeMap<String, PeerBfd>,
    entries: &mut BTreeMap<String, Entry>,
    channels: &Channels,
    metrics: &BfdMetrics,
    listeners: &mut Listeners,
) {
    let gone: Vec<String> = entries
        .iter()
        .filter(|(name, e)| {
            wanted.get(*name).is_none_or(|w| {
                (w.peer, w.source, w.multihop) != (e.spec.peer, e.spec.source, e.spec.multihop)
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(mut e) = entries.remove(&name) {
            let bye = e.session.shut_down();
            if let Some(sender) = &e.sender {
                let _ = sender.send(&packet::encode(&bye));
            }
            metrics.forget(&e.label);
            tracing::info!(peer = %name, address = %e.spec.peer, "BFD session removed (AdminDown sent)");
        }
    }
    let now = Instant::now();
    for (name, spec) in wanted {
        listeners.ensure(spec.multihop, spec.peer.is_ipv6());
        let liveness = channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        if let Some(e) = entries.get_mut(name) {
            e.session.set_timing(spec.timing, now);
            e.spec = spec.clone();
            e.liveness = liveness;
            continue;
        }
        let discr = new_discriminator(entries);
        let label = spec.peer.to_string();
        metrics.set_up(&label, false);
        tracing::info!(
            peer = %name,
            address = %spec.peer,
            profile = %spec.profile,
            multihop = spec.multihop,
            discriminator = discr,
            "BFD session configured"
        );
        if spec.echo_requested {
            tracing::warn!(peer = %name, profile = %spec.profile, "echoMode is not run: the speaker sends control packets only and asks the peer for no echoes");
        }
        entries.insert(
            name.clone(),
            Entry {
                spec: spec.clone(),
                session: Session::new(discr, spec.timing),
                sender: None,
                sender_error: None,
                liveness,
                label,
            },
        );
    }
}

/// Expiries and transmissions due at `now`.
fn tick(entries: &mut BTreeMap<String, Entry>, now: Instant, metrics: &BfdMetrics) {
    for (name, e) in entries.iter_mut() {
        if let Some(event) = e.session.expire(now) {
            publish(name, e, event, metrics);
        }
        let Some(p) = e.session.transmit(now, random_unit()) else {
            continue;
        };
        if e.sender.is_none() {
            match Sender::connect(
                e.spec.peer,
                e.spec.multihop,
                e.spec.source,
                random_u32() as u16,
            ) {
                Ok(s) => {
                    e.sender = Some(s);
                    e.sender_error = None;
                }
                Err(err) => {
                    let why = err.to_string();
                    if e.sender_error.as_ref() != Some(&why) {
                        tracing::warn!(peer = %name, address = %e.spec.peer, error = %why, "cannot send BFD packets");
                    }
                    e.sender_error = Some(why);
                }
            }
        }
        if let Some(sender) = &e.sender {
            match sender.send(&packet::encode(&p)) {
                Ok(()) => metrics.sent(&e.label),
                Err(err) => {
                    tracing::debug!(peer = %name, error = %err, "BFD send failed");
                    metrics.dropped("send_error");
                }
            }
        }
    }
}

/// The same address whether it came as IPv4 or as IPv4-mapped IPv6.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Checks one received datagram and hands it to its session.
fn accept(
    entries: &mut BTreeMap<String, Entry>,
    multihop: bool,
    received: Received,
    payload: &[u8],
    now: Instant,
    metrics: &BfdMetrics,
) {
    let control = match packet::decode(payload) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(from = %received.from, error = %e, "BFD packet discarded");
            metrics.dropped(e.reason());
            return;
        }
    };
    let from = canonical(received.from.ip());
    let found = if control.your_discr == 0 {
        entries
            .iter_mut()
            .find(|(_, e)| e.spec.peer == from && e.spec.multihop == multihop)
    } else {
        entries
            .iter_mut()
            .find(|(_, e)| e.session.local_discriminator() == control.your_discr)
    };
    let Some((name, e)) = found else {
        metrics.dropped("no_session");
        return;
    };
    if e.spec.peer != from || e.spec.multihop != multihop {
        tracing::debug!(peer = %name, from = %received.from, "BFD packet for a session from elsewhere");
        metrics.dropped("wrong_source");
        return;
    }
    if received.ttl.unwrap_or(0) < e.spec.minimum_ttl {
        tracing::debug!(peer = %name, ttl = ?received.ttl, minimum = e.spec.minimum_ttl, "BFD packet below the minimum TTL");
        metrics.dropped("ttl");
        return;
    }
    metrics.received(&e.label);
    match e.session.receive(&control, now) {
        Ok(Some(event)) => publish(name, e, event, metrics),
        Ok(None) => {}
        Err(refused) => metrics.dropped(refused.reason()),
    }
}

fn publish(name: &str, e: &Entry, event: Event, metrics: &BfdMetrics) {
    let (tx, rx) = e.session.negotiated();
    let liveness = match event {
        Event::Up => {
            metrics.went_up(&e.label);
            tracing::info!(
                peer = %name,
                address = %e.spec.peer,
                transmit_ms = tx.as_millis(),
                receive_ms = rx.as_millis(),
                detect_ms = e.session.detection_time().unwrap_or_default().as_millis(),
                "BFD session up"
            );
            Liveness::Up
        }
        Event::Down {
            diag,
            remote_admin_down,
        } => {
            metrics.went_down(&e.label);
            tracing::warn!(
                peer = %name,
                address = %e.spec.peer,
                diag = ?diag,
                remote_admin_down,
                "BFD session down"
            );
            Liveness::Down {
                diag,
                remote_admin_down,
            }
        }
    };
    if let Some(tx) = &e.liveness {
        tx.send_replace(liveness);
    }
}
