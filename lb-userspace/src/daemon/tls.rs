//! TLS for the metrics endpoint: a certificate chain and key in PEM files (what cert-manager or
//! a Secret mount provides), read again when either file changes, so a rotated certificate is
//! served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at again (a stat of each) while handshakes come in.
const RECHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate file {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("reading key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads `cert` (PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1).
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signing = ring::sign::any_supported_type(&der).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: format!("does not match the certificate: {e}"),
    })?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The certificate in use and what its files looked like when it was read.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Serves the certificate of two files, reloaded when they change; a reload that fails keeps
/// the previous certificate (and says why).
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl Reloading {
    fn stamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        (modified(&self.cert), modified(&self.key))
    }
}

impl Reloading {
    /// The certificate to serve now, read again first if the files changed since the last look
    /// (at most every [`RECHECK`]).
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let stamps = self.stamps();
            if stamps != current.stamps {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "metrics TLS certificate reloaded");
                        current.key = Arc::new(key);
                        current.stamps = stamps;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "metrics TLS certificate changed but cannot be read; keeping the previous one");
                    }
                }
            }
        }
        current.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn reloading(cert: &Path, key: &Path) -> Result<Reloading, TlsError> {
    Ok(Reloading {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: Mutex::new(Current {
            key: Arc::new(load(cert, key)?),
            stamps: (modified(cert), modified(key)),
            checked: Instant::now(),
        }),
    })
}

/// An acceptor for `cert` and `key`, read now (so a bad file fails at start).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let resolver = reloading(cert, key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Certificates for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    /// A fresh self-signed P-256 certificate (a CA, as openssl makes them) for 127.0.0.1 and
    /// its key under `dir` with `name` (openssl).
    pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (cert, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_by_name_and_a_rotation_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = testing::self_signed(dir.path(), "one");
        let (other_cert, other_key) = testing::self_signed(dir.path(), "two");
        assert!(matches!(
            acceptor(&dir.path().join("missing.crt"), &key),
            Err(TlsError::Certificate { .. })
        ));
        assert!(matches!(
            acceptor(&key, &key),
            Err(TlsError::Certificate { .. })
        ));
        let mismatch = acceptor(&cert, &other_key).err().unwrap().to_string();
        assert!(mismatch.contains("does not match"), "{mismatch}");

        let resolver = reloading(&cert, &key).unwrap();
        let first = resolver.current().cert.clone();
        // Rotated in place (as a Secret mount or cert-manager does), then looked at again.
        std::fs::copy(&other_cert, &cert).unwrap();
        std::fs::copy(&other_key, &key).unwrap();
        let past = Instant::now().checked_sub(RECHECK).unwrap();
        resolver.current.lock().unwrap().checked = past;
        let second = resolver.current().cert.clone();
        assert_ne!(first, second, "the new certificate is served");
        // A half-written rotation (key missing) keeps the last good one.
        std::fs::write(&key, b"").unwrap();
        std::fs::write(&cert, b"garbage").unwrap();
        resolver.current.lock().unwrap().checked = past;
        assert_eq!(resolver.current().cert, second);
    }
}
