//! The allocator's view of a Service: every field MetalLB's controller reads, parsed once.
//!
//! Malformed fields that MetalLB reports as Service events (bad clusterIPs, bad requested IPs,
//! bad ingress addresses) are kept as `Result`s so `reconcile` can emit the same events;
//! only input that leaves the Service unidentifiable or uses an unknown enum value fails
//! [`ServiceInfo::from_service`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde::Serialize;

/// Prefix of the annotations MetalLB reads.
pub const ANNOTATION_PREFIX: &str = "metallb.io/";
/// Prefix of the deprecated annotations; the `metallb.io/` key wins when both are present.
pub const DEPRECATED_PREFIX: &str = "metallb.universe.tf/";
/// Written by the controller: the pool owning the Service's addresses.
pub const ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn other(self) -> Self {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The family of a set of addresses (clusterIPs, ingress, requested IPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ServiceFamily {
    Single(Family),
    Dual,
}

impl fmt::Display for ServiceFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceFamily::Single(family) => family.fmt(f),
            ServiceFamily::Dual => f.write_str("dual-stack"),
        }
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A (protocol, port) pair; TCP/53 and UDP/53 are different ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Port {
    pub protocol: String,
    pub port: i32,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// A field of a Service that cannot be used, naming the Service and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Service {service}: {field}: {message}")]
pub struct FieldError {
    pub service: String,
    pub field: String,
    pub message: String,
}

/// Everything the allocator and the election read from a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.type == LoadBalancer`.
    pub is_load_balancer: bool,
    pub lb_class: Option<String>,
    /// Any of `spec.clusterIPs` / `spec.clusterIP` set (no clusterIP: no allocation, no event).
    pub has_cluster_ip: bool,
    /// Number of `spec.clusterIPs` (RequireDualStack needs two).
    pub cluster_ip_count: usize,
    /// The family from clusterIPs, or why it has none.
    pub family: Result<ServiceFamily, FieldError>,
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.ipFamilies[0]`, IPv4 when unset: the PreferDualStack fallback family.
    pub primary_family: Family,
    /// Requested addresses (annotation or `spec.loadBalancerIP`), or why they are malformed.
    pub requested_ips: Result<Vec<IpAddr>, FieldError>,
    /// `address-pool` annotation (empty value: none).
    pub pool_annotation: Option<String>,
    /// `allow-shared-ip` value; "" means no sharing.
    pub sharing_key: String,
    /// Whether an `allow-shared-ip` annotation exists under either prefix (election rule 3).
    pub has_sharing_annotation: bool,
    /// Sorted `k=v` of `spec.selector` when `externalTrafficPolicy=Local`, else "".
    pub backend_key: String,
    pub traffic_policy_local: bool,
    pub ports: Vec<Port>,
    /// Non-empty `status.loadBalancer.ingress[].ip`, in status order, or the first bad one.
    pub ingress_ips: Result<Vec<IpAddr>, FieldError>,
    /// The `metallb.io/ip-allocated-from-pool` annotation currently on the Service.
    pub allocated_from_pool: Option<String>,
    /// Deprecated `metallb.universe.tf/*` keys present, sorted.
    pub deprecated_annotations: Vec<String>,
}

/// Parses an address as Go's `net.ParseIP` does: an IPv4-mapped IPv6 address is IPv4.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip: IpAddr = text.parse().ok()?;
    Some(canonical(ip))
}

/// IPv4-mapped IPv6 addresses are IPv4 for Go (`To4() != nil`), so they are for us too.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// MetalLB's `ipfamily.ForAddresses`: one address or two of different families.
pub fn family_of(ips: &[IpAddr]) -> Result<ServiceFamily, String> {
    match ips {
        [one] => Ok(ServiceFamily::Single(Family::of(one))),
        [a, b] if Family::of(a) != Family::of(b) => Ok(ServiceFamily::Dual),
        [_, _] => Err(format!("same address family {}", quoted(ips))),
        _ => Err(format!("invalid ips length {} {}", ips.len(), quoted(ips))),
    }
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn quoted(ips: &[IpAddr]) -> String {
    let inner: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!("[{}]", inner.join(" "))
}

impl ServiceInfo {
    /// `namespace/name`, the key MetalLB uses for allocations.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Extracts the view from a k8s-openapi Service. Fails only when the Service has no name or
    /// an enum field holds an unknown value.
    pub fn from_service(service: &Service) -> Result<Self, FieldError> {
        let meta = &service.metadata;
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = match meta.name.as_deref() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => {
                return Err(FieldError {
                    service: format!("{namespace}/<unnamed>"),
                    field: "metadata.name".into(),
                    message: "required".into(),
                });
            }
        };
        let key = format!("{namespace}/{name}");
        let err = |field: &str, message: String| FieldError {
            service: key.clone(),
            field: field.into(),
            message,
        };
        let empty = BTreeMap::new();
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        let labels = meta.labels.clone().unwrap_or_default();
        let default_spec = k8s_openapi::api::core::v1::ServiceSpec::default();
        let spec = service.spec.as_ref().unwrap_or(&default_spec);

        let cluster_ips: Vec<String> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.clone(),
            _ => spec
                .cluster_ip
                .iter()
                .filter(|ip| !ip.is_empty())
                .cloned()
                .collect(),
        };
        let family = parse_list(&cluster_ips)
            .and_then(|ips| family_of(&ips))
            .map_err(|message| err("spec.clusterIPs", message));

        let ip_family_policy = match spec.ip_family_policy.as_deref() {
            None | Some("" | "SingleStack") => IpFamilyPolicy::SingleStack,
            Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
            Some(other) => {
                return Err(err(
                    "spec.ipFamilyPolicy",
                    format!("unknown policy {other:?}"),
                ));
            }
        };
        let primary_family = match spec
            .ip_families
            .as_ref()
            .and_then(|f| f.first())
            .map(String::as_str)
        {
            None | Some("IPv4") => Family::V4,
            Some("IPv6") => Family::V6,
            Some(other) => {
                return Err(err(
                    "spec.ipFamilies[0]",
                    format!("unknown family {other:?}"),
                ));
            }
        };

        let annotation = |suffix: &str| -> Option<(String, &String)> {
            let current = format!("{ANNOTATION_PREFIX}{suffix}");
            if let Some(v) = annotations.get(&current) {
                return Some((current, v));
            }
            let old = format!("{DEPRECATED_PREFIX}{suffix}");
            annotations.get(&old).map(|v| (old, v))
        };

        let requested_ips = requested(
            annotation("loadBalancerIPs"),
            spec.load_balancer_ip.as_deref(),
        )
        .map_err(|(field, message)| err(&field, message));
        let pool_annotation = annotation("address-pool")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        let sharing = annotation("allow-shared-ip");
        let has_sharing_annotation = sharing.is_some();
        let sharing_key = sharing.map(|(_, v)| v.clone()).unwrap_or_default();

        let traffic_policy_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let backend_key = if traffic_policy_local {
            // BTreeMap iterates sorted, as labels.Set.String() does.
            let pairs: Vec<String> = spec
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            pairs.join(",")
        } else {
            String::new()
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect();

        let ingress: Vec<String> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone())
            .filter(|ip| !ip.is_empty())
            .collect();
        let ingress_ips =
            parse_list(&ingress).map_err(|m| err("status.loadBalancer.ingress[].ip", m));

        let deprecated_annotations = annotations
            .keys()
            .filter(|k| k.starts_with(DEPRECATED_PREFIX))
            .cloned()
            .collect();

        Ok(ServiceInfo {
            namespace,
            name,
            labels,
            is_load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
            lb_class: spec.load_balancer_class.clone(),
            has_cluster_ip: !cluster_ips.is_empty(),
            cluster_ip_count: cluster_ips.len(),
            family,
            ip_family_policy,
            primary_family,
            requested_ips,
            pool_annotation,
            sharing_key,
            has_sharing_annotation,
            backend_key,
            traffic_policy_local,
            ports,
            ingress_ips,
            allocated_from_pool: annotations.get(ALLOCATED_FROM_POOL).cloned(),
            deprecated_annotations,
        })
    }
}

fn parse_list(texts: &[String]) -> Result<Vec<IpAddr>, String> {
    texts
        .iter()
        .map(|t| parse_ip(t.trim()).ok_or_else(|| format!("invalid IP address {t:?}")))
        .collect()
}

/// MetalLB's `getDesiredLbIPs`: the annotation (comma-separated, trimmed) or
/// `spec.loadBalancerIP`, never both; at most one address per family.
fn requested(
    annotation: Option<(String, &String)>,
    spec_ip: Option<&str>,
) -> Result<Vec<IpAddr>, (String, String)> {
    let spec_ip = spec_ip.unwrap_or("");
    let annotated = annotation.filter(|(_, v)| !v.is_empty());
    match (annotated, spec_ip.is_empty()) {
        (None, true) => Ok(Vec::new()),
        (Some((key, _)), false) => Err((
            format!("metadata.annotations[{key}]"),
            format!("service can not have both {key} and spec.loadBalancerIP"),
        )),
        (None, false) => {
            let ip = parse_ip(spec_ip).ok_or_else(|| {
                (
                    "spec.loadBalancerIP".to_string(),
                    format!("invalid address {spec_ip:?}"),
                )
            })?;
            Ok(vec![ip])
        }
        (Some((key, value)), true) => {
            let field = format!("metadata.annotations[{key}]");
            let ips = value
                .split(',')
                .map(|part| {
                    let part = part.trim();
                    parse_ip(part)
                        .ok_or_else(|| (field.clone(), format!("invalid address {part:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ips.len() > 1 {
                family_of(&ips).map_err(|m| (field.clone(), m))?;
            }
            Ok(ips)
        }
    }
}
