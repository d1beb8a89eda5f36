//! The real `herald` binary over the fixtures in tests/fixtures/simulate/: `simulate -o json`
//! must print exactly `<scenario>.expected.json`, and `validate` must list every error.
//!
//! The expected files were derived by hand from Algorithms A and B (see each fixture's header)
//! and then checked against the output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/simulate")
}

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("METALLB_BGP_TYPE") // fixtures are checked in native mode
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_scenario(name: &str) {
    let dir = fixtures();
    let cluster = dir.join("cluster.yaml");
    let scenario = dir.join(format!("{name}.yaml"));
    let out = herald(&[
        "simulate",
        "-f",
        cluster.to_str().unwrap(),
        "-f",
        scenario.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected_path = dir.join(format!("{name}.expected.json"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
    assert_eq!(
        got,
        expected,
        "{name}: got\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn l2_basic() {
    check_scenario("l2-basic");
}

#[test]
fn pools_and_requests() {
    check_scenario("pools-and-requests");
}

#[test]
fn sharing() {
    check_scenario("sharing");
}

#[test]
fn restart() {
    check_scenario("restart");
}

#[test]
fn dual_stack() {
    check_scenario("dual-stack");
}

#[test]
fn openshift_operator() {
    check_scenario("openshift-operator");
}

#[test]
fn bgp_nodes_peers_and_attributes() {
    check_scenario("bgp");
}

#[test]
fn bgp_text_names_node_peer_prefix_and_attributes() {
    let dir = fixtures();
    let out = herald(&[
        "simulate",
        "-f",
        dir.join("cluster.yaml").to_str().unwrap(),
        dir.join("bgp.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "  bgp: node-a -> core: 203.0.113.65/32 (localPref 150)\n",
        "  bgp: node-c -> edge: 203.0.113.64/28 (communities 64512:100), 203.0.113.65/32\n",
        "  bgp: node-a not announcing: externalTrafficPolicy is Local and node \"node-a\" has no serving endpoint\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from\n{stdout}");
    }
    // The iBGP peer selects node-a only: no other node sends it anything.
    assert!(!stdout.contains("node-b -> core"), "{stdout}");
}

#[test]
fn text_output_names_ips_pool_and_node() {
    let dir = fixtures();
    let out = herald(&[
        "simulate",
        "-f",
        dir.join("cluster.yaml").to_str().unwrap(),
        dir.join("l2-basic.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("default/nginx: assigned 198.51.100.235 pool=default-pool"),
        "{stdout}"
    );
    assert!(stdout.contains("layer2: announced by node-"), "{stdout}");
    assert!(
        stdout.contains("default/no-endpoints: assigned 198.51.100.236"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not announced: the service has no serving endpoint"),
        "{stdout}"
    );
}

#[test]
fn invalid_configuration_lists_every_error() {
    let path = fixtures().join("invalid.yaml");
    for command in ["validate", "simulate"] {
        let out = herald(&[command, "-f", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{command} must fail");
        let stderr = text(&out.stderr);
        for object in ["bare-address", "reversed", "dup-pools"] {
            assert!(
                stderr.contains(object),
                "{command}: {object} missing from\n{stderr}"
            );
        }
    }
}

#[test]
fn validate_accepts_good_configuration() {
    let dir = fixtures();
    for name in [
        "l2-basic",
        "pools-and-requests",
        "sharing",
        "restart",
        "dual-stack",
        "openshift-operator",
    ] {
        let out = herald(&[
            "validate",
            "-f",
            dir.join(format!("{name}.yaml")).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("configuration valid"), "{name}");
    }
}

#[test]
fn missing_file_and_bad_yaml_fail() {
    let out = herald(&["simulate", "-f", "/nonexistent/herald.yaml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/herald.yaml"));
    let dir = std::env::temp_dir().join(format!("herald-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata: [unclosed\n").unwrap();
    let out = herald(&["validate", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.yaml:3: unclosed bracket"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_bad_document_of_every_file_is_listed() {
    let dir = std::env::temp_dir().join(format!("herald-simulate-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("first.yaml");
    std::fs::write(
        &first,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nnot: kubernetes\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: 198.51.100.0/24}\n",
    )
    .unwrap();
    let second = dir.join("second.yaml");
    std::fs::write(&second, "kind: [\n").unwrap();
    for command in ["validate", "simulate"] {
        let out = herald(&[
            command,
            "-f",
            first.to_str().unwrap(),
            "-f",
            second.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{command}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("3 error(s)"), "{command}: {stderr}");
        assert!(
            stderr.contains("first.yaml:5: not a Kubernetes object"),
            "{stderr}"
        );
        assert!(
            stderr.contains("first.yaml:10: IPAddressPool \"p\": spec.addresses: invalid type"),
            "{stderr}"
        );
        assert!(stderr.contains("second.yaml:1:"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
