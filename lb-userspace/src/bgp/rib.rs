//! What one session has sent and what it should send, pure: the policy's routes completed with
//! the session's own attributes (next hop, AS path), and the difference against the
//! Adj-RIB-Out as withdrawals plus announcements grouped by attribute set, so many prefixes
//! share one UPDATE.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::policy::RoutePolicy;
use super::wire::{Family, RouteAttrs};

/// What a session adds to every route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// One AS_SEQUENCE: this speaker's ASN on eBGP, empty on iBGP.
    pub as_path: Vec<u32>,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// What the OPEN exchange agreed on.
    pub families: BTreeSet<Family>,
}

/// A route the policy wants that this session cannot carry, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsendable {
    pub prefix: IpNet,
    pub reason: String,
}

/// The policy's routes for this peer as this session sends them.
pub fn complete(
    routes: &BTreeMap<IpNet, RoutePolicy>,
    ctx: &Context,
) -> (BTreeMap<IpNet, RouteAttrs>, Vec<Unsendable>) {
    let mut out = BTreeMap::new();
    let mut unsendable = Vec::new();
    for (prefix, policy) in routes {
        let (family, next_hop) = match prefix {
            IpNet::V4(_) => (Family::Ipv4Unicast, ctx.next_hop_v4.map(IpAddr::V4)),
            IpNet::V6(_) => (Family::Ipv6Unicast, ctx.next_hop_v6.map(IpAddr::V6)),
        };
        if !super::wire::is_unicast(prefix) {
            unsendable.push(Unsendable {
                prefix: *prefix,
                reason: "not a unicast prefix (multicast or broadcast)".into(),
            });
            continue;
        }
        if !ctx.families.contains(&family) {
            unsendable.push(Unsendable {
                prefix: *prefix,
                reason: "the session does not carry this address family".into(),
            });
            continue;
        }
        let Some(next_hop) = next_hop else {
            unsendable.push(Unsendable {
                prefix: *prefix,
                reason: "the node has no address of this family for the next hop".into(),
            });
            continue;
        };
        out.insert(
            *prefix,
            RouteAttrs {
                next_hop,
                local_pref: policy.local_pref,
                communities: policy.communities.clone(),
                as_path: ctx.as_path.clone(),
            },
        );
    }
    (out, unsendable)
}

/// Takes out of `desired` every route whose attribute set `encode` refuses, with its reason, so
/// that one route that cannot be sent (too many communities for a message, say) is not sent
/// while the others are. `encode` is asked once per attribute set, with the set's longest prefix.
pub fn keep_encodable(
    desired: &mut BTreeMap<IpNet, RouteAttrs>,
    encode: impl Fn(&IpNet, &RouteAttrs) -> Result<(), String>,
) -> Vec<Unsendable> {
    let mut longest: BTreeMap<&RouteAttrs, IpNet> = BTreeMap::new();
    for (prefix, attrs) in desired.iter() {
        let entry = longest.entry(attrs).or_insert(*prefix);
        if prefix.prefix_len() > entry.prefix_len() {
            *entry = *prefix;
        }
    }
    let refused: BTreeMap<RouteAttrs, String> = longest
        .into_iter()
        .filter_map(|(attrs, prefix)| encode(&prefix, attrs).err().map(|e| (attrs.clone(), e)))
        .collect();
    let mut unsendable = Vec::new();
    desired.retain(|prefix, attrs| match refused.get(attrs) {
        Some(reason) => {
            unsendable.push(Unsendable {
                prefix: *prefix,
                reason: reason.clone(),
            });
            false
        }
        None => true,
    });
    unsendable
}

/// Steps from the Adj-RIB-Out to the desired routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub withdraw: Vec<IpNet>,
    /// New or changed routes, by attribute set (a changed route is re-announced, which
    /// replaces it at the peer without a withdrawal).
    pub announce: BTreeMap<RouteAttrs, Vec<IpNet>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty() && self.announce.is_empty()
    }

    /// Prefixes announced by these changes.
    pub fn announced(&self) -> usize {
        self.announce.values().map(Vec::len).sum()
    }
}

/// The routes a session has sent (and the peer has, as far as this speaker knows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<IpNet, RouteAttrs>,
}

impl AdjRibOut {
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    pub fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.sent.keys()
    }

    /// What to send so the peer holds exactly `desired`.
    pub fn changes(&self, desired: &BTreeMap<IpNet, RouteAttrs>) -> Changes {
        let withdraw = self
            .sent
            .keys()
            .filter(|p| !desired.contains_key(*p))
            .copied()
            .collect();
        let mut announce: BTreeMap<RouteAttrs, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in desired {
            if self.sent.get(prefix) != Some(attrs) {
                announce.entry(attrs.clone()).or_default().push(*prefix);
            }
        }
        Changes { withdraw, announce }
    }

    /// Records changes as sent.
    pub fn record(&mut self, changes: &Changes) {
        for prefix in &changes.withdraw {
            self.sent.remove(prefix);
        }
        for (attrs, prefixes) in &changes.announce {
            for prefix in prefixes {
                self.sent.insert(*prefix, attrs.clone());
            }
        }
    }

    /// The session went down: the peer dropped everything.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
#[path = "rib/tests.rs"]
mod tests;
