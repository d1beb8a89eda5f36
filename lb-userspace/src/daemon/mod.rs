//! What the two long-running commands (controller and speaker) share as processes: the HTTP
//! endpoints for metrics and probes, and graceful-shutdown signals.

pub mod http;

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
