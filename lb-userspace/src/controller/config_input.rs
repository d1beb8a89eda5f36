//! From the watch caches to a validated [`Config`] through [`config::build`]. The controller
//! parses pools and communities only, plus Namespaces for serviceAllocation selectors, as
//! MetalLB's controller does. Errors are joined into one summary for ConfigurationState.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;

use crate::api::{Community, IPAddressPool};
use crate::config::{self, BgpMode, Config, ConfigError, Snapshot};

/// Builds the configuration, or the summary of every error found (one per line).
pub fn build(
    pools: &[Arc<IPAddressPool>],
    communities: &[Arc<Community>],
    namespaces: &[Arc<Namespace>],
    bgp_mode: BgpMode,
) -> Result<Config, String> {
    let snapshot = Snapshot {
        pools: pools.iter().map(|p| p.as_ref().clone()).collect(),
        communities: communities.iter().map(|c| c.as_ref().clone()).collect(),
        namespaces: namespaces.iter().map(|n| n.as_ref().clone()).collect(),
        bgp_mode,
        ..Default::default()
    };
    config::build(&snapshot).map_err(|errors| summary(&errors))
}

/// The errors, sorted so the summary (and whether it changed) does not depend on cache order.
pub fn summary(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.sort();
    lines.dedup();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_sorted_one_error_per_line() {
        let errors = vec![
            ConfigError::new(
                "IPAddressPool",
                "b",
                "spec.addresses[0]",
                "invalid CIDR \"x\"",
            ),
            ConfigError::new(
                "IPAddressPool",
                "a",
                "",
                "overlaps with already defined CIDR",
            ),
        ];
        assert_eq!(
            summary(&errors),
            "IPAddressPool \"a\": overlaps with already defined CIDR\nIPAddressPool \"b\": spec.addresses[0]: invalid CIDR \"x\""
        );
    }
}
