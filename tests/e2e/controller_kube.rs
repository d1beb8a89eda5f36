//! The real `herald controller` binary against a real kube-apiserver (etcd + RBAC + static token
//! identities) started by this test binary, authenticated as the controller's service account so
//! the RBAC in `manifests/` is what the server enforces.
//!
//! Needs `cargo xtask kube build` (target/kube/bin) and `cargo build -p herald` beforehand.
//! Tests run one at a time (they share the `metallb-system` configuration); each uses its own
//! namespace and pools and removes them at the end.

#[path = "support/kube/mod.rs"]
mod kube_support;

use std::time::Duration;

use kube_support::cluster::{Cluster, namespace_yaml, pool_yaml, serial, service_yaml, wait_for};
use kube_support::herald::Herald;

const POOL_ANNOTATION: &str = "metallb.io/ip-allocated-from-pool";

/// Waits until the Service shows exactly `want` as ingress.
async fn wait_ingress(cluster: &Cluster, herald: &Herald, ns: &str, name: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(
        &format!("{ns}/{name} ingress = {want:?}"),
        || {
            let want = want.clone();
            async move {
                let have = cluster.ingress(ns, name).await;
                (have == want).then_some(())
            }
        },
        || format!("last ingress: (see below)\nherald log:\n{}", tail(&herald.log_text())),
    )
    .await;
}

/// Waits for an Event with `reason` on Service `ns/name`; returns its note.
async fn wait_event(cluster: &Cluster, herald: &Herald, ns: &str, name: &str, reason: &str) -> (String, String, String) {
    wait_for(
        &format!("event {reason} on {ns}/{name}"),
        || async move {
            cluster
                .events(ns, "Service", name)
                .await
                .into_iter()
                .find(|(r, ..)| r == reason)
                .map(|(_, kind, note, component)| (kind, note, component))
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn wait_ready(herald: &Herald) {
    let port = herald.health_port;
    wait_for(
        &format!("{} /readyz", herald.name),
        || async move { Herald::http_get(port, "/readyz").filter(|(code, _)| *code == 200).map(|_| ()) },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_apply_and_rbac_is_least_privilege() {
    let _serial = serial();
    let cluster = Cluster::new().await;
    // Applying twice is idempotent and every object is valid (server-side dry run of the whole set).
    let manifests = kube_support::control_plane::workspace_root().join("manifests");
    cluster.kubectl(&["apply", "--dry-run=server", "-k", &manifests.display().to_string()]);
    let controller = cluster.plane.kubeconfig("controller");
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i", "--kubeconfig"];
        let path = controller.display().to_string();
        full.push(&path);
        full.extend_from_slice(args);
        // kubectl prints yes/no; exit code 1 for "no".
        cluster.plane.kubectl_run(&full).map(|s| s.trim() == "yes").unwrap_or(false)
    };
    assert!(can(&["list", "services", "--all-namespaces"]));
    assert!(can(&["patch", "services/status", "-n", "default"]));
    assert!(can(&["list", "ipaddresspools.metallb.io", "-n", "metallb-system"]));
    assert!(can(&["patch", "ipaddresspools.metallb.io/status", "-n", "metallb-system"]));
    assert!(can(&["create", "events.events.k8s.io", "-n", "default"]));
    assert!(can(&["create", "secrets", "-n", "metallb-system"]));
    // Least privilege: nothing it does not need.
    assert!(!can(&["delete", "services", "-n", "default"]));
    assert!(!can(&["create", "services", "-n", "default"]));
    assert!(!can(&["get", "secrets", "-n", "default"]));
    assert!(!can(&["list", "secrets", "-n", "metallb-system"]));
    assert!(!can(&["create", "ipaddresspools.metallb.io", "-n", "metallb-system"]));
    assert!(!can(&["update", "ipaddresspools.metallb.io", "-n", "metallb-system"]));
    assert!(!can(&["list", "pods", "--all-namespaces"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_ip_event_pool_status_metrics_and_release() {
    let _serial = serial();
    let cluster = Cluster::new().await;
    let ns = "t-first";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("first", &["198.51.100.10-198.51.100.19"], ""));
    let herald = Herald::start(cluster.plane, "first-0", &[]);
    wait_ready(&herald).await;

    cluster.apply(&service_yaml(ns, "web", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "web", &["198.51.100.10"]).await;
    assert_eq!(cluster.annotation(ns, "web", POOL_ANNOTATION).await.as_deref(), Some("first"));
    let (kind, note, component) = wait_event(&cluster, &herald, ns, "web", "IPAllocated").await;
    assert_eq!(kind, "Normal");
    assert!(note.contains("198.51.100.10"), "{note}");
    assert_eq!(component, "metallb-controller");

    // Pool status counters.
    let pool_status = wait_for(
        "pool status assignedIPv4=1",
        || async {
            let pool = cluster.pool("first").await?;
            let status = pool.data.get("status")?.clone();
            (status.get("assignedIPv4")? == 1).then_some(status)
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    assert_eq!(pool_status["availableIPv4"], 9);
    assert_eq!(pool_status["assignedIPv6"], 0);

    // Metrics under MetalLB's names, and the ConfigurationState.
    let metrics = herald.metrics();
    assert!(metrics.contains("metallb_allocator_addresses_in_use_total{pool=\"first\"} 1"), "{metrics}");
    assert!(metrics.contains("metallb_allocator_addresses_total{pool=\"first\"} 10"), "{metrics}");
    assert!(metrics.contains("metallb_k8s_client_config_loaded_bool 1"), "{metrics}");
    let state = cluster.configuration_state().await.expect("ConfigurationState controller");
    assert_eq!(state["status"]["result"], "Valid", "{state}");
    // The memberlist Secret.
    let key = cluster.kubectl(&["get", "secret", "-n", "metallb-system", "memberlist", "-o", "jsonpath={.data.secretkey}"]);
    assert_eq!(key.trim().len(), 32, "base64 of the 22-character key: {key}");

    // Type change releases; the next Service gets the freed first address.
    cluster.kubectl(&["patch", "service", "-n", ns, "web", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    wait_ingress(&cluster, &herald, ns, "web", &[]).await;
    assert_eq!(cluster.annotation(ns, "web", POOL_ANNOTATION).await, None);
    cluster.apply(&service_yaml(ns, "api", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "api", &["198.51.100.10"]).await;
    // Delete releases too.
    cluster.kubectl(&["delete", "service", "-n", ns, "api"]);
    cluster.apply(&service_yaml(ns, "api2", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "api2", &["198.51.100.10"]).await;

    cluster.cleanup(ns, &["first"]);
}
