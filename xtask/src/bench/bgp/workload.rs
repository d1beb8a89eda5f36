//! The bench's cluster objects: an IPv4 pool and BGPAdvertisement of its own (MetalLB's native
//! speaker refuses IPv6 pools, so the lab's dual-stack pool and advertisement step aside while
//! the bench runs), and LoadBalancer Services without selector, each with an EndpointSlice
//! holding one ready endpoint (made first, so a Service is announceable the moment it exists).
//! Each Service asks for its address with `metallb.io/loadBalancerIPs`, so both
//! implementations announce the same prefixes; up to [`PER_IP`] Services share one address
//! (`metallb.io/allow-shared-ip`, one port each): 1,000 Services fit 250 addresses of
//! 198.51.100.0/24.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::lab;
use crate::lab::peers::Peer;

pub const NAMESPACE: &str = "bench-bgp";
const POOL: &str = "bench-bgp";
/// Services per address in the burst.
pub const PER_IP: usize = 4;
/// The address the failover probe Service uses (outside the burst's).
pub const PROBE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

/// The `i`-th address of the bench (`i` from 0; at most 253).
pub fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// One Service and its EndpointSlice.
pub struct Workload {
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Its sharing key when it shares its address.
    pub shared: bool,
}

impl Workload {
    fn service(&self) -> Result<Service> {
        let mut annotations = serde_json::json!({
            "metallb.io/loadBalancerIPs": self.ip.to_string(),
        });
        if self.shared {
            annotations["metallb.io/allow-shared-ip"] = format!("ip-{}", self.ip).into();
        }
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": NAMESPACE, "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "allocateLoadBalancerNodePorts": false,
                "ports": [{"port": self.port, "protocol": "TCP"}],
            },
        }))?)
    }

    fn slice(&self) -> Result<EndpointSlice> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.244.0.5"],
                "nodeName": lab::NODES[0].name,
                "conditions": {"ready": true},
            }],
            "ports": [{"port": lab::BACKEND_PORT, "protocol": "TCP"}],
        }))?)
    }
}

/// `count` Services, [`PER_IP`] per address.
pub fn burst(count: usize) -> Vec<Workload> {
    (0..count)
        .map(|i| Workload {
            name: format!("b-{i:04}"),
            ip: address(i / PER_IP),
            port: 80 + u16::try_from(i % PER_IP).unwrap_or(0),
            shared: true,
        })
        .collect()
}

/// `count` Services, one address each.
pub fn singles(count: usize) -> Vec<Workload> {
    (0..count)
        .map(|i| Workload {
            name: format!("s-{i:04}"),
            ip: address(i),
            port: 80,
            shared: false,
        })
        .collect()
}

pub fn probe() -> Workload {
    Workload {
        name: "probe".into(),
        ip: PROBE_IP,
        port: 80,
        shared: false,
    }
}

/// Moves the lab's pool and advertisement aside and applies the bench's.
pub fn install() -> Result<()> {
    delete_config("bgpadvertisement", "lab-bgp")?;
    delete_config("ipaddresspool", "lab-pool")?;
    apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.1-198.51.100.254]\n  autoAssign: false\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{POOL}]\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
    ))
}

/// The BGPPeer of an extra peer (every node opens a session to it).
fn peer_name(peer: &Peer) -> String {
    format!("bench-peer-{}", peer.address.octets()[3])
}

/// BGPPeers for the extra peers.
pub fn add_peers(peers: &[Peer]) -> Result<()> {
    let mut yaml = String::new();
    for peer in peers {
        yaml.push_str(&format!(
            "---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {}\n  namespace: metallb-system\nspec:\n  myASN: {}\n  peerASN: {}\n  peerAddress: {}\n",
            peer_name(peer),
            lab::NODE_AS,
            peer.asn,
            peer.address
        ));
    }
    if yaml.is_empty() {
        return Ok(());
    }
    apply(&yaml)
}

/// Removes the extra peers' BGPPeers.
pub fn remove_peers(peers: &[Peer]) -> Result<()> {
    for peer in peers {
        delete_config("bgppeer", &peer_name(peer))?;
    }
    Ok(())
}

/// Removes the bench's objects and puts the lab's BGP configuration back.
pub fn uninstall() -> Result<()> {
    clean()?;
    delete_config("bgpadvertisement", POOL)?;
    delete_config("ipaddresspool", POOL)?;
    set_hold_time(None)?;
    apply(lab::BGP_YAML)
}

/// Sets (or with `None` removes) `holdTime` on the lab's BGPPeers.
pub fn set_hold_time(hold: Option<&str>) -> Result<()> {
    let value = hold.map_or("null".to_string(), |h| format!("\"{h}\""));
    patch_lab_peers(&format!("{{\"spec\":{{\"holdTime\":{value}}}}}"))
}

/// A JSON merge patch of both of the lab's BGPPeers (`router-v4`, `router-v6`).
pub fn patch_lab_peers(patch: &str) -> Result<()> {
    for peer in ["router-v4", "router-v6"] {
        lab::kubectl(&[
            "-n",
            "metallb-system",
            "patch",
            "bgppeer",
            peer,
            "--type=merge",
            "-p",
            patch,
        ])?;
    }
    Ok(())
}

/// Deletes one object of MetalLB's namespace, if it is there.
fn delete_config(kind: &str, name: &str) -> Result<()> {
    lab::kubectl(&[
        "-n",
        "metallb-system",
        "delete",
        kind,
        name,
        "--ignore-not-found",
    ])?;
    Ok(())
}

fn apply(yaml: &str) -> Result<()> {
    let path = lab::run_dir().join("bench-bgp.yaml");
    std::fs::write(&path, yaml)?;
    lab::kubectl(&["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

/// Deletes every Service and EndpointSlice of the bench namespace (the namespace stays).
pub fn clean() -> Result<()> {
    for kind in ["services", "endpointslices"] {
        lab::kubectl(&["-n", NAMESPACE, "delete", kind, "--all", "--wait=true"])?;
    }
    Ok(())
}

async fn client() -> Result<Client> {
    let path = lab::kubeconfig("admin");
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A client of the lab's API server for the bench's namespace.
pub struct Creator {
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    runtime: tokio::runtime::Runtime,
    /// When each Service of the namespace was first seen with an address.
    pub addressed: Arc<Mutex<HashMap<String, Instant>>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for Creator {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl Creator {
    pub fn new() -> Result<Creator> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = runtime.block_on(client())?;
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let (watch, addressed) = runtime.block_on(async {
            let watching = crate::bench::controller::watch_assigned(&services);
            // Let the watch establish before anything is timed.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            watching
        });
        Ok(Creator {
            services,
            slices: Api::namespaced(client, NAMESPACE),
            runtime,
            addressed,
            watch,
        })
    }

    /// Creates every EndpointSlice (`concurrency` in flight).
    pub fn slices(&self, workloads: &[Workload], concurrency: usize) -> Result<()> {
        let objects: Vec<EndpointSlice> = workloads
            .iter()
            .map(Workload::slice)
            .collect::<Result<_>>()?;
        self.create_all(&self.slices, objects, concurrency)
    }

    /// Creates every Service (`concurrency` in flight); returns when the last create
    /// returned.
    pub fn services(&self, workloads: &[Workload], concurrency: usize) -> Result<Instant> {
        let objects: Vec<Service> = workloads
            .iter()
            .map(Workload::service)
            .collect::<Result<_>>()?;
        self.create_all(&self.services, objects, concurrency)?;
        Ok(Instant::now())
    }

    fn create_all<K>(&self, api: &Api<K>, objects: Vec<K>, concurrency: usize) -> Result<()>
    where
        K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned,
        K: std::fmt::Debug,
    {
        self.runtime.block_on(async {
            let results: Vec<Result<()>> = futures::stream::iter(objects)
                .map(|object| async move {
                    api.create(&PostParams::default(), &object)
                        .await
                        .with_context(|| {
                            format!("creating {}", kube::ResourceExt::name_any(&object))
                        })?;
                    Ok(())
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            results.into_iter().collect::<Result<()>>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_shares_each_address_between_distinct_ports() {
        let burst = burst(1000);
        let addresses: std::collections::BTreeSet<Ipv4Addr> = burst.iter().map(|w| w.ip).collect();
        assert_eq!(addresses.len(), 250);
        assert!(!addresses.contains(&PROBE_IP));
        assert_eq!(
            (burst[0].ip, burst[3].ip, burst[4].ip),
            (address(0), address(0), address(1))
        );
        let ports: Vec<u16> = burst[..4].iter().map(|w| w.port).collect();
        assert_eq!(ports, [80, 81, 82, 83]);
        let svc = burst[5].service().expect("service");
        let annotations = svc.metadata.annotations.expect("annotations");
        assert_eq!(annotations["metallb.io/loadBalancerIPs"], "198.51.100.2");
        assert_eq!(annotations["metallb.io/allow-shared-ip"], "ip-198.51.100.2");
        assert_eq!(svc.spec.and_then(|s| s.selector), None);
        let slice = burst[5].slice().expect("slice");
        assert_eq!(
            slice.metadata.labels.expect("labels")["kubernetes.io/service-name"],
            "b-0005"
        );
    }
}
