//! Small statistics: percentiles (and how a time prints), loss, ratios, and picking the
//! saturation step.

/// Nearest-rank percentile of nanosecond samples, in µs (`None` without samples).
pub fn percentile_us(samples_ns: &[u64], pct: f64) -> Option<f64> {
    if samples_ns.is_empty() {
        return None;
    }
    let mut sorted = samples_ns.to_vec();
    sorted.sort_unstable();
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index] as f64 / 1000.0)
}

/// A time in µs as the tables print it (`-` when there is none).
pub fn us(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.0}µs"))
}

/// Share of offered frames left unanswered, 0..=1.
pub fn loss(offered: f64, replies: f64) -> f64 {
    if offered <= 0.0 {
        return 0.0;
    }
    (1.0 - replies / offered).clamp(0.0, 1.0)
}

/// `a / b`, or `None` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Index of the step with the most replies per second (the saturation point).
pub fn saturation_index(replies: &[f64]) -> Option<usize> {
    replies
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&s, 50.0), Some(50.0));
        assert_eq!(percentile_us(&s, 99.0), Some(99.0));
        assert_eq!(percentile_us(&s, 100.0), Some(100.0));
        assert_eq!(percentile_us(&[7000], 99.0), Some(7.0));
        assert_eq!(percentile_us(&[], 50.0), None);
    }

    #[test]
    fn loss_and_ratio_edges() {
        assert_eq!(loss(0.0, 5.0), 0.0);
        assert!((loss(100.0, 75.0) - 0.25).abs() < 1e-12);
        assert_eq!(loss(100.0, 120.0), 0.0);
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
    }

    #[test]
    fn saturation_is_the_highest_reply_rate() {
        assert_eq!(saturation_index(&[1.0, 5.0, 3.0]), Some(1));
        assert_eq!(saturation_index(&[]), None);
    }

    proptest! {
        #[test]
        fn percentiles_are_samples_and_monotone(v in proptest::collection::vec(0u64..1_000_000, 1..200)) {
            let p50 = percentile_us(&v, 50.0).unwrap_or_default();
            let p99 = percentile_us(&v, 99.0).unwrap_or_default();
            prop_assert!(p50 <= p99);
            #[allow(clippy::float_cmp, reason = "a percentile is one of the samples, exactly")]
            let is_sample = v.iter().any(|&x| x as f64 / 1000.0 == p99);
            prop_assert!(is_sample);
        }
    }
}
