//! The bench client's Services: creating them as a [`Load`] says, watching for their IPs, and
//! deleting them between phases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use herald_control_plane::ControlPlane;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::args::{ClusterIp, Load, static_cluster_ip};
use super::metrics::settle;

/// Deletes every Service in `namespace` and waits until kube-apiserver has released their
/// ClusterIP objects and the controller is quiet. A Service create costs kube-apiserver
/// v1.37.2 time in proportion to the IPAddress objects that exist (it recounts them all, twice,
/// for a metric: pkg/registry/core/service/ipallocator/ipallocator.go, createIPAddress), so a
/// phase that follows another starts from the same empty cluster as the first.
pub(super) async fn clear_namespace(
    plane: &ControlPlane,
    client: &Client,
    namespace: &str,
) -> Result<()> {
    use k8s_openapi::api::networking::v1::IPAddress;
    use kube::api::{DeleteParams, ListParams};
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|svc| svc.metadata.name)
        .collect();
    let deleted: Vec<Result<()>> = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("deleting {namespace}/{name}")),
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    deleted.into_iter().collect::<Result<()>>()?;
    let addresses: Api<IPAddress> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = addresses
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|a| a.spec.parent_ref.namespace.as_deref() == Some(namespace))
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} ClusterIP objects of namespace {namespace} still exist after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    settle(plane).await?;
    Ok(())
}

/// Per Service: when it was first seen with an ingress IP.
pub(super) type Times = HashMap<String, Instant>;
/// Per Service: when its create request was sent and when the response came back.
pub(super) type Created = HashMap<String, (Instant, Instant)>;

/// Creates Services `first..first+n` (IPv6 single stack) as `load` says, open-loop ones on a
/// schedule from `start`. Returns each one's create request and response times.
pub(super) async fn create_services(
    api: &Api<Service>,
    start: Instant,
    first: usize,
    n: usize,
    load: Load,
) -> Result<Created> {
    // Open loop: every create is in flight from its scheduled time on.
    let in_flight = if load.rate.is_some() {
        n.max(1)
    } else {
        load.concurrency
    };
    let created: Vec<Result<(String, (Instant, Instant))>> = futures::stream::iter(
        first..first + n,
    )
    .map(|i| {
        let api = api.clone();
        async move {
            if let Some(rate) = load.rate {
                let due = start + Duration::from_secs_f64((i - first) as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let name = format!("svc-{i:05}");
            // No NodePorts: neither controller reads them, and their allocator (one
            // bitmap object in etcd) would serialize the bench's own creations.
            let mut spec = serde_json::json!({
                "type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                "allocateLoadBalancerNodePorts": false,
                "ports": [{"port": 80, "protocol": "TCP"}]
            });
            if load.cluster_ip == ClusterIp::Static {
                spec["clusterIP"] = static_cluster_ip(i).into();
            }
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": spec
            }))?;
            let requested = Instant::now();
            api.create(&PostParams::default(), &svc)
                .await
                .with_context(|| format!("creating {name}"))?;
            Ok((name, (requested, Instant::now())))
        }
    })
    .buffer_unordered(in_flight)
    .collect()
    .await;
    created.into_iter().collect()
}

/// Creates Services `first..first+n` (IPv6 single stack) and waits until all have an IP.
/// Returns creation start times, first-seen-with-IP times, and the total time.
pub(super) async fn create_and_wait(
    client: &Client,
    namespace: &str,
    first: usize,
    n: usize,
    load: Load,
) -> Result<(Created, Times, Duration)> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let (watch, assigned) = watch_assigned(&api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let created = create_services(&api, start, first, n, load).await?;
    let deadline = Instant::now() + Duration::from_mins(30);
    loop {
        let done = {
            let assigned = assigned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            created.keys().all(|k| assigned.contains_key(k))
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("not every Service got an IP within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let assigned = assigned
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let last = created
        .keys()
        .filter_map(|k| assigned.get(k))
        .max()
        .copied()
        .unwrap_or(start);
    Ok((created, assigned, last.saturating_duration_since(start)))
}

/// Watches the Services of `api` and records when each first shows an ingress IP (shared with
/// `bench vs-metallb`).
pub(crate) fn watch_assigned(
    api: &Api<Service>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Times>>) {
    let assigned: Arc<Mutex<Times>> = Arc::default();
    let watch = {
        let assigned = assigned.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(svc)) = stream.try_next().await {
                if has_ip(&svc)
                    && let Some(name) = svc.metadata.name
                {
                    assigned
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    (watch, assigned)
}

/// Whether the Service's status shows an ingress IP.
fn has_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| i.iter().any(|x| x.ip.is_some()))
}
