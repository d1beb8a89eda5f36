//! The input of [`super::build`]: every object the parser reads, as the API server would list
//! them (or as `herald simulate` loads them from files).

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use kube::ResourceExt;

use crate::api;

use super::load::Object;

/// `METALLB_BGP_TYPE`: which BGP implementation's restrictions apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BgpMode {
    /// MetalLB's own BGP speaker (`native`).
    #[default]
    Native,
    /// FRR in the speaker pod (`frr`).
    Frr,
    /// The FRR-K8s daemon (`frr-k8s`).
    FrrK8s,
}

impl BgpMode {
    /// Parses the `METALLB_BGP_TYPE` value; MetalLB treats an empty value as native.
    pub fn from_env_value(value: &str) -> Option<Self> {
        match value {
            "" | "native" => Some(Self::Native),
            "frr" => Some(Self::Frr),
            "frr-k8s" => Some(Self::FrrK8s),
            _ => None,
        }
    }
}

/// The ConfigMap of raw FRR configuration MetalLB's FRR mode reads from its namespace.
pub const BGP_EXTRAS: &str = "bgpextras";
/// Its key.
const BGP_EXTRAS_KEY: &str = "extras";

/// The raw FRR configuration of `config_map` when it is [`BGP_EXTRAS`] (its `extras` key;
/// empty without one), `None` for any other ConfigMap.
pub fn bgp_extras_of(config_map: &ConfigMap) -> Option<String> {
    (config_map.name_any() == BGP_EXTRAS).then(|| {
        config_map
            .data
            .as_ref()
            .and_then(|d| d.get(BGP_EXTRAS_KEY))
            .cloned()
            .unwrap_or_default()
    })
}

/// Everything the configuration is built from. Fill only what you have: MetalLB's controller
/// builds from pools, communities and namespaces alone.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pools: Vec<api::IPAddressPool>,
    pub l2_advertisements: Vec<api::L2Advertisement>,
    pub bgp_advertisements: Vec<api::BGPAdvertisement>,
    /// v1beta2; v1beta1 objects are converted when loaded.
    pub peers: Vec<api::BGPPeer>,
    pub communities: Vec<api::Community>,
    pub bfd_profiles: Vec<api::BFDProfile>,
    /// For `serviceAllocation.namespaceSelectors`.
    pub namespaces: Vec<Namespace>,
    /// For the node selectors of advertisements and peers.
    pub nodes: Vec<Node>,
    /// For `BGPPeer.spec.passwordSecret` (Secrets in MetalLB's namespace).
    pub secrets: Vec<Secret>,
    /// The `extras` key of ConfigMap [`BGP_EXTRAS`]: FRR configuration MetalLB's FRR mode
    /// appends raw; refused (Herald runs no FRR).
    pub bgp_extras: Option<String>,
    pub bgp_mode: BgpMode,
    /// Skip the mode restrictions (native/FRR rules), as MetalLB's ConfigMap converter does.
    pub skip_mode_rules: bool,
}

impl Snapshot {
    /// Keeps the objects the configuration is built from (metallb.io kinds, Namespaces, Nodes,
    /// Secrets, ConfigMap `bgpextras`) and ignores the rest (Services, EndpointSlices, other
    /// ConfigMaps, status kinds).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Self::default();
        for object in objects {
            snapshot.add(object);
        }
        snapshot
    }

    /// Adds one object when it is configuration input; returns false when it was ignored.
    pub fn add(&mut self, object: Object) -> bool {
        match object {
            Object::IPAddressPool(o) => self.pools.push(o),
            Object::L2Advertisement(o) => self.l2_advertisements.push(o),
            Object::BGPAdvertisement(o) => self.bgp_advertisements.push(o),
            Object::BGPPeer(o) => self.peers.push(o),
            Object::Community(o) => self.communities.push(o),
            Object::BFDProfile(o) => self.bfd_profiles.push(o),
            Object::Namespace(o) => self.namespaces.push(o),
            Object::Node(o) => self.nodes.push(o),
            Object::Secret(o) => self.secrets.push(o),
            Object::ConfigMap(o) => match bgp_extras_of(&o) {
                Some(extras) => self.bgp_extras = Some(extras),
                None => return false,
            },
            _ => return false,
        }
        true
    }
}
