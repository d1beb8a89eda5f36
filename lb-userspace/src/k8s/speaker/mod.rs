//! The speaker's Kubernetes side: the watches it decides from (Services, EndpointSlices, Nodes,
//! Namespaces, IPAddressPools, L2Advertisements, BGPPeers, BGPAdvertisements, Communities,
//! BFDProfiles, ConfigMap `bgpextras`, speaker Pods, the memberlist Secret and its own ServiceL2Status and
//! ServiceBGPStatus objects), the Secrets BGPPeers name as `passwordSecret` (read by name, never
//! listed) and its writes (ServiceL2Status, ServiceBGPStatus, Events as `metallb-speaker`).
//! No decisions here: `speaker::plan` decides, this module lists and [`writer`] writes.

mod passwords;
mod writer;

pub use writer::{ServiceEvent, StatusKind, Writer};

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::checked::{self, Rejected};
use crate::api::ExistingStatus;
use crate::api::{self, ServiceBGPStatus, ServiceL2Status};
use crate::config;

/// The component name on the speaker's Events (MetalLB's).
pub const SPEAKER_COMPONENT: &str = "metallb-speaker";
/// ServiceL2Status and ServiceBGPStatus labels (MetalLB's).
pub const LABEL_NODE: &str = "metallb.io/node";
pub const LABEL_SERVICE_NAME: &str = "metallb.io/service-name";
pub const LABEL_SERVICE_NAMESPACE: &str = "metallb.io/service-namespace";
/// The key of the memberlist Secret holding the shared secret.
pub const SECRET_KEY: &str = "secretkey";

/// Everything the speaker decides from, as values (a copy of the watch caches).
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub pools: Vec<api::IPAddressPool>,
    pub l2_advertisements: Vec<api::L2Advertisement>,
    pub bgp_advertisements: Vec<api::BGPAdvertisement>,
    pub bgp_peers: Vec<api::BGPPeer>,
    pub communities: Vec<api::Community>,
    pub bfd_profiles: Vec<api::BFDProfile>,
    /// The Secrets named by BGPPeers' `passwordSecret` that could be read.
    pub password_secrets: Vec<Secret>,
    /// The `extras` key of ConfigMap `bgpextras`, when that ConfigMap exists.
    pub bgp_extras: Option<String>,
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
    /// The caches' own copies (shared, never cloned per pass).
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// This node's speaker Pod (owner of what the speaker writes), when listed.
    pub own_pod: Option<Pod>,
    /// Configuration objects that could not be read, one line each.
    pub rejected: Vec<String>,
}

/// What to watch.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// MetalLB's namespace: pools, advertisements, speaker Pods, the Secret, the status objects.
    pub namespace: String,
    pub node: String,
    /// Label selector of the speaker Pods (`--ml-labels`); `None`: no peer discovery.
    pub ml_labels: Option<String>,
    /// Name of the memberlist Secret; `None`: not watched.
    pub ml_secret_name: Option<String>,
}

/// Local caches of every watched kind; `changed` wakes the speaker after any event of its
/// inputs, `statuses_changed` after an event of the status objects it writes (its outputs: a
/// change there calls for a status resync, not a new plan).
pub struct Watches {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    pools: Store<api::IPAddressPool>,
    l2_advertisements: Store<api::L2Advertisement>,
    bgp_advertisements: Store<api::BGPAdvertisement>,
    bgp_peers: Store<api::BGPPeer>,
    communities: Store<api::Community>,
    bfd_profiles: Store<api::BFDProfile>,
    password_secrets: passwords::PasswordSecrets,
    /// ConfigMap `bgpextras` only (fieldSelector metadata.name).
    bgp_extras: Store<ConfigMap>,
    pods: Option<Store<Pod>>,
    secrets: Option<Store<Secret>>,
    l2_statuses: Store<ServiceL2Status>,
    bgp_statuses: Store<ServiceBGPStatus>,
    /// Configuration objects that could not be read.
    rejected: Rejected,
    /// This node's name (whose speaker Pod and status objects are watched).
    node: String,
    pub changed: Arc<Notify>,
    pub statuses_changed: Arc<Notify>,
}

/// A checked watch (one object decoded at a time) of a configuration kind in `ns`.
fn checked_spawn<K>(
    client: &Client,
    ns: &str,
    rejected: &Rejected,
    changed: &Arc<Notify>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let changed = changed.clone();
    checked::spawn(
        checked::api::<K>(client, Some(ns)),
        watcher::Config::default(),
        rejected.clone(),
        move |_| changed.notify_one(),
    )
}

fn spawn<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let writer = reflector::store::Writer::new(Default::default());
    let store = writer.as_reader();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .backoff(super::watch_backoff())
            .modify(super::strip),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    store
}

impl Watches {
    /// Starts every watch on its own task.
    pub fn start(client: &Client, options: &WatchOptions) -> Watches {
        let changed = Arc::new(Notify::new());
        let statuses_changed = Arc::new(Notify::new());
        let rejected = Rejected::default();
        let ns = options.namespace.as_str();
        let all = watcher::Config::default;
        let bgp_peers = checked_spawn(client, ns, &rejected, &changed);
        let password_secrets =
            passwords::PasswordSecrets::start(client, ns, bgp_peers.clone(), changed.clone());
        Watches {
            services: spawn(Api::all(client.clone()), all(), changed.clone()),
            endpoint_slices: spawn(Api::all(client.clone()), all(), changed.clone()),
            nodes: spawn(Api::all(client.clone()), all(), changed.clone()),
            namespaces: spawn(Api::all(client.clone()), all(), changed.clone()),
            pools: checked_spawn(client, ns, &rejected, &changed),
            l2_advertisements: checked_spawn(client, ns, &rejected, &changed),
            bgp_advertisements: checked_spawn(client, ns, &rejected, &changed),
            bgp_peers,
            communities: checked_spawn(client, ns, &rejected, &changed),
            bfd_profiles: checked_spawn(client, ns, &rejected, &changed),
            password_secrets,
            bgp_extras: spawn(
                Api::namespaced(client.clone(), ns),
                all().fields(&format!("metadata.name={}", config::BGP_EXTRAS)),
                changed.clone(),
            ),
            pods: options.ml_labels.as_ref().map(|labels| {
                spawn(
                    Api::namespaced(client.clone(), ns),
                    all().labels(labels),
                    changed.clone(),
                )
            }),
            secrets: options.ml_secret_name.as_ref().map(|name| {
                spawn(
                    Api::namespaced(client.clone(), ns),
                    all().fields(&format!("metadata.name={name}")),
                    changed.clone(),
                )
            }),
            l2_statuses: spawn(
                Api::namespaced(client.clone(), ns),
                all().labels(&format!("{LABEL_NODE}={}", options.node)),
                statuses_changed.clone(),
            ),
            bgp_statuses: spawn(
                Api::namespaced(client.clone(), ns),
                all().labels(&format!("{LABEL_NODE}={}", options.node)),
                statuses_changed.clone(),
            ),
            node: options.node.clone(),
            rejected,
            changed,
            statuses_changed,
        }
    }

    /// Waits until every cache holds its initial list.
    pub async fn wait_ready(&self) {
        wait_logged("Services", self.services.wait_until_ready()).await;
        wait_logged("EndpointSlices", self.endpoint_slices.wait_until_ready()).await;
        wait_logged("Nodes", self.nodes.wait_until_ready()).await;
        wait_logged("Namespaces", self.namespaces.wait_until_ready()).await;
        wait_logged("IPAddressPools", self.pools.wait_until_ready()).await;
        wait_logged(
            "L2Advertisements",
            self.l2_advertisements.wait_until_ready(),
        )
        .await;
        wait_logged(
            "BGPAdvertisements",
            self.bgp_advertisements.wait_until_ready(),
        )
        .await;
        wait_logged("BGPPeers", self.bgp_peers.wait_until_ready()).await;
        wait_logged("Communities", self.communities.wait_until_ready()).await;
        wait_logged("BFDProfiles", self.bfd_profiles.wait_until_ready()).await;
        self.password_secrets.begin();
        wait_logged("passwordSecret Secrets", async {
            self.password_secrets.wait_first_read().await;
            Ok::<(), ()>(())
        })
        .await;
        wait_logged("ConfigMap bgpextras", self.bgp_extras.wait_until_ready()).await;
        wait_logged("ServiceL2Statuses", self.l2_statuses.wait_until_ready()).await;
        wait_logged("ServiceBGPStatuses", self.bgp_statuses.wait_until_ready()).await;
        if let Some(pods) = &self.pods {
            wait_logged("speaker Pods", pods.wait_until_ready()).await;
        }
        if let Some(secrets) = &self.secrets {
            wait_logged("the memberlist Secret", secrets.wait_until_ready()).await;
        }
    }

    /// The shared secret from the memberlist Secret, if present.
    pub fn secret_key(&self) -> Option<Vec<u8>> {
        let secrets = self.secrets.as_ref()?;
        secrets.state().iter().find_map(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .map(|v| v.0.clone())
                .or_else(|| {
                    s.string_data
                        .as_ref()
                        .and_then(|d| d.get(SECRET_KEY))
                        .map(|v| v.as_bytes().to_vec())
                })
        })
    }

    /// Node name and address (status.podIP) of every speaker Pod, as MetalLB seeds memberlist.
    pub fn peers(&self) -> Vec<(String, IpAddr)> {
        let Some(pods) = &self.pods else {
            return Vec::new();
        };
        let mut out: Vec<(String, IpAddr)> = pods
            .state()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
                Some((node, ip))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a speaker Pod on another node than `node` is Ready (its `Ready` condition is
    /// `True`) and not being deleted: then a speaker that hears no peer is cut off, not alone.
    pub fn others_ready(&self, node: &str) -> bool {
        let Some(pods) = &self.pods else {
            return false;
        };
        pods.state().iter().any(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    }

    /// This node's speaker Pod (owner of its ServiceL2Status objects), when listed.
    pub fn own_pod(&self, node: &str) -> Option<Arc<Pod>> {
        self.pods.as_ref()?.state().into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        })
    }

    /// This node's ServiceL2Status objects as listed.
    pub fn existing_l2_statuses(&self) -> Vec<ExistingStatus<api::L2ServiceStatus>> {
        listed(&self.l2_statuses)
    }

    /// This node's ServiceBGPStatus objects as listed.
    pub fn existing_bgp_statuses(&self) -> Vec<ExistingStatus<api::BgpServiceStatus>> {
        listed(&self.bgp_statuses)
    }

    /// Everything the speaker decides from, as values.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            pools: cloned(&self.pools),
            l2_advertisements: cloned(&self.l2_advertisements),
            bgp_advertisements: cloned(&self.bgp_advertisements),
            bgp_peers: cloned(&self.bgp_peers),
            communities: cloned(&self.communities),
            bfd_profiles: cloned(&self.bfd_profiles),
            password_secrets: self.password_secrets.current(),
            bgp_extras: self
                .bgp_extras
                .state()
                .iter()
                .find_map(|c| config::bgp_extras_of(c)),
            namespaces: cloned(&self.namespaces),
            nodes: cloned(&self.nodes),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            own_pod: self.own_pod_of_view(),
            rejected: self.rejected.lines(),
        }
    }

    fn own_pod_of_view(&self) -> Option<Pod> {
        self.own_pod(&self.node).map(|p| (*p).clone())
    }

    /// Every InternalIP of Node `node` (BGP next hops for the family a session is not).
    pub fn node_addresses(&self, node: &str) -> Vec<IpAddr> {
        self.nodes
            .state()
            .iter()
            .filter(|n| n.metadata.name.as_deref() == Some(node))
            .filter_map(|n| n.status.as_ref()?.addresses.clone())
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect()
    }

    /// The first InternalIP of Node `node`, when listed.
    pub fn node_internal_ip(&self, node: &str) -> Option<IpAddr> {
        self.nodes.state().iter().find_map(|n| {
            if n.metadata.name.as_deref() != Some(node) {
                return None;
            }
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| a.address.parse().ok())
        })
    }

    /// The IP of this node's speaker Pod, when listed.
    pub fn own_pod_ip(&self, node: &str) -> Option<IpAddr> {
        self.own_pod(node)?
            .status
            .as_ref()?
            .pod_ip
            .as_deref()?
            .parse()
            .ok()
    }
}

/// Waits for one cache, logging every 10 s while it is not synced, so a start that hangs says on
/// which kind.
async fn wait_logged<T, E>(what: &str, ready: impl std::future::Future<Output = Result<T, E>>) {
    let mut ready = std::pin::pin!(ready);
    let mut waited = std::time::Duration::ZERO;
    let step = std::time::Duration::from_secs(10);
    while tokio::time::timeout(step, &mut ready).await.is_err() {
        waited += step;
        tracing::warn!(
            cache = what,
            waited_s = waited.as_secs(),
            "watch cache not synced yet"
        );
    }
}

/// The status objects of one kind in `store`, with the Service their labels name.
fn listed<K: StatusKind>(store: &Store<K>) -> Vec<ExistingStatus<K::Status>> {
    store
        .state()
        .iter()
        .filter_map(|s| {
            let meta = s.meta();
            let name = meta.name.clone()?;
            let labels = meta.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key));
            let service_key = match (label(LABEL_SERVICE_NAMESPACE), label(LABEL_SERVICE_NAME)) {
                (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
                _ => None,
            };
            Some(ExistingStatus {
                name,
                service_key,
                status: s.status().cloned(),
            })
        })
        .collect()
}

fn cloned<K: Clone + Resource + 'static>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}
