//! `herald simulate` and `herald validate`.
//!
//! `simulate` composes the pure modules the way a freshly restarted controller and the speakers
//! would: validate the configuration, run the restart pass of the allocator over the Services
//! (existing statuses are re-claimed first), repeat passes while addresses were freed (MetalLB
//! then reprocesses every Service), elect the layer-2 announcer of every assigned Service, and
//! evaluate every node's BGP announcements ([`bgp`]).

pub mod bgp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;

use crate::allocator::{Allocator, Event, Outcome, PoolCounters, ServiceInfo, Status};
use crate::config::{BgpMode, Config};
use crate::election::{self, Candidate, ElectionInput, Interfaces};

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Multi-document Kubernetes YAML: metallb.io kinds, Services, Nodes, Namespaces, EndpointSlices.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Output format (`json` is stable for scripts).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// The controller's `--lb-class`: only Services of this class are handled.
    #[arg(long = "lb-class")]
    pub lb_class: Option<String>,
    /// The speaker's `--ignore-exclude-lb`.
    #[arg(long = "ignore-exclude-lb")]
    pub ignore_exclude_lb: bool,
    /// Which BGP implementation's rules apply (`native`, `frr`, `frr-k8s`), as MetalLB's
    /// `METALLB_BGP_TYPE`.
    #[arg(long = "bgp-type", env = "METALLB_BGP_TYPE", default_value = "native", value_parser = parse_bgp_type)]
    pub bgp_type: BgpMode,
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Multi-document Kubernetes YAML holding the configuration objects.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Which BGP implementation's rules apply (`native`, `frr`, `frr-k8s`).
    #[arg(long = "bgp-type", env = "METALLB_BGP_TYPE", default_value = "native", value_parser = parse_bgp_type)]
    pub bgp_type: BgpMode,
}

fn parse_bgp_type(value: &str) -> Result<BgpMode, String> {
    BgpMode::from_env_value(value)
        .ok_or_else(|| format!("{value:?} is not one of native, frr, frr-k8s"))
}

/// The cluster objects besides the configuration that the simulation reads.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub services: Vec<Service>,
    pub nodes: Vec<Node>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// Knobs of the simulated controller and speakers.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
}

/// The simulation's result, stable as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub services: Vec<ServiceReport>,
    /// `IPAddressPool.status` counters by pool.
    pub pools: BTreeMap<String, PoolCounters>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub namespace: String,
    pub name: String,
    /// `assigned`, `pending`, `cleared`, `ignored`, `unchanged` or `invalid`.
    pub state: String,
    pub ips: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Why the Service is pending/cleared/unchanged/invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Layer-2 announcement, for assigned Services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer2: Option<Layer2Report>,
    /// BGP announcements by node, when the configuration has BGP peers or advertisements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<bgp::BgpReport>,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer2Report {
    /// The announcing node, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Interfaces>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_announced: Option<String>,
    pub candidates: Vec<Candidate>,
}

/// Passes after the restart pass, at most; MetalLB converges in one or two.
const MAX_EXTRA_PASSES: usize = 8;

/// Runs the allocator and the election over `objects` with a validated `config`.
pub fn simulate(config: &Config, objects: &Objects, options: &Options) -> Report {
    let mut invalid = Vec::new();
    let mut infos = Vec::new();
    for service in &objects.services {
        match ServiceInfo::from_service(service) {
            Ok(info) => infos.push(info),
            Err(e) => invalid.push(ServiceReport {
                namespace: service
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: service.metadata.name.clone().unwrap_or_default(),
                state: "invalid".into(),
                ips: vec![],
                pool: None,
                reason: Some(e.to_string()),
                layer2: None,
                bgp: None,
                events: vec![],
            }),
        }
    }

    let mut allocator = Allocator::new(&config.pools, options.lb_class.clone());
    let mut finals: BTreeMap<String, (ServiceInfo, Outcome)> = BTreeMap::new();
    let mut events: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut record = |finals: &mut BTreeMap<String, (ServiceInfo, Outcome)>,
                      info: &ServiceInfo,
                      outcome: Outcome| {
        let list = events.entry(outcome.service.clone()).or_default();
        for event in &outcome.events {
            if !list.contains(event) {
                list.push(event.clone());
            }
        }
        finals.insert(outcome.service.clone(), (info.clone(), outcome));
    };
    let first = allocator.reconcile_all(&infos);
    let mut freed = first.iter().any(|o| !o.freed.is_empty());
    for outcome in first {
        if let Some(info) = infos.iter().find(|i| i.key() == outcome.service) {
            record(&mut finals, info, outcome);
        }
    }
    // A freed address makes MetalLB reprocess everything: pending Services may now fit.
    for _ in 0..MAX_EXTRA_PASSES {
        if !freed {
            break;
        }
        freed = false;
        let current: Vec<ServiceInfo> = finals
            .values()
            .map(|(info, o)| o.status.applied_to(info))
            .collect();
        for index in crate::allocator::restart_order(&current) {
            let info = &current[index];
            let outcome = allocator.reconcile(info);
            freed |= !outcome.freed.is_empty();
            let original = finals
                .get(&info.key())
                .map_or_else(|| info.clone(), |(orig, _)| orig.clone());
            record(&mut finals, &original, outcome);
        }
    }

    let mut services: Vec<ServiceReport> = finals
        .into_values()
        .map(|(info, outcome)| {
            let events = events.remove(&outcome.service).unwrap_or_default();
            report(config, objects, options, &info, outcome, events)
        })
        .collect();
    let addressed: BTreeMap<String, Vec<IpAddr>> = services
        .iter()
        .filter(|s| matches!(s.state.as_str(), "assigned" | "unchanged") && !s.ips.is_empty())
        .map(|s| (format!("{}/{}", s.namespace, s.name), s.ips.clone()))
        .collect();
    let mut announced = bgp::reports(config, objects, options, &addressed);
    for s in &mut services {
        s.bgp = announced.remove(&format!("{}/{}", s.namespace, s.name));
    }
    services.extend(invalid);
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Report {
        services,
        pools: allocator.pool_counters(),
    }
}

fn report(
    config: &Config,
    objects: &Objects,
    options: &Options,
    info: &ServiceInfo,
    outcome: Outcome,
    events: Vec<Event>,
) -> ServiceReport {
    let mut out = ServiceReport {
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        state: String::new(),
        ips: vec![],
        pool: None,
        reason: None,
        layer2: None,
        bgp: None,
        events,
    };
    match outcome.status {
        Status::Ignored => {
            out.state = "ignored".into();
            out.reason = Some("loadBalancerClass does not match --lb-class".into());
        }
        Status::Cleared { reason } => {
            out.state = "cleared".into();
            out.reason = Some(reason);
        }
        Status::Pending { reason } => {
            out.state = "pending".into();
            out.reason = Some(reason);
        }
        Status::Unchanged { ips, reason } => {
            out.state = "unchanged".into();
            out.ips = ips;
            out.reason = Some(reason);
        }
        Status::Assigned { ips, pool } => {
            out.state = "assigned".into();
            let slices: Vec<&EndpointSlice> = objects
                .endpoint_slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref().unwrap_or("default") == info.namespace
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            == Some(&info.name)
                })
                .collect();
            let result = election::elect(&ElectionInput {
                service: info,
                ips: &ips,
                pool: &pool,
                config,
                nodes: &objects.nodes,
                live_speakers: None,
                endpoint_slices: &slices,
                ignore_exclude_lb: options.ignore_exclude_lb,
            });
            out.layer2 = Some(match result.result {
                Ok(winner) => Layer2Report {
                    node: Some(winner.node),
                    interfaces: Some(winner.interfaces),
                    not_announced: None,
                    candidates: result.candidates,
                },
                Err(reason) => Layer2Report {
                    node: None,
                    interfaces: None,
                    not_announced: Some(reason.to_string()),
                    candidates: result.candidates,
                },
            });
            out.ips = ips;
            out.pool = Some(pool);
        }
    }
    out
}

/// Human-readable rendering: one block per Service.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for s in &report.services {
        let ips: Vec<String> = s.ips.iter().map(ToString::to_string).collect();
        let _ = write!(out, "{}/{}: {}", s.namespace, s.name, s.state);
        if !ips.is_empty() {
            let _ = write!(out, " {}", ips.join(","));
        }
        if let Some(pool) = &s.pool {
            let _ = write!(out, " pool={pool}");
        }
        out.push('\n');
        if let Some(reason) = &s.reason {
            let _ = writeln!(out, "  reason: {reason}");
        }
        if let Some(l2) = &s.layer2 {
            match (&l2.node, &l2.not_announced) {
                (Some(node), _) => {
                    let interfaces = match &l2.interfaces {
                        Some(Interfaces::Named(names)) => {
                            names.iter().cloned().collect::<Vec<_>>().join(",")
                        }
                        _ => "all".into(),
                    };
                    let _ = writeln!(
                        out,
                        "  layer2: announced by {node} (interfaces: {interfaces})"
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(out, "  layer2: not announced: {why}");
                }
                (None, None) => {}
            }
            if !l2.candidates.is_empty() {
                let order: Vec<String> = l2
                    .candidates
                    .iter()
                    .map(|c| {
                        if c.score != 0 {
                            format!("{}({})", c.node, c.score)
                        } else {
                            c.node.clone()
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  candidates: {}", order.join(" "));
            }
        }
        if let Some(report) = &s.bgp {
            bgp::render(report, &mut out);
        }
        for e in &s.events {
            let _ = writeln!(
                out,
                "  event {:?} {}: {}",
                e.event_type,
                e.reason.as_str(),
                e.message
            );
        }
    }
    out
}

/// Lists every error on stderr and exits non-zero (no backtrace noise: these are input errors).
fn bail_errors(errors: &[String]) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut text = format!("{} error(s):", errors.len());
    for e in errors {
        let _ = write!(text, "\n  {e}");
    }
    eprintln!("{text}");
    std::process::exit(1)
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let (config, objects) = load(&args.files, args.bgp_type)?;
    let options = Options {
        lb_class: args.lb_class,
        ignore_exclude_lb: args.ignore_exclude_lb,
    };
    let report = simulate(&config, &objects, &options);
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering JSON")?
        ),
        OutputFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(())
}

pub fn validate(args: ValidateArgs) -> Result<()> {
    let (config, _) = load(&args.files, args.bgp_type)?;
    println!(
        "configuration valid: {} pool(s), {} L2Advertisement(s), {} BGPAdvertisement(s), {} BGPPeer(s)",
        config.pools.len(),
        config.l2_advertisements.len(),
        config.bgp_advertisements.len(),
        config.peers.len()
    );
    Ok(())
}

/// Reads the files and builds the validated configuration (every error listed on failure).
fn load(files: &[PathBuf], bgp_mode: BgpMode) -> Result<(Config, Objects)> {
    use crate::config::load::{Object, parse_all};
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let source = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (loaded, bad) = parse_all(&text, &source);
                for warning in &loaded.warnings {
                    tracing::warn!("{warning}");
                }
                objects.extend(loaded.objects);
                errors.extend(bad.iter().map(ToString::to_string));
            }
            Err(e) => errors.push(format!("{source}: {e}")),
        }
    }
    bail_errors(&errors)?;
    let mut cluster = Objects::default();
    for object in &objects {
        match object {
            Object::Service(s) => cluster.services.push(s.clone()),
            Object::Node(n) => cluster.nodes.push(n.clone()),
            Object::EndpointSlice(e) => cluster.endpoint_slices.push(e.clone()),
            _ => {}
        }
    }
    let snapshot = crate::config::Snapshot {
        bgp_mode,
        ..crate::config::Snapshot::from_objects(objects)
    };
    match crate::config::build(&snapshot) {
        Ok(config) => Ok((config, cluster)),
        Err(config_errors) => {
            let errors: Vec<String> = config_errors.iter().map(ToString::to_string).collect();
            bail_errors(&errors)?;
            Ok((Config::default(), cluster))
        }
    }
}
