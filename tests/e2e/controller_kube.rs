//! The real `herald controller` binary against a real kube-apiserver (etcd + RBAC + static token
//! identities) started by this test binary, authenticated as the controller's service account so
//! the RBAC in `manifests/` is what the server enforces.
//!
//! Needs `cargo xtask kube build` (target/kube/bin) and `cargo build -p herald` beforehand.
//! Tests run one at a time (they share the `metallb-system` configuration); each uses its own
//! namespace and pools and removes them at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/kube/mod.rs"]
mod kube_support;

use std::time::Duration;

use kube_support::cluster::{Cluster, namespace_yaml, pool_yaml, serial, service_yaml, wait_for};
use kube_support::herald::Herald;

const POOL_ANNOTATION: &str = "metallb.io/ip-allocated-from-pool";

/// Waits until the Service shows exactly `want` as ingress.
async fn wait_ingress(cluster: &Cluster, herald: &Herald, ns: &str, name: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(std::string::ToString::to_string).collect();
    wait_for(
        &format!("{ns}/{name} ingress = {want:?}"),
        || {
            let want = want.clone();
            async move {
                let have = cluster.ingress(ns, name).await;
                (have == want).then_some(())
            }
        },
        || {
            format!(
                "last ingress: (see below)\nherald log:\n{}",
                tail(&herald.log_text())
            )
        },
    )
    .await;
}

/// Waits for an Event with `reason` on Service `ns/name`; returns its note.
async fn wait_event(
    cluster: &Cluster,
    herald: &Herald,
    ns: &str,
    name: &str,
    reason: &str,
) -> (String, String, String) {
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
        || async move {
            Herald::http_get(port, "/readyz")
                .filter(|(code, _)| *code == 200)
                .map(|_| ())
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
}

async fn manifests_apply_and_rbac_is_least_privilege_scenario() {
    let cluster = Cluster::new().await;
    // Applying twice is idempotent and every object is valid (server-side dry run of the whole set).
    let manifests = kube_support::control_plane::workspace_root().join("manifests");
    cluster.kubectl(&[
        "apply",
        "--dry-run=server",
        "-k",
        &manifests.display().to_string(),
    ]);
    let controller = cluster.plane.kubeconfig("controller");
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i", "--kubeconfig"];
        let path = controller.display().to_string();
        full.push(&path);
        full.extend_from_slice(args);
        // kubectl prints yes/no; exit code 1 for "no".
        cluster
            .plane
            .kubectl_run(&full)
            .is_ok_and(|s| s.trim() == "yes")
    };
    assert!(can(&["list", "services", "--all-namespaces"]));
    assert!(can(&[
        "patch",
        "services",
        "--subresource=status",
        "-n",
        "default"
    ]));
    assert!(can(&[
        "list",
        "ipaddresspools.metallb.io",
        "-n",
        "metallb-system"
    ]));
    assert!(can(&[
        "patch",
        "ipaddresspools.metallb.io",
        "--subresource=status",
        "-n",
        "metallb-system"
    ]));
    assert!(!can(&[
        "patch",
        "ipaddresspools.metallb.io",
        "-n",
        "metallb-system"
    ]));
    assert!(can(&["create", "events.events.k8s.io", "-n", "default"]));
    assert!(can(&["create", "secrets", "-n", "metallb-system"]));
    // Least privilege: nothing it does not need.
    assert!(!can(&["delete", "services", "-n", "default"]));
    assert!(!can(&["create", "services", "-n", "default"]));
    assert!(!can(&["get", "secrets", "-n", "default"]));
    assert!(!can(&["list", "secrets", "-n", "metallb-system"]));
    assert!(!can(&[
        "create",
        "ipaddresspools.metallb.io",
        "-n",
        "metallb-system"
    ]));
    assert!(!can(&[
        "update",
        "ipaddresspools.metallb.io",
        "-n",
        "metallb-system"
    ]));
    assert!(!can(&["list", "pods", "--all-namespaces"]));
}

async fn first_ip_event_pool_status_metrics_and_release_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-first";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("first", &["198.51.100.10-198.51.100.19"], ""));
    // The controller creates the memberlist Secret, owned by its Deployment.
    cluster.kubectl(&[
        "delete",
        "secret",
        "-n",
        "metallb-system",
        "memberlist",
        "--ignore-not-found",
    ]);
    let herald = Herald::start(cluster.plane, "first-0", &["--deployment=controller"]);
    wait_ready(&herald).await;

    cluster.apply(&service_yaml(ns, "web", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "web", &["198.51.100.10"]).await;
    assert_eq!(
        cluster
            .annotation(ns, "web", POOL_ANNOTATION)
            .await
            .as_deref(),
        Some("first")
    );
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
    assert!(
        metrics.contains("metallb_allocator_addresses_in_use_total{pool=\"first\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metallb_allocator_addresses_total{pool=\"first\"} 10"),
        "{metrics}"
    );
    for line in [
        "metallb_allocator_ipv4_addresses_in_use_total{pool=\"first\"} 1",
        "metallb_allocator_ipv6_addresses_in_use_total{pool=\"first\"} 0",
        "metallb_allocator_ipv4_addresses_total{pool=\"first\"} 10",
        "metallb_allocator_ipv6_addresses_total{pool=\"first\"} 0",
        "metallb_k8s_client_config_loaded_bool 1",
        "metallb_k8s_client_config_stale_bool 0",
        "metallb_k8s_client_update_errors_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("metallb_k8s_client_updates_total ") >= 1.0,
        "{metrics}"
    );
    assert!(
        count("herald_controller_reconcile_seconds_count ") >= 1.0,
        "reconcile latency histogram: {metrics}"
    );
    assert!(
        count("herald_controller_full_pass_seconds_count ") >= 1.0,
        "{metrics}"
    );
    // Liveness, and the structured log of the write with its service, pool and IP fields.
    assert_eq!(
        Herald::http_get(herald.health_port, "/healthz").map(|(code, _)| code),
        Some(200)
    );
    let log = herald.log_text();
    assert!(
        log.lines().any(|l| l.contains("service=t-first/web")
            && l.contains("pool=first")
            && l.contains("ip=198.51.100.10")
            && l.contains("address assigned")),
        "{log}"
    );
    let state = cluster
        .configuration_state()
        .await
        .expect("ConfigurationState controller");
    assert_eq!(state["status"]["result"], "Valid", "{state}");
    // The memberlist Secret.
    let key = cluster.kubectl(&[
        "get",
        "secret",
        "-n",
        "metallb-system",
        "memberlist",
        "-o",
        "jsonpath={.data.secretkey}",
    ]);
    assert_eq!(
        key.trim().len(),
        32,
        "base64 of the 22-character key: {key}"
    );
    let owner = cluster.kubectl(&[
        "get",
        "secret",
        "-n",
        "metallb-system",
        "memberlist",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].uid}",
    ]);
    let deployment_uid = cluster.kubectl(&[
        "get",
        "deployment",
        "-n",
        "metallb-system",
        "controller",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(
        owner.trim(),
        format!("Deployment/controller/{}", deployment_uid.trim())
    );

    // Type change releases; the next Service gets the freed first address.
    cluster.kubectl(&[
        "patch",
        "service",
        "-n",
        ns,
        "web",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    // The API server itself clears status.loadBalancer when the type leaves LoadBalancer
    // (registry/core/service/strategy.go), so the empty ingress alone proves nothing about
    // Herald: wait for the pool annotation, which only the controller removes.
    wait_ingress(&cluster, &herald, ns, "web", &[]).await;
    wait_for(
        "pool annotation removed from the ClusterIP Service",
        || async {
            cluster
                .annotation(ns, "web", POOL_ANNOTATION)
                .await
                .is_none()
                .then_some(())
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    cluster.apply(&service_yaml(ns, "api", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "api", &["198.51.100.10"]).await;
    // Delete releases too.
    cluster.kubectl(&["delete", "service", "-n", ns, "api"]);
    cluster.apply(&service_yaml(ns, "api2", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "api2", &["198.51.100.10"]).await;

    cluster.cleanup(ns, &["first"]);
}

async fn requested_ip_pool_annotation_sharing_and_refusals_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-requests";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("blue", &["198.51.100.40-198.51.100.49"], ""));
    cluster.apply(&pool_yaml(
        "green",
        &["198.51.100.50/31"],
        "  autoAssign: false\n",
    ));
    let herald = Herald::start(cluster.plane, "requests-0", &[]);
    wait_ready(&herald).await;

    // A specific IP.
    cluster.apply(&service_yaml(
        ns,
        "fixed",
        80,
        &[("metallb.io/loadBalancerIPs", "198.51.100.45")],
        "",
    ));
    wait_ingress(&cluster, &herald, ns, "fixed", &["198.51.100.45"]).await;
    assert_eq!(
        cluster
            .annotation(ns, "fixed", POOL_ANNOTATION)
            .await
            .as_deref(),
        Some("blue")
    );

    // A pool annotation (the pool does not auto-assign; asking by name still works).
    cluster.apply(&service_yaml(
        ns,
        "pinned",
        80,
        &[("metallb.io/address-pool", "green")],
        "",
    ));
    wait_ingress(&cluster, &herald, ns, "pinned", &["198.51.100.50"]).await;
    assert_eq!(
        cluster
            .annotation(ns, "pinned", POOL_ANNOTATION)
            .await
            .as_deref(),
        Some("green")
    );

    // Two Services sharing one IP (same key, different ports).
    cluster.apply(&service_yaml(
        ns,
        "share-a",
        80,
        &[("metallb.io/allow-shared-ip", "k")],
        "",
    ));
    wait_ingress(&cluster, &herald, ns, "share-a", &["198.51.100.40"]).await;
    cluster.apply(&service_yaml(
        ns,
        "share-b",
        443,
        &[("metallb.io/allow-shared-ip", "k")],
        "",
    ));
    wait_ingress(&cluster, &herald, ns, "share-b", &["198.51.100.40"]).await;
    // Without the key, the next Service gets its own address.
    cluster.apply(&service_yaml(ns, "alone", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "alone", &["198.51.100.41"]).await;

    // Out of every pool: AllocationFailed, pending, nobody else touched.
    cluster.apply(&service_yaml(
        ns,
        "outside",
        80,
        &[("metallb.io/loadBalancerIPs", "203.0.113.99")],
        "",
    ));
    let (kind, note, _) = wait_event(&cluster, &herald, ns, "outside", "AllocationFailed").await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("203.0.113.99") && note.contains("not allowed"),
        "{note}"
    );
    assert_eq!(cluster.ingress(ns, "outside").await, Vec::<String>::new());

    // Malformed request: the Event names the field and the value.
    cluster.apply(&service_yaml(
        ns,
        "garbage",
        80,
        &[("metallb.io/loadBalancerIPs", "not-an-ip")],
        "",
    ));
    let (_, note, _) = wait_event(&cluster, &herald, ns, "garbage", "AllocationFailed").await;
    assert!(
        note.contains("loadBalancerIPs") && note.contains("not-an-ip"),
        "{note}"
    );

    // Two addresses of one family on a Service without an address: refused, naming both.
    cluster.apply(&service_yaml(
        ns,
        "twofour",
        80,
        &[("metallb.io/loadBalancerIPs", "198.51.100.43,198.51.100.44")],
        "",
    ));
    let (kind, note, _) = wait_event(&cluster, &herald, ns, "twofour", "AllocationFailed").await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("loadBalancerIPs")
            && note.contains("198.51.100.43")
            && note.contains("198.51.100.44"),
        "{note}"
    );
    assert_eq!(cluster.ingress(ns, "twofour").await, Vec::<String>::new());

    // A deprecated annotation still works, with a warning naming it.
    cluster.apply(&service_yaml(
        ns,
        "old-style",
        80,
        &[("metallb.universe.tf/loadBalancerIPs", "198.51.100.47")],
        "",
    ));
    wait_ingress(&cluster, &herald, ns, "old-style", &["198.51.100.47"]).await;
    let (kind, note, _) =
        wait_event(&cluster, &herald, ns, "old-style", "deprecatedAnnotation").await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("metallb.universe.tf/loadBalancerIPs"),
        "{note}"
    );

    // An unknown pool.
    cluster.apply(&service_yaml(
        ns,
        "nopool",
        80,
        &[("metallb.io/address-pool", "nope")],
        "",
    ));
    let (_, note, _) = wait_event(&cluster, &herald, ns, "nopool", "AllocationFailed").await;
    assert!(note.contains("nope"), "{note}");

    // A request that turns malformed (two IPs of one family) on a Service holding an address:
    // LoadBalancerFailed, and the address is kept.
    cluster.apply(&service_yaml(
        ns,
        "fixed",
        80,
        &[("metallb.io/loadBalancerIPs", "198.51.100.45,198.51.100.46")],
        "",
    ));
    let (kind, note, _) = wait_event(&cluster, &herald, ns, "fixed", "LoadBalancerFailed").await;
    assert_eq!(kind, "Warning");
    assert!(note.contains("198.51.100.46"), "{note}");
    assert_eq!(
        cluster.ingress(ns, "fixed").await,
        vec!["198.51.100.45".to_string()]
    );

    // Another loadBalancerClass is never touched.
    cluster.apply(&service_yaml(
        ns,
        "other-class",
        80,
        &[],
        "  loadBalancerClass: example.com/other\n",
    ));
    cluster.apply(&service_yaml(ns, "after-other", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "after-other", &["198.51.100.42"]).await;
    assert_eq!(
        cluster.ingress(ns, "other-class").await,
        Vec::<String>::new()
    );
    assert_eq!(
        cluster.events(ns, "Service", "other-class").await,
        Vec::<(String, String, String, String)>::new()
    );

    // Everyone else kept their address through all of this.
    for (name, ip) in [
        ("fixed", "198.51.100.45"),
        ("pinned", "198.51.100.50"),
        ("share-a", "198.51.100.40"),
        ("share-b", "198.51.100.40"),
        ("alone", "198.51.100.41"),
        ("old-style", "198.51.100.47"),
    ] {
        assert_eq!(
            cluster.ingress(ns, name).await,
            vec![ip.to_string()],
            "{name}"
        );
    }
    cluster.cleanup(ns, &["blue", "green"]);
}

/// Many Services at once (their writes run concurrently) and one Service changed several times in
/// quick succession (its writes apply one at a time, in decision order): every Service ends with
/// its own address and the annotation of its pool, and the last request wins.
async fn burst_and_rapid_changes_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-burst";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("burst", &["198.51.100.100-198.51.100.111"], ""));
    let herald = Herald::start(cluster.plane, "burst-0", &[]);
    wait_ready(&herald).await;

    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let yaml: Vec<String> = names
        .iter()
        .map(|name| service_yaml(ns, name, 80, &[], ""))
        .collect();
    cluster.apply(&yaml.join("---\n"));
    let mut held = std::collections::BTreeMap::new();
    for name in &names {
        let ips = wait_for(
            &format!("{ns}/{name} gets an address"),
            || async { Some(cluster.ingress(ns, name).await).filter(|ips| !ips.is_empty()) },
            || format!("herald log:\n{}", tail(&herald.log_text())),
        )
        .await;
        assert_eq!(ips.len(), 1, "{name}: {ips:?}");
        assert_eq!(
            cluster
                .annotation(ns, name, POOL_ANNOTATION)
                .await
                .as_deref(),
            Some("burst"),
            "{name}"
        );
        held.insert(name.clone(), ips[0].clone());
    }
    // Distinct, and the pool's first eight (the lowest free address each time).
    let mut addresses: Vec<&String> = held.values().collect();
    addresses.sort();
    addresses.dedup();
    let first_eight: Vec<String> = (100..108).map(|i| format!("198.51.100.{i}")).collect();
    assert_eq!(
        addresses.into_iter().cloned().collect::<Vec<_>>(),
        first_eight,
        "{held:?}"
    );
    for name in &names {
        let (kind, note, _) = wait_event(&cluster, &herald, ns, name, "IPAllocated").await;
        assert_eq!(kind, "Normal");
        assert!(note.contains(&held[name]), "{name}: {note}");
    }

    // s0 asks for three other addresses one right after the other: the last one wins.
    for ip in ["198.51.100.108", "198.51.100.109", "198.51.100.110"] {
        cluster.apply(&service_yaml(
            ns,
            "s0",
            80,
            &[("metallb.io/loadBalancerIPs", ip)],
            "",
        ));
    }
    wait_ingress(&cluster, &herald, ns, "s0", &["198.51.100.110"]).await;
    assert_eq!(
        cluster
            .annotation(ns, "s0", POOL_ANNOTATION)
            .await
            .as_deref(),
        Some("burst")
    );
    for name in names.iter().skip(1) {
        assert_eq!(
            cluster.ingress(ns, name).await,
            vec![held[name].clone()],
            "{name}"
        );
    }
    cluster.cleanup(ns, &["burst"]);
}

async fn lb_class_flag_handles_only_that_class_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-class";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("classy", &["198.51.100.90-198.51.100.99"], ""));
    // Also: --log-level applies when RUST_LOG is unset (warn: no info lines).
    let herald = Herald::start_with_log(
        cluster.plane,
        "class-0",
        &["--lb-class=herald.example/lb", "--log-level=warn"],
        None,
    );
    wait_ready(&herald).await;
    cluster.apply(&service_yaml(ns, "unclassed", 80, &[], ""));
    cluster.apply(&service_yaml(
        ns,
        "ours",
        80,
        &[],
        "  loadBalancerClass: herald.example/lb\n",
    ));
    wait_ingress(&cluster, &herald, ns, "ours", &["198.51.100.90"]).await;
    assert_eq!(cluster.ingress(ns, "unclassed").await, Vec::<String>::new());
    let log = herald.log_text();
    assert!(
        !log.contains(" INFO "),
        "--log-level=warn still logged info:\n{log}"
    );
    cluster.cleanup(ns, &["classy"]);
}

async fn pool_shrink_clears_and_reallocates_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-shrink";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("shrink", &["198.51.100.60-198.51.100.69"], ""));
    let herald = Herald::start(cluster.plane, "shrink-0", &[]);
    wait_ready(&herald).await;
    cluster.apply(&service_yaml(ns, "a", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "a", &["198.51.100.60"]).await;
    cluster.apply(&service_yaml(ns, "b", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "b", &["198.51.100.61"]).await;

    cluster.apply(&pool_yaml("shrink", &["198.51.100.61-198.51.100.69"], ""));
    let (kind, _, _) = wait_event(&cluster, &herald, ns, "a", "ClearAssignment").await;
    assert_eq!(kind, "Normal");
    wait_ingress(&cluster, &herald, ns, "a", &["198.51.100.62"]).await;
    assert_eq!(
        cluster.ingress(ns, "b").await,
        vec!["198.51.100.61".to_string()]
    );
    cluster.cleanup(ns, &["shrink"]);
}

async fn restart_keeps_every_address_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-restart";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml(
        "restart",
        &["198.51.100.100-198.51.100.109"],
        "",
    ));
    let mut herald = Herald::start(cluster.plane, "restart-0", &[]);
    wait_ready(&herald).await;
    let names = ["s0", "s1", "s2", "s3", "s4"];
    for (i, name) in names.iter().enumerate() {
        cluster.apply(&service_yaml(ns, name, 80, &[], ""));
        wait_ingress(
            &cluster,
            &herald,
            ns,
            name,
            &[&format!("198.51.100.{}", 100 + i)],
        )
        .await;
    }
    herald.stop();
    // While it is down: a middle address is freed and new Services appear. The watch cache
    // lists them in no particular order, so a controller that allocated before re-claiming
    // would hand the newcomers addresses that others still hold.
    cluster.kubectl(&["delete", "service", "-n", ns, "s2"]);
    for name in ["late-a", "late-b", "late-c"] {
        cluster.apply(&service_yaml(ns, name, 80, &[], ""));
    }

    let herald = Herald::start(cluster.plane, "restart-1", &[]);
    wait_ready(&herald).await;
    let mut late = Vec::new();
    for name in ["late-a", "late-b", "late-c"] {
        let ip = wait_for(
            &format!("{name} gets an address"),
            || async { cluster.ingress(ns, name).await.into_iter().next() },
            || format!("herald log:\n{}", tail(&herald.log_text())),
        )
        .await;
        late.push(ip);
    }
    late.sort();
    // The freed address first, then the next free ones; no compaction, no shuffling.
    assert_eq!(late, ["198.51.100.102", "198.51.100.105", "198.51.100.106"]);
    for (name, ip) in [
        ("s0", "198.51.100.100"),
        ("s1", "198.51.100.101"),
        ("s3", "198.51.100.103"),
        ("s4", "198.51.100.104"),
    ] {
        assert_eq!(
            cluster.ingress(ns, name).await,
            vec![ip.to_string()],
            "{name}"
        );
        assert!(
            cluster
                .events(ns, "Service", name)
                .await
                .iter()
                .all(|(reason, ..)| reason != "ClearAssignment"),
            "{name} was never cleared"
        );
    }
    cluster.cleanup(ns, &["restart"]);
}

async fn invalid_pool_is_rejected_and_last_good_config_serves_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-invalid";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("good", &["198.51.100.70-198.51.100.79"], ""));
    let mut herald = Herald::start(cluster.plane, "invalid-0", &[]);
    wait_ready(&herald).await;
    cluster.apply(&service_yaml(ns, "before", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "before", &["198.51.100.70"]).await;

    // Overlapping CIDRs pass the CRD schema but not the configuration rules.
    cluster.apply(&pool_yaml("bad", &["198.51.100.70/31"], ""));
    let state = wait_for(
        "ConfigurationState controller Invalid",
        || async {
            let state = cluster.configuration_state().await?;
            (state["status"]["result"] == "Invalid").then_some(state)
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    let summary = state["status"]["errorSummary"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("bad"),
        "error summary names the pool: {summary}"
    );
    let events = cluster
        .events("metallb-system", "ConfigurationState", "controller")
        .await;
    assert!(
        events
            .iter()
            .any(|(reason, kind, ..)| reason == "ConfigurationError" && kind == "Warning"),
        "{events:?}"
    );
    assert!(
        herald
            .metrics()
            .contains("metallb_k8s_client_config_stale_bool 1")
    );

    // The last valid configuration keeps serving: nothing lost, new Services allocated.
    cluster.apply(&service_yaml(ns, "during", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "during", &["198.51.100.71"]).await;
    assert_eq!(
        cluster.ingress(ns, "before").await,
        vec!["198.51.100.70".to_string()]
    );

    // A controller started while the configuration is invalid has no valid one to serve: it
    // touches nothing (no address is lost) until the configuration is fixed.
    herald.stop();
    let herald = Herald::start(cluster.plane, "invalid-1", &[]);
    wait_ready(&herald).await;
    wait_for(
        "invalid-1 leads and found the configuration invalid",
        || async {
            herald
                .metrics()
                .contains("metallb_k8s_client_config_stale_bool 1")
                .then_some(())
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    let updates = || {
        herald
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("metallb_k8s_client_updates_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let seen = updates();
    cluster.apply(&service_yaml(ns, "while-invalid", 80, &[], ""));
    wait_for(
        "invalid-1 processed the new Service",
        || async { (updates() > seen).then_some(()) },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    assert_eq!(
        cluster.ingress(ns, "while-invalid").await,
        Vec::<String>::new(),
        "allocated while the configuration is invalid"
    );
    for (name, ip) in [("before", "198.51.100.70"), ("during", "198.51.100.71")] {
        assert_eq!(
            cluster.ingress(ns, name).await,
            vec![ip.to_string()],
            "{name}"
        );
    }

    // Fixing it makes the configuration valid again; the waiting Service is served.
    cluster.kubectl(&["delete", "ipaddresspool", "-n", "metallb-system", "bad"]);
    wait_ingress(&cluster, &herald, ns, "while-invalid", &["198.51.100.72"]).await;
    for (name, ip) in [("before", "198.51.100.70"), ("during", "198.51.100.71")] {
        assert_eq!(
            cluster.ingress(ns, name).await,
            vec![ip.to_string()],
            "{name}"
        );
    }
    wait_for(
        "ConfigurationState controller Valid again",
        || async {
            (cluster.configuration_state().await?["status"]["result"] == "Valid").then_some(())
        },
        || format!("herald log:\n{}", tail(&herald.log_text())),
    )
    .await;
    assert!(
        herald
            .metrics()
            .contains("metallb_k8s_client_config_stale_bool 0")
    );

    // Every integer the API server accepts decodes: a priority past 2^31 (a Go `int` in
    // MetalLB) neither stops the pool watch nor keeps a restarted controller from serving,
    // and it is honoured (a positive priority is tried before the unset one).
    cluster.apply(&pool_yaml(
        "huge",
        &["198.51.100.80-198.51.100.81"],
        "  serviceAllocation:\n    priority: 2147483648\n",
    ));
    let mut herald = herald;
    herald.stop();
    let herald = Herald::start(cluster.plane, "invalid-2", &[]);
    wait_ready(&herald).await;
    cluster.apply(&service_yaml(ns, "after-huge", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "after-huge", &["198.51.100.80"]).await;
    cluster.cleanup(ns, &["good", "bad", "huge"]);
}

/// The Lease holder, as the API server sees it.
fn lease_holder(cluster: &Cluster) -> String {
    cluster
        .plane
        .kubectl_run(&[
            "get",
            "lease",
            "-n",
            "metallb-system",
            "metallb-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn api_writes(herald: &Herald) -> u64 {
    herald
        .metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("herald_controller_api_writes_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Two controller replicas `<prefix>-a` and `<prefix>-b` with a lease of `lease_s` seconds,
/// both ready; returns them and the lease holder's name.
async fn two_replicas(cluster: &Cluster, prefix: &str, lease_s: u64) -> (Herald, Herald, String) {
    let lease = [format!("--lease-duration={lease_s}")];
    let lease: Vec<&str> = lease.iter().map(String::as_str).collect();
    let names = [format!("{prefix}-a"), format!("{prefix}-b")];
    let a = Herald::start(cluster.plane, &names[0], &lease);
    let b = Herald::start(cluster.plane, &names[1], &lease);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let holder = wait_for(
        "a lease holder",
        || async { Some(lease_holder(cluster)).filter(|h| names.contains(h)) },
        String::new,
    )
    .await;
    (a, b, holder)
}

/// A leader frozen past its lease (SIGSTOP: a stalled VM, a hung renewal) writes nothing once it
/// thaws, even before its election notices that another replica leads: every leader-only write
/// checks the lease's deadline on this replica's own clock when it is sent.
async fn frozen_leader_writes_nothing_after_thaw_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-frozen";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml("frozen", &["198.51.100.120-198.51.100.129"], ""));
    let (mut a, mut b, holder) = two_replicas(&cluster, "frozen", 6).await;
    cluster.apply(&service_yaml(ns, "one", 80, &[], ""));
    wait_ingress(&cluster, &a, ns, "one", &["198.51.100.120"]).await;
    let (leader, follower) = if holder == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // Its writes settle (pool status follows the Service writes on a timer) before counting.
    let mut written = api_writes(leader);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = api_writes(leader);
        if now == written {
            break;
        }
        written = now;
    }

    // Freeze the leader; the other takes over once the lease runs out, and serves.
    leader.signal(libc::SIGSTOP);
    let follower_name = follower.name.clone();
    wait_for(
        "the other replica leads",
        || async { (lease_holder(&cluster) == follower_name).then_some(()) },
        String::new,
    )
    .await;
    cluster.apply(&service_yaml(ns, "two", 80, &[], ""));
    wait_ingress(&cluster, follower, ns, "two", &["198.51.100.121"]).await;

    // Freeze the new leader too, and take the address away from "two": whoever writes now
    // writes as leader. Then thaw the old one, which still believes it leads.
    follower.signal(libc::SIGSTOP);
    cluster.kubectl(&[
        "patch",
        "service",
        "two",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        "{\"status\":{\"loadBalancer\":{\"ingress\":null}}}",
    ]);
    leader.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = api_writes(leader);
    let ingress = cluster.ingress(ns, "two").await;
    follower.signal(libc::SIGCONT);
    assert_eq!(
        after,
        written,
        "the thawed old leader wrote; \"two\" now holds {ingress:?}\n{}",
        tail(&leader.log_text())
    );
    assert_eq!(
        ingress,
        Vec::<String>::new(),
        "nobody wrote while frozen or stale"
    );

    // The real leader, thawed, serves it again.
    let follower_ref: &Herald = follower;
    wait_ingress(&cluster, follower_ref, ns, "two", &["198.51.100.121"]).await;
    cluster.cleanup(ns, &["frozen"]);
}

async fn two_replicas_one_leader_writes_and_fails_over_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-replicas";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml(
        "replicas",
        &["198.51.100.110-198.51.100.119"],
        "",
    ));
    // client-go's default lease (15 s: renew deadline 10 s, retry 2 s), so that a leader
    // stalled for a second or two on a loaded CI machine does not lose the lease mid-test; the
    // takeover after the kill then takes ~15-17 s, well within the waits' deadline.
    let (mut a, mut b, holder) = two_replicas(&cluster, "replica", 15).await;

    cluster.apply(&service_yaml(ns, "one", 80, &[], ""));
    wait_ingress(&cluster, &a, ns, "one", &["198.51.100.110"]).await;
    let (leader, follower) = if holder == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(api_writes(leader) > 0, "the leader wrote");
    assert_eq!(api_writes(follower), 0, "the follower never writes");

    // The leader crashes: the other takes over once the lease expires, and keeps every address.
    leader.kill();
    let follower_name = follower.name.clone();
    wait_for(
        "the other replica leads",
        || async { (lease_holder(&cluster) == follower_name).then_some(()) },
        String::new,
    )
    .await;
    cluster.apply(&service_yaml(ns, "two", 80, &[], ""));
    wait_ingress(&cluster, follower, ns, "two", &["198.51.100.111"]).await;
    assert_eq!(
        cluster.ingress(ns, "one").await,
        vec!["198.51.100.110".to_string()]
    );
    assert!(api_writes(follower) > 0);
    cluster.cleanup(ns, &["replicas"]);
    // Release the 15 s lease (a graceful stop does), or the next test's controller would wait
    // for it to run out before leading.
    follower.stop();
}

async fn api_server_restart_mid_run_recovers_scenario() {
    let cluster = Cluster::reset().await;
    let ns = "t-apirestart";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&pool_yaml(
        "apirestart",
        &["198.51.100.120-198.51.100.129"],
        "",
    ));
    let mut herald = Herald::start(cluster.plane, "apirestart-0", &[]);
    wait_ready(&herald).await;
    cluster.apply(&service_yaml(ns, "before", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "before", &["198.51.100.120"]).await;

    cluster
        .plane
        .restart_apiserver(Duration::from_secs(5))
        .expect("restarting kube-apiserver");
    assert!(
        herald.running(),
        "the controller survives the API server going away"
    );
    let cluster = Cluster::new().await;
    cluster.apply(&service_yaml(ns, "after", 80, &[], ""));
    wait_ingress(&cluster, &herald, ns, "after", &["198.51.100.121"]).await;
    assert_eq!(
        cluster.ingress(ns, "before").await,
        vec!["198.51.100.120".to_string()]
    );
    assert!(herald.running());
    cluster.cleanup(ns, &["apirestart"]);
}

/// Runs one scenario alone (they share the cluster's configuration) on its own runtime.
fn run_serial(scenario: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario);
}

#[test]
fn manifests_apply_and_rbac_is_least_privilege() {
    run_serial(manifests_apply_and_rbac_is_least_privilege_scenario());
}

#[test]
fn first_ip_event_pool_status_metrics_and_release() {
    run_serial(first_ip_event_pool_status_metrics_and_release_scenario());
}

#[test]
fn requested_ip_pool_annotation_sharing_and_refusals() {
    run_serial(requested_ip_pool_annotation_sharing_and_refusals_scenario());
}

#[test]
fn burst_and_rapid_changes() {
    run_serial(burst_and_rapid_changes_scenario());
}

#[test]
fn lb_class_flag_handles_only_that_class() {
    run_serial(lb_class_flag_handles_only_that_class_scenario());
}

#[test]
fn pool_shrink_clears_and_reallocates() {
    run_serial(pool_shrink_clears_and_reallocates_scenario());
}

#[test]
fn restart_keeps_every_address() {
    run_serial(restart_keeps_every_address_scenario());
}

#[test]
fn invalid_pool_is_rejected_and_last_good_config_serves() {
    run_serial(invalid_pool_is_rejected_and_last_good_config_serves_scenario());
}

#[test]
fn frozen_leader_writes_nothing_after_thaw() {
    run_serial(frozen_leader_writes_nothing_after_thaw_scenario());
}

#[test]
fn two_replicas_one_leader_writes_and_fails_over() {
    run_serial(two_replicas_one_leader_writes_and_fails_over_scenario());
}

#[test]
fn api_server_restart_mid_run_recovers() {
    run_serial(api_server_restart_mid_run_recovers_scenario());
}
