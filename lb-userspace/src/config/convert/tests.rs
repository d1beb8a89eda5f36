use super::*;

/// A ConfigMap using every legacy section (documentation addresses only).
const FULL: &str = r"
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: lb-system
data:
  config: |
    peers:
    - peer-address: 203.0.113.1
      peer-asn: 64501
      my-asn: 64500
      peer-port: 1179
      source-address: 203.0.113.2
      hold-time: 120s
      keepalive-time: 30s
      router-id: 203.0.113.3
      password: secret
      bfd-profile: Fast_BFD
      ebgp-multihop: true
      node-selectors:
      - match-labels:
          rack: r1
        match-expressions:
        - key: kubernetes.io/arch
          operator: In
          values: [amd64, arm64]
    - peer-address: 203.0.113.9
      peer-asn: 64502
      my-asn: 64500
    bgp-communities:
      zz-last: 64500:2
      no-advertise: 65535:65282
    address-pools:
    - name: bgp-pool
      protocol: bgp
      addresses:
      - 198.51.100.0/26
      avoid-buggy-ips: true
      bgp-advertisements:
      - aggregation-length: 32
        localpref: 100
        communities: [no-advertise]
      - aggregation-length: 26
    - name: bgp-plain
      protocol: bgp
      auto-assign: false
      addresses:
      - 198.51.100.64-198.51.100.127
    - name: L2_Pool
      protocol: layer2
      addresses:
      - 203.0.113.128/25
    bfd-profiles:
    - name: Fast_BFD
      receive-interval: 100
      transmit-interval: 100
      detect-multiplier: 3
";

fn full() -> Converted {
    convert_input(FULL, "full.yaml", false).expect("converts")
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn objects_get_metallb_converter_names_and_the_configmap_namespace() {
    let c = full();
    assert_eq!(c.namespace, "lb-system");
    assert_eq!(names(&c.peers), ["peer1", "peer2"]);
    assert_eq!(names(&c.pools), ["bgp-pool", "bgp-plain", "l2-pool"]);
    assert_eq!(
        names(&c.bgp_advertisements),
        [
            "bgpadvertisement1",
            "bgpadvertisement2",
            "bgpadvertisement3"
        ]
    );
    assert_eq!(names(&c.l2_advertisements), ["l2advertisement1"]);
    assert_eq!(names(&c.bfd_profiles), ["fast-bfd"]);
    assert_eq!(names(&c.communities), ["communities"]);
    let every_namespace = c
        .peers
        .iter()
        .map(|o| &o.metadata)
        .chain(c.pools.iter().map(|o| &o.metadata))
        .chain(c.bgp_advertisements.iter().map(|o| &o.metadata))
        .chain(c.l2_advertisements.iter().map(|o| &o.metadata))
        .chain(c.bfd_profiles.iter().map(|o| &o.metadata))
        .chain(c.communities.iter().map(|o| &o.metadata))
        .map(|m| m.namespace.as_deref());
    for namespace in every_namespace {
        assert_eq!(namespace, Some("lb-system"));
    }
}

#[test]
fn peers_become_v1beta2_with_timers_selectors_and_renamed_bfd_reference() {
    let c = full();
    let p = &c.peers[0].spec;
    assert_eq!((p.my_asn, p.peer_asn), (64500, 64501));
    assert_eq!(p.peer_address, "203.0.113.1");
    assert_eq!(p.source_address, "203.0.113.2");
    assert_eq!(p.peer_port, Some(1179));
    assert_eq!(p.hold_time.as_deref(), Some("2m0s"));
    assert_eq!(p.keepalive_time.as_deref(), Some("30s"));
    assert_eq!(p.router_id, "203.0.113.3");
    assert_eq!(p.password, "secret");
    assert_eq!(p.bfd_profile, "fast-bfd", "follows the renamed BFDProfile");
    assert!(p.ebgp_multi_hop);
    let selector = &p.node_selectors[0];
    assert_eq!(
        selector.match_labels.as_ref().and_then(|m| m.get("rack")),
        Some(&"r1".to_string())
    );
    let expression = &selector.match_expressions.as_ref().expect("expressions")[0];
    assert_eq!(
        (expression.key.as_str(), expression.operator.as_str()),
        ("kubernetes.io/arch", "In")
    );
    assert_eq!(
        expression.values.as_deref(),
        Some(&["amd64".to_string(), "arm64".to_string()][..])
    );
    // Defaults: hold time always written (90 s), keepalive and port only when given.
    let q = &c.peers[1].spec;
    assert_eq!(q.hold_time.as_deref(), Some("1m30s"));
    assert_eq!(q.keepalive_time, None);
    assert_eq!(q.peer_port, None);
    assert!(q.node_selectors.is_empty());
}

#[test]
fn hold_and_keepalive_time_table() {
    // (hold-time, keepalive-time) → (holdTime, keepaliveTime) or the error's field.
    /// (holdTime, keepaliveTime) written, or the field of the error.
    type Expected<'a> = Result<(&'a str, Option<&'a str>), &'a str>;
    let cases: [(&str, &str, Expected); 9] = [
        ("", "", Ok(("1m30s", None))),
        ("90s", "", Ok(("1m30s", None))),
        ("120s", "40s", Ok(("2m0s", Some("40s")))),
        ("3.9s", "", Ok(("3s", None))),
        ("0s", "", Ok(("0s", None))),
        ("1h", "30.7s", Ok(("1h0m0s", Some("30s")))),
        ("2s", "", Err("hold-time")),
        ("ninety", "", Err("hold-time")),
        ("90s", "soon", Err("keepalive-time")),
    ];
    for (hold, keepalive, expected) in cases {
        let peer = LegacyPeer {
            my_asn: 64500,
            peer_asn: 64501,
            peer_address: "203.0.113.1".into(),
            hold_time: hold.into(),
            keepalive_time: keepalive.into(),
            ..Default::default()
        };
        match (peer_spec(4, &peer), expected) {
            (Ok(spec), Ok((h, k))) => {
                assert_eq!(spec.hold_time.as_deref(), Some(h), "{hold:?}");
                assert_eq!(spec.keepalive_time.as_deref(), k, "{keepalive:?}");
            }
            (Err(ConvertError::Peer { index, field, .. }), Err(f)) => {
                assert_eq!((index, field), (4, f), "{hold:?}/{keepalive:?}");
            }
            (got, want) => panic!("{hold:?}/{keepalive:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn pools_keep_names_addresses_and_flags() {
    let c = full();
    let bgp = &c.pools[0].spec;
    assert_eq!(bgp.addresses, ["198.51.100.0/26"]);
    assert!(bgp.avoid_buggy_ips);
    assert_eq!(bgp.auto_assign, None, "auto-assign copied only when set");
    let plain = &c.pools[1].spec;
    assert_eq!(plain.auto_assign, Some(false));
    assert_eq!(plain.addresses, ["198.51.100.64-198.51.100.127"]);
    assert!(!plain.avoid_buggy_ips);
    assert!(c.pools.iter().all(|p| p.spec.service_allocation.is_none()));
}

#[test]
fn advertisements_one_counter_across_pools_and_empty_for_bare_bgp_pools() {
    let c = full();
    let ads: Vec<_> = c.bgp_advertisements.iter().map(|a| &a.spec).collect();
    assert_eq!(ads[0].ip_address_pools, ["bgp-pool"]);
    assert_eq!(ads[0].aggregation_length, Some(32));
    assert_eq!(ads[0].local_pref, Some(100));
    assert_eq!(ads[0].communities, ["no-advertise"]);
    assert_eq!(ads[1].ip_address_pools, ["bgp-pool"]);
    assert_eq!(ads[1].aggregation_length, Some(26));
    assert_eq!(ads[1].local_pref, None, "localpref 0 is not written");
    // bgp-plain has no advertisement of its own: it gets an empty one selecting it.
    assert_eq!(
        *ads[2],
        api::BGPAdvertisementSpec {
            ip_address_pools: vec!["bgp-plain".into()],
            ..Default::default()
        }
    );
    assert_eq!(
        c.l2_advertisements[0].spec,
        api::L2AdvertisementSpec {
            ip_address_pools: vec!["l2-pool".into()],
            ..Default::default()
        }
    );
}

#[test]
fn aliases_become_one_community_sorted_by_name() {
    let c = full();
    let aliases: Vec<(&str, &str)> = c.communities[0]
        .spec
        .communities
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str()))
        .collect();
    assert_eq!(
        aliases,
        [("no-advertise", "65535:65282"), ("zz-last", "64500:2")]
    );
    let none = convert_data(
        "address-pools: [{name: a1, protocol: layer2, addresses: [198.51.100.0/30]}]",
        "t",
        "ns",
    )
    .expect("converts");
    assert!(none.communities.is_empty());
}

#[test]
fn bfd_profiles_write_echo_and_passive_mode_explicitly() {
    let c = full();
    let spec = &c.bfd_profiles[0].spec;
    assert_eq!(spec.receive_interval, Some(100));
    assert_eq!(spec.transmit_interval, Some(100));
    assert_eq!(spec.detect_multiplier, Some(3));
    assert_eq!(spec.echo_interval, None);
    assert_eq!(spec.minimum_ttl, None);
    assert_eq!(
        (spec.echo_mode, spec.passive_mode),
        (Some(false), Some(false))
    );
}

#[test]
fn name_repair_table() {
    let long = format!("Pool_{}", "x".repeat(70));
    let long_fixed = format!("pool-{}", "x".repeat(58));
    let cases: [(&str, Result<&str, ()>); 8] = [
        ("already-fine", Ok("already-fine")),
        ("01-numbered-pool", Ok("numbered-pool")),
        ("Capitalized-Pool", Ok("capitalized-pool")),
        ("with_underscores", Ok("with-underscores")),
        ("-_9lead", Ok("lead")),
        (&long, Ok(&long_fixed)),
        ("1234", Err(())),
        ("", Err(())),
    ];
    for (name, expected) in cases {
        match (to_k8s_name(name, "IPAddressPool"), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{name:?}"),
            (Err(ConvertError::Name { kind, .. }), Err(())) => {
                assert_eq!(kind, "IPAddressPool");
            }
            (got, want) => panic!("{name:?}: got {got:?}, want {want:?}"),
        }
    }
    assert!(
        full()
            .notes
            .iter()
            .any(|n| n.contains("\"L2_Pool\" renamed to \"l2-pool\"")),
        "renames are reported"
    );
}

#[test]
fn namespace_defaults_to_metallb_system() {
    let without = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata:\n  config: |\n    address-pools: [{name: a1, protocol: layer2, addresses: [198.51.100.0/30]}]\n";
    let c = convert_input(without, "f", false).expect("converts");
    assert_eq!(
        c.pools[0].metadata.namespace.as_deref(),
        Some("metallb-system")
    );
    let data = "address-pools: [{name: a1, protocol: layer2, addresses: [198.51.100.0/30]}]\n";
    let c = convert_input(data, "f", true).expect("only data");
    assert_eq!(c.namespace, "metallb-system");
    assert_eq!(names(&c.l2_advertisements), ["l2advertisement1"]);
}

#[test]
fn keys_without_a_value_are_empty() {
    let data = "peers:\nbgp-communities:\naddress-pools:\n- name: a1\n  protocol: layer2\n  addresses:\n  - 198.51.100.0/30\n  bgp-advertisements:\nbfd-profiles:\n";
    let c = convert_input(data, "f", true).expect("converts");
    assert!(c.peers.is_empty() && c.communities.is_empty() && c.bfd_profiles.is_empty());
    assert_eq!(names(&c.pools), ["a1"]);
    assert_eq!(names(&c.l2_advertisements), ["l2advertisement1"]);
    let data = "peers:\n- peer-address: 203.0.113.1\n  peer-asn: 64501\n  my-asn: 64500\n  password:\n  node-selectors:\n";
    let c = convert_input(data, "f", true).expect("converts");
    assert_eq!(c.peers[0].spec.password, "");
    assert!(c.peers[0].spec.node_selectors.is_empty());
}

#[test]
fn unknown_protocol_gets_no_advertisement_and_a_note() {
    let data = "address-pools: [{name: a1, protocol: l2, addresses: [198.51.100.0/30]}]\n";
    let c = convert_input(data, "f", true).expect("converts");
    assert!(c.l2_advertisements.is_empty() && c.bgp_advertisements.is_empty());
    assert!(
        c.notes.iter().any(|n| n.contains("\"l2\"")),
        "{:?}",
        c.notes
    );
}

#[test]
fn bad_input_table() {
    let cases: [(&str, bool, &str); 7] = [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
            false,
            "no ConfigMap",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata: {other: x}\n",
            false,
            "data.config is missing",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [x\n",
            false,
            "f:",
        ),
        (
            "address-pools:\n- name: a1\n  addresses: 198.51.100.0/30\n",
            true,
            "line 3",
        ),
        (
            "address-pools:\n- {name: a1, protocol: layer2, addresses: [198.51.100.7]}\n",
            true,
            "IPAddressPool \"a1\": spec.addresses[0]",
        ),
        (
            "peers:\n- {my-asn: 64500, peer-asn: 64501, peer-address: 203.0.113.1, hold-time: 1s}\n",
            true,
            "peers[0].hold-time",
        ),
        (
            "address-pools:\n- {name: '42', protocol: bgp, addresses: [198.51.100.0/30]}\n",
            true,
            "IPAddressPool name \"42\"",
        ),
    ];
    for (input, only_data, expected) in cases {
        let e = convert_input(input, "f", only_data).expect_err(input);
        assert!(e.to_string().contains(expected), "{input:?}: {e}");
    }
}

#[test]
fn every_error_of_the_converted_configuration_is_listed() {
    let data = "address-pools:\n- {name: a1, protocol: layer2, addresses: [198.51.100.0/24]}\n- {name: a2, protocol: layer2, addresses: [198.51.100.128/25, 198.51.100.9]}\n";
    let Err(ConvertError::Invalid(errors)) = convert_input(data, "f", true) else {
        panic!("overlap and bare address must be rejected")
    };
    let text = join(&errors);
    assert!(
        text.contains("overlaps with already defined CIDR"),
        "{text}"
    );
    assert!(text.contains("spec.addresses[1]"), "{text}");
}

#[test]
fn yaml_round_trips_through_the_loader_and_the_builder() {
    let c = full();
    let yaml = c.to_yaml().expect("renders");
    assert!(yaml.starts_with("# Generated by"), "{yaml}");
    assert_eq!(
        yaml.matches("\n---\n").count(),
        11,
        "one separator per object"
    );
    let loaded = load::parse(&yaml, "converted.yaml").expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let kinds: Vec<&str> = loaded
        .objects
        .iter()
        .map(|o| match o {
            Object::BGPPeer(_) => "BGPPeer",
            Object::IPAddressPool(_) => "IPAddressPool",
            Object::BGPAdvertisement(_) => "BGPAdvertisement",
            Object::L2Advertisement(_) => "L2Advertisement",
            Object::BFDProfile(_) => "BFDProfile",
            Object::Community(_) => "Community",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "BGPPeer",
            "BGPPeer",
            "IPAddressPool",
            "IPAddressPool",
            "IPAddressPool",
            "BGPAdvertisement",
            "BGPAdvertisement",
            "BGPAdvertisement",
            "L2Advertisement",
            "BFDProfile",
            "Community"
        ]
    );
    let snapshot = Snapshot::from_objects(loaded.objects);
    assert_eq!(snapshot.peers, c.peers);
    assert_eq!(snapshot.pools, c.pools);
    assert_eq!(snapshot.bgp_advertisements, c.bgp_advertisements);
    assert_eq!(snapshot.l2_advertisements, c.l2_advertisements);
    assert_eq!(snapshot.bfd_profiles, c.bfd_profiles);
    assert_eq!(snapshot.communities, c.communities);
    // MetalLB's converter checks without the mode rules; so does the round trip.
    let unchecked = Snapshot {
        skip_mode_rules: true,
        ..snapshot.clone()
    };
    let config = super::super::build(&unchecked).expect("valid without mode rules");
    assert_eq!(config.pools.len(), 3);
    assert_eq!(config.peers.len(), 2);
    // The mode rules still apply when the user loads it: FRR wants one routerID per node.
    let frr = Snapshot {
        bgp_mode: super::super::BgpMode::Frr,
        ..snapshot
    };
    let errors = super::super::build(&frr).expect_err("routerIDs differ");
    assert_eq!(
        (errors[0].name.as_str(), errors[0].field.as_str()),
        ("peer2", "spec.routerID")
    );
}
