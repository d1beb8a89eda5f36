//! One phase measured: Services created as a [`Load`] says until each has its IP, with the
//! latencies, the API server's requests per Service and where the machine's CPU went.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::Result;
use herald_control_plane::ControlPlane;
use kube::Client;

use super::args::{Load, STEADY_FIRST};
use super::metrics::{ApiRequests, settle};
use super::plane::{own_cpu, processes_cpu};
use super::services::create_and_wait;
use crate::bench::dataplane::cpu as cpu_stat;

/// Above this share of all vCPUs' time busy, a phase's latencies are CPU queueing.
pub(super) const SATURATED_BUSY_PERCENT: f64 = 80.0;

/// What one controller's N-Service run measured, for callers that print their own tables.
#[derive(Clone, Debug)]
pub struct Figures {
    pub services: usize,
    /// Create response → IP seen on a watch.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// First create request → last IP seen.
    pub all_ips: Duration,
    /// API server requests per Service made by the controller.
    pub requests_per_service: f64,
    /// The bench client's own create rate (Services per second) over the creation phase.
    pub create_rate: f64,
}

/// What one run measured.
pub(super) struct Measured {
    /// Create response → IP seen on the watch, sorted.
    pub(super) latencies: Vec<Duration>,
    /// Create request → IP seen (adds the API server's create latency under the bench's load).
    pub(super) from_request: Vec<Duration>,
    /// Last create response → last IP seen.
    pub(super) tail: Duration,
    /// The machine's 1-minute load average before → after (2 cores; other work shares them).
    pub(super) load: String,
    /// CPU time the hypervisor took from this VM during the phase, % of all vCPUs' time.
    pub(super) steal: f64,
    /// The machine's vCPUs busy (anything but idle) during the phase, % of their time until
    /// the last IP (like each process's share).
    pub(super) busy: f64,
    /// CPU time of each control-plane and controller process until all IPs were seen.
    pub(super) processes: Vec<(String, Duration)>,
    /// The VM's speed right before the phase.
    pub(super) speed: VmSpeed,
    pub(super) all_done: Duration,
    pub(super) requests_per_service: f64,
    pub(super) by_kind: BTreeMap<String, f64>,
    /// Mean time in the API server per request over the run, by kind (ms).
    pub(super) server_ms: BTreeMap<String, f64>,
    /// The bench client's own work: how fast it created the Services.
    pub(super) client: ClientLoad,
}

/// The load generator's side of one run.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientLoad {
    /// How the creates were paced.
    pub(super) load: Load,
    /// First create request → last create response.
    pub(super) creation: Duration,
    /// Create request → response, p50 and p99 (ms).
    pub(super) create_p50_ms: f64,
    pub(super) create_p99_ms: f64,
    /// CPU time of the bench process (creating, watching) over the run, user + system.
    pub(super) cpu: Duration,
}

impl Measured {
    /// Latency quantile `q` in milliseconds (nearest rank).
    pub(super) fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies, q)
    }

    /// Whether the machine ran near saturation: latencies are then mostly CPU queueing.
    pub(super) fn saturated(&self) -> bool {
        self.busy > SATURATED_BUSY_PERCENT
    }

    pub(super) fn figures(&self) -> Figures {
        Figures {
            services: self.latencies.len(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            all_ips: self.all_done,
            requests_per_service: self.requests_per_service,
            create_rate: self.create_rate(),
        }
    }

    /// Services created per second by the bench client.
    pub(super) fn create_rate(&self) -> f64 {
        self.latencies.len() as f64 / self.client.creation.as_secs_f64().max(1e-9)
    }
}

/// Creates `n` Services in `namespace` and measures until each shows an ingress IP.
pub(super) async fn measure(
    plane: &ControlPlane,
    client: &Client,
    namespace: &str,
    n: usize,
    load: Load,
) -> Result<Measured> {
    let first = match load.rate {
        // Steady-phase Services take ClusterIP numbers after every burst and resync Service.
        Some(_) => STEADY_FIRST,
        None => 0,
    };
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
    ))?;
    let speed = VmSpeed::measure();
    let before = ApiRequests::read(plane)?;
    let load_before = load_average();
    let stat_before = cpu_stat::read_stat()?;
    let cpu_before = own_cpu();
    let processes_before = processes_cpu(plane);
    let (created, assigned, all_done) = create_and_wait(client, namespace, first, n, load).await?;
    let cpu = own_cpu().saturating_sub(cpu_before);
    let processes: Vec<(String, Duration)> = processes_cpu(plane)
        .into_iter()
        .map(|(name, after)| {
            let before = processes_before.get(&name).copied().unwrap_or_default();
            (name, after.saturating_sub(before))
        })
        .collect();
    let load_after = load_average();
    let stat_after = cpu_stat::read_stat()?;
    let steal = cpu_stat::steal_share(&stat_before, &stat_after);
    // Over the same window as each process's share: until the last IP was seen.
    let busy = 100.0 * cpu_stat::busy_ticks(&stat_before, &stat_after) as f64
        / cpu_stat::ticks_per_second() as f64
        / (all_done.as_secs_f64() * stat_after.len().max(1) as f64).max(1e-9);
    let first_request = created.values().map(|(requested, _)| *requested).min();
    // How long after the last create returned the last IP appeared: the controller's own share
    // of "all IPs" once the API server has accepted every Service.
    let last_created = created.values().map(|(_, responded)| *responded).max();
    let last_assigned = assigned.values().max();
    let tail = match (last_created, last_assigned) {
        (Some(c), Some(a)) => a.saturating_duration_since(c),
        _ => Duration::ZERO,
    };
    // Both controllers record Events in the background: count their requests once the API
    // server's counters stop moving (leases aside), so deferred work is not left out.
    let after = settle(plane).await?;
    // From the create response (the Service exists) and, for reference, from the request.
    let since = |pick: fn(&(Instant, Instant)) -> Instant| {
        let mut all: Vec<Duration> = created
            .iter()
            .filter_map(|(name, times)| {
                assigned
                    .get(name)
                    .map(|seen| seen.saturating_duration_since(pick(times)))
            })
            .collect();
        all.sort();
        all
    };
    let latencies = since(|(_, responded)| *responded);
    let from_request = since(|(requested, _)| *requested);
    let mut create_latencies: Vec<Duration> = created
        .values()
        .map(|(requested, responded)| responded.saturating_duration_since(*requested))
        .collect();
    create_latencies.sort();
    let client_load = ClientLoad {
        load,
        creation: match (first_request, last_created) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        },
        create_p50_ms: quantile_ms(&create_latencies, 0.5),
        create_p99_ms: quantile_ms(&create_latencies, 0.99),
        cpu,
    };
    let mut by_kind = BTreeMap::new();
    let mut total = 0.0;
    let mut server_ms = BTreeMap::new();
    for key in after.seconds.keys() {
        if let Some(ms) = after.mean_ms_since(&before, key)
            && !key.ends_with(" WATCH")
        {
            server_ms.insert(key.clone(), ms);
        }
    }
    for (key, value) in &after.total {
        let delta = value - before.total.get(key).copied().unwrap_or(0.0);
        // The bench's own Service creations, and the ClusterIP objects the API server makes
        // for them, are not the controller's.
        let delta = match key.as_str() {
            "services POST" => delta - n as f64,
            "ipaddresses POST" => 0.0,
            _ => delta,
        };
        if delta > 0.0 {
            by_kind.insert(key.clone(), delta / n as f64);
            total += delta;
        }
    }
    Ok(Measured {
        latencies,
        from_request,
        all_done,
        tail,
        load: format!("{load_before} → {load_after}"),
        steal,
        busy,
        speed,
        processes,
        requests_per_service: total / n as f64,
        by_kind,
        server_ms,
        client: client_load,
    })
}

/// Two fixed pieces of work timed on this thread, so that runs can be compared: kube-apiserver's
/// CPU time for the same work varies up to 1.6× between runs here, with next to no steal
/// reported; these show whether the machine itself was slower.
#[derive(Clone, Copy, Debug)]
pub(super) struct VmSpeed {
    /// SHA-256 over 64 MiB: the CPU alone.
    hash: Duration,
    /// Touching 256 MiB of fresh memory: page faults and zeroing, as a Go heap's growth costs.
    fault: Duration,
}

impl VmSpeed {
    fn measure() -> VmSpeed {
        use sha2::{Digest, Sha256};
        let block = vec![0x5au8; 1 << 20];
        let started = Instant::now();
        let mut hasher = Sha256::new();
        for _ in 0..64 {
            hasher.update(&block);
        }
        std::hint::black_box(hasher.finalize());
        let hash = started.elapsed();
        let started = Instant::now();
        let mut pages = vec![0u8; 256 << 20];
        for page in pages.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&pages);
        drop(pages);
        VmSpeed {
            hash,
            fault: started.elapsed(),
        }
    }
}

impl std::fmt::Display for VmSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SHA-256 of 64 MiB {:.0} ms, 256 MiB of fresh pages {:.0} ms",
            self.hash.as_secs_f64() * 1000.0,
            self.fault.as_secs_f64() * 1000.0
        )
    }
}

/// The 1-minute load average (context for the figures: the machine is shared).
pub(super) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Nearest-rank quantile `q` of sorted `values`, in milliseconds.
pub(super) fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}
