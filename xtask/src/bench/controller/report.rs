//! Printing a phase's figures, Herald's own share of them, and Herald against MetalLB with
//! the targets.

use std::time::Duration;

use super::measure::{Measured, quantile_ms};
use super::metrics::{histogram_delta, histogram_quantile_ms, metric_value};

/// Prints whether Herald's steady-phase p99 meets the target, and whether the machine kept up.
pub(super) fn print_latency_target(herald: &Measured) {
    let p99 = herald.quantile_ms(0.99);
    println!(
        "creation→status p99 target < 50 ms (steady phase): {} ({p99:.1} ms){}",
        if p99 < 50.0 { "met" } else { "MISSED" },
        if herald.saturated() {
            format!(
                "; the vCPUs were {:.0}% busy, so this is CPU queueing: lower --steady-rate",
                herald.busy
            )
        } else {
            String::new()
        }
    );
}

/// Prints Herald's own share of creation→status over a phase, from the deltas of its
/// `herald_controller_service_write_seconds` histogram between two scrapes.
pub(super) fn print_own_share(before: &str, after: &str, phase: &str) {
    let name = "herald_controller_service_write_seconds";
    let writes = histogram_delta(before, after, name);
    let sum = metric_value(after, &format!("{name}_sum")).unwrap_or(0.0)
        - metric_value(before, &format!("{name}_sum")).unwrap_or(0.0);
    let count = writes.last().map_or(0.0, |(_, n)| *n);
    println!(
        "  Herald's own share, {phase} (its histogram: Service taken up → ingress write acknowledged, {count} writes): mean {:.1} ms, p50 ≤ {:.1} ms, p99 ≤ {:.1} ms (bucket bounds); the rest is watch delivery to Herald and to the bench",
        sum * 1000.0 / count.max(1.0),
        histogram_quantile_ms(&writes, 0.5),
        histogram_quantile_ms(&writes, 0.99),
    );
}

impl Measured {
    pub(super) fn print(&self, who: &str) {
        println!(
            "{who}: creation→status p50 {:.1} ms, p99 {:.1} ms (from the create request: p50 {:.1} ms, p99 {:.1} ms); all {} IPs after {:.2} s; {:.2} API requests per Service",
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            quantile_ms(&self.from_request, 0.5),
            quantile_ms(&self.from_request, 0.99),
            self.latencies.len(),
            self.all_done.as_secs_f64(),
            self.requests_per_service
        );
        let detail: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(_, v)| **v >= 0.01)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!("  per Service by request: {}", detail.join(", "));
        // Where the time goes on the server: the bench's creates (with the ClusterIP objects
        // the API server writes for them) and the controller's requests.
        let server: Vec<String> = self
            .server_ms
            .iter()
            .filter(|(k, _)| {
                self.by_kind.get(*k).is_some_and(|v| *v >= 0.01)
                    || matches!(k.as_str(), "services POST" | "ipaddresses POST")
            })
            .map(|(k, ms)| format!("{k} {ms:.1} ms"))
            .collect();
        println!(
            "  mean time in the API server per request: {}",
            server.join(", ")
        );
        let etcd: Vec<String> = [
            "etcd create services",
            "etcd create ipaddresses",
            "etcd update services",
            "etcd create events",
        ]
        .iter()
        .filter_map(|k| self.server_ms.get(*k).map(|ms| format!("{k} {ms:.1} ms")))
        .collect();
        println!(
            "  of which waiting for etcd (mean per request): {}",
            etcd.join(", ")
        );
        let queued: Vec<String> = self
            .server_ms
            .iter()
            .filter_map(|(k, ms)| Some(format!("{} {ms:.1} ms", k.strip_prefix("APF queue ")?)))
            .collect();
        println!(
            "  before that, queued in API Priority and Fairness (mean per request, by priority level): {}",
            queued.join(", ")
        );
        println!(
            "  last IP {:.0} ms after the last create returned; load average {}; vCPUs busy {:.0}% of their time{}; hypervisor steal {:.1}%",
            self.tail.as_secs_f64() * 1000.0,
            self.load,
            self.busy,
            if self.saturated() { " (saturated)" } else { "" },
            self.steal
        );
        let busy: Vec<String> = self
            .processes
            .iter()
            .map(|(name, cpu)| {
                format!(
                    "{name} {:.2} s ({:.0}% of one core)",
                    cpu.as_secs_f64(),
                    100.0 * cpu.as_secs_f64() / self.all_done.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        println!(
            "  CPU until the last IP (2 vCPUs): {}; VM speed before the phase: {}",
            busy.join(", "),
            self.speed
        );
        let c = &self.client;
        println!(
            "  bench client: {} creates in {:.2} s = {:.0} Services/s, {}; create request p50 {:.1} ms, p99 {:.1} ms; client CPU {:.2} s ({:.0}% of one core)",
            self.latencies.len(),
            c.creation.as_secs_f64(),
            self.create_rate(),
            c.load.pace(),
            c.create_p50_ms,
            c.create_p99_ms,
            c.cpu.as_secs_f64(),
            100.0 * c.cpu.as_secs_f64() / self.all_done.as_secs_f64().max(1e-9),
        );
    }

    /// Prints creation→status p50/p99 of Herald (`self` is MetalLB's run) against MetalLB;
    /// the steady phase's p99 is the one judged against the target.
    pub(super) fn compare_latency(&self, herald: &Measured, phase: &str, judged: bool) {
        let (m, h) = (self, herald);
        println!(
            "creation→status p50 ({phase}): Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x)",
            h.quantile_ms(0.5),
            m.quantile_ms(0.5),
            m.quantile_ms(0.5) / h.quantile_ms(0.5)
        );
        println!(
            "creation→status p99 ({phase}): Herald {:.1} ms, MetalLB {:.1} ms ({:.1}x){}",
            h.quantile_ms(0.99),
            m.quantile_ms(0.99),
            m.quantile_ms(0.99) / h.quantile_ms(0.99),
            if judged {
                String::new()
            } else {
                format!(
                    " (not judged: {} saturate the API server, whose own create responses took p99 {:.1} ms; the < 50 ms target is the steady phase's)",
                    h.client.load.pace(),
                    h.client.create_p99_ms
                )
            }
        );
        if judged {
            print_latency_target(h);
        }
    }

    /// Prints Herald (`self` is MetalLB's run; `herald` the median of Herald's `bursts`)
    /// against MetalLB with ratios and the targets, and both against `floor`, the creates'
    /// own time with no controller running.
    pub(super) fn compare(&self, herald: &Measured, bursts: usize, floor: Duration) {
        let (m, h) = (self, herald);
        let which = if bursts > 1 {
            format!(" (median of {bursts} bursts)")
        } else {
            String::new()
        };
        let (mn, hn) = (m.latencies.len(), h.latencies.len());
        let target = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("==> Herald vs MetalLB v0.15.2");
        self.compare_latency(h, &format!("burst, {}", h.client.load.pace()), false);
        let ratio = if mn == hn {
            let r = m.all_done.as_secs_f64() / h.all_done.as_secs_f64().max(1e-9);
            println!(
                "all {hn} IPs: Herald{which} {:.2} s, MetalLB {:.2} s = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                m.all_done.as_secs_f64()
            );
            r
        } else {
            let per = |d: Duration, n: usize| d.as_secs_f64() * 1000.0 / n.max(1) as f64;
            let r = per(m.all_done, mn) / per(h.all_done, hn).max(1e-9);
            println!(
                "all IPs, per Service (MetalLB ran {mn} Services, Herald {hn}): Herald{which} {:.2} s for {hn} = {:.3} ms/Service, MetalLB {:.2} s for {mn} = {:.3} ms/Service = {r:.1}x sooner",
                h.all_done.as_secs_f64(),
                per(h.all_done, hn),
                m.all_done.as_secs_f64(),
                per(m.all_done, mn)
            );
            r
        };
        println!("target >= 10x sooner: {}", target(ratio >= 10.0));
        if mn == hn {
            let floor_s = floor.as_secs_f64().max(1e-9);
            println!(
                "the API server alone accepted the {hn} creates in {:.2} s on Herald's plane: Herald's all-IPs is {:.2}x that; no controller could have been more than {:.1}x sooner than MetalLB in this run",
                floor.as_secs_f64(),
                h.all_done.as_secs_f64() / floor_s,
                m.all_done.as_secs_f64() / floor_s
            );
        }
        println!(
            "last IP after the last create returned: Herald {:.0} ms, MetalLB {:.0} ms",
            h.tail.as_secs_f64() * 1000.0,
            m.tail.as_secs_f64() * 1000.0
        );
        println!(
            "API requests per Service: Herald {:.2}, MetalLB {:.2}",
            h.requests_per_service, m.requests_per_service
        );
        println!(
            "bench client create rate: Herald's run {:.0} Services/s, MetalLB's run {:.0} Services/s ({})",
            h.create_rate(),
            m.create_rate(),
            h.client.load.pace()
        );
    }
}
