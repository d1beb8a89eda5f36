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
        let (apply, restore) = plan(&now)?;
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
/// those that put `now` back, or why there is nothing to shorten.
///
/// The kernel refuses a global runtime above the period, and a root cgroup's share above the
/// global one: so the global limit is lifted (`-1`) while the periods change, and set last.
fn plan(now: &Bandwidth) -> std::result::Result<(Writes, Writes), String> {
    let short_runtime = |what: &str, period: i64, runtime: i64| {
        if runtime < 0 {
            Err(format!(
                "{what}: real-time throttling is off (runtime {runtime})"
            ))
        } else if period <= SHORT_PERIOD_US {
            Err(format!(
                "{what}: the period is {period} µs already (a killed run leaves it so; docs/benchmarks.md says how to put the kernel's back)"
            ))
        } else if runtime > period {
            Err(format!(
                "{what}: runtime {runtime} µs above the period {period} µs"
            ))
        } else {
            runtime
                .checked_mul(SHORT_PERIOD_US)
                .map(|r| r / period)
                .ok_or_else(|| format!("{what}: runtime {runtime} µs out of range"))
        }
    };
    let runtime = short_runtime("kernel.sched_rt_*", now.period, now.runtime)?;
    let mut apply = vec![(RT_RUNTIME, -1), (RT_PERIOD, SHORT_PERIOD_US)];
    let mut restore = vec![(RT_RUNTIME, -1), (RT_PERIOD, now.period)];
    if let Some((period, cg_runtime)) = now.cgroup {
        let cg_short = short_runtime("the root cpu cgroup", period, cg_runtime)?;
        apply.extend([(CG_RUNTIME, cg_short), (CG_PERIOD, SHORT_PERIOD_US)]);
        restore.extend([(CG_PERIOD, period), (CG_RUNTIME, cg_runtime)]);
    }
    apply.push((RT_RUNTIME, runtime));
    restore.push((RT_RUNTIME, now.runtime));
    Ok((apply, restore))
}

fn write_sysctl(path: &str, value: i64) -> std::result::Result<(), String> {
    std::fs::write(path, value.to_string()).map_err(|e| format!("writing {value} to {path}: {e}"))
}

/// The machine's speed at one moment: how long a fixed piece of kernel work takes on `cpu`, in
/// ms. A shared host lends its cores unevenly: these system calls took 16.5–26 ms from one
/// probe to the next on the node CPU (a tight arithmetic loop did not move), and packet work is
/// kernel work, so every replies/s here carries the host's load. Measured in a thread of its
/// own pinned there (the caller's placement is left alone).
pub fn work_ms(cpu: usize) -> Result<f64, String> {
    std::thread::spawn(move || {
        super::net::pin_current_thread(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e:#}"))?;
        let start = std::time::Instant::now();
        std::hint::black_box(fixed_work(WORK_CALLS));
        Ok(start.elapsed().as_secs_f64() * 1e3)
    })
    .join()
    .map_err(|_| "the speed probe panicked".to_string())?
}

/// The speed probes just before and just after a step (`work_ms`), in ms; `None` where that
/// probe failed.
#[derive(Clone, Copy, Debug)]
pub struct Speed {
    pub before: Option<f64>,
    pub after: Option<f64>,
}

impl Speed {
    /// What was measured, in order.
    pub fn measured(&self) -> impl Iterator<Item = f64> {
        self.before.into_iter().chain(self.after)
    }

    /// "16.5 ms / 16.6 ms", a failed probe said where it was.
    pub fn text(&self) -> String {
        let one = |v: Option<f64>| v.map_or("failed".into(), |v| format!("{v:.1} ms"));
        format!("{} / {}", one(self.before), one(self.after))
    }
}

/// System calls in one speed probe (16.5 ms here at the machine's fast speed).
pub const WORK_CALLS: u32 = 100_000;

/// `calls` trips into the kernel and back (getppid: no arguments, no state, never cached by the
/// C library); the sum of what they returned, so none is optimised away.
fn fixed_work(calls: u32) -> i64 {
    let mut sum = 0i64;
    for _ in 0..calls {
        // SAFETY: getppid has no preconditions.
        sum += i64::from(unsafe { libc::syscall(libc::SYS_getppid) } as i32);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's checks on these files, as far as the plan depends on them: a global runtime
    /// above its period is refused (EINVAL), and so is a root cgroup share above the global
    /// share (EBUSY) unless the global limit is off (`-1`).
    fn write(state: &mut [i64; 4], (path, v): (&str, i64)) -> std::result::Result<(), String> {
        let [mut p, mut r, mut cp, mut cr] = *state;
        match path {
            RT_PERIOD => p = v,
            RT_RUNTIME => r = v,
            CG_PERIOD => cp = v,
            CG_RUNTIME => cr = v,
            _ => return Err(format!("unknown file {path}")),
        }
        if r >= 0 && r > p {
            return Err(format!("{path}={v}: global runtime {r} above period {p}"));
        }
        if cr > cp {
            return Err(format!("{path}={v}: cgroup runtime {cr} above period {cp}"));
        }
        if r >= 0 && i128::from(cr) * i128::from(p) > i128::from(r) * i128::from(cp) {
            return Err(format!(
                "{path}={v}: cgroup share {cr}/{cp} above global {r}/{p}"
            ));
        }
        *state = [p, r, cp, cr];
        Ok(())
    }

    #[test]
    fn every_write_of_the_plan_is_one_the_kernel_takes_and_restoring_gives_the_start_back() {
        let now = Bandwidth {
            period: 1_000_000,
            runtime: 950_000,
            cgroup: Some((1_000_000, 950_000)),
        };
        let (apply, restore) = plan(&now).unwrap();
        let start = [1_000_000, 950_000, 1_000_000, 950_000];
        let mut state = start;
        for &w in &apply {
            write(&mut state, w).unwrap();
        }
        assert_eq!(state, [10_000, 9_500, 10_000, 9_500], "the same 95% share");
        for &w in &restore {
            write(&mut state, w).unwrap();
        }
        assert_eq!(state, start);
        // Restoring from any point part way through applying works too (a failed write).
        for done in 0..apply.len() {
            let mut state = start;
            for &w in &apply[..done] {
                write(&mut state, w).unwrap();
            }
            for &w in &restore {
                write(&mut state, w).unwrap();
            }
            assert_eq!(state, start, "after {done} writes");
        }
        // The naive order is what the kernel refuses.
        let mut state = start;
        assert!(write(&mut state, (RT_RUNTIME, 9_500)).is_err());
        assert!(write(&mut state, (RT_PERIOD, 10_000)).is_err());
    }

    #[test]
    fn without_the_cgroup_only_the_global_files_are_written() {
        let plain = Bandwidth {
            cgroup: None,
            period: 2_000_000,
            runtime: 1_000_000,
        };
        let (apply, _) = plan(&plain).unwrap();
        assert_eq!(
            apply,
            [(RT_RUNTIME, -1), (RT_PERIOD, 10_000), (RT_RUNTIME, 5_000)]
        );
    }

    #[test]
    fn nothing_to_shorten_is_left_alone_with_the_reason() {
        let with = |period, runtime| Bandwidth {
            period,
            runtime,
            cgroup: None,
        };
        let why = |b: Bandwidth| plan(&b).err().unwrap_or_default();
        assert!(why(with(1_000_000, -1)).contains("throttling is off"));
        assert!(why(with(10_000, 9_500)).contains("already"));
        assert!(why(with(1_000_000, 2_000_000)).contains("above the period"));
        let cg_short = Bandwidth {
            cgroup: Some((10_000, 9_500)),
            ..with(1_000_000, 950_000)
        };
        assert!(why(cg_short).starts_with("the root cpu cgroup"));
    }

    #[test]
    fn a_failed_speed_probe_is_said_where_it_was() {
        let s = Speed {
            before: Some(16.46),
            after: Some(17.0),
        };
        assert_eq!(s.text(), "16.5 ms / 17.0 ms");
        assert_eq!(s.measured().collect::<Vec<_>>(), vec![16.46, 17.0]);
        let s = Speed {
            before: None,
            after: Some(17.0),
        };
        assert_eq!(s.text(), "failed / 17.0 ms");
        assert_eq!(s.measured().collect::<Vec<_>>(), vec![17.0]);
        let s = Speed {
            before: Some(16.0),
            after: None,
        };
        assert_eq!(s.text(), "16.0 ms / failed");
        assert_eq!(s.measured().collect::<Vec<_>>(), vec![16.0]);
    }

    #[test]
    fn the_fixed_work_makes_every_call_and_the_probe_times_it() {
        // SAFETY: getppid has no preconditions.
        let parent = i64::from(unsafe { libc::getppid() });
        assert_eq!(
            fixed_work(1000),
            1000 * parent,
            "each call made, its answer summed"
        );
        let ms = work_ms(0).unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{ms}");
        // A CPU that does not exist cannot be probed: said, not timed.
        assert!(work_ms(1000).is_err());
    }
}
