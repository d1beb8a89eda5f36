//! Certificates for a component's HTTPS endpoints in tests: a self-signed one (curl trusts it
//! as its own CA), or a CA and a certificate it signed, as a deployment has them (rustls, in
//! `herald bgp status`, refuses a CA certificate as the server's own).

use std::path::Path;
use std::process::Command;

/// A self-signed certificate for 127.0.0.1 and its key, written into `dir` (file names start
/// with `stem`): their paths.
pub fn self_signed(dir: &Path, stem: &str) -> (String, String) {
    request(dir, stem, "/CN=herald-metrics", &[])
}

/// A CA, and a certificate for 127.0.0.1 it signed (not a CA itself), written into `dir` (file
/// names start with `stem`): the CA's certificate, the server's certificate and key.
pub fn ca_signed(dir: &Path, stem: &str) -> (String, String, String) {
    let (ca, ca_key) = self_signed(dir, &format!("{stem}-ca"));
    let (cert, key) = request(
        dir,
        stem,
        "/CN=herald-speaker",
        &[
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
        ],
    );
    (ca, cert, key)
}

/// `openssl req -x509` for a P-256 key and a certificate naming 127.0.0.1, with `extra`.
fn request(dir: &Path, stem: &str, subject: &str, extra: &[&str]) -> (String, String) {
    let cert = dir.join(format!("{stem}-cert.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            subject,
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    (cert.display().to_string(), key.display().to_string())
}
