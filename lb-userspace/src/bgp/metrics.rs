//! MetalLB's native BGP metrics, labelled `peer="<address>:<port>"`:
//! `metallb_bgp_session_up`, `metallb_bgp_updates_total` (UPDATE messages sent),
//! `metallb_bgp_announced_prefixes_total` (prefixes the peer holds from this speaker) and
//! `metallb_bgp_pending_prefixes_total` (prefixes wanted but not sent: the session is down or
//! cannot carry them).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type PeerLabel = Vec<(&'static str, String)>;

/// Every BGP metric, by peer.
#[derive(Clone, Default)]
pub struct BgpMetrics {
    session_up: Family<PeerLabel, Gauge>,
    updates: Family<PeerLabel, Counter>,
    announced: Family<PeerLabel, Gauge>,
    pending: Family<PeerLabel, Gauge>,
    /// The BFD sessions' metrics (registered with these).
    pub bfd: super::bfd::metrics::BfdMetrics,
}

fn label(peer: &str) -> PeerLabel {
    vec![("peer", peer.to_string())]
}

impl BgpMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "metallb_bgp_session_up",
            "BGP session state (1 is up, 0 is down)",
            self.session_up.clone(),
        );
        // prometheus-client adds `_total` to counters.
        registry.register(
            "metallb_bgp_updates",
            "Number of BGP UPDATE messages sent",
            self.updates.clone(),
        );
        registry.register(
            "metallb_bgp_announced_prefixes_total",
            "Number of prefixes currently being advertised on the BGP session",
            self.announced.clone(),
        );
        registry.register(
            "metallb_bgp_pending_prefixes_total",
            "Number of prefixes that should be advertised on the BGP session",
            self.pending.clone(),
        );
        self.bfd.register(registry);
    }

    pub fn session_up(&self, peer: &str, up: bool) {
        self.session_up
            .get_or_create(&label(peer))
            .set(i64::from(up));
    }

    pub fn updates_sent(&self, peer: &str, n: u64) {
        self.updates.get_or_create(&label(peer)).inc_by(n);
    }

    pub fn prefixes(&self, peer: &str, announced: usize, pending: usize) {
        self.announced
            .get_or_create(&label(peer))
            .set(i64::try_from(announced).unwrap_or(i64::MAX));
        self.pending
            .get_or_create(&label(peer))
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// A peer removed from the configuration leaves the metrics.
    pub fn forget(&self, peer: &str) {
        let l = label(peer);
        self.session_up.remove(&l);
        self.updates.remove(&l);
        self.announced.remove(&l);
        self.pending.remove(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_metallb_names_with_the_peer_label() {
        let metrics = BgpMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.session_up("203.0.113.1:179", true);
        metrics.updates_sent("203.0.113.1:179", 3);
        metrics.prefixes("203.0.113.1:179", 250, 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "metallb_bgp_session_up{peer=\"203.0.113.1:179\"} 1",
            "metallb_bgp_updates_total{peer=\"203.0.113.1:179\"} 3",
            "metallb_bgp_announced_prefixes_total{peer=\"203.0.113.1:179\"} 250",
            "metallb_bgp_pending_prefixes_total{peer=\"203.0.113.1:179\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        metrics.forget("203.0.113.1:179");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("203.0.113.1:179"), "{text}");
    }
}
