//! CPU time from /proc: per-CPU busy shares (with softirq apart, where packet work lands) and a
//! process's user+system time.

use anyhow::{Context, Result};

/// Jiffies of one CPU line of /proc/stat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub system: u64,
    pub softirq: u64,
    pub idle: u64,
    /// Time the hypervisor ran something else while this vCPU wanted to run.
    pub steal: u64,
    pub total: u64,
}

/// Share of one CPU's time over an interval, in percent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuShare {
    pub busy: f64,
    pub softirq: f64,
}

/// Parses the `cpuN` lines of /proc/stat, indexed by N.
pub fn parse_stat(text: &str) -> Vec<CpuTimes> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(index) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal (guest fields are inside user/nice).
        let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        if cpus.len() <= index {
            cpus.resize(index + 1, CpuTimes::default());
        }
        cpus[index] = CpuTimes {
            user: v[0] + v[1],
            system: v[2] + v[5],
            softirq: v[6],
            idle: v[3] + v[4],
            steal: v[7],
            total: v.iter().sum(),
        };
    }
    cpus
}

pub fn read_stat() -> Result<Vec<CpuTimes>> {
    Ok(parse_stat(
        &std::fs::read_to_string("/proc/stat").context("/proc/stat")?,
    ))
}

/// Stolen time over an interval, in percent of all CPUs' time.
pub fn steal_share(before: &[CpuTimes], after: &[CpuTimes]) -> f64 {
    share_of_all(before, after, |c| c.steal)
}

/// Ticks all CPUs together spent not idle over an interval (whatever ran, bench included).
pub fn busy_ticks(before: &[CpuTimes], after: &[CpuTimes]) -> u64 {
    let busy = |c: &[CpuTimes]| {
        c.iter()
            .map(|c| c.total.saturating_sub(c.idle))
            .sum::<u64>()
    };
    busy(after).saturating_sub(busy(before))
}

fn share_of_all(before: &[CpuTimes], after: &[CpuTimes], part: fn(&CpuTimes) -> u64) -> f64 {
    let sum = |c: &[CpuTimes], f: fn(&CpuTimes) -> u64| c.iter().map(f).sum::<u64>();
    let total = sum(after, |c| c.total).saturating_sub(sum(before, |c| c.total));
    if total == 0 {
        return 0.0;
    }
    100.0 * sum(after, part).saturating_sub(sum(before, part)) as f64 / total as f64
}

pub fn share(before: &CpuTimes, after: &CpuTimes) -> CpuShare {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return CpuShare::default();
    }
    let pct = |a: u64, b: u64| 100.0 * a.saturating_sub(b) as f64 / total as f64;
    CpuShare {
        busy: 100.0 - pct(after.idle, before.idle),
        softirq: pct(after.softirq, before.softirq),
    }
}

/// utime + stime of a process, in clock ticks, from /proc/PID/stat.
pub fn process_ticks(pid: u32) -> Option<u64> {
    parse_process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 10 100 0 0 5 0 0 0\n\
cpu0 4 1 3 50 2 1 2 0 0 0\n\
cpu1 6 0 7 48 0 0 3 4 0 0\n\
intr 1 2 3\n";

    #[test]
    fn per_cpu_lines_are_read_and_the_total_line_skipped() {
        let cpus = parse_stat(STAT);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[0],
            CpuTimes {
                user: 5,
                system: 4,
                softirq: 2,
                idle: 52,
                steal: 0,
                total: 63
            }
        );
        assert_eq!(cpus[1].softirq, 3);
        assert_eq!(cpus[1].steal, 4);
    }

    #[test]
    fn steal_is_percent_of_all_cpus_time() {
        let at = |steal, total| CpuTimes {
            steal,
            total,
            ..CpuTimes::default()
        };
        let before = [at(10, 1000), at(0, 1000)];
        let after = [at(30, 1100), at(20, 1100)];
        assert!((steal_share(&before, &after) - 20.0).abs() < 1e-9);
        assert_eq!(steal_share(&after, &after), 0.0);
    }

    #[test]
    fn busy_is_everything_but_idle_over_all_cpus() {
        let at = |idle, total| CpuTimes {
            idle,
            total,
            ..CpuTimes::default()
        };
        // CPU 0 busy 80 of 100 ticks, CPU 1 busy 40 of 100.
        let before = [at(500, 1000), at(500, 1000)];
        let after = [at(520, 1100), at(560, 1100)];
        assert_eq!(busy_ticks(&before, &after), 120);
        assert_eq!(busy_ticks(&after, &after), 0);
    }

    #[test]
    fn shares_are_percent_of_the_interval() {
        let a = CpuTimes::default();
        let b = CpuTimes {
            user: 20,
            system: 10,
            softirq: 30,
            idle: 40,
            steal: 0,
            total: 100,
        };
        let s = share(&a, &b);
        assert!((s.busy - 60.0).abs() < 1e-9);
        assert!((s.softirq - 30.0).abs() < 1e-9);
        assert_eq!(share(&b, &b), CpuShare::default());
    }

    #[test]
    fn process_ticks_survive_spaces_in_the_name() {
        let stat = "1234 (herald x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_process_ticks(stat), Some(300));
        assert_eq!(parse_process_ticks("garbage"), None);
    }
}
