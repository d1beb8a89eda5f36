//! What one reconcile produces: the Service status MetalLB's controller would write, the Events
//! it would record (reasons, types and texts as MetalLB's) and why an allocation failed.

use std::net::IpAddr;

use serde::Serialize;

use super::service::{self, FieldError, Port, ServiceFamily, ServiceInfo};

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

impl Status {
    /// `svc` as it looks once the controller has written this status (ingress and the
    /// `ip-allocated-from-pool` annotation).
    pub fn applied_to(&self, svc: &ServiceInfo) -> ServiceInfo {
        let mut next = svc.clone();
        match self {
            Status::Assigned { ips, pool } => {
                next.ingress_ips = Ok(ips.clone());
                next.allocated_from_pool = Some(pool.clone());
            }
            Status::Cleared { .. } | Status::Pending { .. } => {
                next.ingress_ips = Ok(Vec::new());
                next.allocated_from_pool = None;
            }
            Status::Ignored | Status::Unchanged { .. } => {}
        }
        next
    }
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

/// Events and freed addresses collected during one reconcile.
#[derive(Clone, Default)]
pub(super) struct Run {
    events: Vec<Event>,
    pub(super) freed: Vec<IpAddr>,
}

impl Run {
    pub(super) fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(Event::new(reason, message));
    }

    /// Adds a `deprecatedAnnotation` per deprecated key when the Service gets written.
    pub(super) fn finish(mut self, service: String, status: Status, svc: &ServiceInfo) -> Outcome {
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
