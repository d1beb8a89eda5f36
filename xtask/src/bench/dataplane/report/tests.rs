use super::*;
use crate::bench::dataplane::machine::Speed;
use crate::bench::dataplane::measure::tests::step;
use crate::bench::dataplane::results::Flood;

fn run(mode: Mode, arp: Vec<StepResult>) -> ModeRun {
    ModeRun {
        mode,
        skipped: None,
        arp,
        ndp: vec![],
        flood: None,
        beside: vec![],
        turns: vec![],
    }
}

#[test]
fn the_peak_comes_from_the_unpaced_step_only() {
    let mut paced = step(Some(25_000), 25_000.0, 0.0);
    paced.windows = vec![9e9; 20];
    let mut unpaced = step(None, 4e6, 0.0);
    let mut w = vec![4e6; 18];
    w.extend([6e6, 6.5e6]);
    unpaced.windows = w;
    assert_eq!(unpaced_peak(&[paced.clone(), unpaced.clone()]), Some(6e6));
    assert_eq!(unpaced_peak(&[paced]), None, "no unpaced step");
    unpaced.windows.truncate(windows::MIN_WINDOWS - 1);
    assert_eq!(unpaced_peak(&[unpaced]), None, "too few windows");
}

#[test]
fn the_speed_line_spans_every_probe_of_every_run() {
    let probed = |before: Option<f64>, after: Option<f64>| {
        let mut s = step(None, 1.0, 0.0);
        s.speed = Some(Speed { before, after });
        s
    };
    let all = vec![
        vec![run(Mode::Driver, vec![probed(Some(16.0), Some(17.0))])],
        vec![run(Mode::Kernel, vec![probed(None, Some(24.0))])],
    ];
    let line = speed_line(&all).unwrap_or_default();
    assert!(line.contains("16.0–24.0 ms (1.50×)"), "{line}");
    assert!(line.contains("in the 3 probes"), "{line}");
    assert_eq!(
        speed_line(&[vec![run(Mode::Driver, vec![probed(None, None)])]]),
        None
    );
}

#[test]
fn the_side_by_side_table_splits_each_step_by_tag() {
    use crate::bench::dataplane::results::Beside;
    // Herald (even tags) at 50 µs, the kernel (odd tags) at 100 µs: 0.50×.
    let with = || {
        let mut st = step(Some(25_000), 25_000.0, 0.0);
        st.latencies_ns = vec![50_000, 100_000, 50_000, 100_000];
        st.probe_tags = vec![0, 1, 2, 3];
        let mut r = run(Mode::Driver, vec![]);
        r.beside = vec![Beside {
            proto: Proto::Arp,
            step: st,
        }];
        r
    };
    let all = vec![vec![with()], vec![with()]];
    let table = side_by_side(&all, &[Mode::Driver, Mode::Kernel], "25k/s").unwrap_or_default();
    assert!(
        table.contains("| Herald XDP, driver mode | arp | 50µs (50µs–50µs, ±0%) | 100µs (100µs–100µs, ±0%) | 0.50× (0.50×–0.50×, ±0%) |"),
        "{table}"
    );
    // NDP was not measured side by side: said so, not left out.
    assert!(table.contains("| ndp | not measured |"), "{table}");
    assert_eq!(side_by_side(&all, &[Mode::Kernel], "25k/s"), None);
}

#[test]
fn the_turns_table_takes_each_runs_median_pair() {
    use crate::bench::dataplane::results::{Alternation, Turn};
    let turn = |herald, replies| Turn {
        herald,
        replies,
        floor: false,
        xdp_tx: None,
        wrong: None,
    };
    // Pairs 10×, 10×, 7.5× in one run (median 10×; the turns' medians would give 9×), 12×
    // alone in the other.
    let with = |turns: Vec<Turn>| {
        let mut r = run(Mode::Driver, vec![]);
        r.turns = vec![Alternation {
            proto: Proto::Arp,
            turns,
        }];
        r
    };
    let all = vec![
        vec![with(vec![
            turn(true, 5e6),
            turn(false, 5e5),
            turn(false, 4e5),
            turn(true, 4e6),
            turn(true, 4.5e6),
            turn(false, 6e5),
        ])],
        vec![with(vec![turn(true, 6e6), turn(false, 5e5)])],
    ];
    let table = turns::summary(&all, &[Mode::Driver, Mode::Kernel]).unwrap_or_default();
    assert!(
        table.contains("| Herald XDP, driver mode | arp | 5.2M/s (4.5M/s–6.0M/s, ±14%) | 500k/s (500k/s–500k/s, ±0%) | 11.00× (10.00×–12.00×, ±9%) |"),
        "{table}"
    );
    assert!(table.contains("| ndp | not measured |"), "{table}");
    assert!(!table.contains("floor"), "{table}");
    let text = turns::run_text(&all[0]).unwrap_or_default();
    assert!(
        text.contains("per pair 10.00× 10.00× 7.50×, median 10.00×"),
        "{text}"
    );
    // A run without turns has no section, and a table needs a mode that had some.
    assert_eq!(turns::run_text(&[run(Mode::Driver, vec![])]), None);
    assert_eq!(turns::summary(&all, &[Mode::Kernel]), None);
    // Floors and wrong responders are counted under the table, per side.
    let mut floored = all;
    floored[1][0].turns[0].turns[1].floor = true;
    floored[0][0].turns[0].turns[0].wrong = Some("x".into());
    let table = turns::summary(&floored, &[Mode::Driver]).unwrap_or_default();
    assert!(
        table.contains("0 of Herald's and 1 of the kernel's measured a floor"),
        "{table}"
    );
    assert!(
        table.contains("and 1 were answered by the other responder"),
        "{table}"
    );
}

#[test]
fn each_flood_run_is_shown_beside_the_hosts_speed_then() {
    let text = each_run(
        &[Some(99.84), Some(100.0), None, Some(97.0)],
        &[Some(1.02), None, Some(1.1), Some(1.31)],
    );
    assert_eq!(
        text,
        "99.8% (1.02×), 100.0% (speed unknown: its probes failed), -, 97.0% (1.31×)"
    );
}

#[test]
fn a_floods_slowness_is_taken_against_the_fastest_probe_of_any_step() {
    let probed = |before: Option<f64>, after: Option<f64>| {
        let mut s = step(None, 1.0, 0.0);
        s.speed = Some(Speed { before, after });
        s
    };
    let with_flood = |arp: StepResult, flood: StepResult| {
        let mut r = run(Mode::Driver, vec![arp]);
        r.flood = Some(Flood {
            step: flood,
            responder_cpu_pct: None,
            list_time: None,
            guard: None,
        });
        r
    };
    let all = vec![
        // The fastest probe of the invocation is a flood's (15 ms); the slower side counts.
        vec![with_flood(
            probed(Some(16.0), Some(17.0)),
            probed(Some(20.0), Some(15.0)),
        )],
        vec![with_flood(
            probed(Some(18.0), None),
            probed(None, Some(18.0)),
        )],
        vec![with_flood(probed(Some(18.0), None), probed(None, None))],
        vec![run(Mode::Driver, vec![probed(Some(30.0), Some(30.0))])],
    ];
    let slow = flood_slowness(&all, Mode::Driver);
    let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9);
    assert!(near(slow[0], 20.0 / 15.0), "{slow:?}");
    assert!(near(slow[1], 18.0 / 15.0), "{slow:?}");
    assert_eq!(slow[2], None, "both of its probes failed");
    assert_eq!(slow[3], None, "no flood in that run");
    // The machine-speed line spans the same probes: the floods' with the series'.
    let line = speed_line(&all).unwrap_or_default();
    assert!(line.contains("15.0–30.0 ms (2.00×)"), "{line}");
    assert!(line.contains("in the 9 probes"), "{line}");
    assert_eq!(step(None, 1.0, 0.0).speed_text(), "-", "not probed");
    // No probe at all: no reference, no ratio.
    let none = vec![vec![with_flood(probed(None, None), probed(None, None))]];
    assert_eq!(flood_slowness(&none, Mode::Driver), vec![None]);
    assert_eq!(speed_line(&none), None);
}
