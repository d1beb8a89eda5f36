//! The Secrets BGPPeers name as `passwordSecret`, read one by one by name (the speaker may `get`
//! Secrets in its namespace but never lists or watches them): re-read every few seconds and at
//! once when the set of names changes, so a rotated password reaches its session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use crate::api;

/// How often the named Secrets are read again.
const REFRESH: Duration = Duration::from_secs(10);

/// The readable Secrets among those named, kept fresh by a task.
#[derive(Clone)]
pub struct PasswordSecrets {
    secrets: Arc<Mutex<BTreeMap<String, Secret>>>,
    first_read: watch::Receiver<bool>,
    /// Set once the BGPPeer cache holds its first list (see [`PasswordSecrets::begin`]).
    go: watch::Sender<bool>,
}

/// The Secret names the BGPPeers refer to.
fn wanted(peers: &Store<api::BGPPeer>) -> BTreeSet<String> {
    peers
        .state()
        .iter()
        .filter_map(|p| p.spec.password_secret.as_ref()?.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

impl PasswordSecrets {
    pub fn start(
        client: &Client,
        namespace: &str,
        peers: Store<api::BGPPeer>,
        changed: Arc<Notify>,
    ) -> Self {
        let secrets = Arc::new(Mutex::new(BTreeMap::new()));
        let (first_tx, first_read) = watch::channel(false);
        let (go, mut go_rx) = watch::channel(false);
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let shared = secrets.clone();
        tokio::spawn(async move {
            // Not `peers.wait_until_ready()`: a kube Store's readiness wakes only the last of
            // several tasks waiting on it at once, so a second waiter here could leave the
            // speaker's own wait for the BGPPeer cache asleep for ever. The speaker says when.
            let _ = go_rx.wait_for(|go| *go).await;
            let mut last_names = BTreeSet::new();
            let mut ticks = 0u32;
            loop {
                let names = wanted(&peers);
                // Every REFRESH, or within a second when the names change.
                if names != last_names || ticks.is_multiple_of(REFRESH.as_secs() as u32) {
                    let mut read = BTreeMap::new();
                    for name in &names {
                        match api.get_opt(name).await {
                            Ok(Some(secret)) => {
                                read.insert(name.clone(), secret);
                            }
                            Ok(None) => {
                                tracing::warn!(secret = %name, "passwordSecret not found");
                            }
                            Err(error) => {
                                tracing::warn!(secret = %name, %error, "cannot read passwordSecret");
                            }
                        }
                    }
                    let differs = match shared.lock() {
                        Ok(mut current) => {
                            let differs = *current != read;
                            *current = read;
                            differs
                        }
                        Err(_) => false,
                    };
                    if differs {
                        changed.notify_one();
                    }
                    let _ = first_tx.send(true);
                    last_names = names;
                }
                ticks = ticks.wrapping_add(1);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        PasswordSecrets {
            secrets,
            first_read,
            go,
        }
    }

    /// Starts reading: the BGPPeer cache holds its first list.
    pub fn begin(&self) {
        let _ = self.go.send(true);
    }

    /// Waits until the named Secrets were read once.
    pub async fn wait_first_read(&self) {
        let mut rx = self.first_read.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    pub fn current(&self) -> Vec<Secret> {
        self.secrets
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}
