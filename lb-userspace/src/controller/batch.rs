//! One batch of watch triggers decided against the allocator, pure: releases first, then the
//! rest in order, and whether the batch calls for a pass over every Service.

use crate::allocator::{Allocator, Outcome, ServiceInfo};

/// One Service of a batch of watch triggers as the loop found it.
pub(crate) enum BatchItem<S> {
    /// Gone from the cache: its addresses are released (the key is `namespace/name`).
    Deleted(String),
    /// Present, with the allocator's view of it.
    Present(S, Box<ServiceInfo>),
}

impl<S> BatchItem<S> {
    /// Whether reconciling this item can only give addresses back: a deleted Service, or one
    /// that is no longer of type LoadBalancer. (A Service whose class moved away from
    /// `--lb-class` is ignored, never cleared, as MetalLB does: it frees nothing.)
    fn only_releases(&self) -> bool {
        match self {
            BatchItem::Deleted(_) => true,
            BatchItem::Present(_, info) => !info.is_load_balancer,
        }
    }
}

/// The decisions of one batch.
pub(crate) struct BatchDecisions<S> {
    pub items: Vec<(S, Outcome)>,
    /// Addresses were freed or sharing keys changed: MetalLB then reprocesses every Service.
    pub reprocess_all: bool,
}

/// Decides a batch against the allocator, releases first. MetalLB's work queue takes events in
/// order, so a Service deleted just before another is created has freed its address when the
/// new one allocates; a batch is gathered in a set and has no order, so the releases it holds
/// are made before any allocation (a release never takes an address, so moving it earlier can
/// only leave more free). The rest keep their order.
pub(crate) fn decide_batch<S>(
    allocator: &mut Allocator,
    batch: Vec<BatchItem<S>>,
) -> BatchDecisions<S> {
    let (releases, others): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(BatchItem::only_releases);
    let mut decided = BatchDecisions {
        items: Vec::with_capacity(others.len() + releases.len()),
        reprocess_all: false,
    };
    for item in releases.into_iter().chain(others) {
        let (svc, info) = match item {
            BatchItem::Deleted(key) => {
                let freed = allocator.release(&key);
                if !freed.is_empty() {
                    tracing::info!(service = %key, freed = ?freed, "service deleted: addresses freed");
                    decided.reprocess_all = true;
                }
                continue;
            }
            BatchItem::Present(svc, info) => (svc, info),
        };
        let key = info.key();
        let keys_before = allocator
            .allocation(&key)
            .map(|a| (a.sharing_key.clone(), a.backend_key.clone()));
        let outcome = allocator.reconcile(&info);
        let keys_after = allocator
            .allocation(&key)
            .map(|a| (a.sharing_key.clone(), a.backend_key.clone()));
        // MetalLB reprocesses everything when addresses free up or sharing keys change.
        if !outcome.freed.is_empty() || (keys_before.is_some() && keys_before != keys_after) {
            decided.reprocess_all = true;
        }
        decided.items.push((svc, outcome));
    }
    decided
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use k8s_openapi::api::core::v1::Service;
    use serde_json::{Value, json};

    use super::*;
    use crate::allocator::Status;
    use crate::config::Pool;

    /// One pool holding exactly `cidr`.
    fn allocator(cidr: &str) -> Allocator {
        let pool = Pool {
            name: "p".into(),
            labels: BTreeMap::new(),
            ranges: vec![vec![cidr.parse().unwrap()]],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        };
        Allocator::new(&BTreeMap::from([(pool.name.clone(), pool)]), None)
    }

    /// The allocator's view of Service `t/name` of `kind`, with `extra` merged into its spec.
    fn info(name: &str, kind: &str, extra: Value) -> ServiceInfo {
        let mut spec = json!({"type": kind, "clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}]});
        if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
            spec.extend(extra);
        }
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t"},
            "spec": spec,
        }))
        .unwrap();
        ServiceInfo::from_service(&svc).unwrap()
    }

    /// Allocates for a new LoadBalancer Service; returns its view once its status is written.
    fn holding(allocator: &mut Allocator, name: &str, ip: &str) -> ServiceInfo {
        let new = info(name, "LoadBalancer", json!({}));
        let outcome = allocator.reconcile(&new);
        assert_eq!(ips(&outcome), vec![ip.parse::<IpAddr>().unwrap()], "{name}");
        outcome.status.applied_to(&new)
    }

    fn ips(outcome: &Outcome) -> Vec<IpAddr> {
        match &outcome.status {
            Status::Assigned { ips, .. } => ips.clone(),
            _ => Vec::new(),
        }
    }

    fn outcome_of<'a>(decided: &'a BatchDecisions<&str>, name: &str) -> &'a Outcome {
        &decided
            .items
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no decision for {name}"))
            .1
    }

    /// `kubectl delete svc api; kubectl create svc api2` land in one batch, the create first
    /// (a set's order): the only address of the pool is the one the delete frees, and api2 gets
    /// it in this very batch.
    #[test]
    fn a_delete_in_the_batch_frees_its_address_before_a_create_allocates() {
        let mut allocator = allocator("198.51.100.10/32");
        holding(&mut allocator, "api", "198.51.100.10");
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Deleted("t/api".to_string()),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert_eq!(
            ips(outcome_of(&decided, "api2")),
            vec!["198.51.100.10".parse::<IpAddr>().unwrap()],
            "{:?}",
            outcome_of(&decided, "api2")
        );
        assert!(decided.reprocess_all, "a freed address reprocesses all");
        assert!(allocator.allocation("t/api").is_none());
    }

    /// The same for a Service that stops being a LoadBalancer in the batch.
    #[test]
    fn a_type_change_in_the_batch_frees_its_address_before_a_create_allocates() {
        let mut allocator = allocator("198.51.100.10/32");
        let web = holding(&mut allocator, "web", "198.51.100.10");
        let mut now_cluster_ip = info("web", "ClusterIP", json!({}));
        now_cluster_ip.ingress_ips = web.ingress_ips.clone();
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Present("web", Box::new(now_cluster_ip)),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert!(matches!(
            outcome_of(&decided, "web").status,
            Status::Cleared { .. }
        ));
        assert_eq!(
            ips(outcome_of(&decided, "api2")),
            vec!["198.51.100.10".parse::<IpAddr>().unwrap()]
        );
    }

    /// A class moving away from `--lb-class` is ignored, not cleared (MetalLB): it keeps its
    /// address, so nothing is freed for the create and the create waits.
    #[test]
    fn a_class_change_frees_nothing() {
        let mut allocator = allocator("198.51.100.10/32");
        let web = holding(&mut allocator, "web", "198.51.100.10");
        let mut other_class = info(
            "web",
            "LoadBalancer",
            json!({"loadBalancerClass": "example.com/other"}),
        );
        other_class.ingress_ips = web.ingress_ips.clone();
        let batch = vec![
            BatchItem::Present("api2", Box::new(info("api2", "LoadBalancer", json!({})))),
            BatchItem::Present("web", Box::new(other_class)),
        ];
        let decided = decide_batch(&mut allocator, batch);
        assert_eq!(outcome_of(&decided, "web").status, Status::Ignored);
        assert!(matches!(
            outcome_of(&decided, "api2").status,
            Status::Pending { .. }
        ));
        assert!(!decided.reprocess_all);
    }

    /// Whatever order the batch comes in, the releases it holds are made first: the new
    /// Service gets the first address of the pool (freed by the delete), never the last one
    /// (freed by the type change, but after it in the pool) or nothing.
    #[test]
    fn every_order_of_a_batch_decides_alike() {
        let orders: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut allocator = allocator("198.51.100.10/31");
            holding(&mut allocator, "api", "198.51.100.10");
            let web = holding(&mut allocator, "web", "198.51.100.11");
            let mut now_cluster_ip = info("web", "ClusterIP", json!({}));
            now_cluster_ip.ingress_ips = web.ingress_ips.clone();
            let mut items: Vec<Option<BatchItem<&str>>> = vec![
                Some(BatchItem::Deleted("t/api".to_string())),
                Some(BatchItem::Present(
                    "api2",
                    Box::new(info("api2", "LoadBalancer", json!({}))),
                )),
                Some(BatchItem::Present("web", Box::new(now_cluster_ip))),
            ];
            let batch = order.iter().filter_map(|&i| items[i].take()).collect();
            let decided = decide_batch(&mut allocator, batch);
            assert_eq!(
                ips(outcome_of(&decided, "api2")),
                vec!["198.51.100.10".parse::<IpAddr>().unwrap()],
                "batch order {order:?}"
            );
            assert!(allocator.allocation("t/web").is_none(), "{order:?}");
        }
    }
}
