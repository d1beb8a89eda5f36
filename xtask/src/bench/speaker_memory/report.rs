//! The bench's table: VmRSS and VmHWM per step, the growth per Service and the peak; printed
//! and kept under target/bench.

use std::fmt::Write as _;
use std::time::Duration;

use crate::paths::workspace_root;

/// One measurement.
pub(super) struct Row {
    pub(super) step: String,
    pub(super) services: usize,
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
    /// From the start of the step until the speaker announced them all (or was quiet).
    pub(super) took: Duration,
}

#[allow(
    clippy::cast_precision_loss,
    reason = "KiB counts far below 2^52 are exact as f64"
)]
pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(super) fn print_report(rows: &[Row], baseline: usize, services: usize) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| step | Services | VmRSS MiB | VmHWM MiB | step took |\n|---|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} s |",
            r.step,
            r.services,
            mib(r.rss_kib),
            mib(r.hwm_kib),
            r.took.as_secs_f64()
        );
    }
    let idle = rows.first().map_or(0, |r| r.rss_kib);
    let at = |n: usize, step: &str| {
        rows.iter()
            .find(|r| r.services == n && r.step.contains(step))
            .map_or(0, |r| r.rss_kib)
    };
    let peak = rows.iter().map(|r| r.hwm_kib).max().unwrap_or(0);
    let (small, large) = (at(baseline, "announced"), at(services, "announced"));
    if small > idle && large > idle {
        #[allow(
            clippy::cast_precision_loss,
            reason = "KiB and Service counts far below 2^52 are exact as f64"
        )]
        let per = |rss: u64, n: usize| (rss - idle) as f64 / n as f64;
        #[allow(
            clippy::cast_precision_loss,
            reason = "KiB counts far below 2^52 are exact as f64"
        )]
        let ratio = large as f64 / small as f64;
        let _ = writeln!(
            out,
            "\nVmRSS once announced: {services} Services {ratio:.2}x {baseline}; above idle {:.1} KiB per Service at {baseline}, {:.1} KiB at {services}.",
            per(small, baseline),
            per(large, services)
        );
    }
    let _ = writeln!(out, "Peak (VmHWM, any step): {:.1} MiB.", mib(peak));
    print!("{out}");
    let file = workspace_root().join("target/bench/speaker-memory.txt");
    if let Some(dir) = file.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && std::fs::write(&file, &out).is_ok()
    {
        println!("(also in {})", file.display());
    }
}
