//! Time to give N Services their IPs, in the lab, with whichever controller runs: N IPv6
//! single-stack LoadBalancer Services without selector (so no speaker announces them, and the
//! lab's kube-proxy leaves them alone) asking for the bench's own pool with the
//! `metallb.io/address-pool` annotation, created as admin with bounded concurrency; the figure
//! runs from the first create request until a watch has seen every one with a status IP. The
//! namespace is deleted (and waited for) afterwards, so the next run starts from the same state.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::report::Services;
use crate::lab;

pub const NAMESPACE: &str = "vs-metallb";
pub const POOL: &str = "vs-metallb";
/// The bench pool: 65,536 IPv6 addresses outside the lab's announced prefixes.
pub const POOL_RANGE: &str = "2001:db8:0:3::/112";

/// The pool (not auto-assigned: only the bench's Services, which name it, get its addresses).
pub fn pool_yaml() -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  addresses:\n    - {POOL_RANGE}\n  autoAssign: false\n"
    )
}

/// The `index`-th bench Service.
pub fn service(index: usize) -> Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("svc-{index:04}"),
            "namespace": NAMESPACE,
            "annotations": {"metallb.io/address-pool": POOL},
        },
        // No NodePorts: neither controller reads them, and their allocator would serialize
        // the creations.
        "spec": {
            "type": "LoadBalancer",
            "ipFamilies": ["IPv6"],
            "ipFamilyPolicy": "SingleStack",
            "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }))?)
}

fn apply(yaml: &str) -> Result<()> {
    let path = lab::run_dir().join("vs-metallb-bench.yaml");
    std::fs::write(&path, yaml)?;
    lab::kubectl(&["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

fn namespace_exists() -> bool {
    lab::kubectl(&["get", "namespace", NAMESPACE, "-o", "name"]).is_ok()
}

/// Deletes the bench namespace (if any) and waits until it is gone.
pub fn clean() -> Result<()> {
    if !namespace_exists() {
        return Ok(());
    }
    lab::kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"])?;
    lab::wait_for(
        &format!("namespace {NAMESPACE} to be deleted"),
        Duration::from_secs(600),
        || (!namespace_exists()).then_some(()),
    )
}

/// Removes the bench pool (after both runs: the lab is left as it was).
pub fn remove_pool() -> Result<()> {
    lab::kubectl(&[
        "-n",
        "metallb-system",
        "delete",
        "ipaddresspool",
        POOL,
        "--ignore-not-found",
    ])?;
    Ok(())
}

/// Creates `count` Services with `concurrency` requests in flight and times them to all-IPs.
pub fn measure(count: usize, concurrency: usize) -> Result<Services> {
    clean()?;
    apply(&pool_yaml())?;
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
    ))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let all = runtime.block_on(create_and_wait(count, concurrency.max(1)))?;
    drop(runtime);
    println!(
        "   {count} Services: all had IPs {:.2} s after the first create",
        all.as_secs_f64()
    );
    clean()?;
    Ok(Services {
        count,
        all_ms: all.as_secs_f64() * 1000.0,
    })
}

async fn admin_client() -> Result<Client> {
    let path = lab::kubeconfig("admin");
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn create_and_wait(count: usize, concurrency: usize) -> Result<Duration> {
    let client = admin_client().await?;
    let api: Api<Service> = Api::namespaced(client, NAMESPACE);
    let (watch, seen) = crate::bench::controller::watch_assigned(&api);
    // Let the watch establish before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let created: Vec<Result<String>> = futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let svc = service(i)?;
                let name = svc.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &svc)
                    .await
                    .with_context(|| format!("creating Service {NAMESPACE}/{name}"))?;
                Ok(name)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let created: Vec<String> = created.into_iter().collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_mins(30);
    let last = loop {
        {
            let seen = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let times: Vec<Instant> = created
                .iter()
                .filter_map(|n| seen.get(n).copied())
                .collect();
            if times.len() == created.len() {
                break times.into_iter().max().unwrap_or(start);
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} Services had an IP after 30 minutes",
                    times.len(),
                    created.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    watch.abort();
    Ok(last.saturating_duration_since(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_services_name_the_pool_and_need_no_node_ports() {
        let svc = service(7).expect("service");
        assert_eq!(svc.metadata.name.as_deref(), Some("svc-0007"));
        assert_eq!(
            svc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("metallb.io/address-pool"))
                .map(String::as_str),
            Some(POOL)
        );
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.allocate_load_balancer_node_ports, Some(false));
        assert_eq!(
            spec.selector, None,
            "no endpoints: no speaker announces them"
        );
        assert_eq!(spec.ip_families, Some(vec!["IPv6".to_string()]));
    }

    #[test]
    fn pool_is_outside_the_announced_prefixes() {
        let first: std::net::IpAddr = "2001:db8:0:3::".parse().expect("ip");
        assert!(!crate::lab::in_pools(&first));
        assert!(pool_yaml().contains(POOL_RANGE) && pool_yaml().contains("autoAssign: false"));
    }
}
