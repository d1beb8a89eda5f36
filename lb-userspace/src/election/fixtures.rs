//! Kubernetes objects for the tests of the speaker's planners (layer 2 and BGP), built from
//! JSON as the API server would hand them over.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

pub fn excluded_node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}}}))
    .unwrap()
}

pub fn unavailable_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}
    }))
    .unwrap()
}

/// A LoadBalancer Service in `default` with `ips` in its status.
pub fn service(name: &str, ips: &[&str]) -> Service {
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1"},
        "status": {"loadBalancer": {"ingress": ingress}}
    }))
    .unwrap()
}

/// An EndpointSlice of `service` with one ready endpoint on each of `nodes`.
pub fn slice(service: &str, nodes: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = nodes
        .iter()
        .map(|n| json!({"addresses": ["10.1.0.1"], "nodeName": n}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints
    }))
    .unwrap()
}

/// Merges `extra` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// `object` with `extra` merged in (see [`merge`]).
pub fn with<T: Serialize + DeserializeOwned>(object: T, extra: Value) -> T {
    let mut value = serde_json::to_value(object).unwrap();
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}
