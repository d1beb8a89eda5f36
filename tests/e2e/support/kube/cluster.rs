//! Test-side access to the control plane as admin: apply YAML, read Services, Events and pool
//! status, and wait for conditions by polling with a generous deadline.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::control_plane::{ControlPlane, control_plane, workspace_root};

/// How long a test waits for the controller to do something (behaviour, not speed, is tested).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Tests share one control plane and one `metallb-system` configuration: they run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The control plane with `manifests/` applied (once per test binary).
pub fn cluster_plane() -> &'static ControlPlane {
    static APPLIED: OnceLock<Result<(), String>> = OnceLock::new();
    let plane = control_plane();
    let applied = APPLIED.get_or_init(|| {
        let manifests = workspace_root().join("manifests");
        plane
            .apply_kustomization(&manifests)
            .map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = applied {
        panic!("kubectl apply -k manifests/ failed: {e}");
    }
    plane
}

pub struct Cluster {
    pub plane: &'static ControlPlane,
    pub client: Client,
}

pub fn pool_resource() -> ApiResource {
    ApiResource {
        group: "metallb.io".into(),
        version: "v1beta1".into(),
        api_version: "metallb.io/v1beta1".into(),
        kind: "IPAddressPool".into(),
        plural: "ipaddresspools".into(),
    }
}

impl Cluster {
    pub async fn new() -> Cluster {
        let plane = cluster_plane();
        let kubeconfig =
            Kubeconfig::read_from(plane.kubeconfig("admin")).expect("admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
        let client = Client::try_from(config).expect("client");
        Cluster { plane, client }
    }

    /// A clean slate for one test: no test Services anywhere, no pools, no communities (a
    /// failed test leaves its objects behind).
    pub async fn reset() -> Cluster {
        let cluster = Cluster::new().await;
        cluster.kubectl(&[
            "delete",
            "service",
            "-A",
            "-l",
            "herald-test=true",
            "--wait=true",
        ]);
        cluster.kubectl(&[
            "delete",
            "ipaddresspools",
            "--all",
            "-n",
            "metallb-system",
            "--wait=true",
        ]);
        cluster.kubectl(&[
            "delete",
            "communities",
            "--all",
            "-n",
            "metallb-system",
            "--wait=true",
        ]);
        cluster
    }

    /// `kubectl apply -f -` as admin.
    pub fn apply(&self, yaml: &str) {
        herald_tests::kubectl_apply(self.plane.kubectl(), yaml);
    }

    /// `kubectl apply -f -` that must be refused; returns the error text.
    pub fn apply_err(&self, yaml: &str) -> String {
        let out = herald_tests::kubectl_apply_output(self.plane.kubectl(), yaml);
        assert!(
            !out.status.success(),
            "kubectl apply should have failed:\n{yaml}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.plane
            .kubectl_run(args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()
    }

    /// `status.loadBalancer.ingress[].ip` (empty on error).
    pub async fn ingress(&self, namespace: &str, name: &str) -> Vec<String> {
        let Some(svc) = self.service(namespace, name).await else {
            return Vec::new();
        };
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect()
    }

    pub async fn annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self.service(namespace, name)
            .await?
            .metadata
            .annotations?
            .get(key)
            .cloned()
    }

    /// Events (events.k8s.io) about `kind`/`name` in `namespace`: (reason, type, note, reporting controller).
    pub async fn events(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Vec<(String, String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let Ok(list) = api.list(&ListParams::default()).await else {
            return Vec::new();
        };
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.reporting_controller.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn pool(&self, name: &str) -> Option<DynamicObject> {
        Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            "metallb-system",
            &pool_resource(),
        )
        .get_opt(name)
        .await
        .ok()
        .flatten()
    }

    pub async fn configuration_state(&self) -> Option<serde_json::Value> {
        let resource = ApiResource {
            group: "metallb.io".into(),
            version: "v1beta1".into(),
            api_version: "metallb.io/v1beta1".into(),
            kind: "ConfigurationState".into(),
            plural: "configurationstates".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "metallb-system", &resource);
        api.get_opt("controller")
            .await
            .ok()
            .flatten()
            .map(|o| o.data)
    }

    /// Removes what a test created: its namespace's Services and the named pools.
    pub fn cleanup(&self, namespace: &str, pools: &[&str]) {
        let _ =
            self.plane
                .kubectl_run(&["delete", "service", "--all", "-n", namespace, "--wait=true"]);
        for pool in pools {
            let _ = self.plane.kubectl_run(&[
                "delete",
                "ipaddresspool",
                "-n",
                "metallb-system",
                pool,
                "--ignore-not-found",
            ]);
        }
        let _ = self
            .plane
            .kubectl_run(&["delete", "communities", "--all", "-n", "metallb-system"]);
    }
}

impl Cluster {
    /// Service `web` in `ns` (type LoadBalancer, labelled `herald-test`) with `ips` already in
    /// its status, as a controller would have written them, and one ready endpoint on `node`:
    /// what a speaker needs to announce, with no controller running.
    /// Deletes every BGPPeer, BGPAdvertisement and IPAddressPool, and the Nodes labelled
    /// `herald-test=true`.
    pub fn clear_bgp_objects(&self) {
        for kind in ["bgppeers", "bgpadvertisements", "ipaddresspools"] {
            let _ = self.kubectl(&[
                "delete",
                kind,
                "--all",
                "-n",
                "metallb-system",
                "--ignore-not-found",
            ]);
        }
        let _ = self.kubectl(&[
            "delete",
            "nodes",
            "-l",
            "herald-test=true",
            "--ignore-not-found",
        ]);
    }

    pub fn announced_web_service(&self, ns: &str, ips: &[&str], node: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\n  labels:\n    herald-test: \"true\"\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80, protocol: TCP}}]\n"
        ));
        let ingress: Vec<String> = ips
            .iter()
            .map(|ip| format!("{{\"ip\":\"{ip}\"}}"))
            .collect();
        self.kubectl(&[
            "patch",
            "service",
            "web",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                "{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{}]}}}}}}",
                ingress.join(",")
            ),
        ]);
        self.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n- addresses: [10.1.0.5]\n  nodeName: {node}\n  conditions: {{ready: true}}\nports:\n- port: 80\n  protocol: TCP\n"
        ));
    }
}

/// Polls `probe` until it returns `Some`, panicking with `what` (and `context()`) at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F, context: impl Fn() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() <= deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace for one test.
pub fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// An IPAddressPool in metallb-system.
pub fn pool_yaml(name: &str, addresses: &[&str], extra_spec: &str) -> String {
    let list: String = addresses.iter().map(|a| format!("    - {a}\n")).collect();
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  addresses:\n{list}{extra_spec}"
    )
}

/// A LoadBalancer Service on TCP `port` with `annotations` (`key: value` pairs) and extra spec.
pub fn service_yaml(
    namespace: &str,
    name: &str,
    port: u16,
    annotations: &[(&str, &str)],
    extra_spec: &str,
) -> String {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        let lines: String = annotations
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        format!("  annotations:\n{lines}")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    herald-test: \"true\"\n{annotations}spec:\n  type: LoadBalancer\n  ports:\n    - port: {port}\n      protocol: TCP\n{extra_spec}"
    )
}
