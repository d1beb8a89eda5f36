//! Reading Prometheus text pages: the API server's request counters (how many requests a
//! controller made, and how long they took there) and the controllers' own histograms.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;
use herald_control_plane::ControlPlane;

/// Waits (up to 2 minutes) until the API server's request counters stop moving for 2 s, leases
/// aside: the controller has finished whatever the last change started. Returns the counters.
pub(super) async fn settle(plane: &ControlPlane) -> Result<ApiRequests> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = ApiRequests::read(plane)?;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let next = ApiRequests::read(plane)?;
        let moved = next
            .total
            .iter()
            .any(|(k, v)| !k.starts_with("leases ") && last.total.get(k) != Some(v));
        last = next;
        if !moved || Instant::now() > deadline {
            return Ok(last);
        }
    }
}

/// The API server's request counters, keyed by "resource[/subresource] VERB".
#[derive(Default)]
pub(super) struct ApiRequests {
    /// `apiserver_request_total`.
    pub(super) total: BTreeMap<String, f64>,
    /// `apiserver_request_duration_seconds` sum and count (time spent in the API server).
    pub(super) seconds: BTreeMap<String, (f64, f64)>,
}

impl ApiRequests {
    pub(super) fn read(plane: &ControlPlane) -> Result<ApiRequests> {
        let text = plane.kubectl_run(&["get", "--raw", "/metrics"])?;
        let mut requests = ApiRequests::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once('{') else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            if let Some(part) =
                name.strip_prefix("apiserver_flowcontrol_request_wait_duration_seconds_")
                && label("execute") == "true"
            {
                // Time requests queued in API Priority and Fairness before being served: not
                // part of apiserver_request_duration_seconds.
                let key = format!("APF queue {}", label("priority_level"));
                let value = value.parse::<f64>().unwrap_or(0.0);
                let entry = requests.seconds.entry(key).or_insert((0.0, 0.0));
                match part {
                    "sum" => entry.0 += value,
                    "count" => entry.1 += value,
                    _ => {}
                }
                continue;
            }
            let resource = label("resource");
            if resource.is_empty() {
                continue;
            }
            let sub = label("subresource");
            let key = if name.starts_with("etcd_") {
                // The API server's requests to etcd: "etcd <operation> <resource>".
                format!("etcd {} {resource}", label("operation"))
            } else if sub.is_empty() {
                format!("{resource} {}", label("verb"))
            } else {
                format!("{resource}/{sub} {}", label("verb"))
            };
            let value = value.parse::<f64>().unwrap_or(0.0);
            match name {
                "etcd_request_duration_seconds_sum" | "apiserver_request_duration_seconds_sum" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).0 += value;
                }
                "etcd_request_duration_seconds_count"
                | "apiserver_request_duration_seconds_count" => {
                    requests.seconds.entry(key).or_insert((0.0, 0.0)).1 += value;
                }
                "apiserver_request_total" => *requests.total.entry(key).or_insert(0.0) += value,
                _ => {}
            }
        }
        Ok(requests)
    }

    /// Mean time in the API server per request of `key` between `before` and `self`, in ms.
    pub(super) fn mean_ms_since(&self, before: &ApiRequests, key: &str) -> Option<f64> {
        let (sum, count) = self.seconds.get(key).copied()?;
        let (sum0, count0) = before.seconds.get(key).copied().unwrap_or((0.0, 0.0));
        let n = count - count0;
        (n > 0.0).then(|| (sum - sum0) * 1000.0 / n)
    }
}

/// Cumulative buckets (upper bound in seconds, count) of histogram `name` gained between two
/// scrapes of a Prometheus text page, ending with +Inf.
pub(super) fn histogram_delta(before: &str, after: &str, name: &str) -> Vec<(f64, f64)> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    };
    let old: HashMap<u64, f64> = buckets(before)
        .into_iter()
        .map(|(le, n)| (le.to_bits(), n))
        .collect();
    buckets(after)
        .into_iter()
        .map(|(le, n)| (le, n - old.get(&le.to_bits()).copied().unwrap_or(0.0)))
        .collect()
}

/// The upper bound (ms) of the bucket holding quantile `q` of cumulative `buckets`.
pub(super) fn histogram_quantile_ms(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return f64::NAN;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// The value of the series named exactly `name` (no labels) in a Prometheus text page.
pub(super) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_delta_and_quantile() {
        let name = "h";
        let before = "h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.01\"} 2\nh_bucket{le=\"+Inf\"} 2\n";
        let after =
            "h_bucket{le=\"0.001\"} 3\nh_bucket{le=\"0.01\"} 10\nh_bucket{le=\"+Inf\"} 12\n";
        let delta = histogram_delta(before, after, name);
        assert_eq!(
            delta,
            vec![(0.001, 2.0), (0.01, 8.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(histogram_quantile_ms(&delta, 0.2), 1.0);
        assert_eq!(histogram_quantile_ms(&delta, 0.5), 10.0);
        assert_eq!(histogram_quantile_ms(&delta, 0.99), f64::INFINITY);
        assert!(histogram_quantile_ms(&[], 0.5).is_nan());
    }
}
