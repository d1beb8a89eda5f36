//! IP allocation with MetalLB's semantics: the Service annotations and fields MetalLB's controller
//! reads, the Events it records and its allocation algorithm, as described in docs/configure.md
//! ("Services", "How an address is chosen") after MetalLB's `controller/service.go` and
//! `internal/allocator/allocator.go`
//! (<https://github.com/metallb/metallb/tree/v0.15.2/internal/allocator>).
//!
//! Pure: [`Allocator::reconcile`] takes a [`ServiceInfo`] and returns the status MetalLB's
//! controller would write plus the Events it would record; nothing here talks to Kubernetes.
//!
//! Deliberate differences from MetalLB (where MetalLB is unspecified or unstable):
//! * Tier-2 pools (autoAssign, no serviceAllocation) are tried in pool-name order, and tier-1
//!   pools of equal priority by name; MetalLB's order there is unspecified (map iteration).
//! * PreferDualStack with a single clusterIP is treated as single-stack: the other family is
//!   never added, so the status does not flap forever (MetalLB's "known sharp edge").
//! * Services of equal ingress count are re-claimed in `namespace/name` order on restart.
//! * avoidBuggyIPs never affects IPv6, in the pool counters too.

pub mod service;
pub mod space;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Pool;
use crate::config::selector::any_matches;
pub use service::{
    ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, DEPRECATED_PREFIX, Family, FieldError, IpFamilyPolicy,
    Port, ServiceFamily, ServiceInfo, canonical, family_of, parse_ip, quoted,
};
use space::{Addr, CidrSpace, from_addr, to_addr};

/// Kubernetes event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// The reasons of the Events MetalLB's controller records on a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventReason {
    #[serde(rename = "IPAllocated")]
    IpAllocated,
    AllocationFailed,
    ClearAssignment,
    LoadBalancerFailed,
    AdditionalAssignFailed,
    #[serde(rename = "not enough clusterips")]
    NotEnoughClusterIps,
    #[serde(rename = "nolbIPsIPFamily")]
    NoLbIpsFamily,
    #[serde(rename = "noclusterIPsIPFamily")]
    NoClusterIpsFamily,
    InternalError,
    #[serde(rename = "deprecatedAnnotation")]
    DeprecatedAnnotation,
}

impl EventReason {
    /// The reason string as recorded on the Event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::IpAllocated => "IPAllocated",
            EventReason::AllocationFailed => "AllocationFailed",
            EventReason::ClearAssignment => "ClearAssignment",
            EventReason::LoadBalancerFailed => "LoadBalancerFailed",
            EventReason::AdditionalAssignFailed => "AdditionalAssignFailed",
            EventReason::NotEnoughClusterIps => "not enough clusterips",
            EventReason::NoLbIpsFamily => "nolbIPsIPFamily",
            EventReason::NoClusterIpsFamily => "noclusterIPsIPFamily",
            EventReason::InternalError => "InternalError",
            EventReason::DeprecatedAnnotation => "deprecatedAnnotation",
        }
    }

    pub fn event_type(self) -> EventType {
        match self {
            EventReason::IpAllocated
            | EventReason::ClearAssignment
            | EventReason::AdditionalAssignFailed => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

/// One Event the controller would record on the Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub reason: EventReason,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub message: String,
}

impl Event {
    fn new(reason: EventReason, message: String) -> Self {
        Event {
            reason,
            event_type: reason.event_type(),
            message,
        }
    }
}

/// What the controller writes for the Service after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Status {
    /// `loadBalancerClass` does not match `--lb-class`: never touched.
    Ignored,
    /// Ingress and pool annotation removed; nothing is wanted.
    Cleared { reason: String },
    /// Ingress = `ips` (status order), annotation `ip-allocated-from-pool` = `pool`.
    Assigned { ips: Vec<IpAddr>, pool: String },
    /// Nothing could be allocated; ingress and annotation are empty.
    Pending { reason: String },
    /// The reconcile stopped before writing: the Service keeps whatever it has.
    Unchanged { ips: Vec<IpAddr>, reason: String },
}

/// The result of reconciling one Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub service: String,
    pub status: Status,
    pub events: Vec<Event>,
    /// Addresses that became free in this reconcile (MetalLB then reprocesses every Service).
    #[serde(skip)]
    pub freed: Vec<IpAddr>,
}

/// Why an allocation or a claim failed; the texts follow MetalLB's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{0}")]
    BadField(FieldError),
    #[error("requested loadBalancer IP(s) {ips} does not match the ipFamily of the service")]
    FamilyMismatch { ips: String },
    #[error("{ips} is not allowed in config")]
    NotAllowed { ips: String },
    #[error("pool {pool} not compatible for ip assignment")]
    IncompatiblePool { pool: String },
    #[error("{0}")]
    Sharing(String),
    #[error("port {port} is already in use on \"{ip}\"")]
    PortInUse { port: Port, ip: IpAddr },
    #[error(
        "requested loadBalancer IP(s) {ips} is not compatible with requested address pool {pool}"
    )]
    PoolMismatch { ips: String, pool: String },
    #[error("unknown pool \"{0}\"")]
    UnknownPool(String),
    #[error("no available IPs in pool \"{pool}\" for {family} IPFamily")]
    PoolFull { pool: String, family: ServiceFamily },
    #[error("no available IPs")]
    NoAvailableIps,
}

/// An allocation held by one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub pool: String,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<Port>,
    pub sharing_key: String,
    pub backend_key: String,
}

/// The counters written to `IPAddressPool.status` (see (h)): the CRD's own status type.
pub use crate::api::IPAddressPoolStatus as PoolCounters;

/// What `set_config` did to existing allocations. MetalLB reprocesses every Service afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolChange {
    /// Services whose addresses no new pool contains: their allocation is forgotten.
    pub forgotten: Vec<String>,
    /// (service, old pool, new pool) for allocations now owned by a differently named pool.
    pub moved: Vec<(String, String, String)>,
}

struct PoolSpace {
    pool: Pool,
    cidrs: Vec<CidrSpace>,
}

/// Who uses one address and under which keys.
struct AddrUse {
    /// Few per address: vectors beat trees in memory (100k Services) and speed.
    users: Vec<Arc<str>>,
    sharing_key: String,
    backend_key: String,
    ports: Vec<(Port, Arc<str>)>,
    location: (usize, usize),
}

type SharingIndex = HashMap<(String, String), BTreeSet<Addr>>;

/// MetalLB's allocator: the pools and every Service's current addresses.
pub struct Allocator {
    pools: Vec<PoolSpace>,
    by_name: HashMap<String, usize>,
    /// Every CIDR of every pool by its first address (CIDRs never overlap once validated).
    cidr_index: BTreeMap<Addr, (usize, usize)>,
    lb_class: Option<String>,
    addresses: HashMap<Addr, AddrUse>,
    allocations: HashMap<Arc<str>, Allocation>,
    /// Addresses in use with a non-empty sharing key, by (sharing key, backend key): the
    /// co-location candidates, so "first free" never walks the pool.
    shared: SharingIndex,
}

impl Allocator {
    /// An allocator over `pools`, handling Services whose class matches `lb_class`.
    pub fn new(pools: &BTreeMap<String, Pool>, lb_class: Option<String>) -> Self {
        let mut allocator = Allocator {
            pools: Vec::new(),
            by_name: HashMap::new(),
            cidr_index: BTreeMap::new(),
            lb_class,
            addresses: HashMap::new(),
            allocations: HashMap::new(),
            shared: HashMap::new(),
        };
        allocator.set_config(pools);
        allocator
    }

    /// `--lb-class`: unset handles only Services without a class; set handles only that class.
    pub fn handles(&self, svc: &ServiceInfo) -> bool {
        svc.lb_class == self.lb_class
    }

    pub fn allocation(&self, service_key: &str) -> Option<&Allocation> {
        self.allocations.get(service_key)
    }

    /// Replaces the pools, re-attributing each allocation to the pool that now contains all its
    /// addresses, or forgetting it.
    pub fn set_config(&mut self, pools: &BTreeMap<String, Pool>) -> PoolChange {
        self.pools = pools
            .values()
            .map(|pool| PoolSpace {
                pool: pool.clone(),
                cidrs: pool
                    .cidrs()
                    .map(|net| CidrSpace::new(net, pool.avoid_buggy_ips))
                    .collect(),
            })
            .collect();
        self.by_name = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pool.name.clone(), i))
            .collect();
        self.cidr_index = BTreeMap::new();
        for (pi, pool) in self.pools.iter().enumerate() {
            for (ci, cidr) in pool.cidrs.iter().enumerate() {
                self.cidr_index.insert((cidr.family, cidr.first), (pi, ci));
            }
        }
        let mut old: Vec<(Arc<str>, Allocation)> =
            std::mem::take(&mut self.allocations).into_iter().collect();
        old.sort_by(|a, b| a.0.cmp(&b.0));
        self.addresses.clear();
        self.shared.clear();
        let mut change = PoolChange::default();
        for (key, mut alloc) in old {
            match self.pool_containing_all(&alloc.ips) {
                Ok(pi) => {
                    let name = self.pools[pi].pool.name.clone();
                    if name != alloc.pool {
                        change
                            .moved
                            .push((key.to_string(), alloc.pool.clone(), name.clone()));
                    }
                    alloc.pool = name;
                    self.record(key, alloc);
                }
                Err(_) => change.forgotten.push(key.to_string()),
            }
        }
        change
    }

    /// Frees the Service's addresses (Service deleted or cleared); returns the addresses that
    /// became free.
    pub fn release(&mut self, service_key: &str) -> Vec<IpAddr> {
        let Some(alloc) = self.allocations.remove(service_key) else {
            return Vec::new();
        };
        let mut freed = Vec::new();
        for ip in &alloc.ips {
            let addr = to_addr(*ip);
            let Some(usage) = self.addresses.get_mut(&addr) else {
                continue;
            };
            usage.users.retain(|u| &**u != service_key);
            usage.ports.retain(|(_, holder)| &**holder != service_key);
            if usage.users.is_empty() {
                let (pi, ci) = usage.location;
                let sharing = (usage.sharing_key.clone(), usage.backend_key.clone());
                self.addresses.remove(&addr);
                unindex(&mut self.shared, &sharing, addr);
                self.pools[pi].cidrs[ci].mark_free(addr);
                freed.push(*ip);
            }
        }
        freed
    }

    /// Pool status counters, by pool name.
    pub fn pool_counters(&self) -> BTreeMap<String, PoolCounters> {
        self.pools
            .iter()
            .map(|space| {
                let mut c = PoolCounters::default();
                let (mut cap4, mut cap6) = (0i64, 0i64);
                for cidr in &space.cidrs {
                    let used = i64::try_from(cidr.used_count).unwrap_or(i64::MAX);
                    match cidr.family {
                        Family::V4 => {
                            cap4 = cap4.saturating_add(cidr.capacity());
                            c.assigned_ipv4 = c.assigned_ipv4.saturating_add(used);
                        }
                        Family::V6 => {
                            cap6 = cap6.saturating_add(cidr.capacity());
                            c.assigned_ipv6 = c.assigned_ipv6.saturating_add(used);
                        }
                    }
                }
                c.available_ipv4 = cap4.saturating_sub(c.assigned_ipv4);
                c.available_ipv6 = cap6.saturating_sub(c.assigned_ipv6);
                (space.pool.name.clone(), c)
            })
            .collect()
    }

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
            staged[i] = Some((svc.with_status(&status), run));
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

    fn add_family(
        &mut self,
        key: &str,
        svc: &ServiceInfo,
        current: &[IpAddr],
        family: Family,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let pool_name = self
            .allocations
            .get(key)
            .map(|a| a.pool.clone())
            .unwrap_or_default();
        let pi = *self
            .by_name
            .get(&pool_name)
            .ok_or_else(|| AllocError::UnknownPool(pool_name.clone()))?;
        let addr = self
            .first_candidate(pi, family, key, svc)
            .ok_or(AllocError::PoolFull {
                pool: pool_name,
                family: ServiceFamily::Single(family),
            })?;
        let mut ips = current.to_vec();
        ips.push(from_addr(addr));
        self.assign(key, svc, &ips)?;
        Ok(ips)
    }

    /// Step 7: requested IPs, else the pool annotation, else automatic.
    fn allocate(&mut self, key: &str, svc: &ServiceInfo) -> Result<Vec<IpAddr>, AllocError> {
        let family = svc.family.clone().map_err(AllocError::BadField)?;
        let requested = svc.requested_ips.clone().map_err(AllocError::BadField)?;
        if !requested.is_empty() {
            if family_of(&requested).ok() != Some(family) {
                return Err(AllocError::FamilyMismatch {
                    ips: quoted(&requested),
                });
            }
            self.assign(key, svc, &requested)?;
            if let Some(desired) = &svc.pool_annotation
                && self.allocations.get(key).map(|a| &a.pool) != Some(desired)
            {
                self.release(key);
                return Err(AllocError::PoolMismatch {
                    ips: quoted(&requested),
                    pool: desired.clone(),
                });
            }
            return Ok(requested);
        }
        if let Some(pool_name) = &svc.pool_annotation {
            let pi = *self
                .by_name
                .get(pool_name)
                .ok_or_else(|| AllocError::UnknownPool(pool_name.clone()))?;
            let ips = self
                .pick(pi, key, svc, family)
                .ok_or_else(|| AllocError::PoolFull {
                    pool: pool_name.clone(),
                    family,
                })?;
            self.assign(key, svc, &ips)?;
            return Ok(ips);
        }
        let (tier1, tier2) = self.automatic_tiers(svc);
        for tier in [tier1, tier2] {
            if let Some(ips) = self.scan(&tier, key, svc, family) {
                self.assign(key, svc, &ips)?;
                return Ok(ips);
            }
        }
        Err(AllocError::NoAvailableIps)
    }

    /// Tier 1: accepting pools with a serviceAllocation found through their namespaces or
    /// serviceSelectors, by priority (0 last), then name. Tier 2: autoAssign pools without one.
    fn automatic_tiers(&self, svc: &ServiceInfo) -> (Vec<usize>, Vec<usize>) {
        let mut tier1 = Vec::new();
        let mut tier2 = Vec::new();
        for (pi, space) in self.pools.iter().enumerate() {
            let pool = &space.pool;
            if !pool.auto_assign {
                continue;
            }
            match &pool.service_allocation {
                None => tier2.push(pi),
                Some(sa) => {
                    let found = sa.namespaces.contains(&svc.namespace)
                        || any_matches(&sa.service_selectors, &svc.labels);
                    if found && pool_accepts(pool, svc) {
                        tier1.push(pi);
                    }
                }
            }
        }
        let rank = |pi: &usize| {
            let p = self.pools[*pi]
                .pool
                .service_allocation
                .as_ref()
                .map_or(0, |sa| sa.priority);
            (p <= 0, p)
        };
        // Stable sort: pools are already in name order.
        tier1.sort_by_key(rank);
        (tier1, tier2)
    }

    /// The pool scan of step 7c over one tier.
    fn scan(
        &self,
        tier: &[usize],
        key: &str,
        svc: &ServiceInfo,
        family: ServiceFamily,
    ) -> Option<Vec<IpAddr>> {
        match family {
            ServiceFamily::Single(f) => tier
                .iter()
                .find_map(|&pi| self.first_candidate(pi, f, key, svc))
                .map(|a| vec![from_addr(a)]),
            ServiceFamily::Dual => {
                let both = |pi: usize| {
                    let v4 = self.first_candidate(pi, Family::V4, key, svc)?;
                    let v6 = self.first_candidate(pi, Family::V6, key, svc)?;
                    Some(vec![from_addr(v4), from_addr(v6)])
                };
                if let Some(ips) = tier.iter().find_map(|&pi| both(pi)) {
                    return Some(ips);
                }
                if svc.ip_family_policy != IpFamilyPolicy::PreferDualStack {
                    return None;
                }
                let primary = svc.primary_family;
                [primary, primary.other()].into_iter().find_map(|f| {
                    tier.iter()
                        .find_map(|&pi| self.first_candidate(pi, f, key, svc))
                        .map(|a| vec![from_addr(a)])
                })
            }
        }
    }

    /// Candidates from one named pool, selected by policy (step 7b).
    fn pick(
        &self,
        pi: usize,
        key: &str,
        svc: &ServiceInfo,
        family: ServiceFamily,
    ) -> Option<Vec<IpAddr>> {
        self.scan(&[pi], key, svc, family)
    }

    /// First address of `family` in pool `pi` that is free or shareable with `svc`, walking the
    /// entries in written order.
    fn first_candidate(
        &self,
        pi: usize,
        family: Family,
        key: &str,
        svc: &ServiceInfo,
    ) -> Option<Addr> {
        let shareable = if svc.sharing_key.is_empty() {
            None
        } else {
            self.shared
                .get(&(svc.sharing_key.clone(), svc.backend_key.clone()))
        };
        self.pools[pi]
            .cidrs
            .iter()
            .filter(|c| c.family == family)
            .find_map(|cidr| {
                let free = cidr.first_free();
                let shared = shareable.and_then(|set| {
                    set.range((family, cidr.first)..=(family, cidr.last))
                        .copied()
                        .find(|a| cidr.contains(*a) && self.ports_free(*a, key, &svc.ports))
                });
                match (free, shared) {
                    (Some(f), Some(s)) => Some(f.min(s)),
                    (f, s) => f.or(s),
                }
            })
    }

    fn ports_free(&self, addr: Addr, key: &str, ports: &[Port]) -> bool {
        self.addresses.get(&addr).is_none_or(|u| {
            u.ports
                .iter()
                .all(|(p, holder)| &**holder == key || !ports.contains(p))
        })
    }

    /// Locates the CIDR holding `addr` (usable addresses only).
    fn locate(&self, addr: Addr) -> Option<(usize, usize)> {
        let (_, &(pi, ci)) = self.cidr_index.range(..=addr).next_back()?;
        self.pools[pi].cidrs[ci].contains(addr).then_some((pi, ci))
    }

    fn pool_containing_all(&self, ips: &[IpAddr]) -> Result<usize, AllocError> {
        let not_allowed = || AllocError::NotAllowed { ips: quoted(ips) };
        let mut pool = None;
        for ip in ips {
            let (pi, _) = self.locate(to_addr(*ip)).ok_or_else(not_allowed)?;
            if pool.is_some_and(|p| p != pi) {
                return Err(not_allowed());
            }
            pool = Some(pi);
        }
        pool.ok_or_else(not_allowed)
    }

    /// MetalLB's `Assign`: claim exactly `ips` for the Service, checking pool, serviceAllocation
    /// and sharing; on success the previous allocation is replaced.
    fn assign(&mut self, key: &str, svc: &ServiceInfo, ips: &[IpAddr]) -> Result<(), AllocError> {
        let pi = self.pool_containing_all(ips)?;
        let pool = &self.pools[pi].pool;
        if !pool_accepts(pool, svc) {
            return Err(AllocError::IncompatiblePool {
                pool: pool.name.clone(),
            });
        }
        for ip in ips {
            self.check_sharing(key, *ip, svc)?;
        }
        let alloc = Allocation {
            pool: pool.name.clone(),
            ips: ips.to_vec(),
            ports: svc.ports.clone(),
            sharing_key: svc.sharing_key.clone(),
            backend_key: svc.backend_key.clone(),
        };
        self.release(key);
        self.record(Arc::from(key), alloc);
        Ok(())
    }

    fn check_sharing(&self, key: &str, ip: IpAddr, svc: &ServiceInfo) -> Result<(), AllocError> {
        let Some(usage) = self.addresses.get(&to_addr(ip)) else {
            return Ok(());
        };
        if let Err(reason) = sharing_ok(
            &usage.sharing_key,
            &usage.backend_key,
            &svc.sharing_key,
            &svc.backend_key,
        ) {
            let others: Vec<&str> = usage
                .users
                .iter()
                .map(|u| &**u)
                .filter(|u| *u != key)
                .collect();
            if !others.is_empty() {
                return Err(AllocError::Sharing(format!(
                    "can't change sharing key for {key:?}, address also in use by {}: {reason}",
                    others.join(",")
                )));
            }
        }
        for port in &svc.ports {
            if usage
                .ports
                .iter()
                .any(|(p, holder)| p == port && &**holder != key)
            {
                return Err(AllocError::PortInUse {
                    port: port.clone(),
                    ip,
                });
            }
        }
        Ok(())
    }

    /// Books an allocation whose checks passed (or that survived a pool change).
    fn record(&mut self, key: Arc<str>, alloc: Allocation) {
        for ip in &alloc.ips {
            let addr = to_addr(*ip);
            let Some(location) = self.locate(addr) else {
                continue;
            };
            let usage = self.addresses.entry(addr).or_insert_with(|| AddrUse {
                users: Vec::new(),
                sharing_key: String::new(),
                backend_key: String::new(),
                ports: Vec::new(),
                location,
            });
            if usage.users.is_empty() {
                let (pi, ci) = location;
                self.pools[pi].cidrs[ci].mark_used(addr);
            } else {
                unindex(
                    &mut self.shared,
                    &(usage.sharing_key.clone(), usage.backend_key.clone()),
                    addr,
                );
            }
            if !usage.users.contains(&key) {
                usage.users.push(key.clone());
            }
            usage.sharing_key.clone_from(&alloc.sharing_key);
            usage.backend_key.clone_from(&alloc.backend_key);
            usage.ports.retain(|(_, holder)| *holder != key);
            usage
                .ports
                .extend(alloc.ports.iter().map(|p| (p.clone(), key.clone())));
            if !alloc.sharing_key.is_empty() {
                self.shared
                    .entry((alloc.sharing_key.clone(), alloc.backend_key.clone()))
                    .or_default()
                    .insert(addr);
            }
        }
        self.allocations.insert(key, alloc);
    }
}

fn unindex(shared: &mut SharingIndex, sharing: &(String, String), addr: Addr) {
    if let Some(set) = shared.get_mut(sharing) {
        set.remove(&addr);
        if set.is_empty() {
            shared.remove(sharing);
        }
    }
}

/// MetalLB's `sharingOK`.
fn sharing_ok(
    existing: &str,
    existing_backend: &str,
    new: &str,
    new_backend: &str,
) -> Result<(), String> {
    if existing.is_empty() {
        return Err("existing service does not allow sharing".into());
    }
    if new.is_empty() {
        return Err("new service does not allow sharing".into());
    }
    if existing != new {
        return Err(format!(
            "sharing key {new:?} does not match existing sharing key {existing:?}"
        ));
    }
    if existing_backend != new_backend {
        return Err(format!(
            "backend key {new_backend:?} does not match existing backend key {existing_backend:?}"
        ));
    }
    Ok(())
}

/// A pool's serviceAllocation accepts the Service: namespace in its set if the set is
/// non-empty, and some serviceSelector matching if any exist.
pub fn pool_accepts(pool: &Pool, svc: &ServiceInfo) -> bool {
    pool.service_allocation.as_ref().is_none_or(|sa| {
        (sa.namespaces.is_empty() || sa.namespaces.contains(&svc.namespace))
            && (sa.service_selectors.is_empty() || any_matches(&sa.service_selectors, &svc.labels))
    })
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// Restart pass order: more ingress addresses first, then `namespace/name`.
pub fn restart_order(services: &[ServiceInfo]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..services.len()).collect();
    let count = |s: &ServiceInfo| s.ingress_ips.as_ref().map_or(0, Vec::len);
    order.sort_by(|&a, &b| {
        let (sa, sb) = (&services[a], &services[b]);
        count(sb)
            .cmp(&count(sa))
            .then_with(|| (&sa.namespace, &sa.name).cmp(&(&sb.namespace, &sb.name)))
    });
    order
}

/// `ReclaimOnly` stops after step 4 (restart pass, first phase).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    ReclaimOnly,
}

/// Events and freed addresses collected during one reconcile.
#[derive(Clone, Default)]
struct Run {
    events: Vec<Event>,
    freed: Vec<IpAddr>,
}

impl Run {
    fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(Event::new(reason, message));
    }

    /// Adds a `deprecatedAnnotation` per deprecated key when the Service gets written.
    fn finish(mut self, service: String, status: Status, svc: &ServiceInfo) -> Outcome {
        let current = svc.ingress_ips.as_deref().unwrap_or(&[]);
        let writes = match &status {
            Status::Ignored | Status::Unchanged { .. } => false,
            Status::Assigned { ips, pool } => {
                ips != current || svc.allocated_from_pool.as_ref() != Some(pool)
            }
            Status::Cleared { .. } | Status::Pending { .. } => {
                !current.is_empty() || svc.allocated_from_pool.is_some()
            }
        };
        if writes {
            for key in &svc.deprecated_annotations {
                let replacement =
                    key.replacen(service::DEPRECATED_PREFIX, service::ANNOTATION_PREFIX, 1);
                self.event(
                    EventReason::DeprecatedAnnotation,
                    format!("annotation {key:?} is deprecated, use {replacement:?} instead"),
                );
            }
        }
        Outcome {
            service,
            status,
            events: self.events,
            freed: self.freed,
        }
    }
}

#[cfg(test)]
mod tests;
