//! The node CPU kept for the lab: while a [`Shield`] is alive, the machine's other tasks (every
//! thread allowed on the node CPU and on others too) run on the others only; each gets its own
//! CPU set back when the shield is dropped.
//!
//! The node's NAPI thread is SCHED_FIFO, but a task in a long stretch of kernel code is not
//! preempted until it leaves it, and the veth's ring holds 256 frames: 170 µs of a 1.5M/s
//! flood. Traced during the flood (`sched_switch` beside `xdp_devmap_xmit` drops), a quarter of
//! the frames the ring refused arrived while the machine's own agent held the node CPU for
//! 0.1–2 ms at a time with the NAPI thread woken and waiting, and more while a memory-monitoring
//! kernel thread ran there. Tasks pinned to the node CPU (the lab's NAPI threads and fallback
//! responder, the kernel's per-CPU threads) stay, and so do this process's threads and what it
//! starts (`herald` commands run where they would on a node).

use std::collections::BTreeSet;

/// Tasks moved off the node CPU, with the CPU sets they had.
pub struct Shield {
    moved: Vec<(libc::pid_t, libc::cpu_set_t)>,
    /// Tasks allowed elsewhere too that the kernel would not move (unbound kernel workers).
    pub refused: usize,
}

/// The CPUs a task allowed on `allowed` is given so that it leaves `cpu`; `None` where it stays:
/// not allowed on `cpu`, or allowed nowhere else (pinned there).
pub fn away_from(allowed: &BTreeSet<usize>, cpu: usize) -> Option<BTreeSet<usize>> {
    if !allowed.contains(&cpu) {
        return None;
    }
    let rest: BTreeSet<usize> = allowed.iter().copied().filter(|&c| c != cpu).collect();
    (!rest.is_empty()).then_some(rest)
}

impl Shield {
    /// Moves every other task on the machine allowed on `cpu` and elsewhere off `cpu`.
    pub fn raise(cpu: usize) -> Result<Shield, String> {
        let own = numbered(&format!("/proc/{}/task", std::process::id()))?;
        Ok(Shield::over(cpu, &numbered("/proc")?, &own))
    }

    /// As [`Shield::raise`], for the threads of `processes` but those in `skip`.
    fn over(cpu: usize, processes: &BTreeSet<libc::pid_t>, skip: &BTreeSet<libc::pid_t>) -> Shield {
        let mut shield = Shield {
            moved: Vec::new(),
            refused: 0,
        };
        for pid in processes {
            // A process gone between the two listings has no threads left to move.
            for tid in numbered(&format!("/proc/{pid}/task")).unwrap_or_default() {
                if skip.contains(&tid) {
                    continue;
                }
                let Some(old) = affinity(tid) else { continue };
                let Some(to) = away_from(&cpus(&old), cpu) else {
                    continue;
                };
                if set_affinity(tid, &set_of(&to)) {
                    shield.moved.push((tid, old));
                } else {
                    shield.refused += 1;
                }
            }
        }
        shield
    }

    pub fn moved(&self) -> usize {
        self.moved.len()
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        // A task gone since has nothing to restore.
        for (tid, old) in &self.moved {
            set_affinity(*tid, old);
        }
    }
}

/// The numeric entries of a /proc directory (processes, or one process's threads).
fn numbered(dir: &str) -> Result<BTreeSet<libc::pid_t>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn affinity(tid: libc::pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &raw mut set) == 0)
            .then_some(set)
    }
}

fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), set) == 0 }
}

fn cpus(set: &libc::cpu_set_t) -> BTreeSet<usize> {
    // SAFETY: CPU_ISSET reads inside the set for every index below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

fn set_of(cpus: &BTreeSet<usize>) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it for indices below
    // CPU_SETSIZE, the only ones `cpus` can hold (it was read from a set).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[usize]) -> BTreeSet<usize> {
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

    #[test]
    fn a_set_read_back_is_the_set_written() {
        for cpus_in in [set(&[0]), set(&[1, 5, 63]), set(&[0, 64, 1023])] {
            assert_eq!(cpus(&set_of(&cpus_in)), cpus_in);
        }
    }

    /// A process allowed on both CPUs leaves CPU 1 while the shield is up and has both again
    /// after; one pinned to CPU 1 stays. (Only these two: the whole machine's tasks are the
    /// bench's to move.)
    #[test]
    fn a_task_allowed_everywhere_leaves_the_cpu_and_comes_back() {
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let (mut free, mut pinned) = (sleep(), sleep());
        let [f, p] = [&free, &pinned].map(|c| c.id() as libc::pid_t);
        assert!(set_affinity(f, &set_of(&[0, 1].into())));
        assert!(set_affinity(p, &set_of(&[1].into())));
        let shield = Shield::over(1, &[f, p].into(), &BTreeSet::new());
        let during = [f, p].map(|t| cpus(&affinity(t).unwrap()));
        let moved = shield.moved();
        drop(shield);
        let after = [f, p].map(|t| cpus(&affinity(t).unwrap()));
        for c in [&mut free, &mut pinned] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert_eq!(moved, 1);
        assert_eq!(during, [set(&[0]), set(&[1])]);
        assert_eq!(after, [set(&[0, 1]), set(&[1])]);
    }
}
