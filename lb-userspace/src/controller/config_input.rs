//! From the watch caches to a validated [`Config`] through [`config::build`]. The controller
//! parses pools and communities only, plus Namespaces for serviceAllocation selectors, as
//! MetalLB's controller does. Errors are joined into one summary for ConfigurationState.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;

use crate::api::{Community, IPAddressPool};
use crate::config::{self, BgpMode, Config, ConfigError, Snapshot};

/// Builds the configuration, or the summary of every error found (one per line). Objects that
/// could not be read (`rejected`, one line each) make it invalid too: what is missing from the
/// caches must not silently shrink the configuration.
pub fn build(
    pools: &[Arc<IPAddressPool>],
    communities: &[Arc<Community>],
    namespaces: &[Arc<Namespace>],
    rejected: &[String],
    bgp_mode: BgpMode,
) -> Result<Config, String> {
    let snapshot = Snapshot {
        pools: pools.iter().map(|p| p.as_ref().clone()).collect(),
        communities: communities.iter().map(|c| c.as_ref().clone()).collect(),
        namespaces: namespaces.iter().map(|n| n.as_ref().clone()).collect(),
        bgp_mode,
        ..Default::default()
    };
    match (config::build(&snapshot), rejected.is_empty()) {
        (Ok(config), true) => Ok(config),
        (built, _) => {
            let mut lines: Vec<String> = rejected.to_vec();
            if let Err(errors) = built {
                lines.extend(errors.iter().map(ToString::to_string));
            }
            lines.sort();
            lines.dedup();
            Err(lines.join("\n"))
        }
    }
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
    fn an_unreadable_object_makes_the_configuration_invalid() {
        let unread = "IPAddressPool \"metallb-system/x\": cannot be read: bad".to_string();
        let built = build(
            &[],
            &[],
            &[],
            std::slice::from_ref(&unread),
            BgpMode::Native,
        );
        assert_eq!(built, Err(unread));
        assert!(build(&[], &[], &[], &[], BgpMode::Native).is_ok());
    }

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
