//! Which of this node's interfaces may carry layer-2 answers (as MetalLB's speaker picks them;
//! `docs/configure.md`, "Interfaces"), as a pure function of interface facts gathered elsewhere.
//!
//! MetalLB uses an interface when it is up, not enslaved (no `master`), without NOARP, and not
//! matched by the exclude regexes; ARP also needs the broadcast flag, NDP an IPv6 link-local
//! address. Herald adds one rule: the XDP responder parses Ethernet frames only, so non-Ethernet
//! links (tun, wireguard, loopback) are never eligible.

use std::collections::BTreeSet;

use regex::Regex;

/// MetalLB's default `announcedInterfacesToExclude` (ConfigMap `metallb-excludel2`). Like
/// MetalLB's, the patterns are matched unanchored, so each carries its own `^`.
pub const DEFAULT_EXCLUDE: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// What the eligibility rules read about one interface of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFacts {
    pub name: String,
    pub up: bool,
    pub broadcast: bool,
    pub noarp: bool,
    /// `ARPHRD_ETHER` (the only link type the XDP program parses).
    pub ethernet: bool,
    /// Enslaved to a bridge or bond: the master answers, not the port.
    pub has_master: bool,
    pub ipv6_link_local: bool,
}

/// A regex given on the command line that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {pattern:?} is not a valid regex: {message}")]
pub struct FilterError {
    pub flag: &'static str,
    pub pattern: String,
    pub message: String,
}

/// The name filter: MetalLB's exclude list, or an explicit include list that replaces it.
#[derive(Clone, Debug)]
pub struct InterfaceFilter {
    exclude: Vec<Regex>,
    /// When set, only names fully matching one of these are used and `exclude` is ignored.
    include: Option<Vec<Regex>>,
}

impl InterfaceFilter {
    /// `exclude` is matched unanchored (MetalLB's semantics); `include` patterns must match the
    /// whole name, so `eth0` does not also select `veth0`. An empty `include` means "no include
    /// list".
    pub fn new(exclude: &[String], include: &[String]) -> Result<Self, FilterError> {
        let compile = |flag, pattern: &str, anchored: bool| {
            let text = if anchored {
                format!("^(?:{pattern})$")
            } else {
                pattern.to_string()
            };
            Regex::new(&text).map_err(|e| FilterError {
                flag,
                pattern: pattern.to_string(),
                message: e.to_string(),
            })
        };
        let exclude = exclude
            .iter()
            .map(|p| compile("--interfaces-exclude", p, false))
            .collect::<Result<_, _>>()?;
        let include = if include.is_empty() {
            None
        } else {
            Some(
                include
                    .iter()
                    .map(|p| compile("--interfaces-include", p, true))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(InterfaceFilter { exclude, include })
    }

    /// MetalLB's default exclude list, no include list.
    pub fn metallb_default() -> Self {
        let exclude: Vec<String> = DEFAULT_EXCLUDE
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        // The defaults are constant and valid; a failure here is a bug caught by the tests.
        Self::new(&exclude, &[]).unwrap_or(InterfaceFilter {
            exclude: Vec::new(),
            include: None,
        })
    }

    /// Whether the name alone allows the interface.
    pub fn allows(&self, name: &str) -> bool {
        match &self.include {
            Some(include) => include.iter().any(|r| r.is_match(name)),
            None => !self.exclude.iter().any(|r| r.is_match(name)),
        }
    }
}

/// Interfaces that may answer, per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eligible {
    /// ARP-capable.
    pub ipv4: BTreeSet<String>,
    /// NDP-capable.
    pub ipv6: BTreeSet<String>,
}

impl Eligible {
    /// Every eligible name, either family.
    pub fn all(&self) -> BTreeSet<String> {
        self.ipv4.union(&self.ipv6).cloned().collect()
    }

    /// The eligible names for an address of `ip`'s family.
    pub fn for_ip(&self, ip: &std::net::IpAddr) -> &BTreeSet<String> {
        match ip {
            std::net::IpAddr::V4(_) => &self.ipv4,
            std::net::IpAddr::V6(_) => &self.ipv6,
        }
    }
}

/// Applies the rules to every interface of the node.
pub fn eligible(facts: &[InterfaceFacts], filter: &InterfaceFilter) -> Eligible {
    let mut out = Eligible::default();
    for f in facts {
        if !f.up || f.has_master || f.noarp || !f.ethernet || !filter.allows(&f.name) {
            continue;
        }
        if f.broadcast {
            out.ipv4.insert(f.name.clone());
        }
        if f.ipv6_link_local {
            out.ipv6.insert(f.name.clone());
        }
    }
    out
}

/// An up Ethernet interface with broadcast and an IPv6 link-local address: eligible for both
/// families unless filtered (for tests elsewhere in the crate).
#[cfg(test)]
pub fn usable(name: &str) -> InterfaceFacts {
    InterfaceFacts {
        name: name.into(),
        up: true,
        broadcast: true,
        noarp: false,
        ethernet: true,
        has_master: false,
        ipv6_link_local: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> InterfaceFacts {
        usable(name)
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn default_list_excludes_metallb_names_only() {
        let filter = InterfaceFilter::metallb_default();
        for excluded in [
            "docker0",
            "cbr0",
            "dummy1",
            "virbr0",
            "lxcbr0",
            "veth1234",
            "lo",
            "cali12ab",
            "tunl0",
            "flannel.1",
            "kube-ipvs0",
            "cni0",
            "nodelocaldns",
            "lxc_health",
        ] {
            assert!(!filter.allows(excluded), "{excluded} must be excluded");
        }
        for allowed in ["eth0", "ens3", "bond0", "br0", "lo0", "eno1", "mydocker0"] {
            assert!(filter.allows(allowed), "{allowed} must be allowed");
        }
    }

    #[test]
    fn include_list_replaces_exclusions_and_matches_whole_names() {
        let filter = InterfaceFilter::new(
            &DEFAULT_EXCLUDE
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
            &["eth0|uplink".to_string(), "veth-lab.*".to_string()],
        )
        .unwrap();
        assert!(filter.allows("eth0"));
        assert!(filter.allows("uplink"));
        assert!(
            filter.allows("veth-lab-a"),
            "include overrides the veth exclusion"
        );
        assert!(!filter.allows("veth0"), "eth0 must not match inside veth0");
        assert!(!filter.allows("eth01"));
        assert!(!filter.allows("ens3"));
    }

    #[test]
    fn bad_regex_names_flag_and_pattern() {
        let err = InterfaceFilter::new(&["(".to_string()], &[]).unwrap_err();
        assert_eq!(err.flag, "--interfaces-exclude");
        assert_eq!(err.pattern, "(");
        assert!(err.to_string().starts_with("--interfaces-exclude: \"(\""));
        let err = InterfaceFilter::new(&[], &["[".to_string()]).unwrap_err();
        assert_eq!(err.flag, "--interfaces-include");
    }

    #[test]
    fn eligibility_rules_per_family() {
        let filter = InterfaceFilter::metallb_default();
        let facts = vec![
            iface("eth0"),
            InterfaceFacts {
                up: false,
                ..iface("eth1")
            },
            InterfaceFacts {
                has_master: true,
                ..iface("eth2")
            },
            InterfaceFacts {
                noarp: true,
                ..iface("eth3")
            },
            InterfaceFacts {
                broadcast: false,
                ..iface("eth4")
            },
            InterfaceFacts {
                ipv6_link_local: false,
                ..iface("eth5")
            },
            InterfaceFacts {
                ethernet: false,
                ..iface("wg0")
            },
            iface("veth9"),
            iface("lo"),
        ];
        let e = eligible(&facts, &filter);
        assert_eq!(names(&e.ipv4), ["eth0", "eth5"]);
        assert_eq!(names(&e.ipv6), ["eth0", "eth4"]);
        assert_eq!(names(&e.all()), ["eth0", "eth4", "eth5"]);
        assert_eq!(
            names(e.for_ip(&"2001:db8::1".parse().unwrap())),
            ["eth0", "eth4"]
        );
    }

    #[test]
    fn custom_exclude_list_replaces_default() {
        let filter = InterfaceFilter::new(&["^eth1$".to_string()], &[]).unwrap();
        assert!(filter.allows("veth0"));
        assert!(!filter.allows("eth1"));
        assert!(filter.allows("eth10"));
    }
}
