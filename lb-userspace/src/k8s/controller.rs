//! The controller's Kubernetes side: the watches it decides from (Services, Namespaces,
//! IPAddressPools, Communities), every write it makes (Service status and pool annotation, pool
//! status, ConfigurationState `controller`, the memberlist Secret, Events as
//! `metallb-controller`) and its Lease. No decisions here: `controller` decides, this module
//! lists and writes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::reflector::{ObjectRef, Store};

use super::checked::{self, Rejected};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::events::{CONTROLLER_COMPONENT, EventQueue, EventSink, Severity};
use super::lease::{Leadership, LeaseLock, LeaseTimings};
use super::writes::{self, SecretError};
use super::{ApiError, ClientError, config_state, metallb_api};
use crate::api::{Community, ConfigurationStateStatus, IPAddressPool};

/// The controller's ConfigurationState object in MetalLB's namespace.
pub const CONFIGURATION_STATE: &str = "controller";

/// A Service by namespace and name: how the watch cache, the retries and the writes in flight
/// know it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl ServiceRef {
    pub fn of(service: &Service) -> Self {
        ServiceRef {
            namespace: service.metadata.namespace.clone(),
            name: service.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace.as_deref().unwrap_or(""), self.name)
    }
}

/// As the controller's logs have always named a Service: `Service.v1./name.namespace`.
impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Service.v1./{}", self.name)?;
        if let Some(namespace) = &self.namespace {
            write!(f, ".{namespace}")?;
        }
        Ok(())
    }
}

/// Why the reconcile loop must look again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// A Service was added, changed or deleted.
    Service(ServiceRef),
    /// A configuration object or Namespace changed: rebuild the configuration.
    Config,
    /// The Service watch re-listed: deletions may have been missed.
    Resync,
}

/// The controller's connection to the API server, in MetalLB's namespace: the only way the
/// controller reads or writes the cluster.
pub struct Cluster {
    client: Client,
    namespace: String,
    /// This replica's name in the Lease and on Events.
    identity: String,
    events: EventSink,
    /// Until when this replica may write as leader (set by the election task).
    leadership: Leadership,
}

impl Cluster {
    /// Connects with an explicit kubeconfig file, else the usual inference (see
    /// [`super::client`]). `namespace` is MetalLB's; `identity` names this replica.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: &str,
        identity: &str,
    ) -> Result<Cluster, ClientError> {
        Ok(Cluster::new(
            super::client(kubeconfig).await?,
            namespace,
            identity,
        ))
    }

    pub fn new(client: Client, namespace: &str, identity: &str) -> Cluster {
        Cluster {
            events: EventSink::new(client.clone(), CONTROLLER_COMPONENT, identity),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            leadership: Leadership::default(),
            client,
        }
    }

    /// Starts the watches, each on its own task; every change is reported on `triggers`.
    pub fn watch(&self, triggers: mpsc::UnboundedSender<Trigger>) -> Caches {
        let services = {
            let tx = triggers.clone();
            super::spawn_reflector(Api::<Service>::all(self.client.clone()), (), move |event| {
                if let Some(trigger) = service_trigger(event) {
                    let _ = tx.send(trigger);
                }
            })
        };
        let namespaces = super::spawn_reflector(
            Api::<Namespace>::all(self.client.clone()),
            (),
            config_trigger(triggers.clone()),
        );
        let rejected = Rejected::default();
        let pools = checked::spawn(
            checked::api::<IPAddressPool>(&self.client, Some(&self.namespace)),
            watcher::Config::default(),
            rejected.clone(),
            config_trigger(triggers.clone()),
        );
        let communities = checked::spawn(
            checked::api::<Community>(&self.client, Some(&self.namespace)),
            watcher::Config::default(),
            rejected.clone(),
            config_trigger(triggers),
        );
        Caches {
            services,
            namespaces,
            pools,
            communities,
            rejected,
        }
    }

    /// Runs the leader election on Lease `lease_name` in its own task, publishing whether this
    /// replica leads on `leading`; the task releases a held lease once `shutdown` fires, then
    /// ends.
    pub fn elect(
        &self,
        lease_name: &str,
        timings: LeaseTimings,
        leading: watch::Sender<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let lock = LeaseLock::new(
            Api::<Lease>::namespaced(self.client.clone(), &self.namespace),
            lease_name,
            &self.identity,
            timings,
        );
        tokio::spawn(super::lease::run(
            lock,
            leading,
            self.leadership.clone(),
            shutdown,
        ))
    }

    /// Leader-only writes go out only while the lease is ours by our own clock.
    fn still_leading(&self) -> Result<(), ApiError> {
        if self.leadership.holds() {
            Ok(())
        } else {
            Err(ApiError::NotLeading)
        }
    }

    /// Starts the background queue of Events about Services (see [`EventQueue::start`]).
    pub fn event_queue(
        &self,
        concurrency: usize,
        writes_in_flight: watch::Receiver<usize>,
    ) -> EventQueue {
        EventQueue::start(self.events.clone(), concurrency, writes_in_flight)
    }

    /// Records an Event about ConfigurationState `controller` (the configuration's verdict).
    pub async fn configuration_event(
        &self,
        severity: Severity,
        reason: &str,
        action: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let regarding = config_state::reference(&self.namespace, CONFIGURATION_STATE);
        self.events
            .publish_ref(regarding, severity, reason, action, message)
            .await
            .map_err(ApiError::from)
    }

    /// Sends `patch` (see `controller::plan::service_patch`) to the Service's status
    /// subresource; returns the Service as written.
    pub async fn write_service(
        &self,
        service: &ServiceRef,
        patch: &Value,
    ) -> Result<Service, ApiError> {
        self.still_leading()?;
        let namespace = service.namespace.as_deref().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        Ok(writes::service_status_patch(&api, &service.name, patch).await?)
    }

    /// Merges `status` (see `controller::plan::pool_status`) into IPAddressPool `pool`'s status.
    pub async fn write_pool_status(&self, pool: &str, status: Value) -> Result<(), ApiError> {
        self.still_leading()?;
        let api = metallb_api(
            &self.client,
            &self.namespace,
            "IPAddressPool",
            "ipaddresspools",
        );
        writes::dynamic_status(&api, pool, status).await?;
        Ok(())
    }

    /// Creates the memberlist Secret `name` unless it exists, owned by Deployment `deployment`
    /// when given. Returns whether it was created.
    pub async fn ensure_memberlist_secret(
        &self,
        name: &str,
        deployment: Option<&str>,
    ) -> Result<bool, SecretError> {
        writes::ensure_memberlist_secret(&self.client, &self.namespace, name, deployment).await
    }

    /// Writes ConfigurationState `controller` (created when absent, labelled
    /// `metallb.io/component-type=controller`).
    pub async fn write_configuration_state(
        &self,
        status: ConfigurationStateStatus,
    ) -> Result<(), ApiError> {
        self.still_leading()?;
        let labels = BTreeMap::from([(
            config_state::LABEL_COMPONENT_TYPE.to_string(),
            "controller".to_string(),
        )]);
        config_state::write(
            &self.client,
            &self.namespace,
            CONFIGURATION_STATE,
            labels,
            None,
            status,
        )
        .await?;
        Ok(())
    }
}

/// The watch caches the controller reads, as snapshots of values.
pub struct Caches {
    services: Store<Service>,
    namespaces: Store<Namespace>,
    pools: Store<IPAddressPool>,
    communities: Store<Community>,
    /// Configuration objects that could not be read.
    rejected: Rejected,
}

impl Caches {
    /// Waits until every cache has listed once.
    pub async fn wait_synced(&self) {
        let _ = tokio::join!(
            self.services.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.pools.wait_until_ready(),
            self.communities.wait_until_ready()
        );
    }

    pub fn service(&self, service: &ServiceRef) -> Option<Arc<Service>> {
        let mut key = ObjectRef::new(&service.name);
        key.namespace.clone_from(&service.namespace);
        self.services.get(&key)
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces.state()
    }

    pub fn pools(&self) -> Vec<Arc<IPAddressPool>> {
        self.pools.state()
    }

    pub fn communities(&self) -> Vec<Arc<Community>> {
        self.communities.state()
    }

    /// Configuration objects that could not be read, one line each.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lines()
    }
}

/// What a Service watch event asks of the loop: the Service looked at again, or (after a
/// re-list) a resync; nothing for the start of a listing.
fn service_trigger(event: &watcher::Event<Service>) -> Option<Trigger> {
    match event {
        watcher::Event::Apply(svc)
        | watcher::Event::Delete(svc)
        | watcher::Event::InitApply(svc) => Some(Trigger::Service(ServiceRef::of(svc))),
        watcher::Event::InitDone => Some(Trigger::Resync),
        watcher::Event::Init => None,
    }
}

/// Whether a configuration kind's watch event changes the configuration (the initial listing
/// counts once, at its end).
fn config_changed<K>(event: &watcher::Event<K>) -> bool {
    matches!(
        event,
        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
    )
}

/// A watch callback asking for a configuration rebuild on any change of a configuration kind.
fn config_trigger<K>(
    tx: mpsc::UnboundedSender<Trigger>,
) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    move |event: &watcher::Event<K>| {
        if config_changed(event) {
            let _ = tx.send(Trigger::Config);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str) -> Service {
        let mut svc = Service::default();
        svc.metadata.namespace = Some(namespace.into());
        svc.metadata.name = Some(name.into());
        svc
    }

    #[test]
    fn service_refs_key_and_display_as_before() {
        let namespaced = ServiceRef {
            namespace: Some("t".into()),
            name: "web".into(),
        };
        assert_eq!(namespaced.key(), "t/web");
        assert_eq!(namespaced.to_string(), "Service.v1./web.t");
        let bare = ServiceRef {
            namespace: None,
            name: "web".into(),
        };
        assert_eq!(bare.key(), "/web");
        assert_eq!(bare.to_string(), "Service.v1./web");
    }

    #[test]
    fn service_events_name_the_service_and_a_relist_resyncs() {
        let web = || service("t", "web");
        let named = Some(Trigger::Service(ServiceRef {
            namespace: Some("t".into()),
            name: "web".into(),
        }));
        assert_eq!(service_trigger(&watcher::Event::Apply(web())), named);
        assert_eq!(service_trigger(&watcher::Event::Delete(web())), named);
        assert_eq!(service_trigger(&watcher::Event::InitApply(web())), named);
        assert_eq!(
            service_trigger(&watcher::Event::<Service>::InitDone),
            Some(Trigger::Resync)
        );
        assert_eq!(service_trigger(&watcher::Event::<Service>::Init), None);
    }

    #[test]
    fn configuration_changes_count_once_per_listing() {
        let pool = IPAddressPool::new("p", crate::api::IPAddressPoolSpec::default());
        assert!(config_changed(&watcher::Event::Apply(pool.clone())));
        assert!(config_changed(&watcher::Event::Delete(pool.clone())));
        assert!(!config_changed(&watcher::Event::Init::<IPAddressPool>));
        assert!(!config_changed(&watcher::Event::InitApply(pool)));
        assert!(config_changed(&watcher::Event::InitDone::<IPAddressPool>));
    }
}
