//! The speaker's view of Services, shared by the layer-2 planner and BGP policy: which Services
//! a speaker announces, the EndpointSlices of each and the pool owning its addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::allocator::{FieldError, ServiceInfo};
use crate::config::{Config, Pool};

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service a speaker announces (a LoadBalancer of its class with addresses in its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announceable {
    pub info: ServiceInfo,
    /// `status.loadBalancer.ingress` addresses in status order, never empty.
    pub ips: Vec<IpAddr>,
}

/// Whether a speaker announces `service`: `Ok(None)` when it is none of its business (not a
/// LoadBalancer, another `--lb-class`, no address yet), an error when it cannot be read.
pub fn announceable(
    service: &Service,
    lb_class: Option<&str>,
) -> Result<Option<Announceable>, FieldError> {
    let info = ServiceInfo::from_service(service)?;
    if !info.is_load_balancer || info.lb_class.as_deref() != lb_class {
        return Ok(None);
    }
    let ips = info.ingress_ips.clone()?;
    if ips.is_empty() {
        return Ok(None);
    }
    Ok(Some(Announceable { info, ips }))
}

/// What both planners read about the cluster from one speaker's seat: the layer-2 planner adds
/// the live speakers and interfaces, BGP policy needs nothing more.
pub struct Cluster<'a> {
    /// This node's name (the memberlist name, `endpoint.nodeName`).
    pub node: &'a str,
    pub config: &'a Config,
    /// Shared with the watch caches: a pass copies none of them.
    pub services: &'a [Arc<Service>],
    pub slices: &'a SlicesByService<'a>,
    pub nodes: &'a [Node],
    /// `--lb-class`.
    pub lb_class: Option<&'a str>,
    pub ignore_exclude_lb: bool,
}

/// The EndpointSlices of each Service, by (namespace, Service name): built once per pass, so a
/// pass costs one look at each slice rather than one per Service and slice, and copies none.
#[derive(Default)]
pub struct SlicesByService<'a>(HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>);

impl<'a> SlicesByService<'a> {
    pub fn new(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Self {
        let mut index: HashMap<&str, HashMap<&str, Vec<&EndpointSlice>>> = HashMap::new();
        for slice in slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
            index
                .entry(namespace)
                .or_default()
                .entry(service.as_str())
                .or_default()
                .push(slice);
        }
        SlicesByService(index)
    }

    /// The index of slices shared with the watch caches.
    pub fn of_shared(slices: &'a [Arc<EndpointSlice>]) -> Self {
        Self::new(slices.iter().map(AsRef::as_ref))
    }

    pub fn of(&self, svc: &ServiceInfo) -> &[&'a EndpointSlice] {
        self.0
            .get(svc.namespace.as_str())
            .and_then(|by_name| by_name.get(svc.name.as_str()))
            .map_or(&[], Vec::as_slice)
    }
}

/// The pool owning `ips`: the one the controller named (annotation) if it covers them all,
/// else the first pool (by name) covering every address, as MetalLB's speaker looks it up.
pub fn pool_for<'a>(
    config: &'a Config,
    ips: &[IpAddr],
    annotated: Option<&str>,
) -> Option<&'a str> {
    let covers = |pool: &Pool| {
        ips.iter()
            .all(|ip| pool.cidrs().any(|net| net.contains(ip)))
    };
    if let Some(pool) = annotated.and_then(|name| config.pools.get(name))
        && covers(pool)
    {
        return Some(pool.name.as_str());
    }
    config
        .pools
        .values()
        .find(|p| covers(p))
        .map(|p| p.name.as_str())
}
