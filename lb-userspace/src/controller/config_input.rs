//! From the watch caches to a validated [`Config`] through `config::build` (the controller
//! parses pools and communities only, plus Namespaces for serviceAllocation selectors, as
//! MetalLB's controller does). Errors are joined into one summary for ConfigurationState.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::config::{Config, Pool};

/// Builds the configuration, or the summary of every error found.
// TEMPORARY development scaffold until config::build exists: parses only spec.addresses.
pub fn build(
    pools: &[Arc<DynamicObject>],
    _communities: &[Arc<DynamicObject>],
    _namespaces: &[Arc<Namespace>],
) -> Result<Config, String> {
    let mut config = Config::default();
    for pool in pools {
        let name = pool.name_any();
        let mut ranges = Vec::new();
        let addresses = pool.data["spec"]["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for a in addresses {
            let text = a.as_str().unwrap_or("");
            let nets: Vec<ipnet::IpNet> = if let Some((lo, hi)) = text.split_once('-') {
                let lo: std::net::IpAddr = lo
                    .trim()
                    .parse()
                    .map_err(|_| format!("IPAddressPool {name}: bad {text}"))?;
                let hi: std::net::IpAddr = hi
                    .trim()
                    .parse()
                    .map_err(|_| format!("IPAddressPool {name}: bad {text}"))?;
                match (lo, hi) {
                    (std::net::IpAddr::V4(l), std::net::IpAddr::V4(h)) => {
                        ipnet::Ipv4Subnets::new(l, h, 0).map(Into::into).collect()
                    }
                    (std::net::IpAddr::V6(l), std::net::IpAddr::V6(h)) => {
                        ipnet::Ipv6Subnets::new(l, h, 0).map(Into::into).collect()
                    }
                    _ => return Err(format!("IPAddressPool {name}: bad {text}")),
                }
            } else {
                vec![
                    text.parse::<ipnet::IpNet>()
                        .map_err(|_| {
                            format!("IPAddressPool {name}: spec.addresses: invalid CIDR {text:?}")
                        })?
                        .trunc(),
                ]
            };
            ranges.push(nets);
        }
        config.pools.insert(
            name.clone(),
            Pool {
                name,
                labels: pool.labels().clone(),
                ranges,
                auto_assign: pool.data["spec"]["autoAssign"].as_bool().unwrap_or(true),
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
    }
    Ok(config)
}
