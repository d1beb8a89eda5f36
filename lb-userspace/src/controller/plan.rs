//! Pure helpers deciding which writes an allocator outcome needs, the status the controller
//! writes, and what the loop makes of a write's result. No I/O: the reconcile loop performs what
//! these return.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::allocator::{ALLOCATED_FROM_POOL, PoolCounters, Status, parse_ip};
use crate::api::ConfigurationStateStatus;
use crate::k8s::ErrorKind;

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

/// The one JSON merge patch, sent to the Service's status subresource, that performs `writes`:
/// ingress and pool annotation together. The API server keeps metadata changes made through a
/// Service's status (MetalLB's controller writes both with one status update too), so one round
/// trip suffices and readers never see an address without the annotation naming its pool, nor
/// the annotation outliving the address. `None` when nothing is to be written.
pub fn service_patch(writes: &ServiceWrites) -> Option<Value> {
    if writes.is_empty() {
        return None;
    }
    let mut patch = serde_json::Map::new();
    if let Some(value) = &writes.pool_annotation {
        patch.insert(
            "metadata".into(),
            json!({ "annotations": { ALLOCATED_FROM_POOL: value } }),
        );
    }
    if let Some(ips) = &writes.ingress {
        let ingress: Value = if ips.is_empty() {
            Value::Null
        } else {
            ips.iter()
                .map(|ip| json!({ "ip": ip.to_string() }))
                .collect()
        };
        patch.insert(
            "status".into(),
            json!({ "loadBalancer": { "ingress": ingress } }),
        );
    }
    Some(Value::Object(patch))
}

/// Makes `patch` conditional on the Service still being at `resource_version` (the copy the
/// write was planned against): the API server refuses it with 409 Conflict otherwise, so a
/// write planned on a copy someone else has since changed — above all, by a replica that became
/// leader while this one was paused — never lands; the decision is made again on a fresh copy.
/// Without a version (never the case for a listed object) the patch is unconditional.
pub fn conditional(mut patch: Value, resource_version: Option<&str>) -> Value {
    if let (Some(version), Some(object)) = (resource_version, patch.as_object_mut()) {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("resourceVersion".into(), Value::String(version.into()));
        }
    }
    patch
}

/// Of the watch cache's copy of a Service and the copy our last write returned, the one to plan
/// the next write against: ours while the cache has not caught up with it (same object, older
/// resourceVersion), else the cache's (it may hold someone else's later change). When either
/// resourceVersion is not a number the cache wins: at worst a write is repeated.
pub fn fresher<'a>(cached: &'a Service, written: Option<&'a Service>) -> &'a Service {
    let version = |s: &Service| {
        s.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match written {
        Some(ours)
            if ours.metadata.uid.is_some()
                && ours.metadata.uid == cached.metadata.uid
                && matches!((version(cached), version(ours)), (Some(c), Some(o)) if c < o) =>
        {
            ours
        }
        _ => cached,
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
pub fn configuration_state_status(
    verdict: &ConfigVerdict,
    now: Timestamp,
) -> ConfigurationStateStatus {
    let errors = match verdict {
        ConfigVerdict::Valid => None,
        ConfigVerdict::Invalid(summary) => Some(summary.as_str()),
    };
    ConfigurationStateStatus::reported("poolReconcilerValid", errors, now)
}

/// What the loop does about a write the API server refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailed {
    /// The object is gone: nothing is retried (a deleted Service's own delete event releases its
    /// addresses; a deleted pool needs no status).
    Gone,
    /// Retried with backoff.
    Retry,
}

pub fn write_failed(kind: ErrorKind) -> WriteFailed {
    match kind {
        // Gone, or no longer ours to write: the next leader decides afresh.
        ErrorKind::NotFound | ErrorKind::NotLeading => WriteFailed::Gone,
        ErrorKind::Conflict | ErrorKind::Other => WriteFailed::Retry,
    }
}

/// When changed pool counters are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolStatusWrite {
    /// Nothing changed.
    Nothing,
    /// Now.
    Now,
    /// At this instant: the last write was less than the interval ago (the counters of a burst
    /// coalesce into one write per interval).
    At(Instant),
}

/// When to write pool status that `changed`, the last write having been at `last` and at most
/// one being allowed per `interval`.
pub fn pool_status_write(
    changed: bool,
    last: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> PoolStatusWrite {
    if !changed {
        return PoolStatusWrite::Nothing;
    }
    match last.map(|at| at + interval) {
        Some(next_allowed) if now < next_allowed => PoolStatusWrite::At(next_allowed),
        _ => PoolStatusWrite::Now,
    }
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
    fn one_patch_carries_annotation_and_ingress() {
        let assign = ServiceWrites {
            ingress: Some(vec![ip("198.51.100.1"), ip("2001:db8::1")]),
            pool_annotation: Some(Some("p".into())),
        };
        assert_eq!(
            service_patch(&assign),
            Some(json!({
                "metadata": { "annotations": { ALLOCATED_FROM_POOL: "p" } },
                "status": { "loadBalancer": { "ingress": [{ "ip": "198.51.100.1" }, { "ip": "2001:db8::1" }] } },
            }))
        );
        let clear = ServiceWrites {
            ingress: Some(vec![]),
            pool_annotation: Some(None),
        };
        assert_eq!(
            service_patch(&clear),
            Some(json!({
                "metadata": { "annotations": { ALLOCATED_FROM_POOL: null } },
                "status": { "loadBalancer": { "ingress": null } },
            }))
        );
        let annotation_only = ServiceWrites {
            ingress: None,
            pool_annotation: Some(Some("new".into())),
        };
        assert_eq!(
            service_patch(&annotation_only),
            Some(json!({ "metadata": { "annotations": { ALLOCATED_FROM_POOL: "new" } } }))
        );
        let ingress_only = ServiceWrites {
            ingress: Some(vec![ip("198.51.100.2")]),
            pool_annotation: None,
        };
        assert_eq!(
            service_patch(&ingress_only),
            Some(
                json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "198.51.100.2" }] } } })
            )
        );
        assert_eq!(service_patch(&ServiceWrites::default()), None);
    }

    #[test]
    fn writes_are_conditional_on_the_version_they_were_planned_on() {
        let ingress = json!({ "status": { "loadBalancer": { "ingress": null } } });
        assert_eq!(
            conditional(ingress.clone(), Some("42")),
            json!({
                "metadata": { "resourceVersion": "42" },
                "status": { "loadBalancer": { "ingress": null } }
            })
        );
        let both = json!({
            "metadata": { "annotations": { ALLOCATED_FROM_POOL: "p" } },
            "status": {}
        });
        assert_eq!(
            conditional(both, Some("7")),
            json!({
                "metadata": { "annotations": { ALLOCATED_FROM_POOL: "p" }, "resourceVersion": "7" },
                "status": {}
            })
        );
        assert_eq!(conditional(ingress.clone(), None), ingress);
    }

    #[test]
    fn fresher_prefers_our_write_only_while_the_cache_lags() {
        let versioned = |uid: Option<&str>, rv: Option<&str>, ingress: &[&str]| {
            let mut s = svc(ingress, None);
            s.metadata.uid = uid.map(Into::into);
            s.metadata.resource_version = rv.map(Into::into);
            s
        };
        let ours = versioned(Some("u"), Some("20"), &["198.51.100.1"]);
        let ours_without_uid = versioned(None, Some("20"), &[]);
        let cases: Vec<(&str, Service, Option<&Service>, bool)> = vec![
            (
                "cache lags: ours",
                versioned(Some("u"), Some("10"), &[]),
                Some(&ours),
                true,
            ),
            (
                "cache caught up: cache",
                versioned(Some("u"), Some("20"), &["198.51.100.1"]),
                Some(&ours),
                false,
            ),
            (
                "later change by someone else: cache",
                versioned(Some("u"), Some("30"), &[]),
                Some(&ours),
                false,
            ),
            (
                "recreated under the same name: cache",
                versioned(Some("v"), Some("5"), &[]),
                Some(&ours),
                false,
            ),
            (
                "no uid: cache",
                versioned(None, Some("10"), &[]),
                Some(&ours_without_uid),
                false,
            ),
            (
                "unparsable version: cache",
                versioned(Some("u"), Some("x"), &[]),
                Some(&ours),
                false,
            ),
            (
                "nothing written: cache",
                versioned(Some("u"), Some("10"), &[]),
                None,
                false,
            ),
        ];
        for (name, cached, written, want_ours) in cases {
            let got = fresher(&cached, written);
            let is_ours = written.is_some_and(|w| std::ptr::eq(got, w));
            assert_eq!(is_ours, want_ours, "{name}");
            if !want_ours {
                assert!(std::ptr::eq(got, &raw const cached), "{name}");
            }
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

    /// The typed status carries what the untyped JSON did, to the letter once patched.
    #[test]
    fn configuration_state_verdicts() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let valid = configuration_state_status(&ConfigVerdict::Valid, now);
        assert_eq!(
            crate::k8s::config_state::status_patch(&valid)["status"],
            json!({
                "result": "Valid",
                "errorSummary": "",
                "conditions": [{
                    "type": "poolReconcilerValid",
                    "status": "True",
                    "reason": "Reconciled",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            })
        );
        let invalid =
            configuration_state_status(&ConfigVerdict::Invalid("pool x: bad".into()), now);
        assert_eq!(
            crate::k8s::config_state::status_patch(&invalid)["status"],
            json!({
                "result": "Invalid",
                "errorSummary": "pool x: bad",
                "conditions": [{
                    "type": "poolReconcilerValid",
                    "status": "False",
                    "reason": "ConfigurationError",
                    "message": "pool x: bad",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            })
        );
    }

    #[test]
    fn only_a_vanished_object_is_not_retried() {
        assert_eq!(write_failed(ErrorKind::NotFound), WriteFailed::Gone);
        assert_eq!(write_failed(ErrorKind::Conflict), WriteFailed::Retry);
        assert_eq!(write_failed(ErrorKind::Other), WriteFailed::Retry);
        assert_eq!(write_failed(ErrorKind::NotLeading), WriteFailed::Gone);
    }

    #[test]
    fn pool_status_is_written_at_most_once_per_interval() {
        let interval = Duration::from_millis(200);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            pool_status_write(false, None, t0, interval),
            PoolStatusWrite::Nothing
        );
        assert_eq!(
            pool_status_write(false, Some(t0), at(10), interval),
            PoolStatusWrite::Nothing
        );
        assert_eq!(
            pool_status_write(true, None, t0, interval),
            PoolStatusWrite::Now
        );
        assert_eq!(
            pool_status_write(true, Some(t0), at(50), interval),
            PoolStatusWrite::At(at(200))
        );
        assert_eq!(
            pool_status_write(true, Some(t0), at(200), interval),
            PoolStatusWrite::Now
        );
        assert_eq!(
            pool_status_write(true, Some(t0), at(900), interval),
            PoolStatusWrite::Now
        );
    }
}
