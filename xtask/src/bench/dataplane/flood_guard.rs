//! Herald's flood guard as the program's own maps report it (`herald xdp list -o json`): the
//! limit it applied during the flood and how many frames it dropped, read before and after the
//! step, so the flood table says what the guard did rather than what was asked of it.

use anyhow::{Context, Result};

use super::lab::Lab;

/// What `herald xdp list -o json` says of the guard at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodGuardReading {
    /// Frames per source passed to the kernel unanswered (0: the guard is off).
    pub per_second: u64,
    pub burst: u64,
    /// Frames dropped since the maps were created.
    pub dropped: u64,
}

/// The guard over one flood step: the limit read after it and the frames dropped during it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloodGuardOverStep {
    Read {
        per_second: u64,
        burst: u64,
        dropped: u64,
        /// The limit moved during the step (read before ≠ after): the figure is not one limit's.
        changed: bool,
    },
    /// A reading failed: why.
    Unread(String),
}

impl FloodGuardOverStep {
    pub fn of(
        before: Result<FloodGuardReading>,
        after: Result<FloodGuardReading>,
    ) -> FloodGuardOverStep {
        match (before, after) {
            (Ok(b), Ok(a)) if a.dropped < b.dropped => FloodGuardOverStep::Unread(format!(
                "its drop counter went back from {} to {} (maps re-created?)",
                b.dropped, a.dropped
            )),
            (Ok(b), Ok(a)) => FloodGuardOverStep::Read {
                per_second: a.per_second,
                burst: a.burst,
                dropped: a.dropped - b.dropped,
                changed: (a.per_second, a.burst) != (b.per_second, b.burst),
            },
            (Err(e), _) | (_, Err(e)) => FloodGuardOverStep::Unread(format!("{e:#}")),
        }
    }

    /// `10000/s (burst 1000), 5.9M dropped`, as the flood table shows it.
    pub fn text(&self) -> String {
        match self {
            FloodGuardOverStep::Read {
                per_second,
                burst,
                dropped,
                changed,
            } => {
                let limit = match per_second {
                    0 => "off".to_string(),
                    r => format!("{r}/s (burst {})", (*burst).max(1)),
                };
                format!(
                    "{limit}, {} dropped{}",
                    super::svg::si(*dropped as f64),
                    if *changed {
                        " (CHANGED during the step)"
                    } else {
                        ""
                    }
                )
            }
            FloodGuardOverStep::Unread(why) => format!("unread: {why}"),
        }
    }
}

/// Reads the guard from `herald xdp list -o json` on the node side `side`.
pub fn read(lab: &Lab, side: &str) -> Result<FloodGuardReading> {
    let json = lab.herald(&lab.node_ns, side, &["list", "-o", "json"])?;
    parse(&json)
}

/// The guard's limit and drop count out of `herald xdp list -o json`.
pub fn parse(json: &str) -> Result<FloodGuardReading> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("herald xdp list -o json is not JSON")?;
    let number = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("herald xdp list -o json has no number at {pointer}"))
    };
    Ok(FloodGuardReading {
        per_second: number("/limits/flood_guard/per_second")?,
        burst: number("/limits/flood_guard/burst")?,
        dropped: number("/edges/flood_dropped")?,
    })
}

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;

    const LISTED: &str = r#"{"pin_dir": "/x", "counters": {"passed": 3},
        "edges": {"sha_mismatch": 0, "rate_limited": 0, "foreign_claims": 0, "flood_dropped": 5000},
        "limits": {"answers": {"per_second": 0, "burst": 0},
                   "flood_guard": {"per_second": 10000, "burst": 1000}}}"#;

    #[test]
    fn the_guard_is_read_from_the_listing() {
        assert_eq!(
            parse(LISTED).unwrap(),
            FloodGuardReading {
                per_second: 10_000,
                burst: 1_000,
                dropped: 5_000
            }
        );
    }

    #[test]
    fn a_listing_without_the_guard_is_an_error_naming_what_is_missing() {
        let older = r#"{"pin_dir": "/x", "edges": {"flood_dropped": 1}}"#;
        let e = parse(older).unwrap_err();
        assert!(
            format!("{e:#}").contains("/limits/flood_guard/per_second"),
            "{e:#}"
        );
        assert!(parse("not json").is_err());
    }

    #[test]
    fn a_step_shows_the_frames_dropped_during_it() {
        let at = |per_second, dropped| FloodGuardReading {
            per_second,
            burst: 1_000,
            dropped,
        };
        let over = FloodGuardOverStep::of(Ok(at(10_000, 5_000)), Ok(at(10_000, 2_505_000)));
        assert_eq!(over.text(), "10000/s (burst 1000), 2.5M dropped");
        let changed = FloodGuardOverStep::of(Ok(at(10_000, 0)), Ok(at(0, 0)));
        assert_eq!(changed.text(), "off, 0 dropped (CHANGED during the step)");
        let unread = FloodGuardOverStep::of(Ok(at(1, 0)), Err(anyhow!("herald gone")));
        assert_eq!(unread.text(), "unread: herald gone");
        let reset = FloodGuardOverStep::of(Ok(at(1, 500)), Ok(at(1, 20)));
        assert_eq!(
            reset.text(),
            "unread: its drop counter went back from 500 to 20 (maps re-created?)"
        );
    }
}
