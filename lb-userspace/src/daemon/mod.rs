//! What the two long-running commands (controller and speaker) share as processes: the HTTP
//! endpoints for metrics and probes (optionally over TLS, with `/metrics` behind an
//! authorizer), and graceful-shutdown signals.

pub mod authz;
pub mod http;
pub mod tls;

use std::path::PathBuf;

/// How `/metrics` is offered, as the command line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsAccess {
    /// PEM certificate chain and key: HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A bearer token allowed to `get /metrics` is required (only with TLS).
    pub authz: bool,
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C where the handlers cannot be installed): the
/// long-running commands shut down gracefully on either.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
