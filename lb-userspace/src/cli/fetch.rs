//! One HTTP GET from a command to a running component's endpoint (`herald bgp status` to the
//! speaker's `/status/bgp`): hyper's HTTP/1.1 client over TCP, or over TLS verified against a
//! given CA, with an optional bearer token.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Uri;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The whole exchange (connect, TLS, request, body) must end within this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach an endpoint.
#[derive(Clone, Debug, Default)]
pub struct Access<'a> {
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<&'a str>,
    /// PEM CA certificates an `https` server must chain to.
    pub ca: Option<&'a Path>,
}

/// GETs `url` (`http://` or `https://`): the status code and the body.
pub async fn get(url: &str, access: &Access<'_>) -> Result<(u16, String)> {
    tokio::time::timeout(TIMEOUT, exchange(url, access))
        .await
        .with_context(|| format!("no answer from {url} within {TIMEOUT:?}"))?
}

async fn exchange(url: &str, access: &Access<'_>) -> Result<(u16, String)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    // `Some(CA)`: over TLS, verified against that CA.
    let tls: Option<&Path> = match (uri.scheme_str(), access.ca) {
        (Some("http"), _) => None,
        (Some("https"), Some(ca)) => Some(ca),
        (Some("https"), None) => {
            bail!("{url:?} is HTTPS: pass the CA that signed the speaker's certificate (--ca-cert)")
        }
        _ => bail!("{url:?}: expected http:// or https://"),
    };
    let Some(authority) = uri.authority().cloned() else {
        bail!("{url:?} names no host");
    };
    // `[2001:db8::1]` in a URL, `2001:db8::1` to connect to.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path).header(hyper::header::HOST, authority.as_str());
    let request = match access.token {
        Some(token) => request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    };
    let request = request
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let Some(ca) = tls else {
        return send(tcp, request).await;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca)?));
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is not a TLS server name"))?;
    let stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        // webpki's words for a server presenting a CA certificate as its own.
        Err(error) if error.to_string().contains("CaUsedAsEndEntity") => bail!(
            "TLS with {authority}: the speaker presents a CA certificate as its own (self-signed?); \
             give it a certificate signed by a CA and pass that CA with --ca-cert"
        ),
        Err(error) => return Err(error).with_context(|| format!("TLS with {authority}")),
    };
    send(stream, request).await
}

/// TLS trusting only the CA certificates in `ca`.
fn client_config(ca: &Path) -> Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading CA certificates from {}", ca.display()))?;
    if certs.is_empty() {
        bail!("no PEM certificate in {}", ca.display());
    }
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("a CA certificate of {}", ca.display()))?;
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn send<S>(stream: S, request: hyper::Request<Empty<Bytes>>) -> Result<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .context("sending the request")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::http::{self, Security};

    #[tokio::test]
    async fn gets_a_json_document_from_the_endpoints() {
        let handler = http::with_json(
            http::endpoints(None, Some(Arc::new(|| true))),
            "/status/bgp",
            Arc::new(|| "{\"node\":\"a\",\"sessions\":[]}".to_string()),
        );
        let bound = http::serve("127.0.0.1:0".parse().unwrap(), handler, Security::default())
            .await
            .unwrap();
        let base = format!("http://{bound}");
        let access = Access::default();
        assert_eq!(
            get(&format!("{base}/status/bgp"), &access).await.unwrap(),
            (200, "{\"node\":\"a\",\"sessions\":[]}".to_string())
        );
        assert_eq!(get(&format!("{base}/nope"), &access).await.unwrap().0, 404);
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_check() {
        let access = Access::default();
        let https = get("https://127.0.0.1:1/status/bgp", &access)
            .await
            .unwrap_err();
        assert!(https.to_string().contains("--ca-cert"), "{https}");
        let other = get("ftp://127.0.0.1/x", &access).await.unwrap_err();
        assert!(other.to_string().contains("expected http"), "{other}");
    }

    #[tokio::test]
    async fn a_self_signed_server_certificate_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::daemon::tls::testing::self_signed(dir.path(), "speaker");
        let security = Security {
            tls: Some(crate::daemon::tls::acceptor(&cert, &key).unwrap()),
            authorizer: None,
        };
        let handler = http::with_json(
            http::endpoints(None, Some(Arc::new(|| true))),
            "/status/bgp",
            Arc::new(|| "{}".to_string()),
        );
        let bound = http::serve("127.0.0.1:0".parse().unwrap(), handler, security)
            .await
            .unwrap();
        let access = Access {
            token: None,
            ca: Some(&cert),
        };
        let error = get(&format!("https://{bound}/status/bgp"), &access)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("signed by a CA"), "{error:#}");
    }
}
