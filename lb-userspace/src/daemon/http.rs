//! The small HTTP endpoints of the long-running commands: `/metrics` and the `/healthz`,
//! `/livez` and `/readyz` probes. Plain HTTP/1.1 through hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers one path: (status, content type, body).
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, &'static str, String) + Send + Sync>;

/// Binds `addr` now (so a taken port fails at start) and serves `handler` on a task.
pub async fn serve(addr: SocketAddr, handler: Handler) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (status, content_type, body) = handler(request.uri().path());
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from(body)));
                    async move {
                        Ok::<_, Infallible>(
                            response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                        )
                    }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "http connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
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
    }
}
