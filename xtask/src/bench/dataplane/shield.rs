//! The node CPU kept for the lab: while a [`Shield`] is alive, the machine's other tasks (every
//! thread allowed on the node CPU and on others too) run on the others only; lowering it gives
//! each its own CPU set back, and the node CPU to what they started meanwhile.
//!
//! The node's NAPI thread is SCHED_FIFO, but a task in a long stretch of kernel code is not
//! preempted until it leaves it, and the veth's ring holds 256 frames: 170 µs of a 1.5M/s
//! flood. Traced during the flood (`sched_switch` beside `xdp_devmap_xmit` drops), 10–76% of
//! the frames the ring refused arrived while the machine's own agent held the node CPU for
//! 0.1–2 ms at a time with the NAPI thread woken and waiting. Tasks pinned to the node CPU (the
//! lab's NAPI threads and fallback responder, the kernel's per-CPU threads) stay, and so do this
//! process's threads and what it starts (`herald` commands run where they would on a node).
//!
//! What was moved is recorded in a file named after this process until the shield is lowered,
//! so a run killed before that has its shield lowered by the next one.

use std::path::{Path, PathBuf};

use super::net::{Cpus, affinity, numbered, set_affinity};

/// Where raised shields are recorded (tmpfs: thread ids mean nothing after a reboot).
const RECORDS: &str = "/run/herald-bench-shield";

/// Tasks moved off the node CPU, with the CPU sets they had.
pub struct Shield {
    state: Raised,
    /// Threads allowed elsewhere too that the kernel would not move (unbound kernel workers).
    pub refused: usize,
    record: Option<PathBuf>,
    /// The processes the shield is over (all but this one, on the machine).
    scope: Box<dyn Fn(libc::pid_t) -> bool>,
}

/// What lowering a shield needs, as recorded.
#[derive(Debug, PartialEq)]
struct Raised {
    cpu: usize,
    /// Clock ticks since boot when raised: a thread started later was started under the shield.
    at_ticks: u64,
    moved: Vec<Moved>,
}

#[derive(Debug, PartialEq)]
struct Moved {
    tid: libc::pid_t,
    /// The thread's start time (clock ticks since boot): a reused id has another.
    start: u64,
    old: Cpus,
    written: Cpus,
}

/// The CPUs a task allowed on `allowed` is given so that it leaves `cpu`; `None` where it stays:
/// not allowed on `cpu`, or allowed nowhere else (pinned there).
pub fn away_from(allowed: &Cpus, cpu: usize) -> Option<Cpus> {
    if !allowed.contains(&cpu) {
        return None;
    }
    let rest: Cpus = allowed.iter().copied().filter(|&c| c != cpu).collect();
    (!rest.is_empty()).then_some(rest)
}

/// What lowering does to a thread now allowed on `now`: its old set back where it still has the
/// set the shield wrote (a moved thread no one has moved since); `cpu` added where a thread
/// started under the shield holds one of the written sets (inherited from a moved parent).
fn lowered(
    raised: &Raised,
    tid: libc::pid_t,
    start: u64,
    now: &Cpus,
    kernel_thread: bool,
) -> Option<Cpus> {
    if let Some(m) = raised
        .moved
        .iter()
        .find(|m| m.tid == tid && m.start == start)
    {
        return (&m.written == now).then(|| m.old.clone());
    }
    let inherited = !kernel_thread
        && start >= raised.at_ticks
        && raised.moved.iter().any(|m| &m.written == now);
    inherited.then(|| now.iter().copied().chain([raised.cpu]).collect())
}

impl Shield {
    /// Lowers the shields of runs that ended without lowering theirs, then moves every other
    /// task on the machine allowed on `cpu` and elsewhere off `cpu`.
    pub fn raise(cpu: usize) -> Result<Shield, String> {
        lower_leftovers();
        let own = std::process::id() as libc::pid_t;
        let mut shield = Shield::over(cpu, move |pid| pid != own)?;
        let dir = Path::new(RECORDS);
        let path = dir.join(own.to_string());
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, shield.state.to_text()))
            .map_err(|e| {
                shield.lower();
                format!("recording the moved threads in {}: {e}", path.display())
            })?;
        shield.record = Some(path);
        Ok(shield)
    }

    /// As [`Shield::raise`], over the processes `scope` picks, not recorded.
    fn over(cpu: usize, scope: impl Fn(libc::pid_t) -> bool + 'static) -> Result<Shield, String> {
        let mut shield = Shield {
            state: Raised {
                cpu,
                at_ticks: ticks_since_boot()?,
                moved: Vec::new(),
            },
            refused: 0,
            record: None,
            scope: Box::new(scope),
        };
        for (tid, thread) in threads(&shield.scope) {
            let Some(old) = affinity(tid) else { continue };
            let Some(to) = away_from(&old, cpu) else {
                continue;
            };
            match set_affinity(tid, &to) {
                Ok(()) => shield.state.moved.push(Moved {
                    tid,
                    start: thread.start,
                    old,
                    written: to,
                }),
                // Gone in between: nothing to move.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(_) => shield.refused += 1,
            }
        }
        Ok(shield)
    }

    pub fn moved(&self) -> usize {
        self.state.moved.len()
    }

    fn lower(&mut self) {
        self.state.lower(&self.scope);
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        self.lower();
    }
}

impl Raised {
    fn lower(&self, scope: &dyn Fn(libc::pid_t) -> bool) {
        for (tid, thread) in threads(scope) {
            let Some(now) = affinity(tid) else { continue };
            if let Some(to) = lowered(self, tid, thread.start, &now, thread.kernel) {
                // A thread gone since has nothing to restore.
                let _ = set_affinity(tid, &to);
            }
        }
    }

    fn to_text(&self) -> String {
        let mut text = format!("{} {}\n", self.cpu, self.at_ticks);
        for m in &self.moved {
            text.push_str(&format!(
                "{} {} {} {}\n",
                m.tid,
                m.start,
                list(&m.old),
                list(&m.written)
            ));
        }
        text
    }

    fn from_text(text: &str) -> Option<Raised> {
        let mut lines = text.lines();
        let mut head = lines.next()?.split(' ');
        let cpu = head.next()?.parse().ok()?;
        let at_ticks = head.next()?.parse().ok()?;
        let moved = lines
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                match f[..] {
                    [tid, start, old, written] => Some(Moved {
                        tid: tid.parse().ok()?,
                        start: start.parse().ok()?,
                        old: parse_list(old)?,
                        written: parse_list(written)?,
                    }),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Raised {
            cpu,
            at_ticks,
            moved,
        })
    }
}

/// Lowers every recorded shield whose run is no longer alive.
fn lower_leftovers() {
    let Ok(entries) = std::fs::read_dir(RECORDS) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Some(raised) = std::fs::read_to_string(entry.path())
            .ok()
            .as_deref()
            .and_then(Raised::from_text)
        {
            raised.lower(&|_| true);
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

fn list(cpus: &Cpus) -> String {
    let each: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    each.join(",")
}

fn parse_list(text: &str) -> Option<Cpus> {
    text.split(',').map(|c| c.parse().ok()).collect()
}

/// A thread as /proc/PID/task/TID/stat gives it.
struct Thread {
    /// Start time, clock ticks since boot.
    start: u64,
    kernel: bool,
}

/// Every thread of the processes `scope` picks (threads gone meanwhile left out).
fn threads(scope: &dyn Fn(libc::pid_t) -> bool) -> Vec<(libc::pid_t, Thread)> {
    numbered("/proc")
        .into_iter()
        .filter(|&pid| scope(pid))
        .flat_map(|pid| {
            numbered(&format!("/proc/{pid}/task"))
                .into_iter()
                .filter_map(move |tid| {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
                    Some((tid, thread_of(&stat)?))
                })
        })
        .collect()
}

/// Start time (field 22) and whether it is a kernel thread (`PF_KTHREAD` in the flags, field 9)
/// from a stat line; the command name (field 2) may hold spaces and parentheses.
fn thread_of(stat: &str) -> Option<Thread> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let after_name: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // after_name[0] is field 3.
    let flags: u64 = after_name.get(9 - 3)?.parse().ok()?;
    Some(Thread {
        start: after_name.get(22 - 3)?.parse().ok()?,
        kernel: flags & PF_KTHREAD != 0,
    })
}

fn ticks_since_boot() -> Result<u64, String> {
    let uptime =
        std::fs::read_to_string("/proc/uptime").map_err(|e| format!("/proc/uptime: {e}"))?;
    let secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("/proc/uptime: {uptime:?}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((secs * hz as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[usize]) -> Cpus {
        cpus.iter().copied().collect()
    }

    #[test]
    fn only_tasks_allowed_on_the_cpu_and_elsewhere_move_and_keep_the_rest_of_their_set() {
        assert_eq!(away_from(&set(&[0, 1]), 1), Some(set(&[0])));
        assert_eq!(away_from(&set(&[0, 1, 2, 3]), 1), Some(set(&[0, 2, 3])));
        assert_eq!(away_from(&set(&[1, 3]), 1), Some(set(&[3])));
        // Pinned to the node CPU (NAPI threads, per-CPU kernel threads): stays.
        assert_eq!(away_from(&set(&[1]), 1), None);
        // Not on the node CPU at all: nothing to do.
        assert_eq!(away_from(&set(&[0, 2]), 1), None);
        assert_eq!(away_from(&set(&[]), 1), None);
    }

    fn raised() -> Raised {
        Raised {
            cpu: 1,
            at_ticks: 1000,
            moved: vec![
                Moved {
                    tid: 10,
                    start: 500,
                    old: set(&[0, 1]),
                    written: set(&[0]),
                },
                Moved {
                    tid: 11,
                    start: 600,
                    old: set(&[1, 2, 3]),
                    written: set(&[2, 3]),
                },
            ],
        }
    }

    #[test]
    fn lowering_restores_moved_threads_left_as_written_and_widens_what_they_started() {
        let r = raised();
        // Moved and untouched since: the old set back.
        assert_eq!(lowered(&r, 10, 500, &set(&[0]), false), Some(set(&[0, 1])));
        assert_eq!(
            lowered(&r, 11, 600, &set(&[2, 3]), false),
            Some(set(&[1, 2, 3]))
        );
        // Moved, then given another set by someone else: left alone.
        assert_eq!(lowered(&r, 10, 500, &set(&[2]), false), None);
        // The same id, another thread (started at another time) with a written set: started
        // under the shield, so it inherited it and gets the node CPU added.
        assert_eq!(lowered(&r, 10, 1500, &set(&[0]), false), Some(set(&[0, 1])));
        // Started under the shield with a set the shield never wrote: its own choice.
        assert_eq!(lowered(&r, 20, 1500, &set(&[3]), false), None);
        // Started before the shield and not moved: not the shield's.
        assert_eq!(lowered(&r, 21, 900, &set(&[0]), false), None);
        // A kernel thread started under the shield was placed by the kernel or the lab.
        assert_eq!(lowered(&r, 22, 1500, &set(&[0]), true), None);
    }

    #[test]
    fn a_record_reads_back_as_written_and_a_damaged_one_not_at_all() {
        let r = raised();
        assert_eq!(Raised::from_text(&r.to_text()), Some(r));
        assert_eq!(Raised::from_text("1 1000\n10 500 0,1\n"), None);
        assert_eq!(Raised::from_text("1 1000\n10 500 0,x 0\n"), None);
        assert_eq!(Raised::from_text(""), None);
    }

    #[test]
    fn a_stat_line_gives_start_time_and_kernel_flag_whatever_the_name() {
        let line = |name: &str, flags: u64| {
            format!(
                "42 ({name}) S 2 0 0 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0 18446744073709551615"
            )
        };
        let t = thread_of(&line("kdamond.0", 0x0020_8040)).unwrap();
        assert_eq!((t.start, t.kernel), (123_456, true));
        let t = thread_of(&line("a) (b c", 0x0040_0100)).unwrap();
        assert_eq!((t.start, t.kernel), (123_456, false));
        assert!(thread_of("42 (x) S 2").is_none());
    }

    /// A process allowed on both CPUs leaves CPU 1 while the shield is up and has both again
    /// after, and a process it starts meanwhile gets CPU 1 back too; one pinned to CPU 1 stays.
    /// (Only these: the whole machine's tasks are the bench's to move.)
    #[test]
    fn a_task_allowed_everywhere_leaves_the_cpu_and_comes_back_with_what_it_started() {
        if !affinity(0).is_some_and(|c| c.contains(&0) && c.contains(&1)) {
            eprintln!("skipped: this test needs CPUs 0 and 1");
            return;
        }
        let spawn = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap()
        };
        // The parent starts a child once the shield is up (it waits for the file to go).
        let go = std::env::temp_dir().join(format!("shield-test-{}", std::process::id()));
        std::fs::write(&go, "").unwrap();
        // No command in the wait loop: its only child is the one started under the shield.
        let mut parent = spawn(&format!(
            "while [ -e {} ]; do :; done; sleep 30 & wait",
            go.display()
        ));
        let mut pinned = spawn("sleep 30");
        let [p, q] = [&parent, &pinned].map(|c| c.id() as libc::pid_t);
        set_affinity(p, &set(&[0, 1])).unwrap();
        set_affinity(q, &set(&[1])).unwrap();
        let ours = move |pid: libc::pid_t| {
            pid == p
                || pid == q
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.get(s.rfind(')')? + 2..)?.split(' ').nth(1)?.parse().ok())
                    == Some(p)
        };
        let mut shield = Shield::over(1, ours).unwrap();
        std::fs::remove_file(&go).unwrap();
        let child = (0..500)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                numbered("/proc")
                    .into_iter()
                    .find(|&pid| pid != p && pid != q && ours(pid))
            })
            .expect("the parent's child");
        let during = [p, q, child].map(|t| affinity(t).unwrap());
        let moved = shield.moved();
        shield.lower();
        let after = [p, q, child].map(|t| affinity(t).unwrap());
        for c in [&mut parent, &mut pinned] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // SAFETY: kill on a pid this test's child started.
        unsafe { libc::kill(child, libc::SIGKILL) };
        assert_eq!(moved, 1);
        assert_eq!(during, [set(&[0]), set(&[1]), set(&[0])]);
        assert_eq!(after, [set(&[0, 1]), set(&[1]), set(&[0, 1])]);
    }
}
