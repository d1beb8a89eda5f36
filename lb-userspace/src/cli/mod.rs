//! Command-line front ends. Each subcommand parses its arguments, calls the pure modules or the
//! dataplane, and renders the result; no decision logic lives here.

pub mod bgp;
pub mod controller;
pub mod convert;
pub mod fetch;
pub mod simulate;
pub mod speaker;
pub mod xdp;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::daemon::MetricsAccess;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Default filter when neither `RUST_LOG` nor `--log-level` says otherwise.
const DEFAULT_FILTER: &str = "info";

/// The installed filter, swappable once a subcommand has read its `--log-level`.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). A subcommand may later narrow or
/// widen the filter with [`set_log_level`].
pub fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (filter, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a person at a terminal, never into log files or pods' logs.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .is_ok();
    if installed {
        let _ = FILTER.set(handle);
    }
}

/// HTTPS and authorization for `/metrics`, as MetalLB offers them through kube-rbac-proxy.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsAccessArgs {
    /// PEM certificate chain (leaf first): serve the metrics endpoint over HTTPS. Re-read when
    /// the file changes.
    #[arg(long, env = "HERALD_METRICS_TLS_CERT", requires = "metrics_tls_key")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// PEM private key of `--metrics-tls-cert`.
    #[arg(long, env = "HERALD_METRICS_TLS_KEY", requires = "metrics_tls_cert")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Require a bearer token whose user may `get` the nonResource URL `/metrics` (TokenReview
    /// and SubjectAccessReview on the API server; needs `system:auth-delegator`). Only with
    /// `--metrics-tls-cert`. Probes stay open.
    #[arg(long, env = "HERALD_METRICS_AUTHZ", requires = "metrics_tls_cert")]
    pub metrics_authz: bool,
}

impl MetricsAccessArgs {
    pub fn access(&self) -> MetricsAccess {
        MetricsAccess {
            tls: self
                .metrics_tls_cert
                .clone()
                .zip(self.metrics_tls_key.clone()),
            authz: self.metrics_authz,
        }
    }
}

/// MetalLB's `--log-level` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    All,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    None,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::All => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::None => "off",
        }
    }
}

/// Applies `--log-level` to the filter installed by [`init_tracing`]. `RUST_LOG`, when set, is
/// more precise (per-module) and wins; returns whether the level was applied.
pub fn set_log_level(level: LogLevel) -> bool {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some_and(|v| !v.is_empty()) {
        return false;
    }
    FILTER
        .get()
        .is_some_and(|handle| handle.reload(EnvFilter::new(level.directive())).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn metallb_level_names_map_to_tracing_directives() {
        let cases = [
            ("all", "trace"),
            ("debug", "debug"),
            ("info", "info"),
            ("warn", "warn"),
            ("error", "error"),
            ("none", "off"),
        ];
        for (name, directive) in cases {
            let level = LogLevel::from_str(name, false).unwrap();
            assert_eq!(level.directive(), directive, "{name}");
            // Every directive is one tracing-subscriber accepts.
            assert!(EnvFilter::try_new(directive).is_ok(), "{directive}");
        }
        assert!(LogLevel::from_str("verbose", false).is_err());
    }
}
