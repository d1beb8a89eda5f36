//! The small HTTP endpoints of the long-running commands: `/metrics`, the `/healthz`, `/livez`
//! and `/readyz` probes, and JSON status documents (the speaker's `/status/bgp`). HTTP/1.1
//! through hyper, plain or over TLS ([`Security`]); with an authorizer, every path but the
//! probes needs a bearer token allowed to `get /metrics` (the probes never do: kubelet sends
//! none), as MetalLB's metrics behind kube-rbac-proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::authz::{Authorizer, Decision, bearer};

/// Answers one path: (status, content type, body).
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, &'static str, String) + Send + Sync>;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send its whole request head within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Pause after a failed accept (out of file descriptors, say), so it cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The path whose `get` permission an authorizer checks, for every path it guards.
pub const PROTECTED: &str = "/metrics";
/// The probes: never guarded.
const PROBES: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// How the endpoints are offered: TLS when an acceptor is given, and everything but the probes
/// behind the authorizer when one is (only with TLS: a token must not cross the network in the clear).
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<TlsAcceptor>,
    pub authorizer: Option<Authorizer>,
}

/// Binds `addr` now (so a taken port fails at start) and serves `handler` on a task. One
/// request per connection, at most [`MAX_CONNECTIONS`] at once, each closed when its TLS
/// handshake or request head takes longer than [`HEADER_TIMEOUT`] or the connection outlives
/// [`CONNECTION_LIFETIME`]: idle or slow clients cannot hold the endpoints (the probes among
/// them) hostage.
pub async fn serve(
    addr: SocketAddr,
    handler: Handler,
    security: Security,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Closed at once: the client sees a reset, not a hang.
                drop(stream);
                continue;
            };
            let handler = handler.clone();
            let security = security.clone();
            tokio::spawn(async move {
                let served = async {
                    match &security.tls {
                        None => one_connection(stream, handler, security.authorizer).await,
                        Some(tls) => {
                            match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    one_connection(stream, handler, security.authorizer).await;
                                }
                                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake too slow; closed"),
                            }
                        }
                    }
                };
                if tokio::time::timeout(CONNECTION_LIFETIME, served)
                    .await
                    .is_err()
                {
                    tracing::debug!("http connection outlived its lifetime; closed");
                }
                drop(slot);
            });
        }
    });
    Ok(bound)
}

/// Serves the one request of a connection.
async fn one_connection<S>(stream: S, handler: Handler, authorizer: Option<Authorizer>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let authorizer = authorizer.clone();
        async move {
            let path = request.uri().path().to_string();
            let (status, content_type, body) =
                match refused(&request, &path, authorizer.as_deref()).await {
                    Some(refusal) => refusal,
                    None => handler(&path),
                };
            let response = Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Full::new(Bytes::from(body)));
            Ok::<_, Infallible>(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// Why `request` for `path` is refused, if it is: 401 without a valid token, 403 when its user
/// may not `get` [`PROTECTED`], 503 when that cannot be decided now. Probes are never refused.
async fn refused(
    request: &Request<Incoming>,
    path: &str,
    authorizer: Option<&dyn super::authz::Authorize>,
) -> Option<(StatusCode, &'static str, String)> {
    let authorizer = authorizer.filter(|_| guarded(path))?;
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = bearer(header) else {
        return Some((
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "a bearer token is required\n".into(),
        ));
    };
    match authorizer.decide(token).await {
        Ok(Decision::Allowed) => None,
        Ok(Decision::Unauthenticated) => Some((
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "the token is not valid\n".into(),
        )),
        Ok(Decision::Forbidden(reason)) => {
            tracing::debug!(%reason, "metrics request forbidden");
            Some((
                StatusCode::FORBIDDEN,
                "text/plain",
                format!("forbidden: get {path}\n"),
            ))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check a metrics token");
            Some((
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "authorization unavailable\n".into(),
            ))
        }
    }
}

/// Whether an authorizer guards `path`: everything but the probes.
fn guarded(path: &str) -> bool {
    !PROBES.contains(&path)
}

/// Produces a JSON document (a status report).
pub type Json = Arc<dyn Fn() -> String + Send + Sync>;

/// `handler` with `path` answered by `json` (`application/json`).
pub fn with_json(handler: Handler, path: &'static str, json: Json) -> Handler {
    Arc::new(move |asked: &str| {
        if asked == path {
            (StatusCode::OK, "application/json", json())
        } else {
            handler(asked)
        }
    })
}

/// Produces the Prometheus text exposition of a component's metrics.
pub type Metrics = Arc<dyn Fn() -> String + Send + Sync>;
/// Says whether the component is ready to serve.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// The paths both components serve: `/metrics` when `metrics` is given; `/healthz`, `/livez`
/// and `/readyz` when `ready` is given; 404 for the rest.
pub fn endpoints(metrics: Option<Metrics>, ready: Option<Ready>) -> Handler {
    Arc::new(move |path: &str| match (path, &metrics, &ready) {
        ("/metrics", Some(metrics), _) => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        ("/healthz" | "/livez", _, Some(_)) => (StatusCode::OK, "text/plain", "ok\n".into()),
        ("/readyz", _, Some(ready)) if ready() => (StatusCode::OK, "text/plain", "ok\n".into()),
        ("/readyz", _, Some(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn endpoints_answer_what_they_were_given() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let both = endpoints(
            Some(Arc::new(|| "m 1\n".to_string())),
            Some(Arc::new(move || flag.load(Ordering::Relaxed))),
        );
        assert_eq!(both("/metrics").0, StatusCode::OK);
        assert_eq!(both("/metrics").2, "m 1\n");
        assert_eq!(both("/healthz").0, StatusCode::OK);
        assert_eq!(both("/livez").0, StatusCode::OK);
        assert_eq!(both("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::Relaxed);
        assert_eq!(both("/readyz").0, StatusCode::OK);
        assert_eq!(both("/other").0, StatusCode::NOT_FOUND);

        let metrics_only = endpoints(Some(Arc::new(String::new)), None);
        assert_eq!(metrics_only("/readyz").0, StatusCode::NOT_FOUND);
        let probes_only = endpoints(None, Some(Arc::new(|| true)));
        assert_eq!(probes_only("/metrics").0, StatusCode::NOT_FOUND);
        assert_eq!(probes_only("/readyz").0, StatusCode::OK);

        let with_status = with_json(both, "/status/bgp", Arc::new(|| "{}".to_string()));
        assert_eq!(
            with_status("/status/bgp"),
            (StatusCode::OK, "application/json", "{}".to_string())
        );
        assert_eq!(with_status("/metrics").2, "m 1\n");
        assert_eq!(with_status("/status/other").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn everything_but_the_probes_is_guarded() {
        for path in ["/metrics", "/status/bgp", "/", "/other"] {
            assert!(guarded(path), "{path}");
        }
        for path in ["/healthz", "/livez", "/readyz"] {
            assert!(!guarded(path), "{path}");
        }
    }
}
