//! Replies over time within an unpaced step: the reply counter read every [`WINDOW`], turned
//! into one rate per window. A step's mean rate is the machine's speed over those seconds as
//! much as the responder's: on a shared host the same system calls took up to 1.6× longer from
//! one second to the next (`machine::work_ms`), so a 2 s mean lands anywhere between the fast
//! and the slow rate. The windows show when the rate moved under an unchanged load; the fastest
//! tenth of them is the rate at the step's fast moments (it did not narrow the spread between
//! runs here: slow spells can last a whole step).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Length of one window.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Share of windows, counted from the fastest, whose slowest is the step's peak rate.
pub const PEAK_SHARE: f64 = 0.10;

/// Fewest whole windows a step needs for a peak rate (with fewer, one fast moment decides it).
pub const MIN_WINDOWS: usize = 10;

/// Reads `total` every [`WINDOW`] until `done`; the readings with their times since the first.
/// A reading that fails ends the series (what was read stays usable). It sleeps in 10 ms slices
/// so the step's CPU window, which closes after it stops, holds no idle tail of its.
pub fn sample(total: impl Fn() -> Option<u64>, done: &AtomicBool) -> Vec<(Duration, u64)> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut next = start;
    while !done.load(Ordering::Relaxed) {
        let Some(v) = total() else { break };
        out.push((start.elapsed(), v));
        next += WINDOW;
        // Sleep in short slices so the end of the step is noticed promptly.
        while Instant::now() < next && !done.load(Ordering::Relaxed) {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(10)));
        }
    }
    out
}

/// Rates (per second) between consecutive readings, without the first and the last interval:
/// the load starts and stops inside them. Intervals shorter than half a window (a late
/// wake-up followed by a prompt one) are merged into the next so no rate rests on a sliver of
/// time; a counter that went back (it never should) ends the series there.
pub fn rates(readings: &[(Duration, u64)]) -> Vec<f64> {
    let mut out = Vec::new();
    let Some(&(mut t0, mut c0)) = readings.first() else {
        return out;
    };
    for &(t, c) in &readings[1..] {
        if c < c0 {
            break;
        }
        let dt = t.saturating_sub(t0);
        if dt < WINDOW / 2 {
            continue;
        }
        out.push((c - c0) as f64 / dt.as_secs_f64());
        (t0, c0) = (t, c);
    }
    if out.len() >= 2 {
        out.pop();
        out.remove(0);
    } else {
        out.clear();
    }
    out
}

/// The slowest of the fastest [`PEAK_SHARE`] of the windows (at least one window); `None` with
/// fewer than [`MIN_WINDOWS`].
pub fn peak(windows: &[f64]) -> Option<f64> {
    if windows.len() < MIN_WINDOWS || windows.iter().any(|w| !w.is_finite()) {
        return None;
    }
    let mut v = windows.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = ((PEAK_SHARE * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[k - 1])
}

/// One line on a step's windows: slowest, median, peak, and each window in time order;
/// `None` without windows.
pub fn text(windows: &[f64], si: impl Fn(f64) -> String) -> Option<String> {
    let (first, _) = windows.split_first()?;
    let mut sorted = windows.to_vec();
    sorted.sort_by(f64::total_cmp);
    let slowest = sorted.first().copied().unwrap_or(*first);
    let median = sorted[sorted.len() / 2];
    let peak = peak(windows).map_or_else(
        || format!("none (under {MIN_WINDOWS} windows)"),
        |p| format!("{}/s", si(p)),
    );
    let each: Vec<String> = windows.iter().map(|&w| si(w)).collect();
    Some(format!(
        "replies in {} ms windows ({}): slowest {}/s, median {}/s, fastest tenth {peak}; in order: {}",
        WINDOW.as_millis(),
        windows.len(),
        si(slowest),
        si(median),
        each.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rates_drop_the_partial_first_and_last_windows() {
        // 1000/s for the first interval (start-up), then 5000, 5000, 3000, then 100 (stopping).
        let r = [
            (ms(0), 0),
            (ms(100), 100),
            (ms(200), 600),
            (ms(300), 1100),
            (ms(400), 1400),
            (ms(500), 1410),
        ];
        let w = rates(&r);
        assert_eq!(w.len(), 3);
        for (got, want) in w.iter().zip([5000.0, 5000.0, 3000.0]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn slivers_merge_into_the_next_window_and_a_counter_going_back_ends_the_series() {
        // A late reading at 150 ms and a prompt one at 160 ms: the 10 ms sliver merges, so
        // 150–260 is one window (110 ms) and every rate stays 1000/s.
        let r = [
            (ms(0), 0),
            (ms(150), 150),
            (ms(160), 160),
            (ms(260), 260),
            (ms(360), 360),
            (ms(460), 460),
        ];
        let w = rates(&r);
        assert!(w.iter().all(|x| (x - 1000.0).abs() < 1e-6), "{w:?}");
        assert_eq!(w.len(), 2, "{w:?}");
        let back = [(ms(0), 0), (ms(100), 10), (ms(200), 5), (ms(300), 50)];
        assert!(rates(&back).is_empty());
        assert!(rates(&[]).is_empty());
        assert!(rates(&[(ms(0), 1)]).is_empty());
    }

    #[test]
    fn the_peak_is_the_fastest_tenth_and_needs_enough_windows() {
        // 20 windows: 14 slow (3M), 6 fast (5M): the fastest two are fast.
        let mut w = vec![3e6; 14];
        w.extend([5e6; 6]);
        assert_eq!(peak(&w), Some(5e6));
        // One fast window in 20 does not make the peak: the second fastest does.
        let mut one = vec![3e6; 19];
        one.push(9e6);
        assert_eq!(peak(&one), Some(3e6));
        assert_eq!(peak(&[1.0; MIN_WINDOWS - 1]), None);
        assert_eq!(peak(&[1.0; MIN_WINDOWS]), Some(1.0));
        let mut nan = vec![1.0; MIN_WINDOWS];
        nan[3] = f64::NAN;
        assert_eq!(peak(&nan), None);
    }

    #[test]
    fn sampling_stops_when_told() {
        let done = AtomicBool::new(false);
        let n = std::sync::atomic::AtomicU64::new(0);
        let readings = std::thread::scope(|s| {
            let h = s.spawn(|| sample(|| Some(n.fetch_add(7, Ordering::Relaxed)), &done));
            std::thread::sleep(WINDOW * 3 + WINDOW / 2);
            done.store(true, Ordering::Relaxed);
            h.join().expect("sampler")
        });
        assert!(!readings.is_empty());
        assert!(
            readings
                .windows(2)
                .all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1)
        );
        // A failed reading ends the series.
        let none = sample(|| None, &AtomicBool::new(false));
        assert!(none.is_empty());
    }

    proptest! {
        #[test]
        fn the_peak_is_a_window_at_least_the_median(w in proptest::collection::vec(0.0f64..1e7, MIN_WINDOWS..100)) {
            let p = peak(&w).unwrap_or(f64::NAN);
            prop_assert!(w.contains(&p));
            let mut s = w.clone();
            s.sort_by(f64::total_cmp);
            prop_assert!(p >= s[s.len() / 2]);
            let faster = w.iter().filter(|&&x| x > p).count();
            prop_assert!((faster as f64) < PEAK_SHARE * w.len() as f64);
        }
    }
}
