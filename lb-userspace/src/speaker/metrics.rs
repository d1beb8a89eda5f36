//! The speaker's Prometheus metrics under MetalLB's names (spec (d)):
//! `metallb_speaker_announced{service,protocol,node,ip}` and the counters
//! `metallb_layer2_requests_received{ip}`, `metallb_layer2_responses_sent{ip}`,
//! `metallb_layer2_gratuitous_sent{ip}`, plus the gossip's own counters, and Herald's data-plane
//! choice per interface: `herald_dataplane_mode{iface,mode}` (mode xdp-driver, xdp-skb or
//! userspace) and the userspace fallback responder's `herald_fallback_*{iface}` counters.
//!
//! The layer-2 counters come from the XDP program's per-address counters, which restart at
//! zero when an address is withdrawn and announced again; [`CounterTracker`] folds those
//! readings into monotonic totals. They are rendered here in the Prometheus text format with
//! MetalLB's exact names (no `_total` suffix), the rest through `prometheus-client`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as LabelFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bgp::metrics::BgpMetrics;
use crate::dataplane::edges::{EdgeCounters, ForeignClaim};
use crate::dataplane::fallback::FallbackCounts;
use crate::dataplane::xdp_mode::ModeChange;

/// Turns readings of counters that may restart (per key) into increments.
#[derive(Clone, Debug)]
pub struct CounterTracker<K: Ord> {
    last: BTreeMap<K, u64>,
}

impl<K: Ord> Default for CounterTracker<K> {
    fn default() -> Self {
        CounterTracker {
            last: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> CounterTracker<K> {
    /// The increment since the previous reading of `key`. A smaller reading means the counter
    /// restarted from zero, so all of it is new.
    pub fn delta(&mut self, key: &K, reading: u64) -> u64 {
        let previous = self.last.insert(key.clone(), reading);
        match previous {
            Some(p) if reading >= p => reading - p,
            _ => reading,
        }
    }

    /// Forgets keys not read this round (withdrawn addresses start again from zero).
    pub fn retain(&mut self, seen: &BTreeSet<K>) {
        self.last.retain(|k, _| seen.contains(k));
    }
}

/// One per-address reading from the data plane: (interface index, address, requests, replies).
pub type AddressReading = (u32, IpAddr, u64, u64);

#[derive(Default)]
struct Layer2 {
    /// (service, node, ip).
    announced: BTreeSet<(String, String, IpAddr)>,
    /// (service, node, ip) announced over BGP.
    announced_bgp: BTreeSet<(String, String, IpAddr)>,
    requests: BTreeMap<IpAddr, u64>,
    responses: BTreeMap<IpAddr, u64>,
    gratuitous: BTreeMap<IpAddr, u64>,
    requests_seen: CounterTracker<(u32, IpAddr)>,
    responses_seen: CounterTracker<(u32, IpAddr)>,
}

/// Every speaker metric.
pub struct SpeakerMetrics {
    registry: Registry,
    /// MetalLB's native BGP session metrics.
    pub bgp: BgpMetrics,
    pub gossip_auth_failures: Counter,
    /// Dropped gossip datagrams by `reason` (`AuthError::reason`).
    pub gossip_dropped: LabelFamily<Vec<(&'static str, &'static str)>, Counter>,
    pub gossip_received: Counter,
    pub gossip_sent: Counter,
    pub config_loaded: Gauge,
    pub config_stale: Gauge,
    pub updates: Counter,
    pub update_errors: Counter,
    /// Foreign claims on this node's announced addresses, by address.
    foreign_claims: LabelFamily<Vec<(&'static str, String)>, Counter>,
    /// XDP links that started in or moved to another mode than asked, by interface, mode and
    /// reason.
    xdp_mode_changes: LabelFamily<Vec<(&'static str, String)>, Counter>,
    sha_mismatch: Counter,
    rate_limited: Counter,
    flood_dropped: Counter,
    /// The XDP program's running totals as last read (they restart with their maps).
    edges_seen: Mutex<CounterTracker<&'static str>>,
    layer2: Mutex<Layer2>,
    dataplane: Mutex<DataplaneView>,
}

/// A per-interface counter family of the userspace responders: name, help, value.
type Family = (&'static str, &'static str, fn(&FallbackCounts) -> u64);

/// Who answers where, and what the userspace responders did.
#[derive(Default)]
struct DataplaneView {
    /// Interface -> mode (`ServedBy::as_str`).
    modes: BTreeMap<String, &'static str>,
    fallback: BTreeMap<String, FallbackCounts>,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn bump<K: Ord + Clone + Hash>(map: &mut BTreeMap<K, u64>, key: &K, by: u64) {
    if by > 0 {
        *map.entry(key.clone()).or_default() += by;
    }
}

impl SpeakerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let gossip_auth_failures = Counter::default();
        registry.register(
            "herald_speaker_gossip_auth_failures",
            "Gossip datagrams dropped because they failed authentication with the memberlist secret, were replayed, were stamped more than 5 minutes from this node's clock, or were sent before this speaker started",
            gossip_auth_failures.clone(),
        );
        let gossip_dropped = LabelFamily::default();
        registry.register(
            "herald_speaker_gossip_dropped",
            "Gossip datagrams dropped, by reason: bad_tag (another secret, or meant for another member), stale (stamped more than 5 minutes from this node's clock), before_start (stamped before this speaker started: a replay, or a peer clock behind), replayed, unauthenticated, no_key, not_gossip",
            gossip_dropped.clone(),
        );
        let gossip_received = Counter::default();
        registry.register(
            "herald_speaker_gossip_received",
            "Authenticated gossip datagrams received",
            gossip_received.clone(),
        );
        let gossip_sent = Counter::default();
        registry.register(
            "herald_speaker_gossip_sent",
            "Gossip datagrams sent",
            gossip_sent.clone(),
        );
        let config_loaded = Gauge::default();
        registry.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 if the MetalLB configuration was successfully loaded at least once",
            config_loaded.clone(),
        );
        let config_stale = Gauge::default();
        registry.register(
            "metallb_k8s_client_config_stale_bool",
            "1 if running on a stale configuration, because the latest config failed to load",
            config_stale.clone(),
        );
        let updates = Counter::default();
        registry.register(
            "metallb_k8s_client_updates",
            "Number of k8s object updates that have been processed",
            updates.clone(),
        );
        let update_errors = Counter::default();
        registry.register(
            "metallb_k8s_client_update_errors",
            "Number of k8s object updates that failed for some reason",
            update_errors.clone(),
        );
        let foreign_claims = LabelFamily::default();
        registry.register(
            "herald_layer2_foreign_claims",
            "Frames from another MAC claiming an address this node announces (gratuitous ARP, ARP reply, Neighbor Advertisement): two answerers for one address",
            foreign_claims.clone(),
        );
        let xdp_mode_changes = LabelFamily::default();
        registry.register(
            "herald_xdp_mode_changes",
            "XDP links attached in or moved to another mode than requested, by interface, mode and reason (veth: driver-mode replies would be dropped; tx_dropped: they were; driver_refused; requested: --xdp-mode changed)",
            xdp_mode_changes.clone(),
        );
        let sha_mismatch = Counter::default();
        registry.register(
            "herald_dataplane_sha_mismatch",
            "ARP requests for announced addresses whose Ethernet source is not the sender hardware address (answered to the sender hardware address, as Linux does)",
            sha_mismatch.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "herald_dataplane_rate_limited",
            "Requests for announced addresses left unanswered by the per-source rate limit",
            rate_limited.clone(),
        );
        let flood_dropped = Counter::default();
        registry.register(
            "herald_dataplane_flood_dropped",
            "ARP and Neighbor Solicitation frames dropped by the flood guard (their source had more passed to the kernel unanswered than --flood-limit allows)",
            flood_dropped.clone(),
        );
        let bgp = BgpMetrics::default();
        bgp.register(&mut registry);
        SpeakerMetrics {
            registry,
            bgp,
            foreign_claims,
            xdp_mode_changes,
            sha_mismatch,
            rate_limited,
            flood_dropped,
            edges_seen: Mutex::new(CounterTracker::default()),
            gossip_auth_failures,
            gossip_dropped,
            gossip_received,
            gossip_sent,
            config_loaded,
            config_stale,
            updates,
            update_errors,
            layer2: Mutex::new(Layer2::default()),
            dataplane: Mutex::new(DataplaneView::default()),
        }
    }

    fn layer2(&self) -> std::sync::MutexGuard<'_, Layer2> {
        // A panic while holding the lock leaves plain counters behind; keep using them.
        self.layer2
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the announced set: `(service key, ip)` announced by `node`.
    pub fn set_announced(&self, node: &str, announced: &BTreeSet<(String, IpAddr)>) {
        self.layer2().announced = announced
            .iter()
            .map(|(svc, ip)| (svc.clone(), node.to_string(), *ip))
            .collect();
    }

    /// The (Service, address) pairs this node announces over BGP.
    pub fn set_announced_bgp(&self, node: &str, announced: &BTreeSet<(String, IpAddr)>) {
        self.layer2().announced_bgp = announced
            .iter()
            .map(|(svc, ip)| (svc.clone(), node.to_string(), *ip))
            .collect();
    }

    /// Folds one data-plane snapshot of per-address counters in.
    pub fn observe_addresses(&self, readings: &[AddressReading]) {
        let mut l2 = self.layer2();
        let mut seen = BTreeSet::new();
        for &(ifindex, ip, requests, replies) in readings {
            let key = (ifindex, ip);
            seen.insert(key);
            let dr = l2.requests_seen.delta(&key, requests);
            let dp = l2.responses_seen.delta(&key, replies);
            bump(&mut l2.requests, &ip, dr);
            bump(&mut l2.responses, &ip, dp);
        }
        l2.requests_seen.retain(&seen);
        l2.responses_seen.retain(&seen);
    }

    fn dataplane(&self) -> std::sync::MutexGuard<'_, DataplaneView> {
        self.dataplane
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the per-interface data-plane modes: `(interface, mode)`.
    pub fn set_dataplane_modes(&self, modes: &[(String, &'static str)]) {
        self.dataplane().modes = modes.iter().cloned().collect();
    }

    /// The userspace responders' running totals, per interface.
    pub fn observe_fallback(&self, counts: &[(String, FallbackCounts)]) {
        self.dataplane().fallback = counts.iter().cloned().collect();
    }

    /// Folds in the data plane's unusual-request counters and the claims new since the last
    /// look.
    pub fn observe_edges(&self, edges: &EdgeCounters, claims: &[ForeignClaim]) {
        let mut seen = self
            .edges_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.sha_mismatch
            .inc_by(seen.delta(&"sha_mismatch", edges.sha_mismatch));
        self.rate_limited
            .inc_by(seen.delta(&"rate_limited", edges.rate_limited));
        self.flood_dropped
            .inc_by(seen.delta(&"flood_dropped", edges.flood_dropped));
        for claim in claims {
            self.foreign_claims
                .get_or_create(&vec![("ip", claim.ip.to_string())])
                .inc_by(claim.count);
        }
    }

    /// Counts an XDP link that started in or moved to another mode than asked.
    pub fn xdp_mode_changed(&self, change: &ModeChange) {
        self.xdp_mode_changes
            .get_or_create(&vec![
                ("iface", change.iface.clone()),
                ("mode", change.to.as_str().to_string()),
                ("reason", change.reason.to_string()),
            ])
            .inc();
    }

    /// Counts gratuitous packets sent for `ip` (2 per ARP round, 1 per NA).
    pub fn gratuitous_sent(&self, ip: IpAddr, packets: u64) {
        bump(&mut self.layer2().gratuitous, &ip, packets);
    }

    /// The whole exposition (Prometheus text format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        {
            let l2 = self.layer2();
            out.push_str("# HELP metallb_speaker_announced Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged.\n# TYPE metallb_speaker_announced gauge\n");
            let by_protocol = [("bgp", &l2.announced_bgp), ("layer2", &l2.announced)];
            for (protocol, announced) in by_protocol {
                for (svc, node, ip) in announced {
                    let _ = writeln!(
                        out,
                        "metallb_speaker_announced{{ip=\"{ip}\",node=\"{}\",protocol=\"{protocol}\",service=\"{}\"}} 1",
                        escape(node),
                        escape(svc)
                    );
                }
            }
            for (name, help, values) in [
                (
                    "metallb_layer2_requests_received",
                    "Number of layer2 requests received for owned IPs",
                    &l2.requests,
                ),
                (
                    "metallb_layer2_responses_sent",
                    "Number of layer2 responses sent for owned IPs",
                    &l2.responses,
                ),
                (
                    "metallb_layer2_gratuitous_sent",
                    "Number of gratuitous layer2 packets sent for owned IPs",
                    &l2.gratuitous,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (ip, value) in values {
                    let _ = writeln!(out, "{name}{{ip=\"{ip}\"}} {value}");
                }
            }
        }
        {
            let dp = self.dataplane();
            out.push_str("# HELP herald_dataplane_mode Who answers ARP/NDP on the interface: 1 for its mode (xdp-driver, xdp-skb, or userspace when XDP is not used there).\n# TYPE herald_dataplane_mode gauge\n");
            for (iface, mode) in &dp.modes {
                let _ = writeln!(
                    out,
                    "herald_dataplane_mode{{iface=\"{}\",mode=\"{mode}\"}} 1",
                    escape(iface)
                );
            }
            let families: [Family; 4] = [
                (
                    "herald_fallback_replies_sent",
                    "Replies sent by the userspace fallback responder",
                    |c| c.replies,
                ),
                (
                    "herald_fallback_send_failures",
                    "Replies of the userspace fallback responder the kernel refused to send (dropped, e.g. ENOBUFS under a flood)",
                    |c| c.send_failures,
                ),
                (
                    "herald_fallback_receive_errors",
                    "Transient receive errors of the userspace fallback responder",
                    |c| c.receive_errors,
                ),
                (
                    "herald_fallback_map_errors",
                    "Counter updates of the userspace fallback responder that failed",
                    |c| c.map_errors,
                ),
            ];
            for (name, help, value) in families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (iface, counts) in &dp.fallback {
                    let _ = writeln!(
                        out,
                        "{name}{{iface=\"{}\"}} {}",
                        escape(iface),
                        value(counts)
                    );
                }
            }
        }
        let mut rest = String::new();
        if prometheus_client::encoding::text::encode(&mut rest, &self.registry).is_ok() {
            out.push_str(&rest);
        } else {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tracker_handles_restarts() {
        let mut t = CounterTracker::default();
        assert_eq!(t.delta(&1, 5), 5);
        assert_eq!(t.delta(&1, 8), 3);
        assert_eq!(t.delta(&1, 8), 0);
        assert_eq!(t.delta(&1, 2), 2, "restart from zero");
        t.retain(&BTreeSet::new());
        assert_eq!(t.delta(&1, 4), 4, "forgotten key counts from zero");
    }

    #[test]
    fn exposition_has_metallb_names_and_monotonic_counters() {
        let m = SpeakerMetrics::new();
        m.set_announced(
            "node-a",
            &[("default/web".to_string(), ip("198.51.100.1"))].into(),
        );
        m.observe_addresses(&[(2, ip("198.51.100.1"), 10, 9)]);
        m.observe_addresses(&[(2, ip("198.51.100.1"), 12, 11)]);
        // Withdrawn and announced again: the map counters restart, the metric does not.
        m.observe_addresses(&[]);
        m.observe_addresses(&[(2, ip("198.51.100.1"), 1, 1)]);
        m.gratuitous_sent(ip("198.51.100.1"), 2);
        m.gratuitous_sent(ip("198.51.100.1"), 2);
        m.gossip_auth_failures.inc();
        let claim = ForeignClaim {
            ifindex: 2,
            ip: ip("198.51.100.1"),
            mac: crate::dataplane::keys::Mac([2, 0, 0, 0, 0, 9]),
            count: 3,
        };
        let edges = |rate_limited| EdgeCounters {
            sha_mismatch: 1,
            rate_limited,
            foreign_claims: 3,
            flood_dropped: 4,
        };
        m.observe_edges(&edges(5), std::slice::from_ref(&claim));
        // Maps recreated: the totals restart, the metric does not go back.
        m.observe_edges(&edges(2), &[]);
        m.gossip_dropped
            .get_or_create(&vec![("reason", "before_start")])
            .inc();
        let text = m.encode();
        assert!(text.contains(
            "metallb_speaker_announced{ip=\"198.51.100.1\",node=\"node-a\",protocol=\"layer2\",service=\"default/web\"} 1"
        ));
        assert!(text.contains("metallb_layer2_requests_received{ip=\"198.51.100.1\"} 13\n"));
        assert!(text.contains("metallb_layer2_responses_sent{ip=\"198.51.100.1\"} 12\n"));
        assert!(text.contains("metallb_layer2_gratuitous_sent{ip=\"198.51.100.1\"} 4\n"));
        assert!(text.contains("# TYPE metallb_layer2_requests_received counter"));
        assert!(text.contains("herald_speaker_gossip_auth_failures_total 1"));
        assert!(text.contains("herald_layer2_foreign_claims_total{ip=\"198.51.100.1\"} 3"));
        assert!(text.contains("herald_dataplane_sha_mismatch_total 1"));
        assert!(text.contains("herald_dataplane_rate_limited_total 7"));
        assert!(text.contains("herald_dataplane_flood_dropped_total 4"));
        assert!(text.contains("herald_speaker_gossip_dropped_total{reason=\"before_start\"} 1"));
        assert!(text.contains("metallb_k8s_client_config_loaded_bool"));
        m.set_announced("node-a", &BTreeSet::new());
        assert!(!m.encode().contains("metallb_speaker_announced{"));
    }

    #[test]
    fn dataplane_modes_and_fallback_counters() {
        let m = SpeakerMetrics::new();
        m.set_dataplane_modes(&[("eth0".into(), "xdp-skb"), ("eth1".into(), "userspace")]);
        m.observe_fallback(&[(
            "eth1".into(),
            FallbackCounts {
                frames: 10,
                replies: 7,
                send_failures: 3,
                receive_errors: 0,
                map_errors: 0,
            },
        )]);
        let text = m.encode();
        assert!(text.contains("herald_dataplane_mode{iface=\"eth0\",mode=\"xdp-skb\"} 1\n"));
        assert!(text.contains("herald_dataplane_mode{iface=\"eth1\",mode=\"userspace\"} 1\n"));
        assert!(text.contains("herald_fallback_replies_sent{iface=\"eth1\"} 7\n"));
        assert!(text.contains("herald_fallback_send_failures{iface=\"eth1\"} 3\n"));
        assert!(text.contains("# TYPE herald_dataplane_mode gauge"));
        assert!(text.trim_end().ends_with("# EOF"), "EOF stays last");
        m.set_dataplane_modes(&[("eth0".into(), "xdp-driver")]);
        let text = m.encode();
        assert!(!text.contains("iface=\"eth1\",mode"));
        assert!(text.contains("herald_dataplane_mode{iface=\"eth0\",mode=\"xdp-driver\"} 1"));
    }
}
