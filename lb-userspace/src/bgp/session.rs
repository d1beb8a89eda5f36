//! One BGP session, as a task: connect (with backoff), exchange OPENs, keep the session alive
//! with keepalives and the hold timer, and keep the peer's copy of this node's routes equal to
//! the policy's, sending only differences, batched. A session removed from the configuration
//! ends with a Cease NOTIFICATION. The RFC 4271 state machine is followed in the order of its
//! states; this speaker always connects (it never listens), so the collision procedure does not
//! arise.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use bytes::BytesMut;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::bfd::task::{Liveness, failure as bfd_failure};
use super::metrics::BgpMetrics;
use super::negotiate::{self, Negotiated, PeerAs};
use super::policy::RoutePolicy;
use super::rib::AdjRibOut;
use super::socket::{self, Dial};
use super::wire::{self, Message, Notification, Open, WireError};

mod conn;
mod status;
mod sync;

pub use status::{State, Status};

use conn::{Conn, ReadError, peer_notified};

/// The routes the policy wants this peer to have.
pub type Routes = Arc<BTreeMap<IpNet, RoutePolicy>>;

/// How long to wait for the peer's OPEN after ours (RFC 4271 §8: "a large value", 4 minutes).
pub const OPEN_WAIT: Duration = Duration::from_secs(240);
/// Default connect timeout when `connectTime` is unset.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a session needs, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The BGPPeer's name.
    pub name: String,
    pub dial: Dial,
    pub my_asn: u32,
    pub peer_asn: PeerAs,
    pub hold_time: Duration,
    /// Zero: a third of the negotiated hold time.
    pub keepalive: Duration,
    pub router_id: Option<Ipv4Addr>,
    /// This node's name (the router ID's last resort).
    pub node: String,
    pub dual_stack: bool,
    pub disable_mp: bool,
    pub graceful_restart: bool,
    /// The peer has a BFD session: its going down ends this session at once.
    pub bfd: bool,
    /// The node's addresses: next hops for the family the transport is not.
    pub node_addresses: Vec<IpAddr>,
}

impl Params {
    /// MetalLB's `peer` metric label: `address:port`.
    pub fn label(&self) -> String {
        self.dial.peer.to_string()
    }

    fn ebgp(&self) -> bool {
        !self.peer_asn.is_internal(self.my_asn)
    }
}

/// A change the speaker reports (logs, Events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Up { peer: String },
    Down { peer: String, reason: String },
}

/// Why a session is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The peer left the configuration (Cease / Peer De-configured).
    Deconfigured,
    /// The speaker is shutting down (Cease / Administrative Shutdown).
    Shutdown,
}

/// A running session.
pub struct Handle {
    params: Params,
    routes: watch::Sender<Routes>,
    stop: watch::Sender<Option<Stop>>,
    status: Arc<Mutex<Status>>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Starts the session's task on the current runtime.
    pub fn spawn(
        params: Params,
        routes: Routes,
        reports: mpsc::UnboundedSender<Report>,
        metrics: BgpMetrics,
        bfd: Option<watch::Receiver<Liveness>>,
    ) -> Handle {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = watch::channel(None);
        let status = Arc::new(Mutex::new(Status::default()));
        let task = Task {
            params: params.clone(),
            routes: routes_rx,
            stop: stop_rx,
            status: status.clone(),
            reports,
            metrics,
            rib: AdjRibOut::default(),
            reached_established: false,
            bfd,
            reached_established_once: false,
            graceful: false,
            held_back: BTreeSet::new(),
        };
        let span = tracing::info_span!("bgp", peer = %params.name, address = %params.label());
        let task = tokio::spawn(tracing::Instrument::instrument(task.run(), span));
        Handle {
            params,
            routes: routes_tx,
            stop: stop_tx,
            status,
            task,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Hands the session new routes; it sends the difference at once when established.
    pub fn set_routes(&self, routes: Routes) {
        self.routes.send_if_modified(|current| {
            if **current == *routes {
                false
            } else {
                *current = routes;
                true
            }
        });
    }

    /// The status cell the session keeps up to date (read it for a live view).
    pub fn shared_status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    pub fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Ends the session (with a Cease NOTIFICATION when established) and waits for its task.
    pub async fn stop(self, why: Stop) {
        let _ = self.stop.send(Some(why));
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// How a connection ended.
enum End {
    Stopped,
    Down(String),
}

struct Task {
    params: Params,
    routes: watch::Receiver<Routes>,
    stop: watch::Receiver<Option<Stop>>,
    status: Arc<Mutex<Status>>,
    reports: mpsc::UnboundedSender<Report>,
    metrics: BgpMetrics,
    rib: AdjRibOut,
    /// The current connection reached Established.
    reached_established: bool,
    /// The peer's BFD session, when it has one.
    bfd: Option<watch::Receiver<Liveness>>,
    /// Some connection of this process reached Established (later OPENs clear Restart State).
    reached_established_once: bool,
    /// Both sides of the current connection offered graceful restart (RFC 4724).
    graceful: bool,
    /// Routes held back because their UPDATE cannot be encoded (warned about once).
    held_back: BTreeSet<IpNet>,
}

/// Reconnect delays: 1 s doubling to 60 s with jitter, for ever.
fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

impl Task {
    fn label(&self) -> String {
        self.params.label()
    }

    fn update_status(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn set_state(&self, state: State) {
        self.update_status(|s| s.enter(state, SystemTime::now()));
    }

    fn stopping(&self) -> Option<Stop> {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        let mut delays = backoff();
        self.metrics.session_up(&self.label(), false);
        self.publish_prefixes(0);
        loop {
            if self.stopping().is_some() {
                break;
            }
            self.set_state(State::Connect);
            let connected = tokio::select! {
                r = socket::connect(&self.params.dial) => r,
                _ = self.stop.changed() => break,
            };
            let end = match connected {
                Ok(stream) => {
                    self.reached_established = false;
                    let end = self.converse(stream).await;
                    if self.reached_established {
                        // The next failure starts the backoff over.
                        delays = backoff();
                    }
                    end
                }
                Err(error) => End::Down(format!("connect: {error}")),
            };
            self.rib.clear();
            self.metrics.session_up(&self.label(), false);
            self.publish_prefixes(0);
            self.set_state(State::Idle);
            match end {
                End::Stopped => break,
                End::Down(reason) => {
                    tracing::warn!(%reason, "BGP session down");
                    self.update_status(|s| s.last_error = Some(reason.clone()));
                    let _ = self.reports.send(Report::Down {
                        peer: self.params.name.clone(),
                        reason,
                    });
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => break,
            }
        }
        self.set_state(State::Idle);
        self.metrics.session_up(&self.label(), false);
    }

    /// One TCP connection, from our OPEN to its end.
    async fn converse(&mut self, stream: TcpStream) -> End {
        // An IPv4-mapped IPv6 address (a peerAddress written `::ffff:a.b.c.d`) is the IPv4
        // address it maps, for the router ID, the families and the next hop.
        let local = match stream.local_addr() {
            Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
            Err(e) => return End::Down(format!("local address: {e}")),
        };
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
            session: None,
        };
        let open = Open {
            asn: self.params.my_asn,
            hold_time: negotiate::hold_field(self.params.hold_time),
            router_id: negotiate::router_id(
                self.params.router_id,
                local.ip(),
                &self.params.node,
                socket::ipv4_beside,
            ),
            four_octet_as: true,
            families: negotiate::offered_families(
                local.ip(),
                self.params.dual_stack,
                self.params.disable_mp,
            ),
            graceful_restart: self.params.graceful_restart,
            // Every session of a new process is a restart for the peer: it may hold routes
            // from the previous one.
            restarted: self.params.graceful_restart && !self.reached_established_once,
        };
        self.update_status(|s| s.local = Some(local));
        if let Err(e) = conn.send(&wire::encode_open(&open)).await {
            return End::Down(format!("sending OPEN: {e}"));
        }
        self.set_state(State::OpenSent);

        // OpenSent: the peer's OPEN.
        let remote = match self.receive(&mut conn, OPEN_WAIT).await {
            Ok(Message::Open(remote)) => remote,
            Ok(Message::Notification(n)) => return End::Down(peer_notified(&n)),
            Ok(_) => return self.fail(&mut conn, Notification::fsm_error()).await,
            Err(end) => return end,
        };
        let negotiated = match negotiate::accept_open(
            &open,
            self.params.peer_asn,
            self.params.keepalive,
            &remote,
        ) {
            Ok(n) => n,
            Err(n) => return self.fail(&mut conn, n).await,
        };
        conn.session = Some(negotiated.session.clone());
        self.graceful = open.graceful_restart && remote.graceful_restart;
        if let Err(e) = conn.send(&wire::encode_keepalive()).await {
            return End::Down(format!("sending KEEPALIVE: {e}"));
        }
        self.set_state(State::OpenConfirm);

        // OpenConfirm: the peer's KEEPALIVE.
        let wait = if negotiated.hold_time.is_zero() {
            OPEN_WAIT
        } else {
            negotiated.hold_time
        };
        match self.receive(&mut conn, wait).await {
            Ok(Message::Keepalive) => {}
            Ok(Message::Notification(n)) => return End::Down(peer_notified(&n)),
            Ok(_) => return self.fail(&mut conn, Notification::fsm_error()).await,
            Err(end) => return end,
        }
        self.established(&mut conn, local, &negotiated).await
    }

    async fn established(&mut self, conn: &mut Conn, local: SocketAddr, n: &Negotiated) -> End {
        self.reached_established = true;
        self.reached_established_once = true;
        self.update_status(|s| {
            s.enter(State::Established, SystemTime::now());
            s.remote_router_id = Some(n.remote_router_id);
        });
        self.metrics.session_up(&self.label(), true);
        tracing::info!(hold = ?n.hold_time, keepalive = ?n.keepalive, "BGP session established");
        let _ = self.reports.send(Report::Up {
            peer: self.params.name.clone(),
        });
        let ctx = self.context(local.ip(), n);
        let session = n.session.clone();

        // The whole table, then End-of-RIB per family.
        if let Err(end) = self.sync(conn, &ctx).await {
            return end;
        }
        let mut eor = BytesMut::new();
        for family in &session.families {
            eor.extend_from_slice(&wire::encode_end_of_rib(*family, &session));
        }
        if let Err(e) = conn.send(&eor).await {
            return End::Down(format!("sending End-of-RIB: {e}"));
        }

        let far = Instant::now() + Duration::from_hours(24 * 365);
        let mut hold_deadline = if n.hold_time.is_zero() {
            far
        } else {
            Instant::now() + n.hold_time
        };
        let mut keepalive_at = if n.keepalive.is_zero() {
            far
        } else {
            Instant::now() + n.keepalive
        };
        if let Some(rx) = &mut self.bfd {
            // Only a BFD failure while established ends the session.
            rx.borrow_and_update();
        }
        loop {
            tokio::select! {
                diag = bfd_failure(&mut self.bfd) => {
                    let _ = conn
                        .send(&wire::encode_notification(&Notification::cease_bfd_down()))
                        .await;
                    return End::Down(format!("BFD session down ({diag:?})"));
                }
                read = conn.read_message() => match read {
                    Ok(message) => {
                        if !n.hold_time.is_zero() {
                            hold_deadline = Instant::now() + n.hold_time;
                        }
                        match message {
                            Message::Keepalive | Message::Update(_) => {}
                            Message::RouteRefresh => {
                                // Send the whole table again.
                                self.rib.clear();
                                if let Err(end) = self.sync(conn, &ctx).await {
                                    return end;
                                }
                            }
                            Message::Notification(notification) => {
                                return End::Down(peer_notified(&notification));
                            }
                            Message::Open(_) => {
                                return self.fail(conn, Notification::fsm_error()).await;
                            }
                        }
                    }
                    Err(ReadError::Wire(WireError::Malformed { notification, detail })) => {
                        return malformed(conn, &notification, &detail).await;
                    }
                    Err(e) => return End::Down(e.to_string()),
                },
                () = tokio::time::sleep_until(hold_deadline) => {
                    let _ = conn
                        .send(&wire::encode_notification(&Notification::hold_timer_expired()))
                        .await;
                    return End::Down(format!(
                        "hold timer expired: nothing from the peer for {:?}",
                        n.hold_time
                    ));
                }
                () = tokio::time::sleep_until(keepalive_at) => {
                    keepalive_at = Instant::now() + n.keepalive;
                    if let Err(e) = conn.send(&wire::encode_keepalive()).await {
                        return End::Down(format!("sending KEEPALIVE: {e}"));
                    }
                }
                changed = self.routes.changed() => {
                    if changed.is_err() {
                        return self.cease(conn, Stop::Shutdown).await;
                    }
                    if let Err(end) = self.sync(conn, &ctx).await {
                        return end;
                    }
                }
                _ = self.stop.changed() => {
                    let why = self.stopping().unwrap_or(Stop::Shutdown);
                    return self.cease(conn, why).await;
                }
            }
        }
    }

    /// Reads one message within `wait`.
    async fn receive(&mut self, conn: &mut Conn, wait: Duration) -> Result<Message, End> {
        let read = tokio::select! {
            r = tokio::time::timeout(wait, conn.read_message()) => r,
            _ = self.stop.changed() => return Err(End::Stopped),
        };
        match read {
            Err(_) => {
                let _ = conn
                    .send(&wire::encode_notification(
                        &Notification::hold_timer_expired(),
                    ))
                    .await;
                Err(End::Down(format!(
                    "no answer from the peer within {wait:?}"
                )))
            }
            Ok(Ok(message)) => Ok(message),
            Ok(Err(ReadError::Wire(WireError::Malformed {
                notification,
                detail,
            }))) => Err(malformed(conn, &notification, &detail).await),
            Ok(Err(e)) => Err(End::Down(e.to_string())),
        }
    }

    /// Sends `notification` and ends the connection.
    async fn fail(&self, conn: &mut Conn, notification: Notification) -> End {
        let _ = conn.send(&wire::encode_notification(&notification)).await;
        End::Down(format!("sent {}", notification.describe()))
    }

    async fn cease(&self, conn: &mut Conn, why: Stop) -> End {
        if why == Stop::Shutdown && self.graceful {
            // Graceful restart: the connection closes without a NOTIFICATION, so the router
            // keeps this node's routes (stale) until the next speaker's End-of-RIB or the
            // restart time. A NOTIFICATION would make it flush them (RFC 4724 section 4.2).
            let _ = conn.stream.shutdown().await;
            tracing::info!(
                restart_time_s = wire::GRACEFUL_RESTART_TIME_S,
                "BGP session closed without NOTIFICATION (graceful restart: the router keeps the routes)"
            );
            return End::Stopped;
        }
        let notification = match why {
            Stop::Deconfigured => Notification::cease_peer_deconfigured(),
            Stop::Shutdown => Notification::cease_admin_shutdown(),
        };
        let _ = conn.send(&wire::encode_notification(&notification)).await;
        let _ = conn.stream.shutdown().await;
        tracing::info!(notification = %notification.describe(), "BGP session closed");
        End::Stopped
    }
}

/// Answers a malformed message with the NOTIFICATION its decoder chose, and ends the connection.
async fn malformed(conn: &mut Conn, notification: &Notification, detail: &str) -> End {
    tracing::warn!(%detail, "malformed message from the peer");
    let _ = conn.send(&wire::encode_notification(notification)).await;
    End::Down(format!(
        "malformed message from the peer ({detail}); sent {}",
        notification.describe()
    ))
}
