//! `herald controller`: flags as MetalLB's controller where they apply, then the reconcile loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::LogLevel;
use crate::config::BgpMode;
use crate::controller::{self, Health, Metrics, Settings};
use crate::daemon::http;
use crate::k8s::controller::Cluster;
use crate::k8s::lease::LeaseTimings;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig file (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// MetalLB's namespace (default: the service account's namespace, else metallb-system).
    #[arg(long, env = "METALLB_NAMESPACE")]
    pub namespace: Option<String>,
    /// Handle only Services with this loadBalancerClass (unset: only Services without a class).
    #[arg(long, default_value = "")]
    pub lb_class: String,
    /// Prometheus metrics port (plain HTTP, /metrics); 0 disables metrics.
    #[arg(long, default_value_t = 9120)]
    pub port: u16,
    /// Port of /healthz and /readyz; 0 disables them.
    #[arg(long, default_value_t = 17472)]
    pub health_probe_port: u16,
    #[command(flatten)]
    pub metrics_access: super::MetricsAccessArgs,
    /// Address the metrics and health endpoints listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,
    /// Memberlist Secret to create (key `secretkey`); empty: none.
    #[arg(long, env = "METALLB_ML_SECRET_NAME", default_value = "")]
    pub ml_secret_name: String,
    /// Deployment owning the memberlist Secret.
    #[arg(long, env = "METALLB_DEPLOYMENT", default_value = "")]
    pub deployment: String,
    /// Log level (RUST_LOG, when set, wins: it can set levels per module).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// This pod's name: the identity in the leader Lease and on Events.
    #[arg(long, env = "METALLB_POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Accepted for MetalLB compatibility; Herald serves no webhooks (CRD rules and CEL validate).
    #[arg(long, default_value = "disabled")]
    pub webhook_mode: String,
    /// MetalLB's webhook server's TLS settings: accepted and not used (no webhook server).
    #[arg(long)]
    pub tls_min_version: Option<String>,
    #[arg(long)]
    pub tls_cipher_suites: Option<String>,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, default_value = "metallb-controller")]
    pub lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal (1 to 86400).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_duration: u64,
}

pub fn run(args: ControllerArgs) -> Result<()> {
    if !super::set_log_level(args.log_level) {
        tracing::debug!(level = ?args.log_level, "RUST_LOG is set: it wins over --log-level");
    }
    if args.tls_min_version.is_some() || args.tls_cipher_suites.is_some() {
        tracing::info!(
            "--tls-min-version and --tls-cipher-suites are not used: Herald serves no webhooks"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ControllerArgs) -> Result<()> {
    let namespace = match args.namespace.filter(|n| !n.is_empty()) {
        Some(namespace) => namespace,
        None => std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .map_or_else(|_| "metallb-system".to_string(), |s| s.trim().to_string()),
    };
    let identity = if args.pod_name.is_empty() {
        default_identity()
    } else {
        args.pod_name.clone()
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let bgp_type = std::env::var("METALLB_BGP_TYPE").unwrap_or_default();
    let bgp_mode = BgpMode::from_env_value(&bgp_type).with_context(|| {
        format!("METALLB_BGP_TYPE={bgp_type:?}: expected native, frr or frr-k8s")
    })?;
    let settings = Settings {
        namespace,
        lb_class: non_empty(args.lb_class),
        identity,
        lease_name: args.lease_name,
        lease: LeaseTimings::from_duration(Duration::from_secs(args.lease_duration)),
        ml_secret_name: non_empty(args.ml_secret_name),
        deployment: non_empty(args.deployment),
        bgp_mode,
    };
    tracing::info!(?settings, "starting herald controller");
    let cluster = Cluster::connect(
        args.kubeconfig.as_deref(),
        &settings.namespace,
        &settings.identity,
    )
    .await?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    if args.port != 0 {
        let metrics = metrics.clone();
        let access = args.metrics_access.access();
        let client = crate::k8s::client(args.kubeconfig.as_deref()).await?;
        let security = crate::k8s::authz::security(&access, &client)?;
        let addr = http::serve(
            SocketAddr::new(args.bind_address, args.port),
            http::endpoints(Some(Arc::new(move || metrics.encode())), None),
            security,
        )
        .await
        .with_context(|| format!("listening for metrics on port {}", args.port))?;
        tracing::info!(%addr, tls = access.tls.is_some(), token_required = access.authz, "metrics on /metrics");
    }
    if args.health_probe_port != 0 {
        let health = health.clone();
        let addr = http::serve(
            SocketAddr::new(args.bind_address, args.health_probe_port),
            http::endpoints(None, Some(Arc::new(move || health.ready()))),
            http::Security::default(),
        )
        .await
        .with_context(|| {
            format!(
                "listening for health probes on port {}",
                args.health_probe_port
            )
        })?;
        tracing::info!(%addr, "health probes on /healthz and /readyz");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::daemon::wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    controller::run(cluster, settings, metrics, health, stop_rx).await;
    Ok(())
}

/// Host name plus process id: unique among replicas when no pod name is given.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "herald" } else { &host },
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ControllerArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn metallb_controller_arguments_are_accepted() {
        // The arguments of MetalLB's controller Deployment (manifest and chart).
        let cli = Cli::try_parse_from([
            "controller",
            "--port=7472",
            "--log-level=info",
            "--tls-min-version=VersionTLS12",
            "--tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "--webhook-mode=disabled",
            "--lb-class=herald",
        ])
        .unwrap();
        assert_eq!(cli.args.port, 7472);
    }

    #[test]
    fn the_lease_duration_is_bounded() {
        let parse = |value: &str| Cli::try_parse_from(["controller", "--lease-duration", value]);
        assert_eq!(parse("15").map(|c| c.args.lease_duration).ok(), Some(15));
        assert_eq!(
            parse("86400").map(|c| c.args.lease_duration).ok(),
            Some(86_400)
        );
        for bad in ["0", "86401", "18446744073709551615"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
