//! The reconcile of one Service and the restart pass over all of them (docs/configure.md,
//! "Services"; after MetalLB's `controller/service.go`): what the Service holds is checked against
//! the config and re-claimed, cleared, completed or allocated.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::outcome::{EventReason, Outcome, Run, Status};
use super::service::{Family, IpFamilyPolicy, ServiceFamily, ServiceInfo, family_of, quoted};
use super::{Allocator, restart_order};

impl Allocator {
    /// Reconciles every Service as a restarted controller's first pass does: Services with more
    /// ingress addresses first, so existing addresses are re-claimed before anything new.
    ///
    /// Re-claiming happens for every Service holding addresses before any Service allocates or
    /// adds a PreferDualStack family, so a valid existing address is always kept whatever the
    /// order among equals (MetalLB's tie order is unspecified; see the module docs).
    pub fn reconcile_all(&mut self, services: &[ServiceInfo]) -> Vec<Outcome> {
        let order = restart_order(services);
        let mut staged: Vec<Option<(ServiceInfo, Run)>> = vec![None; services.len()];
        for &i in &order {
            let svc = &services[i];
            if !self.handles(svc) || svc.ingress_ips.as_ref().is_ok_and(Vec::is_empty) {
                continue;
            }
            let mut run = Run::default();
            let status = self.converge(&svc.key(), svc, &mut run, Mode::ReclaimOnly);
            staged[i] = Some((status.applied_to(svc), run));
        }
        order
            .into_iter()
            .map(|i| {
                let (current, mut run) = staged[i]
                    .take()
                    .unwrap_or_else(|| (services[i].clone(), Run::default()));
                let status = if self.handles(&current) {
                    self.converge(&current.key(), &current, &mut run, Mode::Full)
                } else {
                    Status::Ignored
                };
                run.finish(current.key(), status, &services[i])
            })
            .collect()
    }

    /// One reconcile of one Service (Algorithm A, steps 1–8).
    pub fn reconcile(&mut self, svc: &ServiceInfo) -> Outcome {
        let key = svc.key();
        let mut run = Run::default();
        if !self.handles(svc) {
            return run.finish(key, Status::Ignored, svc);
        }
        let status = self.converge(&key, svc, &mut run, Mode::Full);
        run.finish(key, status, svc)
    }

    fn clear(&mut self, key: &str, run: &mut Run) {
        let freed = self.release(key);
        run.freed.extend(freed);
    }

    fn converge(&mut self, key: &str, svc: &ServiceInfo, run: &mut Run, mode: Mode) -> Status {
        let cleared = |reason: &str| Status::Cleared {
            reason: reason.to_string(),
        };
        if !svc.is_load_balancer {
            self.clear(key, run);
            return cleared("not a LoadBalancer service");
        }
        if self.pools.is_empty() {
            self.clear(key, run);
            return cleared("no IPAddressPool is configured");
        }
        if !svc.has_cluster_ip {
            self.clear(key, run);
            return cleared("the service has no clusterIP");
        }
        if svc.ip_family_policy == IpFamilyPolicy::RequireDualStack && svc.cluster_ip_count < 2 {
            run.event(
                EventReason::NotEnoughClusterIps,
                format!(
                    "RequireDualStack service {key:?} has {} clusterIPs, needs 2",
                    svc.cluster_ip_count
                ),
            );
            self.clear(key, run);
            return cleared("RequireDualStack with fewer than two clusterIPs");
        }
        let mut current = match &svc.ingress_ips {
            Ok(ips) => ips.clone(),
            Err(e) => {
                run.event(
                    EventReason::NoLbIpsFamily,
                    format!("Failed to retrieve lbIPs family for {key:?}: {e}"),
                );
                return Status::Unchanged {
                    ips: Vec::new(),
                    reason: e.to_string(),
                };
            }
        };
        let dual_prefer = svc.ip_family_policy == IpFamilyPolicy::PreferDualStack
            && matches!(svc.family, Ok(ServiceFamily::Dual));

        if current.is_empty() {
            // The status is the source of truth: nothing in it means nothing held.
            self.clear(key, run);
        } else {
            let lb_family = match family_of(&current) {
                Ok(f) => f,
                Err(e) => {
                    run.event(
                        EventReason::NoLbIpsFamily,
                        format!("Failed to retrieve lbIPs family for {key:?}: {e}"),
                    );
                    return Status::Unchanged {
                        ips: current,
                        reason: e,
                    };
                }
            };
            let svc_family = match &svc.family {
                Ok(f) => *f,
                Err(e) => {
                    run.event(
                        EventReason::NoClusterIpsFamily,
                        format!("Failed to retrieve clusterIPs family for {key:?}: {e}"),
                    );
                    return Status::Unchanged {
                        ips: current,
                        reason: e.to_string(),
                    };
                }
            };
            if lb_family != svc_family && !dual_prefer {
                self.clear(key, run);
                current.clear();
            }
        }

        if !current.is_empty() {
            // Step 4: re-claim with the checks of an explicit request.
            if self.assign(key, svc, &current).is_err() {
                run.event(
                    EventReason::ClearAssignment,
                    format!("current IP for {key:?} not allowed by config, clearing"),
                );
                self.clear(key, run);
                current.clear();
            }
            if !current.is_empty()
                && let Some(desired) = &svc.pool_annotation
                && self.allocations.get(key).map(|a| &a.pool) != Some(desired)
            {
                self.clear(key, run);
                current.clear();
            }
            match &svc.requested_ips {
                Err(e) => {
                    run.event(
                        EventReason::LoadBalancerFailed,
                        format!("Failed to retrieve LBIPs: {e}"),
                    );
                    return match self.allocations.get(key) {
                        Some(alloc) if !current.is_empty() => Status::Assigned {
                            ips: current,
                            pool: alloc.pool.clone(),
                        },
                        _ => Status::Cleared {
                            reason: e.to_string(),
                        },
                    };
                }
                Ok(requested) if !requested.is_empty() && !same_set(requested, &current) => {
                    self.clear(key, run);
                    current.clear();
                }
                Ok(_) => {}
            }
        }

        if mode == Mode::ReclaimOnly {
            return match self.allocations.get(key) {
                Some(alloc) if !current.is_empty() => Status::Assigned {
                    ips: current,
                    pool: alloc.pool.clone(),
                },
                _ => Status::Pending {
                    reason: "deferred until every address is re-claimed".into(),
                },
            };
        }

        // Step 5: PreferDualStack (with two clusterIPs, see the module docs) adds the other family.
        if current.len() == 1 && dual_prefer {
            let other = Family::of(&current[0]).other();
            match self.add_family(key, svc, &current, other) {
                Ok(ips) => {
                    run.event(
                        EventReason::IpAllocated,
                        format!("Assigned IP {}", quoted(&ips[current.len()..])),
                    );
                    current = ips;
                }
                Err(e) => run.event(
                    EventReason::AdditionalAssignFailed,
                    format!("Failed to allocate additional IP for {key:?}: {e}"),
                ),
            }
        }

        if current.is_empty() {
            match self.allocate(key, svc) {
                Ok(ips) => {
                    run.event(
                        EventReason::IpAllocated,
                        format!("Assigned IP {}", quoted(&ips)),
                    );
                    current = ips;
                }
                Err(e) => {
                    run.event(
                        EventReason::AllocationFailed,
                        format!("Failed to allocate IP for {key:?}: {e}"),
                    );
                    return Status::Pending {
                        reason: e.to_string(),
                    };
                }
            }
        }
        if let Some(alloc) = self.allocations.get(key) {
            Status::Assigned {
                ips: current,
                pool: alloc.pool.clone(),
            }
        } else {
            run.event(
                EventReason::InternalError,
                format!("no pool assigned for {key:?}"),
            );
            self.clear(key, run);
            Status::Cleared {
                reason: "internal error: address without a pool".into(),
            }
        }
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// `ReclaimOnly` stops after step 4 (restart pass, first phase).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    ReclaimOnly,
}
