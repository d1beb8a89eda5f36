//! Machine-wide scheduler and power settings a data-plane bench holds for its run, each undone
//! when its guard is dropped.

/// While alive, CPUs idle in their shallowest state (PM QoS: `/dev/cpu_dma_latency` held at 0
/// µs, as latency benchmarks such as cyclictest do). A halted vCPU takes tens of µs to wake for
/// the NAPI thread, and in that time the generator overruns the veth's 256-slot ring: the
/// attribution showed the node's ring refusing a third of the unpaced load with the responder's
/// CPU half idle. `None` (with a note) where the file cannot be opened.
pub struct IdleLatency {
    _qos: std::fs::File,
}

impl IdleLatency {
    pub fn hold() -> std::result::Result<IdleLatency, String> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .map_err(|e| format!("/dev/cpu_dma_latency: {e}"))?;
        f.write_all(&0i32.to_ne_bytes())
            .map_err(|e| format!("writing /dev/cpu_dma_latency: {e}"))?;
        Ok(IdleLatency { _qos: f })
    }
}

/// While alive, real-time throttling runs in 10 ms periods (the same 95% share for real-time
/// threads, 0.5 ms of each period left to the others) instead of the kernel's 1 s (50 ms left at
/// the end of each second).
///
/// `bench dataplane` runs the NAPI threads SCHED_FIFO, so packet work preempts everything else
/// as an interrupt would. With 1 s periods a NAPI thread busy for a whole step stops for 50 ms at
/// a time (9.8–28.7 ms saturation-step p99s measured), and every normal task on its CPU waits up
/// to 950 ms. In 10 ms periods both waits are bounded by about 10 ms, closer to softirq, which
/// hands over to ksoftirqd (a normal thread) after 2 ms. It does not make room for a whole
/// cluster beside two busy NAPI threads: `bench vs-metallb` runs them at nice -20 instead.
pub struct RtPeriod {
    restore: Writes,
}

/// Settings files and the values to write to them, in order.
type Writes = Vec<(&'static str, i64)>;

const RT_PERIOD: &str = "/proc/sys/kernel/sched_rt_period_us";
const RT_RUNTIME: &str = "/proc/sys/kernel/sched_rt_runtime_us";
/// The root cpu cgroup's own real-time bandwidth (cgroup v1 with real-time group scheduling):
/// it throttles the root group's threads, the NAPI kernel threads among them.
const CG_PERIOD: &str = "/sys/fs/cgroup/cpu/cpu.rt_period_us";
const CG_RUNTIME: &str = "/sys/fs/cgroup/cpu/cpu.rt_runtime_us";
/// The period held (µs).
const SHORT_PERIOD_US: i64 = 10_000;

/// The kernel's real-time bandwidth settings (µs): global, and the root cgroup's where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bandwidth {
    period: i64,
    runtime: i64,
    cgroup: Option<(i64, i64)>,
}

impl RtPeriod {
    pub fn shorten() -> std::result::Result<RtPeriod, String> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("{path}: {e}"))
                .and_then(|v| v.trim().parse::<i64>().map_err(|e| format!("{path}: {e}")))
        };
        let now = Bandwidth {
            period: read(RT_PERIOD)?,
            runtime: read(RT_RUNTIME)?,
            cgroup: read(CG_PERIOD).ok().zip(read(CG_RUNTIME).ok()),
        };
        let (apply, restore) = plan(&now).ok_or_else(|| {
            format!(
                "real-time throttling is {} µs of {} µs: left as it is",
                now.runtime, now.period
            )
        })?;
        if let Err(e) = apply
            .iter()
            .try_for_each(|&(path, v)| write_sysctl(path, v))
        {
            for &(path, v) in &restore {
                let _ = write_sysctl(path, v);
            }
            return Err(e);
        }
        Ok(RtPeriod { restore })
    }
}

impl Drop for RtPeriod {
    fn drop(&mut self) {
        for &(path, v) in &self.restore {
            let _ = write_sysctl(path, v);
        }
    }
}

/// The writes that shorten the period to [`SHORT_PERIOD_US`] with the same real-time share, and
/// those that put `now` back, or `None` where there is nothing to shorten: throttling off
/// (`-1`), a period this short already, or values the kernel would not hold.
///
/// The kernel refuses a global runtime above the period, and a root cgroup's share above the
/// global one: so the global limit is lifted (`-1`) while the periods change, and set last.
fn plan(now: &Bandwidth) -> Option<(Writes, Writes)> {
    let short_runtime = |period: i64, runtime: i64| {
        (runtime >= 0 && period > SHORT_PERIOD_US && runtime <= period)
            .then(|| runtime.checked_mul(SHORT_PERIOD_US).map(|r| r / period))
            .flatten()
    };
    let runtime = short_runtime(now.period, now.runtime)?;
    let mut apply = vec![(RT_RUNTIME, -1), (RT_PERIOD, SHORT_PERIOD_US)];
    let mut restore = vec![(RT_RUNTIME, -1), (RT_PERIOD, now.period)];
    if let Some((period, cg_runtime)) = now.cgroup {
        let cg_short = short_runtime(period, cg_runtime)?;
        apply.extend([(CG_RUNTIME, cg_short), (CG_PERIOD, SHORT_PERIOD_US)]);
        restore.extend([(CG_PERIOD, period), (CG_RUNTIME, cg_runtime)]);
    }
    apply.push((RT_RUNTIME, runtime));
    restore.push((RT_RUNTIME, now.runtime));
    Some((apply, restore))
}

fn write_sysctl(path: &str, value: i64) -> std::result::Result<(), String> {
    std::fs::write(path, value.to_string()).map_err(|e| format!("writing {value} to {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_period_keeps_the_share_and_every_write_is_undone() {
        let now = Bandwidth {
            period: 1_000_000,
            runtime: 950_000,
            cgroup: Some((1_000_000, 950_000)),
        };
        let (apply, restore) = plan(&now).unwrap();
        assert_eq!(
            apply,
            [
                (RT_RUNTIME, -1),
                (RT_PERIOD, 10_000),
                (CG_RUNTIME, 9_500),
                (CG_PERIOD, 10_000),
                (RT_RUNTIME, 9_500),
            ]
        );
        assert_eq!(
            restore,
            [
                (RT_RUNTIME, -1),
                (RT_PERIOD, 1_000_000),
                (CG_PERIOD, 1_000_000),
                (CG_RUNTIME, 950_000),
                (RT_RUNTIME, 950_000),
            ]
        );
        let plain = Bandwidth {
            cgroup: None,
            period: 2_000_000,
            runtime: 1_000_000,
        };
        let (apply, _) = plan(&plain).unwrap();
        assert_eq!(apply.last(), Some(&(RT_RUNTIME, 5_000)));
        assert_eq!(apply.len(), 3, "no cgroup writes without the cgroup");
    }

    #[test]
    fn nothing_to_shorten_is_left_alone() {
        let with = |period, runtime| Bandwidth {
            period,
            runtime,
            cgroup: None,
        };
        assert_eq!(plan(&with(1_000_000, -1)), None, "throttling off");
        assert_eq!(plan(&with(10_000, 9_500)), None, "already short");
        assert_eq!(
            plan(&with(1_000_000, 2_000_000)),
            None,
            "not a kernel value"
        );
        let cg_off = Bandwidth {
            cgroup: Some((1_000_000, -1)),
            ..with(1_000_000, 950_000)
        };
        assert_eq!(plan(&cg_off), None);
    }
}
