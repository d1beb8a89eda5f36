//! Starting and stopping the control plane's processes.
//!
//! Owned processes die with the process that started them: each is spawned from one long-lived
//! supervisor thread with `PR_SET_PDEATHSIG` (the signal fires when the spawning *thread* ends,
//! so a test thread that started the plane and returned would otherwise take it down).
//! Detached processes outlive their starter and are recorded, one pid a line, in a `pids` file
//! that [`stop_recorded`] reads.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Name of the file in a run directory listing its detached processes' pids.
pub(crate) const PIDS_FILE: &str = "pids";

/// Grace between SIGTERM and SIGKILL in [`stop_recorded`].
const RECORDED_GRACE: Duration = Duration::from_secs(10);

/// A free loopback TCP port (bound then released; another process may take it in between,
/// which is tolerable for tests and benchmarks).
pub fn free_port() -> Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` free loopback TCP ports, distinct: all are held until every one is drawn. Drawn one by one
/// and released in between, two can come back equal, and then one process of a control plane
/// finds its port taken by another (an apiserver whose port etcd holds answers HTTPS clients in
/// plain HTTP).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        *port = listener.local_addr()?.port();
        held.push(listener);
    }
    Ok(ports)
}

/// Starts `cmd` with stdin closed and its output appended to `log`; `owned`: through the
/// supervisor thread, killed when this process exits.
pub(crate) fn spawn_logged(mut cmd: Command, log: &Path, owned: bool) -> Result<Child> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = if owned {
        spawn_supervised(cmd)
    } else {
        cmd.spawn()
    };
    child.with_context(|| format!("starting {program}"))
}

/// Work to run on the supervisor thread.
type Job = Box<dyn FnOnce() + Send>;

fn supervisor() -> &'static Mutex<mpsc::Sender<Job>> {
    static SUPERVISOR: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // A thread that cannot start drops `rx` with its closure: every later spawn then
        // reports "the supervisor thread is gone".
        let _ = std::thread::Builder::new()
            .name("control-plane-supervisor".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                // Never return: the children die when this thread does.
                loop {
                    std::thread::park();
                }
            });
        Mutex::new(tx)
    })
}

/// Spawns `cmd` on the supervisor thread with SIGKILL as its parent-death signal.
pub(crate) fn spawn_supervised(mut cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        // SAFETY: prctl in the forked child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
    });
    supervisor()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send(job)
        .map_err(|_| std::io::Error::other("the supervisor thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the supervisor thread did not answer"))?
}

/// SIGTERM, up to `grace` for `child` to exit, then SIGKILL; reaps it.
pub fn terminate(child: &mut Child, grace: Duration) {
    stop(child.id(), Some(child), grace);
}

/// SIGTERM, up to `grace` for process `pid` to exit, then SIGKILL, for a process that is not
/// this one's child (a detached one started by an earlier command). Already gone is fine.
pub fn terminate_pid(pid: u32, grace: Duration) {
    stop(pid, None, grace);
}

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL; reaps `child` when it is
/// ours.
pub(crate) fn stop(pid: u32, child: Option<&mut Child>, grace: Duration) {
    let pid = pid as i32;
    // SAFETY: kill(2) on a pid we started; an error (already gone) is ignored.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut child = child;
    let mut running = || match child.as_deref_mut() {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => alive(pid as u32),
    };
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        if child.is_none() {
            // Not ours to wait for: give the kernel a moment to tear it down.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(c) = child {
        let _ = c.wait();
    }
}

/// Whether process `pid` runs. A zombie counts as gone: a detached process is not reaped by
/// the command that started it once that command has exited.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Writes the pids of a detached plane, in start order, to `dir/pids`.
pub(crate) fn record(dir: &Path, pids: &[u32]) -> Result<()> {
    fs::write(
        dir.join(PIDS_FILE),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )
    .context("writing the control plane's pid file")
}

/// Stops the processes a detached plane recorded under `dir` (and nothing else), last started
/// first, then removes the record. Nothing recorded: nothing to do.
pub fn stop_recorded(dir: &Path) -> Result<()> {
    let pids_file = dir.join(PIDS_FILE);
    let Ok(text) = fs::read_to_string(&pids_file) else {
        return Ok(());
    };
    for pid in text
        .lines()
        .rev()
        .filter_map(|l| l.trim().parse::<u32>().ok())
    {
        stop(pid, None, RECORDED_GRACE);
    }
    fs::remove_file(&pids_file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Command {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        cmd
    }

    #[test]
    fn ports_drawn_together_are_distinct_and_free_again() {
        // 500 ports drawn one by one and released in between repeat about ten times here
        // (the kernel picks each from a random offset); drawn together, never.
        let ports: [u16; 500] = free_ports().expect("ports");
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "a port drawn twice");
        assert!(ports.iter().all(|&p| p != 0));
        let port = free_port().expect("port");
        TcpListener::bind(("127.0.0.1", port)).expect("released after the draw");
    }

    #[test]
    fn terminate_stops_and_reaps_a_child() {
        let mut child = spawn_supervised(sleeper()).expect("sleep");
        assert!(alive(child.id()));
        terminate(&mut child, Duration::from_secs(5));
        assert!(!alive(child.id()));
        assert!(child.try_wait().expect("reaped").is_some());
    }

    #[test]
    fn stop_recorded_stops_the_recorded_processes_and_forgets_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = sleeper().spawn().expect("sleep");
        record(dir.path(), &[child.id()]).expect("record");
        stop_recorded(dir.path()).expect("stop");
        assert!(!alive(child.id()), "a zombie counts as gone");
        assert!(child.wait().is_ok());
        assert!(!dir.path().join(PIDS_FILE).exists());
        stop_recorded(dir.path()).expect("nothing recorded: nothing to do");
    }
}
