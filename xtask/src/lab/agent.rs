//! `xtask lab agent`: what kubelet, the scheduler and kube-proxy would do for the lab's node
//! namespaces, in one loop against the real API server (as admin):
//! - registers Nodes `node-a/b/c` (Ready, InternalIP = the namespace's addresses) and keeps their
//!   Ready heartbeat fresh;
//! - registers one speaker Pod per node in metallb-system (labels app=metallb,component=speaker,
//!   podIP = the node address), which is how speakers find their gossip peers;
//! - binds pending Pods (outside metallb-system and kube-system) to a node whose labels match their
//!   nodeSelector, fewest pods first, and reports bound Pods Running with the node's addresses and
//!   Ready — unless annotated `lab.herald.dev/ready: "false"` (a failing readiness probe) — so the
//!   real endpointslice controller writes their EndpointSlices; force-deletes terminating Pods;
//! - plays kube-proxy in IPVS mode: every LoadBalancer ingress IP on each node's `lo` (the node
//!   namespaces set arp_ignore=1/arp_announce=2, so only Herald answers ARP/NDP for them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use super::spec::{NODES, NodeSpec, kubeconfig};
use super::topo;

/// Annotation a test sets to make the lab's kubelet report a Pod not ready.
pub const READY_ANNOTATION: &str = "lab.herald.dev/ready";
const SPEAKER_NAMESPACE: &str = "metallb-system";

pub fn run() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = admin_client().await?;
        let mut agent = Agent {
            client,
            last_heartbeat: None,
        };
        loop {
            if let Err(e) = agent.tick().await {
                eprintln!("lab agent: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn admin_client() -> Result<Client> {
    let path = kubeconfig("admin");
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

struct Agent {
    client: Client,
    last_heartbeat: Option<Instant>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Agent {
    async fn tick(&mut self) -> Result<()> {
        // Node heartbeats and speaker Pods every 5 s; workload Pods and LoadBalancer IPs each tick.
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            for node in NODES {
                self.ensure_node(&node).await?;
                self.ensure_speaker_pod(&node).await?;
            }
            self.last_heartbeat = Some(Instant::now());
        }
        self.pods().await?;
        self.proxy().await?;
        Ok(())
    }

    /// Creates the Node when missing (labels are left alone afterwards: tests change them) and
    /// refreshes its Ready condition and addresses.
    async fn ensure_node(&self, node: &NodeSpec) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        if api.get_opt(node.name).await?.is_none() {
            let object: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "labels": {
                        "kubernetes.io/hostname": node.name,
                        "kubernetes.io/os": "linux",
                        "herald.dev/lab": "true",
                    },
                },
            }))?;
            api.create(&PostParams::default(), &object).await?;
        }
        let now = now();
        let status = json!({
            "status": {
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "herald lab kubelet",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }],
                "addresses": [
                    {"type": "InternalIP", "address": node.v4.to_string()},
                    {"type": "InternalIP", "address": node.v6.to_string()},
                    {"type": "Hostname", "address": node.name},
                ],
            }
        });
        api.patch_status(node.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    async fn ensure_speaker_pod(&self, node: &NodeSpec) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), SPEAKER_NAMESPACE);
        let name = format!("speaker-{}", node.name);
        let existing = api.get_opt(&name).await?;
        if existing.is_none() {
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": SPEAKER_NAMESPACE,
                    "labels": {"app": "metallb", "component": "speaker"},
                },
                "spec": {
                    "nodeName": node.name,
                    "hostNetwork": true,
                    "serviceAccountName": "speaker",
                    "containers": [{"name": "speaker", "image": "herald"}],
                },
            }))?;
            api.create(&PostParams::default(), &pod).await?;
        }
        if existing
            .as_ref()
            .is_none_or(|p| !status_matches(p, node, true))
        {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&running_status(node, true, &["speaker".to_string()])),
            )
            .await?;
        }
        Ok(())
    }

    /// Scheduler and kubelet for workload Pods.
    async fn pods(&self) -> Result<()> {
        let all: Api<Pod> = Api::all(self.client.clone());
        let pods = all.list(&ListParams::default()).await?.items;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_labels: BTreeMap<String, BTreeMap<String, String>> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name?, n.metadata.labels.unwrap_or_default())))
            .collect();
        let mut load: BTreeMap<&str, usize> = NODES.iter().map(|n| (n.name, 0)).collect();
        for pod in &pods {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                && let Some(count) = load.get_mut(node)
            {
                *count += 1;
            }
        }
        for pod in pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            if namespace == SPEAKER_NAMESPACE || namespace == "kube-system" {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            if pod.metadata.deletion_timestamp.is_some() {
                // The container "stops" at once: confirm the deletion as kubelet would.
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            let spec = pod.spec.clone().unwrap_or_default();
            match spec.node_name.as_deref() {
                None => {
                    let selector = spec.node_selector.unwrap_or_default();
                    let Some(target) = NODES
                        .iter()
                        .filter(|n| {
                            let labels = node_labels.get(n.name);
                            selector
                                .iter()
                                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                        })
                        .min_by_key(|n| load.get(n.name).copied().unwrap_or(0))
                    else {
                        continue;
                    };
                    let binding = json!({
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "namespace": namespace},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": target.name},
                    });
                    api.create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                    .with_context(|| format!("binding {namespace}/{name} to {}", target.name))?;
                    if let Some(count) = load.get_mut(target.name) {
                        *count += 1;
                    }
                }
                Some(node_name) => {
                    let Some(node) = NODES.iter().find(|n| n.name == node_name) else {
                        continue;
                    };
                    let ready = pod
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(READY_ANNOTATION))
                        .is_none_or(|v| v != "false");
                    if !status_matches(&pod, node, ready) {
                        api.patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(&running_status(node, ready, &container_names(&pod))),
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// kube-proxy (IPVS mode): every LoadBalancer IP on every node's `lo`, nothing else of ours.
    async fn proxy(&self) -> Result<()> {
        let services: Api<Service> = Api::all(self.client.clone());
        let wanted: BTreeSet<IpAddr> = services
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
            .flat_map(|s| {
                s.status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
            })
            .filter_map(|i| i.ip?.parse().ok())
            .filter(in_pools)
            .collect();
        for node in NODES {
            let present: BTreeSet<IpAddr> = topo::lo_addresses(node.netns)?
                .iter()
                .filter_map(|a| a.parse().ok())
                .filter(in_pools)
                .collect();
            for ip in wanted.difference(&present) {
                topo::lo_address(node.netns, *ip, true)?;
            }
            for ip in present.difference(&wanted) {
                topo::lo_address(node.netns, *ip, false)?;
            }
        }
        Ok(())
    }
}

/// Inside the lab's LoadBalancer prefixes (198.51.100.0/24, 2001:db8:0:2::/64).
pub fn in_pools(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [198, 51, 100],
        IpAddr::V6(v6) => v6.segments()[..4] == [0x2001, 0xdb8, 0, 2],
    }
}

/// Names of a Pod's containers (their statuses make `kubectl get pods` show READY 1/1).
fn container_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

fn running_status(node: &NodeSpec, ready: bool, containers: &[String]) -> serde_json::Value {
    let now = now();
    let container_statuses: Vec<serde_json::Value> = containers
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "image": "herald-lab",
                "imageID": "",
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let ready = if ready { "True" } else { "False" };
    json!({
        "status": {
            "phase": "Running",
            "hostIP": node.v4.to_string(),
            "hostIPs": [{"ip": node.v4.to_string()}, {"ip": node.v6.to_string()}],
            "podIP": node.v4.to_string(),
            "podIPs": [{"ip": node.v4.to_string()}, {"ip": node.v6.to_string()}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": container_statuses,
        }
    })
}

fn status_matches(pod: &Pod, node: &NodeSpec, ready: bool) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let want = if ready { "True" } else { "False" };
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.as_deref() == Some(node.v4.to_string().as_str())
        && status
            .container_statuses
            .as_ref()
            .is_some_and(|c| c.iter().all(|c| c.ready == ready))
        && status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_prefixes_only() {
        for (ip, inside) in [
            ("198.51.100.10", true),
            ("198.51.100.255", true),
            ("198.51.101.1", false),
            ("203.0.113.11", false),
            ("127.0.0.1", false),
            ("2001:db8:0:2::10", true),
            ("2001:db8:0:1::11", false),
            ("::1", false),
        ] {
            assert_eq!(in_pools(&ip.parse().unwrap()), inside, "{ip}");
        }
    }

    #[test]
    fn pod_status_matches_only_when_running_ready_on_the_node_address() {
        let node = NODES[1];
        let mut pod: Pod =
            serde_json::from_value(running_status(&node, true, &["web".to_string()])).unwrap();
        assert!(status_matches(&pod, &node, true));
        assert!(!status_matches(&pod, &node, false), "readiness differs");
        assert!(
            !status_matches(&pod, &NODES[0], true),
            "another node's address"
        );
        pod.status = None;
        assert!(!status_matches(&pod, &node, true), "no status yet");
    }
}
