//! The generated CRDs carry MetalLB's schema facts: versions, defaults, enums, ranges, CEL
//! rules, required fields and print columns (checked field by field against MetalLB's
//! `config/crd/bases` when written; these rows keep them from drifting).

use serde_json::{Value, json};

use super::*;

/// The OpenAPI schema of `file` at `version`, as JSON.
fn schema(file: &str, version: &str) -> Value {
    let (_, crd) = crds()
        .into_iter()
        .find(|(f, _)| *f == file)
        .unwrap_or_else(|| panic!("no CRD {file}"));
    let v = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"));
    serde_json::to_value(
        v.schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref()),
    )
    .expect("schema serializes")
}

/// `spec.a.b` → the schema node (`[]` steps into array items).
fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut node = schema;
    for step in path.split('.') {
        node = match step.strip_suffix("[]") {
            Some(name) => &node["properties"][name]["items"],
            None => &node["properties"][step],
        };
        assert!(!node.is_null(), "{path}: no {step}");
    }
    node
}

#[test]
fn every_kind_with_metallb_file_names_versions_and_scope() {
    let expected = [
        ("metallb.io_bfdprofiles.yaml", "BFDProfile", vec!["v1beta1"]),
        (
            "metallb.io_bgpadvertisements.yaml",
            "BGPAdvertisement",
            vec!["v1beta1"],
        ),
        (
            "metallb.io_bgppeers.yaml",
            "BGPPeer",
            vec!["v1beta1", "v1beta2"],
        ),
        ("metallb.io_communities.yaml", "Community", vec!["v1beta1"]),
        (
            "metallb.io_configurationstates.yaml",
            "ConfigurationState",
            vec!["v1beta1"],
        ),
        (
            "metallb.io_ipaddresspools.yaml",
            "IPAddressPool",
            vec!["v1beta1"],
        ),
        (
            "metallb.io_l2advertisements.yaml",
            "L2Advertisement",
            vec!["v1beta1"],
        ),
        (
            "metallb.io_servicebgpstatuses.yaml",
            "ServiceBGPStatus",
            vec!["v1beta1"],
        ),
        (
            "metallb.io_servicel2statuses.yaml",
            "ServiceL2Status",
            vec!["v1beta1"],
        ),
    ];
    let all = crds();
    assert_eq!(all.len(), expected.len());
    for ((file, crd), (want_file, kind, versions)) in all.iter().zip(expected) {
        assert_eq!(*file, want_file);
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        let mut names: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, versions, "{kind}");
        let storage: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        let want_storage = if kind == "BGPPeer" {
            "v1beta2"
        } else {
            "v1beta1"
        };
        assert_eq!(storage, [want_storage], "{kind}");
        assert!(crd.spec.versions.iter().all(|v| v.served), "{kind}");
    }
}

#[test]
fn defaults_enums_and_ranges() {
    // (file, version, path, key, value)
    let rows: Vec<(&str, &str, &str, &str, Value)> = vec![
        (
            "ipaddresspools",
            "v1beta1",
            "spec.autoAssign",
            "default",
            json!(true),
        ),
        (
            "ipaddresspools",
            "v1beta1",
            "spec.avoidBuggyIPs",
            "default",
            json!(false),
        ),
        (
            "ipaddresspools",
            "v1beta1",
            "spec.serviceAllocation.priority",
            "type",
            json!("integer"),
        ),
        (
            "bgpadvertisements",
            "v1beta1",
            "spec.aggregationLength",
            "default",
            json!(32),
        ),
        (
            "bgpadvertisements",
            "v1beta1",
            "spec.aggregationLength",
            "minimum",
            json!(1.0),
        ),
        (
            "bgpadvertisements",
            "v1beta1",
            "spec.aggregationLengthV6",
            "default",
            json!(128),
        ),
        (
            "bgpadvertisements",
            "v1beta1",
            "spec.localPref",
            "format",
            // MetalLB's int32 with a uint32 bound is refused by kube-apiserver 1.37.
            json!("int64"),
        ),
        (
            "l2advertisements",
            "v1beta1",
            "spec.preferredNodeSelectors[].weight",
            "minimum",
            json!(1.0),
        ),
        (
            "l2advertisements",
            "v1beta1",
            "spec.preferredNodeSelectors[].weight",
            "maximum",
            json!(100.0),
        ),
        (
            "l2advertisements",
            "v1beta1",
            "spec.nodeSelectors[]",
            "x-kubernetes-map-type",
            json!("atomic"),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.peerPort",
            "default",
            json!(179),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.peerPort",
            "maximum",
            json!(16384.0),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.myASN",
            "maximum",
            json!(4_294_967_295.0),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.localASN",
            "minimum",
            json!(1.0),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.dynamicASN",
            "enum",
            json!(["internal", "external"]),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.disableMP",
            "default",
            json!(false),
        ),
        (
            "bgppeers",
            "v1beta2",
            "spec.passwordSecret",
            "x-kubernetes-map-type",
            json!("atomic"),
        ),
        (
            "bgppeers",
            "v1beta1",
            "spec.peerPort",
            "maximum",
            json!(16384.0),
        ),
        (
            "bgppeers",
            "v1beta1",
            "spec.nodeSelectors[].matchExpressions[].values",
            "minItems",
            json!(1),
        ),
        (
            "bfdprofiles",
            "v1beta1",
            "spec.receiveInterval",
            "minimum",
            json!(10.0),
        ),
        (
            "bfdprofiles",
            "v1beta1",
            "spec.receiveInterval",
            "maximum",
            json!(60000.0),
        ),
        (
            "bfdprofiles",
            "v1beta1",
            "spec.detectMultiplier",
            "minimum",
            json!(2.0),
        ),
        (
            "bfdprofiles",
            "v1beta1",
            "spec.detectMultiplier",
            "maximum",
            json!(255.0),
        ),
        (
            "bfdprofiles",
            "v1beta1",
            "spec.minimumTtl",
            "maximum",
            json!(254.0),
        ),
        (
            "configurationstates",
            "v1beta1",
            "status.result",
            "enum",
            json!(["Valid", "Invalid", "Unknown"]),
        ),
        (
            "configurationstates",
            "v1beta1",
            "status.conditions[].status",
            "enum",
            json!(["True", "False", "Unknown"]),
        ),
        (
            "configurationstates",
            "v1beta1",
            "status.conditions",
            "x-kubernetes-list-type",
            json!("map"),
        ),
    ];
    let mut wrong = Vec::new();
    for (file, version, path, key, value) in rows {
        let schema = schema(&format!("metallb.io_{file}.yaml"), version);
        let got = &at(&schema, path)[key];
        if *got != value {
            wrong.push(format!(
                "{file} {version} {path}.{key}: {got} (want {value})"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn required_fields_and_cel_rules() {
    let pool = schema("metallb.io_ipaddresspools.yaml", "v1beta1");
    assert_eq!(pool["required"], json!(["spec"]));
    assert_eq!(at(&pool, "spec")["required"], json!(["addresses"]));
    let l2 = schema("metallb.io_l2advertisements.yaml", "v1beta1");
    assert!(l2["required"].is_null(), "an L2Advertisement may omit spec");
    let old_peer = schema("metallb.io_bgppeers.yaml", "v1beta1");
    assert_eq!(
        at(&old_peer, "spec")["required"],
        json!(["myASN", "peerASN", "peerAddress"])
    );
    let peer = schema("metallb.io_bgppeers.yaml", "v1beta2");
    assert_eq!(at(&peer, "spec")["required"], json!(["myASN"]));

    let cel = |schema: &Value, path: &str| -> Vec<String> {
        at(schema, path)["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| r["rule"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        cel(&peer, "spec.enableGracefulRestart"),
        ["self == oldSelf"]
    );
    assert_eq!(cel(&peer, "spec.connectTime").len(), 2);
    let bgp_ad = schema("metallb.io_bgpadvertisements.yaml", "v1beta1");
    assert!(cel(&bgp_ad, "spec")[0].contains("self.aggregationLength == 32"));
    for file in ["servicel2statuses", "servicebgpstatuses"] {
        let s = schema(&format!("metallb.io_{file}.yaml"), "v1beta1");
        for field in ["node", "serviceName", "serviceNamespace"] {
            assert_eq!(
                cel(&s, &format!("status.{field}")),
                ["self == oldSelf"],
                "{file} status.{field} is immutable"
            );
        }
    }
}

#[test]
fn status_subresources_and_print_columns() {
    let all = crds();
    let find = |file: &str| {
        all.iter()
            .find(|(f, _)| *f == file)
            .map(|(_, c)| c)
            .expect("crd")
    };
    for (file, _) in &all {
        let crd = find(file);
        assert!(
            crd.spec.versions.iter().all(|v| v.subresources.is_some()),
            "{file}: status subresource"
        );
    }
    let columns = |file: &str| -> Vec<String> {
        find(file).spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect()
    };
    assert_eq!(
        columns("metallb.io_ipaddresspools.yaml"),
        ["Auto Assign", "Avoid Buggy IPs", "Addresses"]
    );
    assert_eq!(
        columns("metallb.io_bgppeers.yaml"),
        ["Address", "ASN", "BFD Profile", "Multi Hops"]
    );
}

/// Every integer the API server accepts decodes into its Rust field: each integer property is
/// bounded to its type, or is a Go `int` decoded into `i64` (the API server's own range).
#[test]
fn every_integer_is_bounded_to_the_type_it_decodes_into() {
    // Decoded into `i64`: the API server stores nothing larger.
    const INT64: &[&str] = &[
        "metallb.io_configurationstates/status.conditions[].observedGeneration",
        "metallb.io_ipaddresspools/spec.serviceAllocation.priority",
        "metallb.io_ipaddresspools/status.assignedIPv4",
        "metallb.io_ipaddresspools/status.assignedIPv6",
        "metallb.io_ipaddresspools/status.availableIPv4",
        "metallb.io_ipaddresspools/status.availableIPv6",
    ];
    fn walk(file: &str, path: &str, node: &Value, out: &mut Vec<String>) {
        if node["type"] == "integer" {
            let bounded = node.get("minimum").is_some() && node.get("maximum").is_some();
            let key = format!("{file}/{path}");
            if !bounded && !INT64.contains(&key.as_str()) {
                out.push(key.clone());
            }
            // The API server refuses every object of a kind whose int32 field allows more
            // than an int32 (`Maximum boundary value must be of type integer with format
            // int32`): such a bound needs `format: int64`.
            let beyond_int32 = node["maximum"]
                .as_f64()
                .is_some_and(|m| m > f64::from(i32::MAX))
                || node["minimum"]
                    .as_f64()
                    .is_some_and(|m| m < f64::from(i32::MIN));
            if node["format"] == "int32" && beyond_int32 {
                out.push(format!("{key} (format int32 with bounds beyond int32)"));
            }
        }
        if let Some(props) = node["properties"].as_object() {
            for (name, child) in props {
                let next = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                walk(file, &next, child, out);
            }
        }
        if node["items"].is_object() {
            walk(file, &format!("{path}[]"), &node["items"], out);
        }
        if node["additionalProperties"].is_object() {
            walk(
                file,
                &format!("{path}{{}}"),
                &node["additionalProperties"],
                out,
            );
        }
    }
    let mut unbounded = Vec::new();
    for (file, crd) in crds() {
        for v in &crd.spec.versions {
            let schema = serde_json::to_value(
                v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref()),
            )
            .expect("schema serializes");
            walk(file.trim_end_matches(".yaml"), "", &schema, &mut unbounded);
        }
    }
    unbounded.sort();
    unbounded.dedup();
    assert_eq!(unbounded, Vec::<String>::new());
}

/// The extremes the API server accepts for a bounded field decode; the next value out is
/// refused by the schema, so no stored object fails to decode.
#[test]
fn extreme_integers_decode() {
    let pool: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p"},
        "spec": {"addresses": ["198.51.100.0/24"],
                 "serviceAllocation": {"priority": 2_147_483_648_i64}}
    }))
    .expect("a priority past i32 decodes");
    assert_eq!(
        pool.spec.service_allocation.map(|s| s.priority),
        Some(2_147_483_648)
    );
    let ad: BGPAdvertisement = serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
        "metadata": {"name": "a"},
        "spec": {"localPref": 4_294_967_295_u32, "aggregationLength": 2_147_483_647,
                 "aggregationLengthV6": -2_147_483_648}
    }))
    .expect("the schema's extremes decode");
    assert_eq!(ad.spec.local_pref, Some(u32::MAX));
}
