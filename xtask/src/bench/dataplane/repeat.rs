//! Median and spread of one figure over repeated runs. The spread is the largest distance of a
//! run from the median, relative to the median; a figure whose runs disagree by more than
//! [`SPREAD_LIMIT`] is flagged, not averaged away.

/// Largest accepted distance of one run from the median (±30 %).
pub const SPREAD_LIMIT: f64 = 0.30;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Largest |run − median| / median (0 when the median is 0 and every run is 0).
    pub distance: f64,
    pub runs: usize,
}

impl Spread {
    /// `None` without values, or when a value is not a finite number.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        let (min, max) = (v[0], v[n - 1]);
        let far = (max - median).max(median - min);
        let distance = if median == 0.0 {
            if far == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            far / median.abs()
        };
        Some(Spread {
            median,
            min,
            max,
            distance,
            runs: n,
        })
    }

    /// Whether the runs disagree by more than the limit (never for a single run: it has no
    /// spread to judge, which [`Spread::text`] says).
    pub fn flagged(&self) -> bool {
        self.runs > 1 && self.distance > SPREAD_LIMIT
    }

    /// `median (min–max, ±spread)`, with a flag when over the limit, each value formatted by
    /// `fmt`.
    pub fn text(&self, fmt: impl Fn(f64) -> String) -> String {
        if self.runs == 1 {
            return format!("{} (1 run: no spread)", fmt(self.median));
        }
        let pct = if self.distance.is_finite() {
            format!("±{:.0}%", 100.0 * self.distance)
        } else {
            "±∞".to_string()
        };
        format!(
            "{} ({}–{}, {pct}){}",
            fmt(self.median),
            fmt(self.min),
            fmt(self.max),
            if self.flagged() {
                " UNSTABLE: runs disagree by more than ±30%"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert!((s.distance - 0.5).abs() < 1e-12);
        assert_eq!(
            Spread::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median),
            Some(2.5)
        );
    }

    #[test]
    fn runs_that_disagree_are_flagged() {
        let close = Spread::of(&[100.0, 110.0, 95.0]).expect("values");
        assert!(!close.flagged());
        assert_eq!(close.text(|v| format!("{v:.0}")), "100 (95–110, ±10%)");
        // Ratios 1.0, 2.36 and 7.8: one run far from the others, as in a rerun that missed a quote.
        let apart = Spread::of(&[1.0, 2.36, 7.8]).expect("values");
        assert!(apart.flagged());
        assert!(apart.text(|v| format!("{v:.2}")).contains("UNSTABLE"));
    }

    #[test]
    fn zero_single_and_invalid_values() {
        let zeros = Spread::of(&[0.0, 0.0, 0.0]).expect("values");
        assert!(!zeros.flagged());
        let one_nonzero = Spread::of(&[0.0, 0.0, 5.0]).expect("values");
        assert!(one_nonzero.flagged());
        assert!(one_nonzero.text(|v| format!("{v}")).contains("±∞"));
        let single = Spread::of(&[7.0]).expect("values");
        assert!(!single.flagged());
        assert!(single.text(|v| format!("{v}")).contains("1 run"));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    }
}
