//! Watches of the kinds users write (IPAddressPool, L2Advertisement, Community), decoded one
//! object at a time. A typed watch decodes a whole listing at once, so one object the API server
//! accepted but Herald cannot read would fail every listing: the cache never syncs and a
//! restarted component never serves. Here such an object is reported in [`Rejected`] and left
//! out; its last readable version, if any, stays in the cache. The components treat a rejected
//! object like an invalid configuration: the last valid one keeps serving, and the object is
//! named in ConfigurationState.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// The objects of the checked watches that could not be decoded, with why.
#[derive(Clone, Debug, Default)]
pub struct Rejected(Arc<Mutex<BTreeMap<(String, String), String>>>);

impl Rejected {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, kind: &str, key: String, error: String) {
        self.entries().insert((kind.to_string(), key), error);
    }

    fn clear(&self, kind: &str, key: &str) {
        self.entries().remove(&(kind.to_string(), key.to_string()));
    }

    /// One line per rejected object, sorted: `Kind "namespace/name": cannot be read: why`.
    pub fn lines(&self) -> Vec<String> {
        self.entries()
            .iter()
            .map(|((kind, key), error)| format!("{kind} {key:?}: cannot be read: {error}"))
            .collect()
    }
}

/// `namespace/name` (or `name`) of an object, as the lines name it.
fn key_of(meta: &kube::api::ObjectMeta) -> String {
    let name = meta.name.clone().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    }
}

fn object_ref<K: Resource<DynamicType = ()>>(meta: &kube::api::ObjectMeta) -> ObjectRef<K> {
    let mut r = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    r.namespace.clone_from(&meta.namespace);
    r
}

/// The typed event for one event of the untyped watch: undecodable objects are reported and
/// replaced by their last readable version from `cached` (or left out). `None`: nothing to
/// apply.
pub fn typed_event<K>(
    event: watcher::Event<DynamicObject>,
    cached: impl Fn(&ObjectRef<K>) -> Option<Arc<K>>,
    rejected: &Rejected,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let decode = |mut object: DynamicObject| -> Option<K> {
        // A spec the CRD lets users leave out (an L2Advertisement with none: every pool, every
        // node) is an empty one, as in MetalLB.
        if let Some(fields) = object.data.as_object_mut() {
            fields
                .entry("spec")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        }
        let key = key_of(&object.metadata);
        let reference = object_ref::<K>(&object.metadata);
        match object.try_parse::<K>() {
            Ok(typed) => {
                rejected.clear(&kind, &key);
                Some(typed)
            }
            Err(error) => {
                tracing::warn!(%kind, object = %key, %error,
                    "cannot read this object: it is left out, its last readable version (if any) stays");
                rejected.set(&kind, key, error.to_string());
                cached(&reference).map(|old| (*old).clone())
            }
        }
    };
    match event {
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
        watcher::Event::InitApply(object) => decode(object).map(watcher::Event::InitApply),
        watcher::Event::Apply(object) => decode(object).map(watcher::Event::Apply),
        watcher::Event::Delete(object) => {
            rejected.clear(&kind, &key_of(&object.metadata));
            let reference = object_ref::<K>(&object.metadata);
            cached(&reference)
                .map(|old| watcher::Event::Delete((*old).clone()))
                .or_else(|| object.try_parse::<K>().ok().map(watcher::Event::Delete))
        }
    }
}

/// The untyped API of kind `K` in `namespace` (every namespace when `None`).
pub fn api<K: Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Starts a checked watch of `K` (through the untyped `api`) with a local cache, on its own
/// task; `on_event` sees every typed event after the cache applied it. Watch errors are retried
/// with [`super::watch_backoff`], forever.
pub fn spawn<K, F>(
    api: Api<DynamicObject>,
    config: watcher::Config,
    rejected: Rejected,
    mut on_event: F,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(&watcher::Event<K>) + Send + 'static,
{
    let mut writer = reflector::store::Writer::<K>::new(());
    let store = writer.as_reader();
    let cache = store.clone();
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, config)
        .backoff(super::watch_backoff())
        .modify(super::strip);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if let Some(typed) = typed_event(event, |r| cache.get(r), &rejected) {
                        writer.apply_watcher_event(&typed);
                        on_event(&typed);
                    }
                }
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IPAddressPool;
    use serde_json::json;

    fn object(name: &str, priority: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": ["198.51.100.0/24"],
                     "serviceAllocation": {"priority": priority}}
        }))
        .unwrap()
    }

    fn priority(event: &watcher::Event<IPAddressPool>) -> Option<i64> {
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p) => {
                p.spec.service_allocation.as_ref().map(|s| s.priority)
            }
            _ => None,
        }
    }

    #[test]
    fn a_readable_object_passes_and_clears_its_rejection() {
        let rejected = Rejected::default();
        rejected.set("IPAddressPool", "metallb-system/a".into(), "old".into());
        let event = typed_event::<IPAddressPool>(
            watcher::Event::Apply(object("a", json!(5))),
            |_| None,
            &rejected,
        );
        assert_eq!(event.as_ref().and_then(priority), Some(5));
        assert_eq!(rejected.lines(), Vec::<String>::new());
    }

    #[test]
    fn an_unreadable_object_is_reported_and_its_last_version_kept() {
        let rejected = Rejected::default();
        let old = Arc::new(object("a", json!(5)).try_parse::<IPAddressPool>().unwrap());
        let cached = |_: &ObjectRef<IPAddressPool>| Some(old.clone());
        for event in [
            watcher::Event::Apply(object("a", json!("soon"))),
            watcher::Event::InitApply(object("a", json!("soon"))),
        ] {
            let typed = typed_event::<IPAddressPool>(event, cached, &rejected);
            assert_eq!(
                typed.as_ref().and_then(priority),
                Some(5),
                "the last good one"
            );
        }
        let lines = rejected.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("IPAddressPool \"metallb-system/a\": cannot be read:"),
            "{lines:?}"
        );
        // Never readable: left out.
        let typed = typed_event::<IPAddressPool>(
            watcher::Event::InitApply(object("b", json!([]))),
            |_| None,
            &rejected,
        );
        assert!(typed.is_none());
        assert_eq!(rejected.lines().len(), 2);
    }

    #[test]
    fn a_missing_spec_reads_as_an_empty_one() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "all", "namespace": "metallb-system"}
        }))
        .unwrap();
        let rejected = Rejected::default();
        let typed = typed_event::<crate::api::L2Advertisement>(
            watcher::Event::Apply(object),
            |_| None,
            &rejected,
        );
        assert!(matches!(typed, Some(watcher::Event::Apply(_))), "{typed:?}");
        assert_eq!(rejected.lines(), Vec::<String>::new());
    }

    #[test]
    fn deleting_an_unreadable_object_removes_its_last_version_and_its_report() {
        let rejected = Rejected::default();
        rejected.set("IPAddressPool", "metallb-system/a".into(), "bad".into());
        let old = Arc::new(object("a", json!(5)).try_parse::<IPAddressPool>().unwrap());
        let typed = typed_event::<IPAddressPool>(
            watcher::Event::Delete(object("a", json!("soon"))),
            |_| Some(old.clone()),
            &rejected,
        );
        assert!(matches!(typed, Some(watcher::Event::Delete(_))));
        assert_eq!(rejected.lines(), Vec::<String>::new());
        // Listing markers pass through.
        assert!(matches!(
            typed_event::<IPAddressPool>(watcher::Event::Init, |_| None, &rejected),
            Some(watcher::Event::Init)
        ));
        assert!(matches!(
            typed_event::<IPAddressPool>(watcher::Event::InitDone, |_| None, &rejected),
            Some(watcher::Event::InitDone)
        ));
    }
}
