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

mod choose;
mod outcome;
mod reconcile;
pub mod service;
pub mod space;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Pool;
use crate::config::selector::any_matches;
pub use service::{
    ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, DEPRECATED_PREFIX, Family, FieldError, IpFamilyPolicy,
    Port, ServiceFamily, ServiceInfo, canonical, family_of, parse_ip, quoted,
};
use space::{Addr, CidrSpace, to_addr};

pub use outcome::{AllocError, Event, EventReason, EventType, Outcome, Status};

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

#[cfg(test)]
mod tests;
