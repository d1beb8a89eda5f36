//! Support for tests against a real Kubernetes control plane (include with
//! `#[path = "support/kube/mod.rs"] mod kube_support;`).

#![allow(dead_code)]

pub mod cluster;
pub mod control_plane;
pub mod herald;
pub mod netns;
pub mod speaker;
pub mod tls;
