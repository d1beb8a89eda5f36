//! Prometheus metrics under MetalLB's names (spec (d)), plus reconcile latency.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::allocator::PoolCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

/// Every metric the controller exports. Cloning shares the underlying values.
pub struct Metrics {
    registry: Registry,
    addresses_total: Family<PoolLabel, Gauge>,
    ipv4_addresses_total: Family<PoolLabel, Gauge>,
    ipv6_addresses_total: Family<PoolLabel, Gauge>,
    addresses_in_use_total: Family<PoolLabel, Gauge>,
    ipv4_addresses_in_use_total: Family<PoolLabel, Gauge>,
    ipv6_addresses_in_use_total: Family<PoolLabel, Gauge>,
    /// Watch updates (Services, configuration) processed by the leader.
    pub updates: Counter,
    /// Writes to the API server that failed.
    pub update_errors: Counter,
    /// Writes to the API server (status, annotation, pool status, ConfigurationState).
    pub api_writes: Counter,
    pub config_loaded: Gauge,
    pub config_stale: Gauge,
    /// Seconds from taking a Service up (in its batch) to its writes being done.
    pub reconcile_seconds: Histogram,
    /// Seconds from taking a Service up to the API server acknowledging its ingress write
    /// (only decisions that needed a write).
    pub service_write_seconds: Histogram,
    /// Seconds of one full pass over every Service.
    pub full_pass_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut pool_gauge = |name: &str, help: &str| {
            let family = Family::<PoolLabel, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let addresses_total = pool_gauge(
            "metallb_allocator_addresses_total",
            "Number of usable IP addresses, per pool",
        );
        let ipv4_addresses_total = pool_gauge(
            "metallb_allocator_ipv4_addresses_total",
            "Number of usable IPv4 addresses, per pool",
        );
        let ipv6_addresses_total = pool_gauge(
            "metallb_allocator_ipv6_addresses_total",
            "Number of usable IPv6 addresses, per pool",
        );
        let addresses_in_use_total = pool_gauge(
            "metallb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, per pool",
        );
        let ipv4_addresses_in_use_total = pool_gauge(
            "metallb_allocator_ipv4_addresses_in_use_total",
            "Number of IPv4 addresses in use, per pool",
        );
        let ipv6_addresses_in_use_total = pool_gauge(
            "metallb_allocator_ipv6_addresses_in_use_total",
            "Number of IPv6 addresses in use, per pool",
        );
        let updates = Counter::default();
        // The text encoder appends `_total` to counters.
        registry.register(
            "metallb_k8s_client_updates",
            "Number of k8s object updates that have been processed.",
            updates.clone(),
        );
        let update_errors = Counter::default();
        registry.register(
            "metallb_k8s_client_update_errors",
            "Number of k8s object updates that failed for some reason.",
            update_errors.clone(),
        );
        let api_writes = Counter::default();
        registry.register(
            "herald_controller_api_writes",
            "Writes made to the API server (Service status and annotation, pool status, ConfigurationState).",
            api_writes.clone(),
        );
        let config_loaded = Gauge::default();
        registry.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 if the MetalLB configuration was successfully loaded at least once.",
            config_loaded.clone(),
        );
        let config_stale = Gauge::default();
        registry.register(
            "metallb_k8s_client_config_stale_bool",
            "1 if running on a stale configuration, because the latest config failed to load.",
            config_stale.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "herald_controller_reconcile_seconds",
            "Time from taking a Service up (with the changes batched with it) to its writes being done.",
            reconcile_seconds.clone(),
        );
        let service_write_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "herald_controller_service_write_seconds",
            "Time from taking a Service up to the API server acknowledging its ingress and annotation write.",
            service_write_seconds.clone(),
        );
        let full_pass_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "herald_controller_full_pass_seconds",
            "Time of one pass over every Service (start, configuration change, resync).",
            full_pass_seconds.clone(),
        );
        Metrics {
            registry,
            addresses_total,
            ipv4_addresses_total,
            ipv6_addresses_total,
            addresses_in_use_total,
            ipv4_addresses_in_use_total,
            ipv6_addresses_in_use_total,
            updates,
            update_errors,
            api_writes,
            config_loaded,
            config_stale,
            reconcile_seconds,
            service_write_seconds,
            full_pass_seconds,
        }
    }

    /// Sets the per-pool gauges to `counters` exactly (pools no longer configured disappear).
    pub fn set_pools(&self, counters: &BTreeMap<String, PoolCounters>) {
        let families = [
            &self.addresses_total,
            &self.ipv4_addresses_total,
            &self.ipv6_addresses_total,
            &self.addresses_in_use_total,
            &self.ipv4_addresses_in_use_total,
            &self.ipv6_addresses_in_use_total,
        ];
        for family in families {
            family.clear();
        }
        for (pool, c) in counters {
            let label = PoolLabel { pool: pool.clone() };
            let total4 = c.assigned_ipv4.saturating_add(c.available_ipv4);
            let total6 = c.assigned_ipv6.saturating_add(c.available_ipv6);
            self.addresses_total
                .get_or_create(&label)
                .set(total4.saturating_add(total6));
            self.ipv4_addresses_total.get_or_create(&label).set(total4);
            self.ipv6_addresses_total.get_or_create(&label).set(total6);
            self.addresses_in_use_total
                .get_or_create(&label)
                .set(c.assigned_ipv4.saturating_add(c.assigned_ipv6));
            self.ipv4_addresses_in_use_total
                .get_or_create(&label)
                .set(c.assigned_ipv4);
            self.ipv6_addresses_in_use_total
                .get_or_create(&label)
                .set(c.assigned_ipv6);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_metallb_names_with_pool_labels() {
        let metrics = Metrics::new();
        let counters = BTreeMap::from([(
            "blue".to_string(),
            PoolCounters {
                assigned_ipv4: 2,
                assigned_ipv6: 1,
                available_ipv4: 254,
                available_ipv6: 15,
            },
        )]);
        metrics.set_pools(&counters);
        metrics.updates.inc();
        metrics.config_loaded.set(1);
        let text = metrics.encode();
        for line in [
            "metallb_allocator_addresses_total{pool=\"blue\"} 272",
            "metallb_allocator_ipv4_addresses_total{pool=\"blue\"} 256",
            "metallb_allocator_ipv6_addresses_total{pool=\"blue\"} 16",
            "metallb_allocator_addresses_in_use_total{pool=\"blue\"} 3",
            "metallb_allocator_ipv4_addresses_in_use_total{pool=\"blue\"} 2",
            "metallb_allocator_ipv6_addresses_in_use_total{pool=\"blue\"} 1",
            "metallb_k8s_client_updates_total 1",
            "metallb_k8s_client_update_errors_total 0",
            "metallb_k8s_client_config_loaded_bool 1",
            "metallb_k8s_client_config_stale_bool 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("herald_controller_reconcile_seconds_bucket"));
        assert!(text.contains("herald_controller_service_write_seconds_bucket"));
    }

    #[test]
    fn removed_pools_disappear() {
        let metrics = Metrics::new();
        metrics.set_pools(&BTreeMap::from([(
            "old".to_string(),
            PoolCounters::default(),
        )]));
        metrics.set_pools(&BTreeMap::new());
        assert!(!metrics.encode().contains("pool=\"old\""));
    }
}
