//! MetalLB's BFD metrics (its FRR mode exports them from FRR; here the speaker counts them
//! itself), labelled `peer="<address>"`: `metallb_bfd_session_up`,
//! `metallb_bfd_control_packet_input`/`_output`, `metallb_bfd_session_up_events`/`_down_events`.
//! The echo and zebra counters stay absent: Herald runs no echo function and no zebra. Herald's
//! own `herald_bfd_packets_dropped_total{reason}` counts what the speaker discarded and why.
//!
//! MetalLB's counters carry no `_total` suffix, which the Prometheus client here appends to every
//! counter; so that scrapes and dashboards written for MetalLB find the same names, they are
//! exposed as gauges that only grow.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type PeerLabel = Vec<(&'static str, String)>;
type ReasonLabel = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct BfdMetrics {
    session_up: Family<PeerLabel, Gauge>,
    input: Family<PeerLabel, Gauge>,
    output: Family<PeerLabel, Gauge>,
    up_events: Family<PeerLabel, Gauge>,
    down_events: Family<PeerLabel, Gauge>,
    dropped: Family<ReasonLabel, Counter>,
}

fn label(peer: &str) -> PeerLabel {
    vec![("peer", peer.to_string())]
}

impl BfdMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "metallb_bfd_session_up",
            "BFD session state (1 is up, 0 is down)",
            self.session_up.clone(),
        );
        registry.register(
            "metallb_bfd_control_packet_input",
            "Number of received BFD control packets",
            self.input.clone(),
        );
        registry.register(
            "metallb_bfd_control_packet_output",
            "Number of sent BFD control packets",
            self.output.clone(),
        );
        registry.register(
            "metallb_bfd_session_up_events",
            "Number of BFD session up events",
            self.up_events.clone(),
        );
        registry.register(
            "metallb_bfd_session_down_events",
            "Number of BFD session down events",
            self.down_events.clone(),
        );
        registry.register(
            "herald_bfd_packets_dropped",
            "BFD packets the speaker discarded, by reason",
            self.dropped.clone(),
        );
    }

    pub fn set_up(&self, peer: &str, up: bool) {
        self.session_up
            .get_or_create(&label(peer))
            .set(i64::from(up));
    }

    pub fn received(&self, peer: &str) {
        self.input.get_or_create(&label(peer)).inc();
    }

    pub fn sent(&self, peer: &str) {
        self.output.get_or_create(&label(peer)).inc();
    }

    pub fn went_up(&self, peer: &str) {
        self.up_events.get_or_create(&label(peer)).inc();
        self.set_up(peer, true);
    }

    pub fn went_down(&self, peer: &str) {
        self.down_events.get_or_create(&label(peer)).inc();
        self.set_up(peer, false);
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// A peer no longer configured: its series go.
    pub fn forget(&self, peer: &str) {
        let l = label(peer);
        self.session_up.remove(&l);
        self.input.remove(&l);
        self.output.remove(&l);
        self.up_events.remove(&l);
        self.down_events.remove(&l);
    }
}
