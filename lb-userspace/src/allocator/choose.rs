//! Which addresses a Service gets (docs/configure.md, "How an address is chosen"; after MetalLB's
//! `internal/allocator/allocator.go`): the requested ones, else the first free or shareable
//! address of the annotated pool, else of the automatic pools tier by tier.

use std::net::IpAddr;

use super::outcome::AllocError;
use super::service::{Family, IpFamilyPolicy, Port, ServiceFamily, ServiceInfo, family_of, quoted};
use super::space::{Addr, from_addr};
use super::{Allocator, pool_accepts};
use crate::config::selector::any_matches;

impl Allocator {
    pub(super) fn add_family(
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
    pub(super) fn allocate(
        &mut self,
        key: &str,
        svc: &ServiceInfo,
    ) -> Result<Vec<IpAddr>, AllocError> {
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
}
