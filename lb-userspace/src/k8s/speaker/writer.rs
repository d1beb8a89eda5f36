//! The speaker's writes: ServiceL2Status and ServiceBGPStatus objects (one generic path over
//! [`StatusKind`]), Events as `metallb-speaker`, and its ConfigurationState. Typed primitives
//! only; what to write is decided by the speaker.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE, SPEAKER_COMPONENT};
use crate::api::ServiceStatus;
use crate::api::{
    BgpServiceStatus, ConfigurationStateStatus, L2ServiceStatus, ServiceBGPStatus,
    ServiceBGPStatusSpec, ServiceL2Status, ServiceL2StatusSpec,
};
use crate::k8s::config_state::{self, LABEL_COMPONENT_TYPE, LABEL_NODE_NAME};
use crate::k8s::events::{EventSink, Severity};

/// An Event on a Service, as the speaker records it.
#[derive(Clone, Copy, Debug)]
pub struct ServiceEvent<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
    pub warning: bool,
    pub reason: &'a str,
    pub message: &'a str,
}

/// A per-(node, Service) status kind the speaker keeps: the object, its status, and how a new
/// one is named.
pub trait StatusKind:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Status: ServiceStatus + Serialize + Send + Sync + 'static;
    /// MetalLB's generateName prefix.
    const GENERATE_NAME: &'static str;
    /// An object with `metadata` and no status yet.
    fn blank(metadata: ObjectMeta) -> Self;
    fn status(&self) -> Option<&Self::Status>;
}

impl StatusKind for ServiceL2Status {
    type Status = L2ServiceStatus;
    const GENERATE_NAME: &'static str = "l2-";
    fn blank(metadata: ObjectMeta) -> Self {
        ServiceL2Status {
            metadata,
            spec: ServiceL2StatusSpec {},
            status: None,
        }
    }
    fn status(&self) -> Option<&L2ServiceStatus> {
        self.status.as_ref()
    }
}

impl StatusKind for ServiceBGPStatus {
    type Status = BgpServiceStatus;
    const GENERATE_NAME: &'static str = "bgp-";
    fn blank(metadata: ObjectMeta) -> Self {
        ServiceBGPStatus {
            metadata,
            spec: ServiceBGPStatusSpec {},
            status: None,
        }
    }
    fn status(&self) -> Option<&BgpServiceStatus> {
        self.status.as_ref()
    }
}

/// Writes status objects, Events and the ConfigurationState of one node.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    namespace: String,
    node: String,
    events: EventSink,
}

impl Writer {
    pub fn new(client: &Client, namespace: &str, node: &str) -> Writer {
        Writer {
            client: client.clone(),
            namespace: namespace.to_string(),
            node: node.to_string(),
            events: EventSink::new(client.clone(), SPEAKER_COMPONENT, node),
        }
    }

    /// Creates a status object of kind `K` for `service_key` (`namespace/name`) with `status`
    /// (generateName `l2-` / `bgp-`, MetalLB's labels); `owner` is this node's speaker Pod
    /// (MetalLB's owner). Returns the generated name.
    pub async fn create_status<K: StatusKind>(
        &self,
        service_key: &str,
        status: &K::Status,
        owner: Option<&Pod>,
    ) -> Result<String, kube::Error> {
        let (svc_ns, svc_name) = service_key.split_once('/').unwrap_or(("", service_key));
        let labels: BTreeMap<String, String> = [
            (LABEL_NODE.to_string(), self.node.clone()),
            (LABEL_SERVICE_NAME.to_string(), svc_name.to_string()),
            (LABEL_SERVICE_NAMESPACE.to_string(), svc_ns.to_string()),
        ]
        .into();
        let owner_references = owner.and_then(owner_reference).map(|o| vec![o]);
        let object = K::blank(ObjectMeta {
            generate_name: Some(K::GENERATE_NAME.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references,
            ..ObjectMeta::default()
        });
        let created = self
            .statuses::<K>()
            .create(&PostParams::default(), &object)
            .await?;
        let name = created.meta().name.clone().unwrap_or_default();
        self.update_status::<K>(&name, status).await?;
        Ok(name)
    }

    /// Deletes a status object of kind `K` (already gone counts as done).
    pub async fn delete_status<K: StatusKind>(&self, name: &str) -> Result<(), kube::Error> {
        match self
            .statuses::<K>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Err(e) if crate::k8s::is_not_found(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Writes the status of an existing status object of kind `K`.
    pub async fn update_status<K: StatusKind>(
        &self,
        name: &str,
        status: &K::Status,
    ) -> Result<(), kube::Error> {
        let patch = json!({ "status": status });
        self.statuses::<K>()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    fn statuses<K: StatusKind>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Records an Event on Service `namespace/name` (`uid` from the watch cache when known).
    pub async fn event(&self, event: &ServiceEvent<'_>) -> Result<(), kube::Error> {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(event.name.to_string()),
            namespace: Some(event.namespace.to_string()),
            uid: event.uid.map(str::to_string),
            ..ObjectReference::default()
        };
        self.events
            .publish_ref(
                regarding,
                Severity::warning_if(event.warning),
                event.reason,
                "Announce",
                event.message,
            )
            .await
    }
}

impl Writer {
    /// Records an Event on BGPPeer `peer` in MetalLB's namespace.
    pub async fn peer_event(
        &self,
        peer: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let regarding = ObjectReference {
            api_version: Some("metallb.io/v1beta2".into()),
            kind: Some("BGPPeer".into()),
            name: Some(peer.to_string()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        };
        self.events
            .publish_ref(
                regarding,
                Severity::warning_if(warning),
                reason,
                "Peer",
                message,
            )
            .await
    }
}

impl Writer {
    /// Records an Event on this speaker's Node (what the data plane did on the node itself).
    pub async fn node_event(
        &self,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            ..ObjectReference::default()
        };
        self.events
            .publish_ref(
                regarding,
                Severity::warning_if(warning),
                reason,
                "Attach",
                message,
            )
            .await
    }
}

impl Writer {
    /// Records an Event on this speaker's own Pod (why the speaker stops: shown by `kubectl
    /// describe pod` beside the kubelet's restarts).
    pub async fn pod_event(
        &self,
        pod: &Pod,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        self.events
            .publish_ref(
                pod.object_ref(&()),
                Severity::Warning,
                reason,
                "Start",
                message,
            )
            .await
    }
}

impl Writer {
    /// Creates `ConfigurationState speaker-<node>` when absent (labels
    /// `metallb.io/component-type=speaker`, `metallb.io/node-name`, owner = speaker Pod) and
    /// writes its status.
    pub async fn configuration_state(
        &self,
        status: ConfigurationStateStatus,
        owner: Option<&Pod>,
    ) -> Result<(), kube::Error> {
        let labels = BTreeMap::from([
            (LABEL_COMPONENT_TYPE.to_string(), "speaker".to_string()),
            (LABEL_NODE_NAME.to_string(), self.node.clone()),
        ]);
        config_state::write(
            &self.client,
            &self.namespace,
            &format!("speaker-{}", self.node),
            labels,
            owner.and_then(owner_reference),
            status,
        )
        .await
    }
}

impl Writer {
    /// Records a Warning Event on `ConfigurationState speaker-<node>`: the configuration this
    /// speaker reads was refused (`message` names each object and field), the last good one
    /// keeps serving.
    pub async fn configuration_error(&self, message: &str) -> Result<(), kube::Error> {
        let regarding = config_state::reference(&self.namespace, &format!("speaker-{}", self.node));
        self.events
            .publish_ref(
                regarding,
                Severity::Warning,
                "ConfigurationError",
                "LoadConfiguration",
                message,
            )
            .await
    }
}

fn owner_reference(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}
