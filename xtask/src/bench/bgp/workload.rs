//! The bench's cluster objects: an IPv4 pool and BGPAdvertisement of its own (MetalLB's native
//! speaker refuses IPv6 pools, so the lab's dual-stack pool and advertisement step aside while
//! the bench runs), and LoadBalancer Services without selector, each with an EndpointSlice
//! holding one ready endpoint (made first, so a Service is announceable the moment it exists).
//! Each Service asks for its address with `metallb.io/loadBalancerIPs`, so both
//! implementations announce the same prefixes; up to [`PER_IP`] Services share one address
//! (`metallb.io/allow-shared-ip`, one port each): 1,000 Services fit 250 addresses of
//! 198.51.100.0/24. Herald's IPv6 phase adds a pool of its own in 2001:db8:0:2::/64 with one
//! address per Service, and BGPPeers for the extra peers' IPv6 addresses, only while it runs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
const POOL_V6: &str = "bench-bgp-v6";
/// Addresses of the IPv6 phase: [`v6_address`] `0..` this many.
pub const V6_ADDRESSES: usize = 1024;
/// Services per address in the burst.
pub const PER_IP: usize = 4;
/// The address the failover probe Service uses (outside the burst's).
pub const PROBE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

/// The `i`-th address of the bench (`i` from 0; at most 253).
pub fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// The `i`-th address of the IPv6 phase (`i` from 0, below [`V6_ADDRESSES`]):
/// 2001:db8:0:2::1:0 up.
pub fn v6_address(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        2,
        0,
        0,
        1,
        u16::try_from(i).unwrap_or(u16::MAX),
    )
}

/// One Service and its EndpointSlice.
pub struct Workload {
    pub name: String,
    pub ip: IpAddr,
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
                "ipFamilies": [self.family()],
                "ipFamilyPolicy": "SingleStack",
                "allocateLoadBalancerNodePorts": false,
                "ports": [{"port": self.port, "protocol": "TCP"}],
            },
        }))?)
    }

    fn family(&self) -> &'static str {
        if self.ip.is_ipv6() { "IPv6" } else { "IPv4" }
    }

    fn slice(&self) -> Result<EndpointSlice> {
        // Never reached: the bench only needs the endpoint to be ready on node-a.
        let endpoint = if self.ip.is_ipv6() {
            "2001:db8:0:244::5"
        } else {
            "10.244.0.5"
        };
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": self.family(),
            "endpoints": [{
                "addresses": [endpoint],
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
            ip: address(i / PER_IP).into(),
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
            ip: address(i).into(),
            port: 80,
            shared: false,
        })
        .collect()
}

/// `count` IPv6 Services, one address each (at most [`V6_ADDRESSES`]).
pub fn v6_services(count: usize) -> Vec<Workload> {
    (0..count.min(V6_ADDRESSES))
        .map(|i| Workload {
            name: format!("v6-{i:04}"),
            ip: v6_address(i).into(),
            port: 80,
            shared: false,
        })
        .collect()
}

pub fn probe() -> Workload {
    Workload {
        name: "probe".into(),
        ip: PROBE_IP.into(),
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

/// The BGPPeer of an extra peer's IPv6 address.
fn peer_v6_name(peer: &Peer) -> String {
    format!("{}-v6", peer_name(peer))
}

/// One BGPPeer document: every node's session to `address`.
fn bgp_peer(name: &str, asn: u32, address: IpAddr) -> String {
    format!(
        "---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  myASN: {}\n  peerASN: {asn}\n  peerAddress: \"{address}\"\n",
        lab::NODE_AS,
    )
}

/// BGPPeers for the extra peers.
pub fn add_peers(peers: &[Peer]) -> Result<()> {
    let mut yaml = String::new();
    for peer in peers {
        yaml.push_str(&bgp_peer(&peer_name(peer), peer.asn, peer.address.into()));
    }
    if yaml.is_empty() {
        return Ok(());
    }
    apply(&yaml)
}

/// Removes the extra peers' BGPPeers (both families').
pub fn remove_peers(peers: &[Peer]) -> Result<()> {
    for peer in peers {
        delete_config("bgppeer", &peer_name(peer))?;
        delete_config("bgppeer", &peer_v6_name(peer))?;
    }
    Ok(())
}

/// The IPv6 phase's configuration: `yaml` for its pool, its advertisement and BGPPeers for the
/// extra peers' IPv6 addresses.
fn v6_config(peers: &[Peer]) -> String {
    let last = v6_address(V6_ADDRESSES - 1);
    let mut yaml = format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL_V6}\n  namespace: metallb-system\nspec:\n  addresses: [{}-{last}]\n  autoAssign: false\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: {POOL_V6}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{POOL_V6}]\n",
        v6_address(0)
    );
    for peer in peers {
        yaml.push_str(&bgp_peer(&peer_v6_name(peer), peer.asn, peer.v6.into()));
    }
    yaml
}

/// Applies the IPv6 phase's configuration (Herald only: MetalLB's native speaker refuses any
/// advertised pool with IPv6).
pub fn install_v6(peers: &[Peer]) -> Result<()> {
    apply(&v6_config(peers))
}

/// Removes the IPv6 phase's configuration.
pub fn uninstall_v6(peers: &[Peer]) -> Result<()> {
    for peer in peers {
        delete_config("bgppeer", &peer_v6_name(peer))?;
    }
    delete_config("bgpadvertisement", POOL_V6)?;
    delete_config("ipaddresspool", POOL_V6)
}

/// Removes the bench's objects and puts the lab's BGP configuration back.
pub fn uninstall() -> Result<()> {
    clean()?;
    delete_config("bgpadvertisement", POOL)?;
    delete_config("ipaddresspool", POOL)?;
    delete_config("bgpadvertisement", POOL_V6)?;
    delete_config("ipaddresspool", POOL_V6)?;
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
        let addresses: std::collections::BTreeSet<IpAddr> = burst.iter().map(|w| w.ip).collect();
        assert_eq!(addresses.len(), 250);
        assert!(!addresses.contains(&IpAddr::V4(PROBE_IP)));
        assert_eq!(
            (burst[0].ip, burst[3].ip, burst[4].ip),
            (address(0).into(), address(0).into(), address(1).into())
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

    #[test]
    fn the_v6_phase_gives_each_service_its_own_address_in_its_own_pool() {
        let services = v6_services(V6_ADDRESSES + 5);
        assert_eq!(services.len(), V6_ADDRESSES);
        let addresses: std::collections::BTreeSet<IpAddr> = services.iter().map(|w| w.ip).collect();
        assert_eq!(addresses.len(), V6_ADDRESSES);
        assert_eq!(
            services[0].ip,
            "2001:db8:0:2::1:0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            services[1023].ip,
            "2001:db8:0:2::1:3ff".parse::<IpAddr>().unwrap()
        );
        let svc = services[7].service().expect("service");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.ip_families, Some(vec!["IPv6".to_string()]));
        let annotations = svc.metadata.annotations.expect("annotations");
        assert_eq!(
            annotations["metallb.io/loadBalancerIPs"],
            "2001:db8:0:2::1:7"
        );
        assert!(!annotations.contains_key("metallb.io/allow-shared-ip"));
        assert_eq!(services[7].slice().expect("slice").address_type, "IPv6");
        let peers = lab::peers::peers(2);
        let yaml = v6_config(&peers);
        assert!(
            yaml.contains("addresses: [2001:db8:0:2::1:0-2001:db8:0:2::1:3ff]"),
            "{yaml}"
        );
        assert!(yaml.contains("name: bench-peer-4-v6\n"), "{yaml}");
        assert!(yaml.contains("peerAddress: \"2001:db8:0:1::4\""), "{yaml}");
        assert_eq!(yaml.matches("kind: BGPPeer").count(), 2);
    }
}
