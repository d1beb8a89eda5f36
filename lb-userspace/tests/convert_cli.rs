//! `herald convert-configmap` over tests/fixtures/convert/: the output must be exactly
//! `<name>.expected.yaml` (checked by hand against MetalLB's converter rules, listed in
//! docs/configure.md "Migrating from a ConfigMap"), and `herald validate` must accept it — the
//! round trip a migrating user makes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/convert")
}

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("METALLB_BGP_TYPE")
        .output()
        .expect("runs herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Converts `<name>.yaml`, compares with the expected file, writes the output to a temporary
/// file and validates it with `extra` arguments.
fn round_trip(name: &str, extra: &[&str]) -> String {
    let input = fixtures().join(format!("{name}.yaml"));
    let out = herald(&["convert-configmap", "-f", input.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    let expected = std::fs::read_to_string(fixtures().join(format!("{name}.expected.yaml")))
        .expect("expected file");
    assert_eq!(text(&out.stdout), expected, "{name}");

    let dir = std::env::temp_dir().join(format!("herald-convert-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let converted = dir.join("converted.yaml");
    std::fs::write(&converted, &out.stdout).expect("write");
    let mut args = vec!["validate", "-f", converted.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let validated = herald(&args);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        validated.status.success(),
        "{name}: validate {extra:?}: {}",
        text(&validated.stderr)
    );
    text(&out.stderr)
}

#[test]
fn layer2_guide_configmap_converts_and_validates() {
    let notes = round_trip("legacy-layer2", &[]);
    assert!(notes.is_empty(), "{notes}");
}

#[test]
fn bgp_configmap_converts_and_validates_in_frr_mode() {
    let notes = round_trip("legacy-bgp", &["--bgp-type", "frr"]);
    assert_eq!(
        notes,
        "note: BFDProfile \"Fast_BFD\" renamed to \"fast-bfd\"\n"
    );
    // BFD profiles are FRR-only: native mode must refuse the same objects (keepaliveTime, which
    // Herald's native speaker carries, is not refused).
    let converted = fixtures().join("legacy-bgp.expected.yaml");
    let out = herald(&["validate", "-f", converted.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("BFDProfile \"fast-bfd\""), "{stderr}");
    assert!(stderr.contains("spec.bfdProfile"), "{stderr}");
    assert!(!stderr.contains("spec.keepaliveTime"), "{stderr}");
}

#[test]
fn only_data_reads_the_bare_configuration() {
    let dir = std::env::temp_dir().join(format!("herald-convert-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let data = dir.join("config");
    std::fs::write(
        &data,
        "address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 198.51.100.235-198.51.100.249\n",
    )
    .expect("write");
    let out = herald(&[
        "convert-configmap",
        "--only-data",
        "-f",
        data.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(fixtures().join("legacy-layer2.expected.yaml"))
        .expect("expected file");
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn invalid_configmaps_fail_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("herald-convert-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata: {}\n",
            "data.config is missing",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata:\n  config: |\n    address-pools:\n    - {name: a, protocol: layer2, addresses: [198.51.100.1]}\n    - {name: b, protocol: layer2, addresses: [198.51.100.0/24]}\n",
            "IPAddressPool \"a\": spec.addresses[0]",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: [\n",
            "bad2.yaml:2: unclosed bracket",
        ),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.yaml"));
        std::fs::write(&file, input).expect("write");
        let out = herald(&["convert-configmap", "-f", file.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "{input}");
        assert!(out.stdout.is_empty(), "nothing printed on failure");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{input}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
