//! One table row per configuration rule of MetalLB's parser (`internal/config`,
//! <https://github.com/metallb/metallb/tree/v0.15.2/internal/config>; docs/configure.md
//! "Validation"), run through the public path `herald validate` takes: YAML → `config::load` →
//! `Snapshot` → `config::build`. A row lists the exact errors expected (kind, name, field, a
//! fragment of the message, transient or not); a row expecting errors fails on any extra one, so
//! a rule that fires too widely is caught too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use herald::config::{self, BgpMode, Config, ConfigError, Snapshot, load};
use proptest::prelude::*;

/// Nodes for the rules that resolve node selectors (LOCAL_PREF, FRR pairs).
const NODES: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {rack: r1}}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {rack: r2}}
";

/// One Kubernetes object in flow style: `kind`, `name`, and the `spec` body.
fn obj(kind: &str, name: &str, spec: &str) -> String {
    let api_version = match kind {
        "BGPPeer" => "metallb.io/v1beta2",
        "Node" | "Namespace" | "Secret" => "v1",
        _ => "metallb.io/v1beta1",
    };
    let body = if spec.is_empty() {
        String::new()
    } else if kind == "Secret" {
        format!("\n{spec}")
    } else {
        format!("\nspec: {spec}")
    };
    format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}{body}\n")
}

/// A ConfigMap with `data` (YAML lines under `data:`).
fn config_map(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: metallb-system}}\ndata:\n  {data}\n"
    )
}

fn pool(name: &str, addresses: &str) -> String {
    obj(
        "IPAddressPool",
        name,
        &format!("{{addresses: [{addresses}]}}"),
    )
}

fn build(mode: BgpMode, docs: &[String]) -> Result<Config, Vec<ConfigError>> {
    let text = docs.join("---\n");
    let objects = load::parse_documents(&text, "rules.yaml")
        .unwrap_or_else(|e| panic!("test YAML must load: {e}\n{text}"));
    config::build(&Snapshot {
        bgp_mode: mode,
        ..Snapshot::from_objects(objects)
    })
}

/// An expected error: kind, name, field, message fragment, transient.
type Expected = (&'static str, &'static str, &'static str, &'static str, bool);

struct Row {
    rule: &'static str,
    mode: BgpMode,
    docs: Vec<String>,
    errors: Vec<Expected>,
}

fn row(rule: &'static str, docs: Vec<String>, errors: Vec<Expected>) -> Row {
    Row {
        rule,
        mode: BgpMode::Frr,
        docs,
        errors,
    }
}

fn native(rule: &'static str, docs: Vec<String>, errors: Vec<Expected>) -> Row {
    Row {
        mode: BgpMode::Native,
        ..row(rule, docs, errors)
    }
}

fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for r in rows {
        let got = match build(r.mode, &r.docs) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        };
        let mut unmatched: Vec<&ConfigError> = got.iter().collect();
        for (kind, name, field, fragment, transient) in &r.errors {
            let found = unmatched.iter().position(|e| {
                e.kind == *kind
                    && e.name == *name
                    && e.field == *field
                    && e.message.contains(fragment)
                    && e.transient == *transient
            });
            match found {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => failures.push(format!(
                    "{}: missing {kind} {name:?} {field}: ..{fragment}.. (transient {transient})",
                    r.rule
                )),
            }
        }
        for extra in unmatched {
            failures.push(format!("{}: unexpected {extra} ({extra:?})", r.rule));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn pool_rules() {
    check(vec![
        row(
            "CIDRs and ranges in both families are accepted",
            vec![pool(
                "p",
                "198.51.100.0/28, '198.51.100.20 - 198.51.100.30', '2001:db8::/64', '2001:db8:1::1-2001:db8:1::5', 203.0.113.7/32",
            )],
            vec![],
        ),
        row(
            "a bare address is refused",
            vec![pool("p", "198.51.100.7, '2001:db8::7'")],
            vec![
                (
                    "IPAddressPool",
                    "p",
                    "spec.addresses[0]",
                    "write a single address as 198.51.100.7/32",
                    false,
                ),
                (
                    "IPAddressPool",
                    "p",
                    "spec.addresses[1]",
                    "2001:db8::7/128",
                    false,
                ),
            ],
        ),
        row(
            "a range needs start <= end and one family",
            vec![pool(
                "p",
                "198.51.100.20-198.51.100.10, 198.51.100.1-2001:db8::1",
            )],
            vec![
                (
                    "IPAddressPool",
                    "p",
                    "spec.addresses[0]",
                    "start 198.51.100.20 is after end",
                    false,
                ),
                (
                    "IPAddressPool",
                    "p",
                    "spec.addresses[1]",
                    "different IP families",
                    false,
                ),
            ],
        ),
        row(
            "no addresses",
            vec![obj("IPAddressPool", "p", "{addresses: []}")],
            vec![(
                "IPAddressPool",
                "p",
                "spec.addresses",
                "pool has no prefixes defined",
                false,
            )],
        ),
        row(
            "overlap across pools (host bits dropped first)",
            vec![pool("a", "198.51.100.0/24"), pool("b", "198.51.100.77/25")],
            vec![(
                "IPAddressPool",
                "b",
                "spec.addresses[0]",
                "overlaps with already defined CIDR \"198.51.100.0/24\"",
                false,
            )],
        ),
        row(
            "overlap inside one pool, range against CIDR",
            vec![pool("a", "198.51.100.0/28, 198.51.100.10-198.51.100.20")],
            vec![(
                "IPAddressPool",
                "a",
                "spec.addresses[1]",
                "overlaps with already defined CIDR",
                false,
            )],
        ),
        row(
            "IPv4 and IPv6 never overlap",
            vec![pool("a", "0.0.0.0/0"), pool("b", "'::/0'")],
            vec![],
        ),
        row(
            "duplicate pool names",
            vec![pool("a", "198.51.100.0/28"), pool("a", "203.0.113.0/28")],
            vec![(
                "IPAddressPool",
                "a",
                "metadata.name",
                "duplicate definition",
                false,
            )],
        ),
        row(
            "duplicate namespaces in serviceAllocation",
            vec![obj(
                "IPAddressPool",
                "p",
                "{addresses: [198.51.100.0/28], serviceAllocation: {namespaces: [a, b, a]}}",
            )],
            vec![(
                "IPAddressPool",
                "p",
                "spec.serviceAllocation.namespaces[2]",
                "duplicate definition in namespaces field",
                false,
            )],
        ),
        row(
            "invalid namespace and service selectors",
            vec![obj(
                "IPAddressPool",
                "p",
                "{addresses: [198.51.100.0/28], serviceAllocation: {namespaceSelectors: [{matchExpressions: [{key: k, operator: Like, values: [v]}]}], serviceSelectors: [{matchExpressions: [{key: k, operator: In}]}]}}",
            )],
            vec![
                (
                    "IPAddressPool",
                    "p",
                    "spec.serviceAllocation.namespaceSelectors[0]",
                    "\"Like\" is not a valid label selector operator",
                    false,
                ),
                (
                    "IPAddressPool",
                    "p",
                    "spec.serviceAllocation.serviceSelectors[0]",
                    "must be specified when operator is \"In\"",
                    false,
                ),
            ],
        ),
    ]);
}

#[test]
fn selector_list_rules() {
    let l2 = |spec: &str| {
        vec![
            pool("p", "198.51.100.0/28"),
            obj("L2Advertisement", "l2", spec),
        ]
    };
    check(vec![
        row(
            "identical selectors (values compared sorted)",
            l2(
                "{nodeSelectors: [{matchExpressions: [{key: k, operator: In, values: [a, b]}]}, {matchExpressions: [{key: k, operator: In, values: [b, a]}]}]}",
            ),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.nodeSelectors[1]",
                "duplicate",
                false,
            )],
        ),
        row(
            "identical expressions in one selector",
            l2(
                "{serviceSelectors: [{matchExpressions: [{key: k, operator: Exists}, {key: k, operator: Exists}]}]}",
            ),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.serviceSelectors[0].matchExpressions[1]",
                "duplicate definition of match expressions",
                false,
            )],
        ),
        row(
            "a value repeated in one expression",
            l2(
                "{ipAddressPoolSelectors: [{matchExpressions: [{key: k, operator: NotIn, values: [a, a]}]}]}",
            ),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.ipAddressPoolSelectors[0].matchExpressions[0].values",
                "duplicate definition of match expression value",
                false,
            )],
        ),
        row(
            "bad label key",
            l2("{nodeSelectors: [{matchLabels: {'bad key!': x}}]}"),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.nodeSelectors[0]",
                "matchLabels",
                false,
            )],
        ),
        row(
            "duplicate pool names in an advertisement",
            l2("{ipAddressPools: [p, p]}"),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.ipAddressPools[1]",
                "duplicate definition of ipAddressPools",
                false,
            )],
        ),
        row(
            "unknown pool names are ignored",
            l2("{ipAddressPools: [p, nonexistent]}"),
            vec![],
        ),
        row(
            "preferredNodeSelectors weight 1..100",
            l2(
                "{preferredNodeSelectors: [{weight: 0, preference: {}}, {weight: 100, preference: {matchLabels: {rack: r1}}}]}",
            ),
            vec![(
                "L2Advertisement",
                "l2",
                "spec.preferredNodeSelectors[0].weight",
                "1-100",
                false,
            )],
        ),
    ]);
}

#[test]
fn bgp_advertisement_rules() {
    let ad = |name: &str, spec: &str| obj("BGPAdvertisement", name, spec);
    let v4 = pool("v4", "198.51.100.0/26, 198.51.100.64-198.51.100.95");
    let v6 = pool("v6", "'2001:db8::/64'");
    check(vec![
        row(
            "duplicate pool names in a BGP advertisement",
            vec![v4.clone(), ad("a", "{ipAddressPools: [v4, v4]}")],
            vec![(
                "BGPAdvertisement",
                "a",
                "spec.ipAddressPools[1]",
                "duplicate definition of ipAddressPools",
                false,
            )],
        ),
        row(
            "aggregation lengths in range",
            vec![
                v4.clone(),
                ad("a", "{aggregationLength: 33, aggregationLengthV6: 129}"),
            ],
            vec![
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.aggregationLength",
                    "invalid aggregation length 33",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.aggregationLengthV6",
                    "invalid aggregation length 129",
                    false,
                ),
            ],
        ),
        row(
            "aggregation length against every entry of every selected pool",
            vec![
                v4.clone(),
                v6.clone(),
                ad("a", "{aggregationLength: 26, aggregationLengthV6: 48}"),
            ],
            vec![
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.aggregationLength",
                    "prefix 27 in IPAddressPool \"v4\" is more specific than the aggregation length for addresses 198.51.100.64-198.51.100.95",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.aggregationLengthV6",
                    "prefix 64 in IPAddressPool \"v6\"",
                    false,
                ),
            ],
        ),
        row(
            "aggregation length fitting every entry",
            vec![
                v4.clone(),
                v6.clone(),
                ad("a", "{aggregationLength: 27, aggregationLengthV6: 64}"),
            ],
            vec![],
        ),
        row(
            "only selected pools are checked",
            vec![
                v4.clone(),
                v6.clone(),
                ad("a", "{aggregationLength: 27, ipAddressPools: [v4]}"),
            ],
            vec![],
        ),
        row(
            "serviceSelectors only with default aggregation lengths",
            vec![
                v4.clone(),
                ad(
                    "a",
                    "{aggregationLength: 28, serviceSelectors: [{matchLabels: {a: b}}]}",
                ),
            ],
            vec![(
                "BGPAdvertisement",
                "a",
                "spec.serviceSelectors",
                "mutually exclusive",
                false,
            )],
        ),
        row(
            "duplicates in pools, communities and peers",
            vec![
                v4.clone(),
                ad(
                    "a",
                    "{ipAddressPools: [v4, v4], communities: ['64500:1', '64500:1'], peers: [x, x]}",
                ),
            ],
            vec![
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.ipAddressPools[1]",
                    "duplicate",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[1]",
                    "duplicate",
                    false,
                ),
                ("BGPAdvertisement", "a", "spec.peers[1]", "duplicate", false),
            ],
        ),
        row(
            "community syntax: bad numbers are hard errors, wrong shapes may be aliases",
            vec![
                v4.clone(),
                ad(
                    "a",
                    "{communities: ['65536:1', 'large:4294967296:1:1', 'big:1:2:3', '1:2:3', 'unknown-alias', '64500:1', 'large:1:2:3']}",
                ),
            ],
            vec![
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[0]",
                    "\"65536\" is not a number",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[1]",
                    "\"4294967296\" is not a number",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[2]",
                    "large:<uint32>",
                    false,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[3]",
                    "nor a known Community alias",
                    true,
                ),
                (
                    "BGPAdvertisement",
                    "a",
                    "spec.communities[4]",
                    "nor a known Community alias",
                    true,
                ),
            ],
        ),
        row(
            "aliases resolve",
            vec![
                v4.clone(),
                obj(
                    "Community",
                    "c",
                    "{communities: [{name: no-advertise, value: '65535:65282'}]}",
                ),
                ad("a", "{communities: [no-advertise]}"),
            ],
            vec![],
        ),
        row(
            "alias values must parse and names be unique across Community objects",
            vec![
                obj(
                    "Community",
                    "c1",
                    "{communities: [{name: x, value: '1:1'}, {name: bad, value: '1:70000'}]}",
                ),
                obj(
                    "Community",
                    "c2",
                    "{communities: [{name: x, value: '2:2'}]}",
                ),
            ],
            vec![
                (
                    "Community",
                    "c1",
                    "spec.communities[1].value",
                    "not a number",
                    false,
                ),
                (
                    "Community",
                    "c2",
                    "spec.communities[0].name",
                    "duplicate definition of community \"x\"",
                    false,
                ),
            ],
        ),
    ]);
}

#[test]
fn local_pref_rule() {
    let ad = |name: &str, spec: &str| obj("BGPAdvertisement", name, spec);
    let nodes = || NODES.to_string();
    let p = || pool("p", "198.51.100.0/24");
    check(vec![
        row(
            "different localPref on one pool",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100}"),
                ad("b", "{localPref: 200}"),
            ],
            vec![(
                "BGPAdvertisement",
                "b",
                "spec.localPref",
                "invalid local preference 200",
                false,
            )],
        ),
        row(
            "same localPref",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100}"),
                ad("b", "{localPref: 100}"),
            ],
            vec![],
        ),
        row(
            "aggregation lengths differ",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100}"),
                ad("b", "{localPref: 200, aggregationLength: 30}"),
            ],
            vec![],
        ),
        row(
            "disjoint peer lists",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100, peers: [x]}"),
                ad("b", "{localPref: 200, peers: [y]}"),
            ],
            vec![],
        ),
        row(
            "one peer list empty means all peers: overlapping",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100, peers: [x]}"),
                ad("b", "{localPref: 200}"),
            ],
            vec![(
                "BGPAdvertisement",
                "b",
                "spec.localPref",
                "invalid local preference",
                false,
            )],
        ),
        row(
            "disjoint node sets",
            vec![
                nodes(),
                p(),
                ad(
                    "a",
                    "{localPref: 100, nodeSelectors: [{matchLabels: {rack: r1}}]}",
                ),
                ad(
                    "b",
                    "{localPref: 200, nodeSelectors: [{matchLabels: {rack: r2}}]}",
                ),
            ],
            vec![],
        ),
        row(
            "with no Node known the node sets never intersect",
            vec![
                p(),
                ad("a", "{localPref: 100}"),
                ad("b", "{localPref: 200}"),
            ],
            vec![],
        ),
        row(
            "serviceSelectors exempt an advertisement",
            vec![
                nodes(),
                p(),
                ad("a", "{localPref: 100}"),
                ad(
                    "b",
                    "{localPref: 200, serviceSelectors: [{matchLabels: {a: b}}]}",
                ),
            ],
            vec![],
        ),
    ]);
}

#[test]
fn bgp_peer_rules() {
    let peer = |name: &str, spec: &str| obj("BGPPeer", name, spec);
    let secret = |name: &str, body: &str| obj("Secret", name, body);
    check(vec![
        row(
            "a minimal valid peer",
            vec![peer("p", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1}")],
            vec![],
        ),
        native(
            "ASNs",
            vec![
                peer("none", "{myASN: 0, peerAddress: 203.0.113.1}"),
                peer("both", "{myASN: 64500, peerASN: 64501, dynamicASN: external, peerAddress: 203.0.113.2}"),
            ],
            vec![
                ("BGPPeer", "none", "spec.myASN", "missing local ASN", false),
                ("BGPPeer", "none", "spec.peerASN", "missing peer ASN and dynamicASN", false),
                ("BGPPeer", "both", "spec.dynamicASN", "both peer ASN and dynamicASN specified", false),
            ],
        ),
        native(
            "address or interface, exactly one; addresses must parse",
            vec![
                peer("neither", "{myASN: 64500, peerASN: 64501}"),
                peer("both", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, interface: eth0}"),
                peer("bad", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.300, sourceAddress: nope, routerID: 'x'}"),
            ],
            vec![
                ("BGPPeer", "neither", "spec.peerAddress", "no Address or Interface", false),
                ("BGPPeer", "both", "spec.interface", "both Address and Interface", false),
                ("BGPPeer", "both", "spec.interface", "native BGP mode", false),
                ("BGPPeer", "bad", "spec.peerAddress", "invalid BGPPeer address", false),
                ("BGPPeer", "bad", "spec.sourceAddress", "invalid source IP", false),
                ("BGPPeer", "bad", "spec.routerID", "invalid router ID", false),
            ],
        ),
        row(
            "FRR modes: Herald's speaker serves the peers, so unnumbered BGP (interface) is refused",
            vec![peer("unnumbered", "{myASN: 64500, peerASN: 64501, interface: eth0}")],
            vec![(
                "BGPPeer",
                "unnumbered",
                "spec.interface",
                "unnumbered BGP (interface) needs FRR itself",
                false,
            )],
        ),
        row(
            "ebgpMultiHop is refused for iBGP",
            vec![peer("p", "{myASN: 64500, peerASN: 64500, peerAddress: 203.0.113.1, ebgpMultiHop: true}")],
            vec![("BGPPeer", "p", "spec.ebgpMultiHop", "ibgp", false)],
        ),
        row(
            "hold and keepalive times",
            vec![
                peer("short", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, holdTime: 2s}"),
                peer("ka-only", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.2, keepaliveTime: 500ms}"),
                peer("ka-gt", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.3, holdTime: 9s, keepaliveTime: 10s}"),
                peer("garbage", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.4, holdTime: soon}"),
                peer("zero", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.5, holdTime: 0s}"),
                peer("hold-only", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.6, holdTime: 3.5s}"),
            ],
            vec![
                ("BGPPeer", "short", "spec.holdTime", "must be 0 or >=3s", false),
                ("BGPPeer", "ka-only", "spec.keepaliveTime", "must be 0 or >=3s", false),
                ("BGPPeer", "ka-gt", "spec.keepaliveTime", "must be lower than holdTime", false),
                ("BGPPeer", "garbage", "spec.holdTime", "invalid duration", false),
            ],
        ),
        row(
            "peerPort and connectTime ranges",
            vec![
                peer("port", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, peerPort: 16385}"),
                peer("ct-frac", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.2, connectTime: 1500ms}"),
                peer("ct-big", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.3, connectTime: 70000s}"),
            ],
            vec![
                ("BGPPeer", "port", "spec.peerPort", "1-16384", false),
                ("BGPPeer", "ct-frac", "spec.connectTime", "whole number of seconds", false),
                ("BGPPeer", "ct-big", "spec.connectTime", "between 1 seconds to 65535", false),
            ],
        ),
        row(
            "password rules",
            vec![
                peer("both", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, password: x, passwordSecret: {name: s}}"),
                peer("missing", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.2, passwordSecret: {name: nope}}"),
                peer("opaque", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.3, passwordSecret: {name: opaque}}"),
                peer("nokey", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.4, passwordSecret: {name: nokey}}"),
                peer("good", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.5, passwordSecret: {name: good}}"),
                secret("opaque", "type: Opaque\nstringData: {password: x}"),
                secret("nokey", "type: kubernetes.io/basic-auth\nstringData: {username: x}"),
                secret("good", "type: kubernetes.io/basic-auth\nstringData: {password: x}"),
            ],
            vec![
                ("BGPPeer", "both", "spec.passwordSecret", "both password and secret ref", false),
                ("BGPPeer", "missing", "spec.passwordSecret", "secret ref not found", true),
                ("BGPPeer", "opaque", "spec.passwordSecret", "kubernetes.io/basic-auth", false),
                ("BGPPeer", "nokey", "spec.passwordSecret", "password not specified", false),
            ],
        ),
        row(
            "a missing BFD profile is transient",
            vec![peer("p", "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, bfdProfile: gone}")],
            vec![("BGPPeer", "p", "spec.bfdProfile", "non existing bfd profile gone", true)],
        ),
        row(
            "v1beta1 peers are converted and checked the same way",
            vec![
                "apiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: old}\nspec: {myASN: 64500, peerASN: 64500, peerAddress: 203.0.113.1, ebgpMultiHop: true}\n"
                    .to_string(),
            ],
            vec![("BGPPeer", "old", "spec.ebgpMultiHop", "ibgp", false)],
        ),
    ]);
}

#[test]
fn bfd_profile_ranges() {
    check(vec![
        row(
            "every bound",
            vec![
                obj(
                    "BFDProfile",
                    "low",
                    "{receiveInterval: 9, transmitInterval: 9, echoInterval: 9, detectMultiplier: 1, minimumTtl: 0}",
                ),
                obj(
                    "BFDProfile",
                    "high",
                    "{receiveInterval: 60001, transmitInterval: 60001, echoInterval: 60001, detectMultiplier: 256, minimumTtl: 255}",
                ),
                obj(
                    "BFDProfile",
                    "edges",
                    "{receiveInterval: 10, transmitInterval: 60000, echoInterval: 10, detectMultiplier: 255, minimumTtl: 1}",
                ),
            ],
            vec![
                (
                    "BFDProfile",
                    "low",
                    "spec.receiveInterval",
                    "10-60000",
                    false,
                ),
                (
                    "BFDProfile",
                    "low",
                    "spec.transmitInterval",
                    "10-60000",
                    false,
                ),
                ("BFDProfile", "low", "spec.echoInterval", "10-60000", false),
                ("BFDProfile", "low", "spec.detectMultiplier", "2-255", false),
                ("BFDProfile", "low", "spec.minimumTtl", "1-254", false),
                (
                    "BFDProfile",
                    "high",
                    "spec.receiveInterval",
                    "10-60000",
                    false,
                ),
                (
                    "BFDProfile",
                    "high",
                    "spec.transmitInterval",
                    "10-60000",
                    false,
                ),
                ("BFDProfile", "high", "spec.echoInterval", "10-60000", false),
                (
                    "BFDProfile",
                    "high",
                    "spec.detectMultiplier",
                    "2-255",
                    false,
                ),
                ("BFDProfile", "high", "spec.minimumTtl", "1-254", false),
            ],
        ),
        row(
            "echo mode is refused on a session advertising IPv6",
            vec![
                pool("v6", "'2001:db8::/64'"),
                obj("BFDProfile", "echo", "{echoMode: true}"),
                obj(
                    "BGPPeer",
                    "p",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, bfdProfile: echo}",
                ),
                obj("BGPAdvertisement", "a", "{}"),
            ],
            vec![("BGPAdvertisement", "a", "spec.peers", "echo mode", false)],
        ),
    ]);
}

#[test]
fn mode_rules() {
    let frr_peer = "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, keepaliveTime: 10s, vrf: red, connectTime: 5s, enableGracefulRestart: true, disableMP: true, dualStackAddressFamily: true, localASN: 64999, bfdProfile: b}";
    check(vec![
        native(
            "native refuses what Herald's native speaker does not do (BFD, graceful restart, interface) and carries the rest",
            vec![
                obj("BGPPeer", "p", frr_peer),
                obj(
                    "BGPPeer",
                    "dyn",
                    "{myASN: 64500, dynamicASN: internal, interface: eth0}",
                ),
                obj("BFDProfile", "b", "{}"),
                pool("v6", "'2001:db8::/64'"),
                obj("BGPAdvertisement", "a", "{communities: ['large:1:2:3']}"),
                obj(
                    "Community",
                    "c",
                    "{communities: [{name: l, value: 'large:1:1:1'}]}",
                ),
            ],
            vec![
                (
                    "BGPPeer",
                    "p",
                    "spec.enableGracefulRestart",
                    "native BGP mode",
                    false,
                ),
                ("BGPPeer", "p", "spec.bfdProfile", "native BGP mode", false),
                ("BGPPeer", "dyn", "spec.interface", "native BGP mode", false),
                ("BFDProfile", "b", "", "native BGP mode", false),
            ],
        ),
        native(
            "native carries IPv6 over MP-BGP, large communities, keepaliveTime, connectTime, vrf, disableMP, dual stack, dynamicASN and localASN",
            vec![
                obj(
                    "BGPPeer",
                    "p",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, keepaliveTime: 10s, vrf: red, connectTime: 5s, disableMP: true, dualStackAddressFamily: true, localASN: 64999}",
                ),
                obj(
                    "BGPPeer",
                    "dyn",
                    "{myASN: 64500, dynamicASN: external, peerAddress: 203.0.113.2}",
                ),
                pool("v6", "'2001:db8::/64'"),
                obj("BGPAdvertisement", "a", "{communities: ['large:1:2:3']}"),
                obj(
                    "Community",
                    "c",
                    "{communities: [{name: l, value: 'large:1:1:1'}]}",
                ),
            ],
            vec![],
        ),
        row(
            "the same objects are fine in FRR mode",
            vec![
                obj("BGPPeer", "p", frr_peer),
                obj("BFDProfile", "b", "{}"),
                pool("v6", "'2001:db8::/64'"),
                obj("BGPAdvertisement", "a", "{communities: ['large:1:2:3']}"),
            ],
            vec![],
        ),
        native(
            "native: IPv6 in a pool no BGPAdvertisement selects is fine",
            vec![
                pool("v6", "'2001:db8::/64'"),
                obj("L2Advertisement", "l2", "{}"),
            ],
            vec![],
        ),
        row(
            "FRR: peers sharing a node agree on routerID and myASN, differ in identity",
            vec![
                NODES.to_string(),
                obj(
                    "BGPPeer",
                    "a",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, routerID: 198.51.100.1}",
                ),
                obj(
                    "BGPPeer",
                    "b",
                    "{myASN: 64510, peerASN: 64501, peerAddress: 203.0.113.1, routerID: 198.51.100.2}",
                ),
            ],
            vec![
                ("BGPPeer", "b", "spec.routerID", "same RouterID", false),
                ("BGPPeer", "b", "spec.peerAddress", "already exists", false),
                ("BGPPeer", "b", "spec.myASN", "same myASN", false),
            ],
        ),
        row(
            "FRR: peers on disjoint nodes, or in another VRF, may differ",
            vec![
                NODES.to_string(),
                obj(
                    "BGPPeer",
                    "a",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1, routerID: 198.51.100.1, nodeSelectors: [{matchLabels: {rack: r1}}]}",
                ),
                obj(
                    "BGPPeer",
                    "b",
                    "{myASN: 64510, peerASN: 64501, peerAddress: 203.0.113.1, routerID: 198.51.100.2, nodeSelectors: [{matchLabels: {rack: r2}}]}",
                ),
                obj(
                    "BGPPeer",
                    "c",
                    "{myASN: 64520, peerASN: 64501, peerAddress: 203.0.113.1, routerID: 198.51.100.1, vrf: red, nodeSelectors: [{matchLabels: {rack: r1}}]}",
                ),
            ],
            vec![],
        ),
        row(
            "FRR: ConfigMap bgpextras with raw FRR configuration is refused (no FRR runs)",
            vec![config_map(
                "bgpextras",
                "extras: |\n    router bgp 64500\n     bgp graceful-shutdown\n",
            )],
            vec![(
                "ConfigMap",
                "bgpextras",
                "data.extras",
                "raw FRR configuration is not supported",
                false,
            )],
        ),
        native(
            "native: any extras are refused, as in MetalLB",
            vec![config_map("bgpextras", "extras: 'bfd'")],
            vec![(
                "ConfigMap",
                "bgpextras",
                "data.extras",
                "raw FRR configuration is not supported",
                false,
            )],
        ),
        row(
            "an empty bgpextras, or another ConfigMap, changes nothing",
            vec![
                config_map("bgpextras", "extras: '  '"),
                config_map("other", "extras: 'router bgp 1'"),
            ],
            vec![],
        ),
        native(
            "native: two differently named peers with identical specs are accepted",
            vec![
                obj(
                    "BGPPeer",
                    "a",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1}",
                ),
                obj(
                    "BGPPeer",
                    "b",
                    "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1}",
                ),
            ],
            vec![],
        ),
    ]);
}

#[test]
fn one_bad_object_never_hides_another() {
    check(vec![row(
        "errors of every kind at once",
        vec![
            pool("a", "198.51.100.7"),
            pool("b", "198.51.100.9-198.51.100.1"),
            obj("L2Advertisement", "l2", "{ipAddressPools: [a, a]}"),
            obj("BGPAdvertisement", "bgp", "{aggregationLength: 40}"),
            obj(
                "BGPPeer",
                "p",
                "{myASN: 0, peerASN: 1, peerAddress: 203.0.113.1}",
            ),
            obj("BFDProfile", "bfd", "{detectMultiplier: 1}"),
            obj(
                "Community",
                "c",
                "{communities: [{name: x, value: 'nope:1'}]}",
            ),
        ],
        vec![
            (
                "IPAddressPool",
                "a",
                "spec.addresses[0]",
                "not a CIDR or range",
                false,
            ),
            (
                "IPAddressPool",
                "b",
                "spec.addresses[0]",
                "after end",
                false,
            ),
            (
                "L2Advertisement",
                "l2",
                "spec.ipAddressPools[1]",
                "duplicate",
                false,
            ),
            (
                "BGPAdvertisement",
                "bgp",
                "spec.aggregationLength",
                "40",
                false,
            ),
            ("BGPPeer", "p", "spec.myASN", "missing local ASN", false),
            ("BFDProfile", "bfd", "spec.detectMultiplier", "2-255", false),
            (
                "Community",
                "c",
                "spec.communities[0].value",
                "not a number",
                false,
            ),
        ],
    )]);
}

#[test]
fn resolved_values() {
    let namespaces = "
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
";
    let config = build(
        BgpMode::Native,
        &[
            namespaces.to_string(),
            pool("host-bits", "198.51.100.77/24, '203.0.113.10 - 203.0.113.13'"),
            obj("IPAddressPool", "priority-only", "{addresses: ['2001:db8::/64'], serviceAllocation: {priority: 5}}"),
            obj("IPAddressPool", "by-label", "{addresses: ['2001:db8:1::/64'], autoAssign: false, serviceAllocation: {namespaces: [x], namespaceSelectors: [{matchLabels: {team: a}}]}}"),
            obj("IPAddressPool", "matches-none", "{addresses: ['2001:db8:2::/64'], serviceAllocation: {namespaceSelectors: [{matchLabels: {team: z}}]}}"),
        ],
    )
    .expect("valid");
    let host_bits = &config.pools["host-bits"];
    let ranges: Vec<Vec<String>> = host_bits
        .ranges
        .iter()
        .map(|r| r.iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(
        ranges,
        [
            vec!["198.51.100.0/24"],
            vec!["203.0.113.10/31", "203.0.113.12/31"]
        ]
    );
    assert!(host_bits.auto_assign && !host_bits.avoid_buggy_ips);
    assert!(host_bits.service_allocation.is_none());

    // A serviceAllocation with only a priority matches every Service.
    let sa = config.pools["priority-only"]
        .service_allocation
        .as_ref()
        .expect("sa");
    assert_eq!(sa.priority, 5);
    assert!(sa.namespaces.is_empty());
    assert_eq!(sa.service_selectors, [config::Selector::everything()]);

    // namespaces ∪ namespaceSelectors.
    let by_label = &config.pools["by-label"];
    assert!(!by_label.auto_assign);
    let sa = by_label.service_allocation.as_ref().expect("sa");
    assert_eq!(sa.namespaces.iter().collect::<Vec<_>>(), ["team-a", "x"]);

    // MetalLB's quirk: selectors matching nothing leave no restriction and no service match.
    let sa = config.pools["matches-none"]
        .service_allocation
        .as_ref()
        .expect("sa");
    assert!(sa.namespaces.is_empty() && sa.service_selectors.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// MetalLB's parser reads objects as the API server lists them (by name), so neither the
    /// configuration nor the error list may depend on the order objects are given in.
    #[test]
    fn build_is_independent_of_object_order(
        docs in Just(order_docs()).prop_shuffle(),
        keep in prop::collection::vec(prop::bool::weighted(0.8), 12),
    ) {
        let kept: Vec<String> = order_docs()
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(d, _)| d)
            .collect();
        let shuffled: Vec<String> = docs.into_iter().filter(|d| kept.contains(d)).collect();
        let a = build(BgpMode::Frr, &kept);
        let b = build(BgpMode::Frr, &shuffled);
        match (a, b) {
            (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
            (Err(x), Err(y)) => prop_assert_eq!(x, y),
            (x, y) => prop_assert!(false, "{:?} vs {:?}", x.is_ok(), y.is_ok()),
        }
    }
}

/// Objects whose rules interact (overlaps, LOCAL_PREF, alias uniqueness, FRR pairs).
fn order_docs() -> Vec<String> {
    vec![
        NODES.to_string(),
        pool("a", "198.51.100.0/25"),
        pool("b", "198.51.100.0/26"),
        pool("c", "'2001:db8::/64'"),
        obj("BGPAdvertisement", "x", "{localPref: 1}"),
        obj(
            "BGPAdvertisement",
            "y",
            "{localPref: 2, aggregationLength: 30}",
        ),
        obj("L2Advertisement", "l2", "{ipAddressPools: [a, a]}"),
        obj(
            "Community",
            "c1",
            "{communities: [{name: n, value: '1:1'}]}",
        ),
        obj(
            "Community",
            "c2",
            "{communities: [{name: n, value: '2:2'}]}",
        ),
        obj(
            "BGPPeer",
            "p1",
            "{myASN: 64500, peerASN: 64501, peerAddress: 203.0.113.1}",
        ),
        obj(
            "BGPPeer",
            "p2",
            "{myASN: 64501, peerASN: 64501, peerAddress: 203.0.113.1}",
        ),
        obj("BFDProfile", "b", "{echoMode: true}"),
    ]
}

#[test]
fn results_do_not_depend_on_object_order() {
    let docs = vec![
        NODES.to_string(),
        pool("a", "198.51.100.0/25"),
        pool("b", "198.51.100.0/26"),
        obj("BGPAdvertisement", "x", "{localPref: 1}"),
        obj("BGPAdvertisement", "y", "{localPref: 2}"),
        obj("L2Advertisement", "l2", "{ipAddressPools: [a, a]}"),
    ];
    let forward = build(BgpMode::Native, &docs).expect_err("invalid");
    let mut reversed_docs = docs.clone();
    reversed_docs.reverse();
    let reversed = build(BgpMode::Native, &reversed_docs).expect_err("invalid");
    assert_eq!(forward, reversed);
    assert!(!forward.is_empty());
}
