//! `herald speaker` in BGP mode keeps MetalLB's ServiceBGPStatus objects (one per Service its
//! sessions carry, listing the sorted BGPPeers; updated when the peers change, deleted with the
//! Service), and `herald bgp status` shows its sessions, against a real FRR router and a real
//! kube-apiserver — over plain HTTP, and over HTTPS behind the API server's TokenReview and
//! SubjectAccessReview (`--metrics-authz`).
//!
//! Needs root, the XDP object, `cargo xtask kube build`, `cargo build -p herald`, the Debian
//! package frr and `openssl`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/bgp_cluster.rs"]
mod bgp_cluster;
#[path = "support/kube/mod.rs"]
mod kube_support;
#[path = "support/routers/mod.rs"]
mod routers;

use std::net::IpAddr;

use bgp_cluster::*;
use herald_tests::{herald_bin, poll_until, unique};
use kube_support::cluster::Cluster;
use kube_support::speaker::Speaker;
use routers::{Family, Lan, RouterKind};

/// This node's ServiceBGPStatus objects of Service `web` in `ns`, as JSON items.
fn bgp_statuses(cluster: &Cluster, node: &str, ns: &str) -> Vec<serde_json::Value> {
    let out = cluster.kubectl(&[
        "get",
        "servicebgpstatuses",
        "-n",
        "metallb-system",
        "-l",
        &format!(
            "metallb.io/node={node},metallb.io/service-name=web,metallb.io/service-namespace={ns}"
        ),
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// `herald bgp status -o FORMAT` against `speaker`, run in its node's namespace: its stdout.
fn bgp_status(speaker: &Speaker, format: &str) -> Option<Vec<u8>> {
    let out = bgp_status_command(speaker, "http", &["-o", format])?;
    out.status.success().then_some(out.stdout)
}

/// `herald bgp status ARGS` against `speaker` over `scheme`, run in its node's namespace.
fn bgp_status_command(
    speaker: &Speaker,
    scheme: &str,
    args: &[&str],
) -> Option<std::process::Output> {
    std::process::Command::new("ip")
        .args(["netns", "exec", &speaker.netns])
        .arg(herald_bin())
        .args(["bgp", "status", "--speaker"])
        .arg(format!("{scheme}://127.0.0.1:{}", speaker.metrics_port))
        .args(args)
        .env_remove("METALLB_HOST")
        .env_remove("HERALD_SPEAKER_URL")
        .output()
        .ok()
}

fn bgp_status_json(speaker: &Speaker) -> Option<serde_json::Value> {
    serde_json::from_slice(&bgp_status(speaker, "json")?).ok()
}

#[test]
fn service_bgp_status_and_bgp_status_command() {
    run_serial(status_objects());
}

#[test]
fn bgp_status_over_https_needs_a_token_allowed_to_get_metrics() {
    run_serial(status_over_https());
}

/// A speaker serving HTTPS with `--metrics-authz`: `herald bgp status` with the CA and a token
/// whose user may `get` `/metrics` shows the session; without a token it is refused (401), and
/// with a token whose user may not, forbidden (403).
async fn status_over_https() {
    let (cluster, bpffs, lan) = bgp_world("hbt", 1).await;
    let plane = cluster.plane;
    let node = unique("hbt-node");
    let router = dual_stack_router(RouterKind::Frr, &lan).expect("router");
    let ns = unique("speaker-bgp-tls");
    base_objects(&cluster, &ns, &[&node], "");
    cluster.apply(&peer_yaml("r4", IpAddr::V4(Lan::ROUTER_V4), NODE_AS, ""));
    cluster.announced_web_service(&ns, &[SERVICE_IP], &node);
    // The speaker may ask the API server (auth-delegator); `scraper` may get /metrics.
    let manifests = kube_support::control_plane::workspace_root().join("manifests");
    let access = manifests.join("metrics-access.yaml").display().to_string();
    cluster.kubectl(&["apply", "-f", &access]);
    cluster.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: bgp-scraper\n  namespace: metallb-system\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: bgp-stranger\n  namespace: metallb-system\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: bgp-scraper-reads-metrics\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: metallb-metrics-reader\nsubjects:\n- kind: ServiceAccount\n  name: bgp-scraper\n  namespace: metallb-system\n",
    );
    let token_file = |sa: &str| {
        let token = cluster.kubectl(&["create", "token", sa, "-n", "metallb-system"]);
        let path = plane.dir.join(format!("{}.token", unique(sa)));
        std::fs::write(&path, token.trim()).unwrap();
        path.display().to_string()
    };
    let (scraper, stranger) = (token_file("bgp-scraper"), token_file("bgp-stranger"));
    let (ca, cert, key) = kube_support::tls::ca_signed(&plane.dir, "speaker-metrics");
    let speaker = Speaker::start_with(
        plane,
        &lan.hosts[0],
        &node,
        &bpffs,
        &[
            &format!("--metrics-tls-cert={cert}"),
            &format!("--metrics-tls-key={key}"),
            "--metrics-authz",
        ],
    );
    let context = || format!("speaker:\n{}\nrouter:\n{}", speaker.logs(), router.logs());
    let with = |token: Option<&str>| {
        let mut args = vec!["-o", "json", "--ca-cert", ca.as_str()];
        if let Some(token) = token {
            args.extend(["--token-file", token]);
        }
        bgp_status_command(&speaker, "https", &args)
    };

    let mut last = None;
    let shown = poll_until(PATIENCE, || {
        last = with(Some(&scraper));
        last.as_ref()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|status| {
                status["sessions"].as_array().is_some_and(|sessions| {
                    sessions
                        .iter()
                        .any(|s| s["peer"] == "r4" && s["state"] == "Established")
                })
            })
    });
    assert!(
        shown,
        "herald bgp status over HTTPS with the scraper's token: {last:?}\n{}",
        context()
    );
    for (token, code) in [(None, "401"), (Some(stranger.as_str()), "403")] {
        let out = with(token).expect("herald bgp status");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("HTTP {code}")),
            "token {token:?}: expected a refusal naming {code}: {out:?}"
        );
    }
    // Plain HTTP is not served.
    let plain = bgp_status_command(&speaker, "http", &["-o", "json"]).expect("herald bgp status");
    assert!(!plain.status.success(), "plain HTTP answered: {plain:?}");
    cluster.kubectl(&["delete", "clusterrolebinding", "bgp-scraper-reads-metrics"]);
    cluster.kubectl(&["delete", "-f", &access]);
    cluster.kubectl(&[
        "delete",
        "sa",
        "bgp-scraper",
        "bgp-stranger",
        "-n",
        "metallb-system",
    ]);
}

/// The speaker keeps one ServiceBGPStatus per Service its sessions carry, listing the sorted
/// BGPPeers (updated when the set changes, deleted with the Service), and `herald bgp status`
/// shows the established session with its prefix counts.
async fn status_objects() {
    let (cluster, bpffs, lan) = bgp_world("hbs", 1).await;
    let plane = cluster.plane;
    let node = unique("hbs-node");
    let router = dual_stack_router(RouterKind::Frr, &lan).expect("router");
    let ns = unique("speaker-bgp");
    base_objects(&cluster, &ns, &[&node], "");
    // Applied r6 first: the list is sorted, not in creation order.
    cluster.apply(&peer_yaml("r6", IpAddr::V6(Lan::ROUTER_V6), NODE_AS, ""));
    cluster.apply(&peer_yaml("r4", IpAddr::V4(Lan::ROUTER_V4), NODE_AS, ""));
    cluster.announced_web_service(&ns, &[SERVICE_IP, SERVICE_IP6], &node);
    let speaker = Speaker::start(plane, &lan.hosts[0], &node, &bpffs);
    let context = || {
        format!(
            "speaker:\n{}\nrouter:\n{}\nServiceBGPStatus:\n{}",
            speaker.logs(),
            router.logs(),
            cluster
                .plane
                .kubectl_run(&["get", "servicebgpstatuses", "-A", "-o", "yaml"])
                .unwrap_or_default()
        )
    };

    // One object, MetalLB's name, labels and fields, both peers sorted.
    let peers_are = |want: &'static [&'static str]| {
        let (cluster, node, ns) = (&cluster, node.clone(), ns.clone());
        move || {
            let items = bgp_statuses(cluster, &node, &ns);
            let [item] = items.as_slice() else {
                return None;
            };
            let peers: Vec<String> = item["status"]["peers"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            (peers == want).then(|| item.clone())
        }
    };
    let wait_peers = |want: &'static [&'static str]| {
        let probe = peers_are(want);
        async move {
            kube_support::cluster::wait_for(
                &format!("a ServiceBGPStatus with peers {want:?}"),
                || std::future::ready(probe()),
                context,
            )
            .await
        }
    };
    let item = wait_peers(&["r4", "r6"]).await;
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("bgp-"), "{item}");
    assert_eq!(item["status"]["node"], node.as_str(), "{item}");
    assert_eq!(item["status"]["serviceName"], "web", "{item}");
    assert_eq!(item["status"]["serviceNamespace"], ns.as_str(), "{item}");

    // `herald bgp status`: r4 Established, holding the /32 (the /128 cannot go on an IPv4
    // session without MP-BGP: wanted 2, sent 1).
    router
        .wait_routes(Family::Ipv4, |r| find(r, &v4_prefix()).is_some(), PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    let established = |status: &serde_json::Value| {
        status["sessions"].as_array().and_then(|sessions| {
            sessions
                .iter()
                .find(|s| {
                    s["peer"] == "r4" && s["state"] == "Established" && s["prefixesSent"] == 1
                })
                .cloned()
        })
    };
    let mut last = None;
    let r4 = poll_until(PATIENCE, || {
        last = bgp_status_json(&speaker);
        last.as_ref().and_then(established).is_some()
    });
    assert!(r4, "herald bgp status: {last:?}\n{}", context());
    let status = last.unwrap();
    assert_eq!(status["node"], node.as_str(), "{status}");
    let r4 = established(&status).unwrap();
    assert_eq!(r4["address"], "203.0.113.1:179", "{status}");
    assert_eq!(r4["prefixesWanted"], 2, "{status}");
    assert!(r4["uptimeSeconds"].as_u64().is_some(), "{status}");
    let table = String::from_utf8(bgp_status(&speaker, "text").unwrap_or_default()).unwrap();
    eprintln!("herald bgp status:\n{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("r4 ") && l.contains(" Established ")),
        "{table}"
    );

    // BGPPeer r6 removed: the object is updated in place.
    cluster.kubectl(&["delete", "bgppeer", "r6", "-n", "metallb-system"]);
    let updated = wait_peers(&["r4"]).await;
    assert_eq!(
        updated["metadata"]["name"], item["metadata"]["name"],
        "{updated}"
    );

    // Service deleted: the object goes.
    cluster.kubectl(&["delete", "service", "web", "-n", &ns]);
    assert!(
        poll_until(PATIENCE, || bgp_statuses(&cluster, &node, &ns).is_empty()),
        "ServiceBGPStatus left after the Service's deletion\n{}",
        context()
    );
    drop(speaker);
    drop(router);
    let _ = cluster.kubectl(&[
        "delete",
        "servicebgpstatuses",
        "-n",
        "metallb-system",
        "-l",
        &format!("metallb.io/node={node}"),
        "--ignore-not-found",
    ]);
    cluster.clear_bgp_objects();
}
