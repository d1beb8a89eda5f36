//! Drives [`Membership`] over a UDP socket on its own task: datagrams in and out, foca's timers,
//! and the live node set published on a watch channel. [`Health`] carries what the guard
//! refresh needs (last contact, peers in view) to threads that must not wait on this task.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::auth::{AuthError, GossipKey};
use super::membership::{Membership, SpeakerId};
use super::timing::Timing;

/// How to run the gossip.
#[derive(Clone, Debug)]
pub struct GossipOptions {
    /// Socket to bind (`--ml-bind-addr`).
    pub bind: SocketAddr,
    /// Address the other speakers reach this one at (the node address under hostNetwork).
    pub advertise: SocketAddr,
    pub node: String,
    pub timing: Timing,
    pub key: GossipKey,
    /// Identity bump: larger than any earlier run of this node (start time in ms).
    pub bump: u64,
    /// Wall-clock time to start the datagram stamps from (ms since the Unix epoch); `None`
    /// reads the system clock. Set by tests that give a member a clock offset.
    pub wall_start_ms: Option<u64>,
}

/// Shared, lock-free view of the gossip for the guard refresh and metrics.
#[derive(Debug, Default)]
pub struct Health {
    /// `CLOCK_MONOTONIC` ns of the last authenticated datagram (0 = never).
    pub last_contact_ns: AtomicU64,
    pub peers_in_view: AtomicBool,
    /// Whether the API server shows a speaker on another node Ready (written by the speaker
    /// loop from its watches, not by the gossip).
    pub others_ready: AtomicBool,
    pub auth_failures: AtomicU64,
    /// Dropped datagrams by reason, in [`AuthError::ALL`] order.
    pub dropped: [AtomicU64; AuthError::ALL.len()],
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

enum Command {
    Join(Vec<(String, SocketAddr)>),
    SetKey(GossipKey),
    Leave(oneshot::Sender<()>),
}

/// A running gossip member.
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    live: watch::Receiver<BTreeSet<String>>,
    health: Arc<Health>,
    task: JoinHandle<()>,
    local: SocketAddr,
}

impl Gossip {
    /// Binds the socket and starts the member (knowing nobody until [`Gossip::join`]).
    pub async fn start(options: GossipOptions) -> std::io::Result<Gossip> {
        let socket = UdpSocket::bind(options.bind).await?;
        let local = socket.local_addr()?;
        let advertise = if options.advertise.port() == 0 {
            SocketAddr::new(options.advertise.ip(), local.port())
        } else {
            options.advertise
        };
        let id = SpeakerId {
            node: options.node.clone(),
            addr: advertise,
            bump: options.bump,
        };
        let mut seed = [0u8; 8];
        // Randomness only spreads the probe order; a fixed seed is still correct.
        let _ = getrandom::fill(&mut seed);
        // Stamps count wall-clock time from here on the monotonic clock, so a clock step
        // after start does not make our own datagrams look stale to us.
        let wall_base_ms = options.wall_start_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        let membership = Membership::new(
            id,
            &options.timing,
            options.key.clone(),
            u64::from_le_bytes(seed),
            wall_base_ms,
        );
        let (commands, rx) = mpsc::unbounded_channel();
        let (live_tx, live) = watch::channel(membership.live_nodes());
        let health = Arc::new(Health::default());
        let task = tokio::spawn(drive(socket, membership, rx, live_tx, health.clone()));
        Ok(Gossip {
            commands,
            live,
            health,
            task,
            local,
        })
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Asks these speakers (node name, gossip address) to let us in (repeat freely: live
    /// members are skipped).
    pub fn join(&self, seeds: Vec<(String, SocketAddr)>) {
        let _ = self.commands.send(Command::Join(seeds));
    }

    /// Switches the key (the memberlist Secret changed).
    pub fn set_key(&self, key: GossipKey) {
        let _ = self.commands.send(Command::SetKey(key));
    }

    /// Leaves the cluster (graceful shutdown): returns once the leave went out.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
        }
    }

    /// Live node names (this one included), updated on every membership change.
    pub fn live(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Stops the member without leaving, as a crash would.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    socket: UdpSocket,
    mut membership: Membership,
    mut commands: mpsc::UnboundedReceiver<Command>,
    live: watch::Sender<BTreeSet<String>>,
    health: Arc<Health>,
) {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut last_contact = None;
    loop {
        let far = start.elapsed() + Duration::from_secs(3600);
        let deadline = start + membership.next_deadline().unwrap_or(far);
        let mut leave_done = None;
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received {
                    let _ = membership.handle_datagram(from, &buf[..len], start.elapsed());
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
            command = commands.recv() => match command {
                None => return,
                Some(Command::Join(seeds)) => membership.join(&seeds, start.elapsed()),
                Some(Command::SetKey(key)) => membership.set_key(key),
                Some(Command::Leave(done)) => {
                    membership.leave(start.elapsed());
                    leave_done = Some(done);
                }
            },
        }
        membership.handle_due(start.elapsed());
        for (to, data) in membership.take_outgoing() {
            if let Err(error) = socket.send_to(&data, to).await {
                tracing::debug!(%to, %error, "gossip send failed");
            }
        }
        if let Some(done) = leave_done {
            let _ = done.send(());
        }
        if membership.last_contact() != last_contact {
            last_contact = membership.last_contact();
            health
                .last_contact_ns
                .store(crate::dataplane::monotonic_ns(), Ordering::Relaxed);
        }
        let stats = membership.stats();
        health
            .peers_in_view
            .store(membership.peers_in_view(), Ordering::Relaxed);
        health
            .auth_failures
            .store(stats.auth_failures, Ordering::Relaxed);
        for (slot, value) in health.dropped.iter().zip(stats.dropped) {
            slot.store(value, Ordering::Relaxed);
        }
        health.received.store(stats.received, Ordering::Relaxed);
        health.sent.store(stats.sent, Ordering::Relaxed);
        if membership.take_changed() {
            live.send_if_modified(|current| {
                let next = membership.live_nodes();
                let modified = *current != next;
                *current = next;
                modified
            });
        }
    }
}
