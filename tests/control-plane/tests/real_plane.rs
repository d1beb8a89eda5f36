//! Starts the real binaries from `target/kube/bin` (`cargo xtask kube build`, which
//! `cargo xtask test` runs before the tests): an owned, dual-stack plane with etcd in memory and
//! kube-controller-manager, as the lab and the benches use it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use herald_control_plane::{Binaries, ControlPlane, alive};

#[test]
fn an_owned_plane_serves_its_identities_restarts_and_stops_on_drop() {
    let binaries = Binaries::workspace();
    if let Err(e) = binaries.require(&Binaries::ALL) {
        // A plain `cargo test` on a machine without the Go build: say so rather than fail.
        eprintln!("skipped: {e}");
        return;
    }
    let plane = ControlPlane::builder()
        .binaries(binaries)
        .service_cidrs(["10.96.0.0/16", "fd00:96::/108"])
        .etcd_in_memory(true)
        .etcd_args(["--unsafe-no-fsync"])
        .controller_manager(true)
        .start()
        .expect("control plane");
    let whoami = |identity: &str| {
        plane
            .kubectl_run(&[
                &format!("--kubeconfig={}", plane.kubeconfig(identity).display()),
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ])
            .expect("whoami")
    };
    assert_eq!(whoami("admin"), "admin");
    assert_eq!(
        whoami("speaker"),
        "system:serviceaccount:metallb-system:speaker"
    );
    assert_eq!(plane.token("controller").expect("token").len(), 48);
    let can_list_nodes = plane.kubectl_run(&[
        "auth",
        "can-i",
        "list",
        "nodes",
        "--as=system:serviceaccount:metallb-system:controller",
    ]);
    assert!(can_list_nodes.is_err(), "RBAC: no rights without bindings");
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: harness\n")
        .expect("apply");
    let names: Vec<String> = plane.processes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["etcd", "kube-apiserver", "kube-controller-manager"]);

    plane
        .restart_apiserver(Duration::from_millis(100))
        .expect("restart");
    plane
        .kubectl_run(&["get", "namespace", "harness"])
        .expect("etcd kept the namespace across the restart");

    let pids: Vec<u32> = plane.processes().into_iter().map(|(_, p)| p).collect();
    let dir = plane.dir.clone();
    drop(plane);
    assert!(pids.iter().all(|p| !alive(*p)), "every process stopped");
    assert!(!dir.exists(), "the temporary run directory is removed");
}
