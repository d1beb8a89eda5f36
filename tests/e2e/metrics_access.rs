//! `/metrics` over HTTPS behind the API server's TokenReview and SubjectAccessReview, on the
//! real kube-apiserver with the RBAC in `manifests/` and `manifests/metrics-access.yaml`: the
//! real `herald controller` as its service account refuses a missing or invalid token (401)
//! and a token whose user may not get `/metrics` (403), serves one that may, answers 503 while
//! it cannot ask the API server (no auth-delegator binding yet), and keeps its probes open.
//!
//! Needs `cargo xtask kube build`, `cargo build -p herald`, and `openssl` and `curl`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/kube/mod.rs"]
mod kube_support;

use std::process::Command;
use std::time::{Duration, Instant};

use kube_support::cluster::{Cluster, serial};
use kube_support::herald::Herald;

const PATIENCE: Duration = Duration::from_secs(60);

/// `curl` of `url`, trusting `ca`, with an optional bearer token: the HTTP status (0 when no
/// HTTP answer came).
fn status(url: &str, ca: &str, token: Option<&str>) -> u16 {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "--cacert",
        ca,
        url,
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn body(url: &str, ca: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert", ca, url, "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn poll(what: &str, mut cond: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn scenario() {
    let cluster = Cluster::reset().await;
    let plane = &cluster.plane;
    let (cert, key) = kube_support::tls::self_signed(&plane.dir, "metrics");
    let herald = Herald::start(
        plane,
        "metrics-tls",
        &[
            &format!("--metrics-tls-cert={cert}"),
            &format!("--metrics-tls-key={key}"),
            "--metrics-authz",
        ],
    );
    let url = format!("https://127.0.0.1:{}/metrics", herald.metrics_port);
    let log = || herald.log_text();
    // Identities of scrapers: one allowed to read metrics, one not.
    cluster.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: scraper\n  namespace: metallb-system\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: stranger\n  namespace: metallb-system\n",
    );
    let token = |sa: &str| {
        cluster
            .kubectl(&["create", "token", sa, "-n", "metallb-system"])
            .trim()
            .to_string()
    };
    let (scraper, stranger) = (token("scraper"), token("stranger"));

    // Served over TLS only; without a token nothing is asked of the API server.
    poll(
        "the metrics endpoint never answered over TLS",
        || status(&url, &cert, None) == 401,
        log,
    );
    let plain = format!("http://127.0.0.1:{}/metrics", herald.metrics_port);
    assert_ne!(
        status(&plain, &cert, Some(&scraper)),
        200,
        "plain HTTP served"
    );
    // The controller may not ask the API server yet (no system:auth-delegator): refused, 503.
    assert_eq!(status(&url, &cert, Some(&scraper)), 503, "{}", log());

    let manifests = kube_support::control_plane::workspace_root().join("manifests");
    cluster.kubectl(&[
        "apply",
        "-f",
        &manifests.join("metrics-access.yaml").display().to_string(),
    ]);
    cluster.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: scraper-reads-metrics\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: metallb-metrics-reader\nsubjects:\n- kind: ServiceAccount\n  name: scraper\n  namespace: metallb-system\n",
    );
    // Failures are not remembered: the next scrape asks again and is let in.
    poll(
        "the scraper was never let in",
        || status(&url, &cert, Some(&scraper)) == 200,
        log,
    );
    assert!(
        body(&url, &cert, &scraper).contains("metallb_k8s_client_updates_total"),
        "{}",
        body(&url, &cert, &scraper)
    );
    assert_eq!(status(&url, &cert, Some(&stranger)), 403);
    assert_eq!(status(&url, &cert, Some("not-a-token")), 401);
    assert_eq!(status(&url, &cert, None), 401);
    // The probes stay plain and open (kubelet sends no token).
    assert_eq!(
        Herald::http_get(herald.health_port, "/healthz").map(|r| r.0),
        Some(200)
    );
    cluster.kubectl(&["delete", "clusterrolebinding", "scraper-reads-metrics"]);
    cluster.kubectl(&[
        "delete",
        "-f",
        &manifests.join("metrics-access.yaml").display().to_string(),
    ]);
    cluster.kubectl(&[
        "delete",
        "sa",
        "scraper",
        "stranger",
        "-n",
        "metallb-system",
    ]);
}

#[test]
fn metrics_over_https_need_a_token_allowed_to_get_them() {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}
