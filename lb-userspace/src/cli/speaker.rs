//! `herald speaker`: MetalLB's speaker flags where they apply (layer 2 only), Herald's own for
//! the data plane and failure detection (`docs/configure.md`, "Speaker flags and environment").

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::dataplane::{AttachMode, DataplaneChoice};
use crate::speaker::interfaces::{DEFAULT_EXCLUDE, InterfaceFilter};
use crate::speaker::options::{GossipSettings, Options};
use crate::speaker::timing::{DETECT_MS_RANGE, Timing};
use lb_common::ratelimit::RateLimit;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// MetalLB's memberlist port.
const DEFAULT_ML_PORT: u16 = 7946;

#[derive(clap::Args, Debug)]
pub struct SpeakerArgs {
    /// This node's name, as in the Node object (also the gossip member name).
    #[arg(long, env = "METALLB_NODE_NAME")]
    pub node_name: String,
    /// Kubeconfig file (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// MetalLB's namespace: pools, advertisements, speaker Pods, memberlist Secret,
    /// ServiceL2Status (default: the service account's namespace, else metallb-system).
    #[arg(long, env = "METALLB_NAMESPACE")]
    pub namespace: Option<String>,
    /// bpffs directory of the pinned maps and links (one per node in the lab).
    #[arg(long, env = "HERALD_PIN_DIR", default_value = lb_common::maps::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Gossip socket, `IP` or `IP:PORT` (port 7946 by default); empty disables memberlist.
    #[arg(
        long,
        alias = "ml-bindaddr",
        env = "METALLB_ML_BIND_ADDR",
        default_value = "0.0.0.0:7946"
    )]
    pub ml_bind_addr: String,
    /// The gossip port when `--ml-bind-addr` gives none (MetalLB's `--ml-bindport`).
    #[arg(long = "ml-bindport", env = "METALLB_ML_BIND_PORT")]
    pub ml_bind_port: Option<u16>,
    /// MetalLB's mounted memberlist key: accepted and not read, the key comes from the Secret
    /// through the API (so a new key is taken without a restart).
    #[arg(long, env = "METALLB_ML_SECRET_KEY_PATH")]
    pub ml_secret_key_path: Option<PathBuf>,
    /// Address the other speakers reach this one at (default: the bind address, else this
    /// Node's InternalIP).
    #[arg(long, env = "METALLB_ML_ADVERTISE_ADDR")]
    pub ml_advertise_addr: Option<IpAddr>,
    /// Label selector of the speaker Pods whose IPs seed the gossip; empty disables memberlist.
    #[arg(
        long,
        env = "METALLB_ML_LABELS",
        default_value = "app=metallb,component=speaker"
    )]
    pub ml_labels: String,
    /// Secret (in --namespace) whose key `secretkey` authenticates the gossip.
    #[arg(long, env = "METALLB_ML_SECRET_NAME", default_value = "memberlist")]
    pub ml_secret_name: String,
    /// The gossip secret itself (overrides the Secret).
    #[arg(long, env = "METALLB_ML_SECRET_KEY", hide_env_values = true)]
    pub ml_secret_key: Option<String>,
    /// Answers one requester MAC gets from the XDP program: `PER_SECOND[/BURST]` (burst twice
    /// the rate by default), `0` or `off` for no limit.
    #[arg(long, env = "HERALD_RATE_LIMIT", default_value = "1000/2000", value_parser = parse_rate_limit)]
    pub rate_limit: RateLimit,
    /// The flood guard: ARP and Neighbor Solicitation frames one Ethernet source may have passed
    /// to the kernel unanswered, `PER_SECOND[/BURST]`; the XDP program drops the rest. `0` or
    /// `off`: no guard.
    #[arg(long, env = "HERALD_FLOOD_LIMIT", default_value = "10000/1000", value_parser = parse_rate_limit)]
    pub flood_limit: RateLimit,
    /// /metrics, /healthz and /readyz (plain HTTP): `IP:PORT`, or a port on the node address
    /// (see `--host`); empty disables them. MetalLB's `--port` is the same flag.
    #[arg(
        long,
        alias = "port",
        env = "HERALD_METRICS_ADDR",
        default_value = "7472"
    )]
    pub metrics_addr: String,
    /// Log level (RUST_LOG, when set, wins: it can set levels per module).
    #[arg(long, value_enum, default_value_t = super::LogLevel::Info)]
    pub log_level: super::LogLevel,
    #[command(flatten)]
    pub metrics_access: super::MetricsAccessArgs,
    /// The node address a port-only `--metrics-addr` listens on, as MetalLB's `--host` (the
    /// manifests set it from `status.hostIP`). Default: the gossip bind or advertise address;
    /// without any, every interface (with a warning).
    #[arg(long, env = "METALLB_HOST", value_parser = parse_host)]
    pub host: Option<IpAddr>,
    /// Failure-detection target in ms: a dead speaker is removed in about this time, and the
    /// guard silences a cut-off speaker before anyone takes over (see `speaker::timing`).
    #[arg(long, env = "HERALD_DETECT_MS", default_value_t = 500)]
    pub detect_ms: u64,
    /// Send a gratuitous ARP / unsolicited NA round for every announced address this often
    /// (e.g. `30s`, at least 1s); off by default.
    #[arg(long, value_parser = parse_reannounce)]
    pub reannounce_interval: Option<Duration>,
    /// Interfaces never used for layer 2, as regexes (comma-separated; default MetalLB's list).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub interfaces_exclude: Vec<String>,
    /// Use only interfaces whose whole name matches one of these regexes (comma-separated);
    /// replaces the exclude list.
    #[arg(long, value_delimiter = ',')]
    pub interfaces_include: Vec<String>,
    /// How often interfaces are rescanned.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub rescan_interval: Duration,
    /// Who answers ARP/NDP: xdp (the XDP program), userspace (an AF_PACKET responder in this
    /// process, same maps and counters), auto (XDP, falling back to userspace per interface
    /// when XDP cannot attach; logged, and shown by herald_dataplane_mode and `herald xdp list`).
    #[arg(long, env = "HERALD_DATAPLANE", default_value = "xdp")]
    pub dataplane: String,
    /// XDP attach mode: auto (driver, else skb), driver, skb.
    #[arg(long, default_value = "auto")]
    pub xdp_mode: String,
    /// Handle only Services with this loadBalancerClass (unset: only Services without a class).
    #[arg(long, env = "METALLB_LB_CLASS", default_value = "")]
    pub lb_class: String,
    /// Let nodes labelled node.kubernetes.io/exclude-from-external-load-balancers announce.
    #[arg(long)]
    pub ignore_exclude_lb: bool,
    /// BGP implementation whose configuration rules apply: native (Herald's own speaker, the
    /// default), frr or frr-k8s (MetalLB's FRR modes' rules; the native speaker serves them).
    #[arg(long, env = "METALLB_BGP_TYPE", default_value = "native")]
    pub bgp_type: String,
    /// MetalLB's memberlist WAN profile: accepted and not used (the gossip's timing follows
    /// `--detect-ms`).
    #[arg(long)]
    pub ml_wan_config: bool,
    /// MetalLB's namespace of an external frr-k8s: accepted and not used (Herald's own speaker
    /// serves the BGP sessions).
    #[arg(long, env = "FRRK8S_NAMESPACE")]
    pub frrk8s_namespace: Option<String>,
}

/// Gratuitous rounds for every address more often than this are a flood of one's own LAN.
const MIN_REANNOUNCE: Duration = Duration::from_secs(1);

/// `--reannounce-interval`: a duration of at least a second, or `0` (off).
fn parse_reannounce(text: &str) -> std::result::Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30s)"))?;
    if !interval.is_zero() && interval < MIN_REANNOUNCE {
        return Err(format!("{text} is shorter than 1s (0 turns it off)"));
    }
    Ok(interval)
}

/// `--host`: an IP address, or `localhost` (MetalLB's chart passes it with secure metrics).
fn parse_host(text: &str) -> std::result::Result<IpAddr, String> {
    if text == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    text.parse()
        .map_err(|_| format!("{text:?}: expected an IP address or localhost"))
}

/// `IP:PORT` or a bare `IP` (port `port`, else 7946); empty: disabled.
fn parse_bind(text: &str, port: Option<u16>) -> Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(SocketAddr::new(ip, port.unwrap_or(DEFAULT_ML_PORT)))),
        Err(_) => bail!("--ml-bind-addr {text:?}: expected IP or IP:PORT"),
    }
}

/// `--rate-limit`: `PER_SECOND[/BURST]`, `0` or `off`.
pub(crate) fn parse_rate_limit(text: &str) -> std::result::Result<RateLimit, String> {
    RateLimit::parse(text).ok_or_else(|| {
        format!("{text:?}: expected PER_SECOND[/BURST] (positive integers), 0 or off")
    })
}

/// Where the metrics and probes listen: `IP:PORT` as given; a bare port on `node_ip` (the
/// node's own address, so the endpoints are not offered on every interface of a host-network
/// Pod), else on every interface with a warning; empty: nowhere.
fn metrics_bind(text: &str, node_ip: Option<IpAddr>) -> Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    let port = text
        .parse::<u16>()
        .with_context(|| format!("--metrics-addr {text:?}: expected IP:PORT or a port"))?;
    let ip = node_ip.unwrap_or_else(|| {
        tracing::warn!(
            "no node address for --metrics-addr {port}: listening on every interface (set METALLB_HOST or --host)"
        );
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    Ok(Some(SocketAddr::new(ip, port)))
}

fn options(args: SpeakerArgs) -> Result<Options> {
    if args.node_name.is_empty() {
        bail!("--node-name is empty");
    }
    let dataplane: DataplaneChoice = match args.dataplane.parse() {
        Ok(choice) => choice,
        Err(e) => bail!("--dataplane {e}"),
    };
    let attach_mode = match args.xdp_mode.as_str() {
        "auto" => AttachMode::Auto,
        "driver" => AttachMode::Driver,
        "skb" => AttachMode::Skb,
        other => bail!("--xdp-mode {other:?}: expected auto, driver or skb"),
    };
    let timing = Timing::from_detect_ms(args.detect_ms).with_context(|| {
        format!(
            "--detect-ms {}: must be within {}..={}",
            args.detect_ms,
            DETECT_MS_RANGE.start(),
            DETECT_MS_RANGE.end()
        )
    })?;
    let filter = InterfaceFilter::new(&args.interfaces_exclude, &args.interfaces_include)?;
    let namespace = match args.namespace.filter(|n| !n.is_empty()) {
        Some(namespace) => namespace,
        None => std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .map_or_else(|_| "metallb-system".to_string(), |s| s.trim().to_string()),
    };
    let bind = parse_bind(&args.ml_bind_addr, args.ml_bind_port)?;
    if args.ml_wan_config {
        tracing::info!("--ml-wan-config is not used: the gossip's timing follows --detect-ms");
    }
    if let Some(namespace) = &args.frrk8s_namespace {
        tracing::info!(%namespace, "--frrk8s-namespace is not used: Herald's speaker serves the BGP sessions itself");
    }
    if let Some(path) = &args.ml_secret_key_path {
        tracing::info!(
            path = %path.display(),
            secret = %args.ml_secret_name,
            "the memberlist key path is not read: the key comes from the Secret through the API"
        );
    }
    let gossip = match bind {
        Some(bind) if !args.ml_labels.trim().is_empty() => Some(GossipSettings {
            bind,
            advertise: args.ml_advertise_addr,
            labels: args.ml_labels.trim().to_string(),
            secret_name: Some(args.ml_secret_name).filter(|s| !s.is_empty()),
            secret_key: args.ml_secret_key.filter(|s| !s.is_empty()),
        }),
        _ => None,
    };
    let node_ip = args
        .host
        .or_else(|| bind.map(|b| b.ip()).filter(|ip| !ip.is_unspecified()))
        .or(args.ml_advertise_addr);
    let metrics_addr = metrics_bind(&args.metrics_addr, node_ip)?;
    Ok(Options {
        node: args.node_name,
        namespace,
        kubeconfig: args.kubeconfig,
        pin_dir: args.pin_dir,
        gossip,
        metrics_addr,
        timing,
        reannounce: args.reannounce_interval.filter(|d| !d.is_zero()),
        filter,
        lb_class: Some(args.lb_class).filter(|c| !c.is_empty()),
        ignore_exclude_lb: args.ignore_exclude_lb,
        bgp_mode: crate::config::BgpMode::from_env_value(&args.bgp_type).with_context(|| {
            format!(
                "METALLB_BGP_TYPE={:?}: expected native, frr or frr-k8s",
                args.bgp_type
            )
        })?,
        rescan_every: args.rescan_interval.max(Duration::from_millis(100)),
        attach_mode,
        dataplane,
        rate_limit: args.rate_limit,
        flood_limit: args.flood_limit,
        metrics_access: args.metrics_access.access(),
    })
}

pub fn run(args: SpeakerArgs) -> Result<()> {
    if !super::set_log_level(args.log_level) {
        tracing::debug!(level = ?args.log_level, "RUST_LOG is set: it wins over --log-level");
    }
    let options = options(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(crate::speaker::run::run(
        options,
        crate::daemon::wait_for_signal(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SpeakerArgs,
    }

    fn parse(extra: &[&str]) -> Result<Options> {
        let mut argv = vec!["herald", "--node-name", "node-a"];
        argv.extend_from_slice(extra);
        options(Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let o = parse(&["--namespace", "metallb-system"]).unwrap();
        let g = o.gossip.unwrap();
        assert_eq!(g.bind, "0.0.0.0:7946".parse().unwrap());
        assert_eq!(g.labels, "app=metallb,component=speaker");
        assert_eq!(g.secret_name.as_deref(), Some("memberlist"));
        // No node address known: every interface (with a warning).
        assert_eq!(o.metrics_addr, Some("0.0.0.0:7472".parse().unwrap()));
        assert_eq!(o.timing, Timing::from_detect_ms(500).unwrap());
        assert_eq!(o.rate_limit, RateLimit::DEFAULT);
        assert_eq!(o.flood_limit, RateLimit::FLOOD_DEFAULT);
        assert_eq!(o.reannounce, None);
        assert_eq!(o.rescan_every, Duration::from_secs(10));
        assert!(!o.filter.allows("veth0"));
        assert!(o.filter.allows("eth0"));
    }

    #[test]
    fn lab_style_flags() {
        let o = parse(&[
            "--namespace",
            "metallb-system",
            "--ml-bind-addr",
            "203.0.113.11",
            "--interfaces-include",
            "eth0,uplink",
            "--detect-ms",
            "300",
            "--reannounce-interval",
            "30s",
        ])
        .unwrap();
        assert_eq!(o.gossip.unwrap().bind, "203.0.113.11:7946".parse().unwrap());
        // The metrics follow the node address the gossip binds.
        assert_eq!(o.metrics_addr, Some("203.0.113.11:7472".parse().unwrap()));
        assert!(o.filter.allows("eth0") && o.filter.allows("uplink"));
        assert!(!o.filter.allows("veth0"));
        assert_eq!(o.reannounce, Some(Duration::from_secs(30)));
        assert_eq!(o.timing.detect, Duration::from_millis(300));
    }

    #[test]
    fn metallb_speaker_arguments_are_accepted() {
        // The arguments and environment of MetalLB's speaker DaemonSet.
        let o = parse(&[
            "--port=7472",
            "--log-level=info",
            "--ml-bindaddr",
            "203.0.113.11",
            "--ml-bindport",
            "7947",
            "--ml-secret-key-path",
            "/etc/ml_secret_key",
            "--ml-wan-config",
            "--frrk8s-namespace=frr-k8s-system",
            "--lb-class=herald",
            "--ignore-exclude-lb",
        ])
        .unwrap();
        assert_eq!(o.gossip.unwrap().bind, "203.0.113.11:7947".parse().unwrap());
        assert_eq!(o.metrics_addr, Some("203.0.113.11:7472".parse().unwrap()));
        // An explicit port in the address wins over --ml-bindport.
        let o = parse(&[
            "--ml-bind-addr",
            "203.0.113.11:7000",
            "--ml-bindport",
            "7947",
        ])
        .unwrap();
        assert_eq!(o.gossip.unwrap().bind, "203.0.113.11:7000".parse().unwrap());
        assert!(parse(&["--log-level", "loud"]).is_err());
        // With secure metrics MetalLB's chart binds the plain port to localhost.
        assert_eq!(
            parse(&["--host=localhost"]).unwrap().metrics_addr,
            Some("127.0.0.1:7472".parse().unwrap())
        );
        assert!(parse(&["--host=nowhere"]).is_err());
    }

    #[test]
    fn reannouncing_is_off_or_at_least_a_second_apart() {
        let every = |text: &str| parse(&["--reannounce-interval", text]).map(|o| o.reannounce);
        assert_eq!(every("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(every("1s").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(every("0").unwrap(), None);
        let e = every("1ns").unwrap_err().to_string();
        assert!(e.contains("shorter than 1s"), "{e}");
    }

    #[test]
    fn metrics_listen_on_the_node_address() {
        let host = |extra: &[&str]| parse(extra).unwrap().metrics_addr;
        assert_eq!(
            host(&["--host", "198.51.100.9"]),
            Some("198.51.100.9:7472".parse().unwrap())
        );
        assert_eq!(
            host(&["--host", "198.51.100.9", "--ml-bind-addr", "203.0.113.11"]),
            Some("198.51.100.9:7472".parse().unwrap()),
            "--host wins over the gossip address"
        );
        assert_eq!(
            host(&[
                "--ml-advertise-addr",
                "2001:db8::5",
                "--metrics-addr",
                "9000"
            ]),
            Some("[2001:db8::5]:9000".parse().unwrap())
        );
        assert_eq!(
            host(&["--host", "198.51.100.9", "--metrics-addr", "127.0.0.1:1"]),
            Some("127.0.0.1:1".parse().unwrap()),
            "an explicit address is kept"
        );
        assert_eq!(host(&["--metrics-addr", ""]), None);
        assert!(parse(&["--metrics-addr", "nope"]).is_err());
        assert_eq!(
            parse(&["--rate-limit", "off"]).unwrap().rate_limit,
            RateLimit::OFF
        );
        assert!(parse(&["--rate-limit", "10/0"]).is_err());
    }

    #[test]
    fn dataplane_choices() {
        assert_eq!(parse(&[]).unwrap().dataplane, DataplaneChoice::Xdp);
        for (arg, want) in [
            ("xdp", DataplaneChoice::Xdp),
            ("userspace", DataplaneChoice::Userspace),
            ("auto", DataplaneChoice::Auto),
        ] {
            assert_eq!(parse(&["--dataplane", arg]).unwrap().dataplane, want);
        }
    }

    #[test]
    fn memberlist_disabled_and_bad_values() {
        assert!(parse(&["--ml-bind-addr", ""]).unwrap().gossip.is_none());
        assert!(parse(&["--ml-labels", ""]).unwrap().gossip.is_none());
        let e = parse(&["--detect-ms", "10"]).unwrap_err().to_string();
        assert!(e.contains("--detect-ms 10"), "{e}");
        let e = parse(&["--ml-bind-addr", "nonsense"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ml-bind-addr"), "{e}");
        let e = parse(&["--interfaces-exclude", "("])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--interfaces-exclude"), "{e}");
        let e = parse(&["--dataplane", "ebpf"]).unwrap_err().to_string();
        assert!(
            e.contains("--dataplane \"ebpf\": expected xdp, userspace or auto"),
            "{e}"
        );
        let e = parse(&["--xdp-mode", "fast"]).unwrap_err().to_string();
        assert!(e.contains("--xdp-mode"), "{e}");
    }
}
