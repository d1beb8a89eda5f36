//! Pure helpers deciding which writes an allocator outcome needs, and the JSON of the status the
//! controller writes. No I/O: the reconcile loop performs what these return.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::allocator::{ALLOCATED_FROM_POOL, PoolCounters, Status, parse_ip};

/// The writes one Service needs to match an outcome. `None` fields need no write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceWrites {
    /// New `status.loadBalancer.ingress` (empty: remove).
    pub ingress: Option<Vec<IpAddr>>,
    /// New value of the `ip-allocated-from-pool` annotation (`Some(None)`: remove it).
    pub pool_annotation: Option<Option<String>>,
}

impl ServiceWrites {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.pool_annotation.is_none()
    }
}

/// What the Service currently shows: ingress addresses in order (an unparsable entry makes the
/// list unequal to any wanted one) and the pool annotation.
pub fn current_state(service: &Service) -> (Option<Vec<IpAddr>>, Option<String>) {
    let ingress: Vec<&str> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .collect();
    let parsed: Option<Vec<IpAddr>> = ingress.iter().map(|ip| parse_ip(ip)).collect();
    let pool = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOCATED_FROM_POOL))
        .cloned();
    (parsed, pool)
}

/// The writes that make `service` show `status`. Ignored and Unchanged outcomes write nothing.
pub fn service_writes(service: &Service, status: &Status) -> ServiceWrites {
    let (want_ips, want_pool): (Vec<IpAddr>, Option<String>) = match status {
        Status::Ignored | Status::Unchanged { .. } => return ServiceWrites::default(),
        Status::Assigned { ips, pool } => (ips.clone(), Some(pool.clone())),
        Status::Cleared { .. } | Status::Pending { .. } => (Vec::new(), None),
    };
    let (have_ips, have_pool) = current_state(service);
    let entries = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map_or(0, Vec::len);
    // Entries without an IP (hostname-only) count as something to rewrite.
    let ingress_ok = have_ips.as_ref() == Some(&want_ips) && entries == want_ips.len();
    ServiceWrites {
        ingress: (!ingress_ok).then(|| want_ips.clone()),
        pool_annotation: (have_pool != want_pool).then_some(want_pool),
    }
}

/// `IPAddressPool.status` as MetalLB writes it (field names are MetalLB's, not serde's).
pub fn pool_status(c: &PoolCounters) -> Value {
    json!({
        "assignedIPv4": c.assigned_ipv4,
        "assignedIPv6": c.assigned_ipv6,
        "availableIPv4": c.available_ipv4,
        "availableIPv6": c.available_ipv6,
    })
}

/// Pools whose status must be (re)written: counters differ from what was last written.
pub fn changed_pools<'a, V: PartialEq>(
    now: &'a BTreeMap<String, V>,
    written: &BTreeMap<String, V>,
) -> Vec<(&'a String, &'a V)> {
    now.iter()
        .filter(|(name, c)| written.get(*name) != Some(*c))
        .collect()
}

/// The controller's verdict on the configuration, for ConfigurationState `controller`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigVerdict {
    Valid,
    Invalid(String),
}

/// `ConfigurationState.status` for a verdict: `result`, `errorSummary` and the
/// `poolReconcilerValid` condition (MetalLB's names).
pub fn configuration_state_status(verdict: &ConfigVerdict, now_rfc3339: &str) -> Value {
    let (result, summary, status, reason, message) = match verdict {
        ConfigVerdict::Valid => ("Valid", "", "True", "Reconciled", ""),
        ConfigVerdict::Invalid(summary) => (
            "Invalid",
            summary.as_str(),
            "False",
            "ConfigurationError",
            summary.as_str(),
        ),
    };
    json!({
        "result": result,
        "errorSummary": summary,
        "conditions": [{
            "type": "poolReconcilerValid",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_rfc3339,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ingress: &[&str], pool: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                annotations: pool
                    .map(|p| BTreeMap::from([(ALLOCATED_FROM_POOL.to_string(), p.to_string())])),
                ..Default::default()
            },
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn assigned(ips: &[&str], pool: &str) -> Status {
        Status::Assigned {
            ips: ips.iter().map(|s| ip(s)).collect(),
            pool: pool.into(),
        }
    }

    #[test]
    fn writes_table() {
        let pending = Status::Pending {
            reason: "no available IPs".into(),
        };
        let cleared = Status::Cleared {
            reason: "not a LoadBalancer service".into(),
        };
        let cases: Vec<(&str, Service, Status, ServiceWrites)> = vec![
            (
                "fresh service gets both",
                svc(&[], None),
                assigned(&["198.51.100.1"], "p"),
                ServiceWrites {
                    ingress: Some(vec![ip("198.51.100.1")]),
                    pool_annotation: Some(Some("p".into())),
                },
            ),
            (
                "already right: nothing",
                svc(&["198.51.100.1"], Some("p")),
                assigned(&["198.51.100.1"], "p"),
                ServiceWrites::default(),
            ),
            (
                "pool renamed: annotation only",
                svc(&["198.51.100.1"], Some("old")),
                assigned(&["198.51.100.1"], "new"),
                ServiceWrites {
                    ingress: None,
                    pool_annotation: Some(Some("new".into())),
                },
            ),
            (
                "dual-stack order matters",
                svc(&["2001:db8::1", "198.51.100.1"], Some("p")),
                assigned(&["198.51.100.1", "2001:db8::1"], "p"),
                ServiceWrites {
                    ingress: Some(vec![ip("198.51.100.1"), ip("2001:db8::1")]),
                    pool_annotation: None,
                },
            ),
            (
                "pending clears both",
                svc(&["198.51.100.1"], Some("p")),
                pending.clone(),
                ServiceWrites {
                    ingress: Some(vec![]),
                    pool_annotation: Some(None),
                },
            ),
            (
                "pending and empty: nothing",
                svc(&[], None),
                pending,
                ServiceWrites::default(),
            ),
            (
                "cleared with garbage ingress",
                svc(&["not-an-ip"], None),
                cleared,
                ServiceWrites {
                    ingress: Some(vec![]),
                    pool_annotation: None,
                },
            ),
            (
                "ignored never writes",
                svc(&["198.51.100.9"], Some("x")),
                Status::Ignored,
                ServiceWrites::default(),
            ),
            (
                "unchanged never writes",
                svc(&["198.51.100.9"], None),
                Status::Unchanged {
                    ips: vec![],
                    reason: "bad request".into(),
                },
                ServiceWrites::default(),
            ),
        ];
        for (name, service, status, want) in cases {
            assert_eq!(service_writes(&service, &status), want, "{name}");
        }
    }

    #[test]
    fn pool_status_uses_metallb_field_names() {
        let c = PoolCounters {
            assigned_ipv4: 1,
            assigned_ipv6: 2,
            available_ipv4: 3,
            available_ipv6: 4,
        };
        assert_eq!(
            pool_status(&c),
            json!({"assignedIPv4": 1, "assignedIPv6": 2, "availableIPv4": 3, "availableIPv6": 4})
        );
    }

    #[test]
    fn only_changed_pools_are_rewritten() {
        let a = PoolCounters {
            assigned_ipv4: 1,
            ..Default::default()
        };
        let now = BTreeMap::from([
            ("a".to_string(), a),
            ("b".to_string(), PoolCounters::default()),
        ]);
        let written = BTreeMap::from([("b".to_string(), PoolCounters::default())]);
        let changed: Vec<&String> = changed_pools(&now, &written)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(changed, vec!["a"]);
    }

    #[test]
    fn configuration_state_verdicts() {
        let valid = configuration_state_status(&ConfigVerdict::Valid, "2026-01-01T00:00:00Z");
        assert_eq!(valid["result"], "Valid");
        assert_eq!(valid["conditions"][0]["status"], "True");
        let invalid = configuration_state_status(
            &ConfigVerdict::Invalid("pool x: bad".into()),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(invalid["result"], "Invalid");
        assert_eq!(invalid["errorSummary"], "pool x: bad");
        assert_eq!(invalid["conditions"][0]["reason"], "ConfigurationError");
        assert_eq!(invalid["conditions"][0]["type"], "poolReconcilerValid");
    }
}
