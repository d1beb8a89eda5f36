//! The set of sessions this node runs, kept in line with the policy's plan: a session per
//! BGPPeer that selects this node, started when the peer appears, restarted when its settings
//! change, closed with a Cease NOTIFICATION when it leaves; each handed its routes on every pass.
//! The [`Board`] shows them, live, to `herald bgp status`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::bfd::PeerBfd;
use super::bfd::task::{Bfd, Liveness};
use super::metrics::BgpMetrics;
use super::policy::{BgpPlan, SessionSpec};
use super::session::{self, Handle, Params, Report, Status, Stop};
use super::socket::{Dial, Password};
use super::view::{BgpStatus, SessionView};
use crate::config::BgpMode;

/// FRR's TTL for a directly connected eBGP peer, and for an iBGP peer or one several hops away
/// (`ebgpMultiHop`).
const EBGP_TTL: u32 = 1;
const MULTIHOP_TTL: u32 = 255;

/// The TTL of a session's packets: `None` leaves the system's default (64 on Linux), which is
/// what MetalLB's native speaker sends to every peer (`ebgpMultiHop` sends 255 in native mode
/// too); the FRR modes send FRR's: 255 to an iBGP peer, 1 to an eBGP peer unless
/// `ebgpMultiHop`, then 255.
pub fn session_ttl(spec: &SessionSpec, mode: BgpMode) -> Option<u32> {
    let frr = matches!(mode, BgpMode::Frr | BgpMode::FrrK8s);
    match (spec.is_ibgp(), spec.ebgp_multihop) {
        (false, true) => Some(MULTIHOP_TTL),
        (true, _) if frr => Some(MULTIHOP_TTL),
        (false, false) if frr => Some(EBGP_TTL),
        _ => None,
    }
}

/// Where a session's password comes from, resolved by the caller (inline `password`, or the
/// `password` key of the `passwordSecret`). Peers missing here but configured with a password
/// are not started: a session without the signature would only be refused.
pub type Passwords = BTreeMap<String, Password>;

/// One session on the [`Board`].
struct Posted {
    peer: String,
    address: SocketAddr,
    status: Arc<Mutex<Status>>,
    wanted: usize,
    bfd: Option<watch::Receiver<Liveness>>,
}

/// How long BFD stays Up after the BGP sessions closed on shutdown. A router handles a BFD
/// Down — AdminDown included, for FRR — on an Established session as a failure and withdraws
/// the node's routes; the close must reach it first, so that graceful restart keeps them.
pub const BFD_AFTER_CLOSE: Duration = Duration::from_millis(300);

/// A live picture of this node's sessions, shared with whoever reports them (the speaker's
/// `/status/bgp`): [`Sessions`] posts its sessions on every pass, each session updates its own
/// status, a reader takes a [`BgpStatus`] at any time. Cheap to clone.
#[derive(Clone, Default)]
pub struct Board {
    node: String,
    posted: Arc<Mutex<Vec<Posted>>>,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Vec<Posted>> {
        self.posted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, posted: Vec<Posted>) {
        *self.lock() = posted;
    }

    /// Every session's state at `now`, by peer name.
    pub fn status(&self, now: SystemTime) -> BgpStatus {
        let sessions = self
            .lock()
            .iter()
            .map(|p| {
                let status = p
                    .status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let mut view = SessionView::of(&p.peer, p.address, &status, p.wanted, now);
                view.bfd = p.bfd.as_ref().map(|rx| rx.borrow().describe());
                view
            })
            .collect();
        BgpStatus {
            node: self.node.clone(),
            sessions,
        }
    }
}

/// The sessions of this node.
pub struct Sessions {
    node: String,
    mode: BgpMode,
    node_addresses: Vec<IpAddr>,
    handles: BTreeMap<String, Handle>,
    board: Board,
    /// Peers left out (missing password), with why; reported once per change.
    skipped: BTreeMap<String, String>,
    metrics: BgpMetrics,
    reports: mpsc::UnboundedSender<Report>,
    /// The BFD sessions, started with the first peer that has a profile.
    bfd: Option<Bfd>,
}

/// The session settings for one peer.
pub fn params(
    spec: &SessionSpec,
    mode: BgpMode,
    password: Option<&Password>,
    node: &str,
    node_addresses: &[IpAddr],
) -> Params {
    let ttl = session_ttl(spec, mode);
    Params {
        name: spec.peer.clone(),
        dial: Dial {
            peer: SocketAddr::new(spec.peer_address, spec.peer_port),
            source: spec.source_address,
            ttl,
            device: spec.vrf.clone(),
            password: password.cloned(),
            timeout: spec.connect_time.unwrap_or(session::CONNECT_TIMEOUT),
        },
        my_asn: spec.my_asn,
        peer_asn: spec.peer_asn,
        hold_time: spec.hold_time,
        keepalive: spec.keepalive,
        router_id: spec.router_id,
        node: node.to_string(),
        dual_stack: spec.dual_stack,
        disable_mp: spec.disable_mp,
        graceful_restart: spec.graceful_restart,
        bfd: spec.bfd.is_some(),
        node_addresses: node_addresses.to_vec(),
    }
}

impl Sessions {
    pub fn new(
        node: String,
        mode: BgpMode,
        metrics: BgpMetrics,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Self {
        Sessions {
            mode,
            board: Board {
                node: node.clone(),
                posted: Arc::default(),
            },
            node,
            node_addresses: Vec::new(),
            handles: BTreeMap::new(),
            skipped: BTreeMap::new(),
            metrics,
            reports,
            bfd: None,
        }
    }

    /// The node's own addresses (next hops for the family a session's transport is not).
    pub fn set_node_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.node_addresses = addresses;
    }

    /// Starts, restarts and stops sessions so they match `plan`, and hands each its routes.
    /// Must run inside a Tokio runtime.
    pub fn apply(&mut self, plan: &BgpPlan, passwords: &Passwords) {
        let mut wanted: BTreeMap<String, Params> = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        for (name, spec) in &plan.sessions {
            let password = passwords.get(name);
            if spec.has_password && password.is_none() {
                skipped.insert(
                    name.clone(),
                    "its password (passwordSecret) cannot be read".to_string(),
                );
                continue;
            }
            wanted.insert(
                name.clone(),
                params(spec, self.mode, password, &self.node, &self.node_addresses),
            );
        }
        for (name, why) in &skipped {
            if self.skipped.get(name) != Some(why) {
                tracing::warn!(peer = %name, reason = %why, "BGP session not started");
                let _ = self.reports.send(Report::Down {
                    peer: name.clone(),
                    reason: format!("not started: {why}"),
                });
            }
        }
        self.skipped = skipped;

        let bfd_wanted: BTreeMap<String, PeerBfd> = plan
            .sessions
            .iter()
            .filter(|(name, _)| wanted.contains_key(*name))
            .filter_map(|(name, spec)| Some((name.clone(), spec.bfd.clone()?)))
            .collect();
        if self.bfd.is_none() && !bfd_wanted.is_empty() {
            self.bfd = Some(Bfd::start(self.metrics.bfd.clone()));
        }
        if let Some(bfd) = &self.bfd {
            bfd.apply(bfd_wanted);
        }

        let stale: Vec<String> = self
            .handles
            .iter()
            .filter(|(name, h)| wanted.get(*name) != Some(h.params()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(handle) = self.handles.remove(&name) {
                let label = handle.params().label();
                let restarting = wanted.contains_key(&name);
                tracing::info!(peer = %name, restarting, "closing BGP session");
                let metrics = self.metrics.clone();
                tokio::spawn(async move {
                    handle.stop(Stop::Deconfigured).await;
                    if !restarting {
                        metrics.forget(&label);
                    }
                });
            }
        }
        let empty = Arc::new(BTreeMap::new());
        for (name, params) in wanted {
            let routes = plan
                .routes
                .get(&name)
                .map_or_else(|| empty.clone(), |r| Arc::new(r.clone()));
            if let Some(handle) = self.handles.get(&name) {
                handle.set_routes(routes);
            } else {
                tracing::info!(peer = %name, address = %params.label(), "opening BGP session");
                let bfd = self.bfd.as_ref().and_then(|b| b.watch(&name));
                let handle = Handle::spawn(
                    params,
                    routes,
                    self.reports.clone(),
                    self.metrics.clone(),
                    bfd,
                );
                self.handles.insert(name, handle);
            }
        }
        self.board.post(
            self.handles
                .iter()
                .map(|(name, h)| Posted {
                    peer: name.clone(),
                    address: h.params().dial.peer,
                    status: h.shared_status(),
                    wanted: plan.routes.get(name).map_or(0, BTreeMap::len),
                    bfd: self.bfd.as_ref().and_then(|b| b.watch(name)),
                })
                .collect(),
        );
    }

    /// The live picture of these sessions.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// Closes every session (Cease / Administrative Shutdown, or for graceful restart a bare
    /// close) and waits, at most `limit`; then, [`BFD_AFTER_CLOSE`] later, ends BFD.
    pub async fn shutdown(&mut self, limit: Duration) {
        let handles = std::mem::take(&mut self.handles);
        let had_sessions = !handles.is_empty();
        self.board.post(Vec::new());
        let stops = handles.into_values().map(|h| h.stop(Stop::Shutdown));
        let _ = tokio::time::timeout(limit, futures::future::join_all(stops)).await;
        if let Some(bfd) = self.bfd.take() {
            if had_sessions {
                tokio::time::sleep(BFD_AFTER_CLOSE).await;
            }
            bfd.shutdown(limit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::negotiate::PeerAs;

    fn spec(peer_asn: PeerAs, ebgp_multihop: bool) -> SessionSpec {
        SessionSpec {
            peer_asn,
            ebgp_multihop,
            ..SessionSpec::native_defaults()
        }
    }

    #[test]
    fn ttl_is_metallb_natives_in_native_mode_and_frrs_in_the_frr_modes() {
        let ebgp = PeerAs::Fixed(64512);
        let cases = [
            // (peer AS, ebgpMultiHop, mode, TTL)
            (ebgp, false, BgpMode::Native, None),
            (ebgp, true, BgpMode::Native, Some(MULTIHOP_TTL)),
            (ebgp, false, BgpMode::Frr, Some(EBGP_TTL)),
            (ebgp, false, BgpMode::FrrK8s, Some(EBGP_TTL)),
            (ebgp, true, BgpMode::Frr, Some(MULTIHOP_TTL)),
            (PeerAs::External, false, BgpMode::Frr, Some(EBGP_TTL)),
            (PeerAs::Fixed(64513), false, BgpMode::Native, None),
            (
                PeerAs::Fixed(64513),
                false,
                BgpMode::Frr,
                Some(MULTIHOP_TTL),
            ),
            (PeerAs::Internal, false, BgpMode::FrrK8s, Some(MULTIHOP_TTL)),
            (PeerAs::Internal, false, BgpMode::Native, None),
        ];
        for (peer_asn, multihop, mode, ttl) in cases {
            let spec = spec(peer_asn, multihop);
            assert_eq!(
                session_ttl(&spec, mode),
                ttl,
                "{peer_asn:?} multihop={multihop} {mode:?}"
            );
            assert_eq!(params(&spec, mode, None, "node", &[]).dial.ttl, ttl);
        }
    }
}
