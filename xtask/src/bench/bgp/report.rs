//! The bench's figures and the side-by-side table it prints.

use super::Fault;

/// One burst's figures.
pub struct Burst {
    /// Distinct prefixes announced.
    pub prefixes: usize,
    /// From the first create request to the last create's return (ms).
    pub created_ms: f64,
    /// From the first create to every prefix in the router's FIB (ms).
    pub first_hop_ms: f64,
    /// From the first create to every prefix via every node (ms).
    pub all_hops_ms: f64,
    /// From the delete to every prefix withdrawn (ms).
    pub withdrawn_ms: f64,
    /// UPDATE messages the router received over the burst.
    pub updates: u64,
    /// Changes seen only by reading the table, not from a notification.
    pub polled: usize,
    /// The speakers' CPU time over the burst, together (s).
    pub cpu_s: f64,
    /// Each speaker's VmRSS after the burst (MiB).
    pub rss_mib: Vec<f64>,
}

/// One implementation's figures.
pub struct Figures {
    pub name: &'static str,
    pub burst: Burst,
    pub singles_ms: Vec<f64>,
    /// Create to the address in the Service's status (the controller's share).
    pub addressed_ms: Vec<f64>,
    /// Create to the first UPDATE carrying the prefix at the router (the cluster's share).
    pub updated_ms: Vec<f64>,
    /// That UPDATE to the route in the router's FIB (the router's share), per Service.
    pub router_ms: Vec<f64>,
    /// Create to the route in the first BIRD peer's kernel table, per Service (none without
    /// extra peers).
    pub bird_ms: Vec<f64>,
    pub failover: Vec<(Fault, &'static str, Vec<f64>)>,
}

/// Nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `p50 / p99` of sorted `values`, in ms with one decimal.
fn p50_p99(values: &[f64]) -> String {
    format!(
        "{:.1} / {:.1}",
        percentile(values, 50.0),
        percentile(values, 99.0)
    )
}

pub fn print_report(figures: &[Figures], v6: Option<&Burst>) {
    println!(
        "\n| figure | {} |",
        figures
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(figures.len()));
    let row = |label: &str, value: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = figures.iter().map(value).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row("burst: Services created (ms)", &|f| {
        format!("{:.0}", f.burst.created_ms)
    });
    row("burst: every prefix in the FIB (ms)", &|f| {
        format!("{:.0}", f.burst.first_hop_ms)
    });
    row("burst: every prefix via all 3 nodes (ms)", &|f| {
        format!("{:.0}", f.burst.all_hops_ms)
    });
    row(
        "burst: from the last create to every prefix via all 3 nodes (ms)",
        &|f| format!("{:.0}", f.burst.all_hops_ms - f.burst.created_ms),
    );
    row("burst: UPDATEs received by the router", &|f| {
        f.burst.updates.to_string()
    });
    row("burst: speakers' CPU (s, 3 nodes)", &|f| {
        format!("{:.2}", f.burst.cpu_s)
    });
    row("burst: speaker RSS (MiB, each)", &|f| {
        format!("{:.1?}", f.burst.rss_mib)
    });
    row("burst: changes seen only by polling", &|f| {
        f.burst.polled.to_string()
    });
    row("withdraw all (ms)", &|f| {
        format!("{:.0}", f.burst.withdrawn_ms)
    });
    row("create-to-route p50 (ms)", &|f| {
        format!("{:.1}", percentile(&f.singles_ms, 50.0))
    });
    row("create-to-route p99 (ms)", &|f| {
        format!("{:.1}", percentile(&f.singles_ms, 99.0))
    });
    row("create-to-address p50 / p99 (ms, controller)", &|f| {
        p50_p99(&f.addressed_ms)
    });
    row(
        "create to the first UPDATE at the router p50 / p99 (ms)",
        &|f| p50_p99(&f.updated_ms),
    );
    row(
        "that UPDATE to the route in the FIB p50 / p99 (ms, the router)",
        &|f| p50_p99(&f.router_ms),
    );
    if figures.iter().any(|f| !f.bird_ms.is_empty()) {
        row(
            "create-to-route at the first BIRD's kernel table p50 / p99 (ms)",
            &|f| p50_p99(&f.bird_ms),
        );
    }
    if let Some(first) = figures.first() {
        for (i, (fault, label, _)) in first.failover.iter().enumerate() {
            row(
                &format!("{} ({label}) p50 / max (ms)", fault.label()),
                &|f| {
                    f.failover.get(i).map_or(String::from("-"), |(_, _, t)| {
                        format!(
                            "{:.0} / {:.0}",
                            percentile(t, 50.0),
                            t.last().copied().unwrap_or_default()
                        )
                    })
                },
            );
        }
    }
    if let [herald, metallb] = figures {
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
        println!(
            "\nHerald sooner than MetalLB: burst (all prefixes via all nodes) {:.1}× from the first create, {:.1}× from the last; create-to-route p99 {:.1}×",
            ratio(herald.burst.all_hops_ms, metallb.burst.all_hops_ms),
            ratio(
                herald.burst.all_hops_ms - herald.burst.created_ms,
                metallb.burst.all_hops_ms - metallb.burst.created_ms
            ),
            ratio(
                percentile(&herald.singles_ms, 99.0),
                percentile(&metallb.singles_ms, 99.0)
            )
        );
    }
    if let Some(v6) = v6 {
        println!(
            "\nHerald alone, IPv6 ({} prefixes, one Service each, to every peer over IPv6): created in {:.0} ms; every prefix in the FIB after {:.0} ms, via all 3 nodes after {:.0} ms ({:.0} ms after the last create); {} UPDATEs received by the router; speakers' CPU {:.2} s; RSS {:.1?} MiB; withdraw all {:.0} ms",
            v6.prefixes,
            v6.created_ms,
            v6.first_hop_ms,
            v6.all_hops_ms,
            v6.all_hops_ms - v6.created_ms,
            v6.updates,
            v6.cpu_s,
            v6.rss_mib,
            v6.withdrawn_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
