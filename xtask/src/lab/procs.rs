//! The lab's long-running processes: started in their own session (they outlive `xtask lab up`),
//! optionally inside a node's network namespace while staying in the host's mount namespace (so
//! `/sys/fs/bpf` and the pins stay visible, unlike `ip netns exec`), logged to
//! `target/lab/run/<name>.log`, and recorded in `target/lab/run/pids` as `<name> <pid>` so that
//! `down` stops exactly these.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::spec::{DEFAULT_DETECT_MS, LabMode, run_dir};

fn pids_file() -> std::path::PathBuf {
    run_dir().join("pids")
}

fn records() -> Vec<(String, i32)> {
    fs::read_to_string(pids_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn write_records(records: &[(String, i32)]) -> Result<()> {
    fs::write(
        pids_file(),
        records
            .iter()
            .map(|(n, p)| format!("{n} {p}\n"))
            .collect::<String>(),
    )
    .context("writing the lab's pid file")
}

/// Starts `cmd` detached (own session, stdin closed, output to `<name>.log`), inside `netns` when
/// given, and records it.
pub fn spawn_recorded(name: &str, netns: Option<&str>, cmd: &mut Command) -> Result<u32> {
    spawn_recorded_in(name, netns, None, cmd)
}

/// [`spawn_recorded`], also entering the mount namespace of process `mount_of` (a real node's:
/// its own bpffs and mount propagation) after the network namespace.
pub fn spawn_recorded_in(
    name: &str,
    netns: Option<&str>,
    mount_of: Option<u32>,
    cmd: &mut Command,
) -> Result<u32> {
    let log_path = run_dir().join(format!("{name}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let netns_file = match netns {
        Some(ns) => Some(
            fs::File::open(format!("/run/netns/{ns}"))
                .with_context(|| format!("opening network namespace {ns}"))?,
        ),
        None => None,
    };
    let mount_file = match mount_of {
        Some(pid) => Some(
            fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .with_context(|| format!("opening the mount namespace of process {pid}"))?,
        ),
        None => None,
    };
    let netns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let mount_fd = mount_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: only async-signal-safe calls (setsid, setns) between fork and exec; the child is
    // single-threaded, as entering a mount namespace requires.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            for (fd, kind) in [
                (netns_fd, libc::CLONE_NEWNET),
                (mount_fd, libc::CLONE_NEWNS),
            ] {
                if let Some(fd) = fd
                    && libc::setns(fd, kind) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    drop(netns_file);
    drop(mount_file);
    let pid = child.id();
    let mut all: Vec<(String, i32)> = records().into_iter().filter(|(n, _)| n != name).collect();
    all.push((name.to_string(), pid as i32));
    write_records(&all)?;
    Ok(pid)
}

/// The recorded pid of `name` when that process still runs.
pub fn recorded_pid(name: &str) -> Option<i32> {
    records()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
        .filter(|p| alive(*p))
}

/// Sends `signal` to the recorded process `name`.
pub fn kill_recorded(name: &str, signal: i32) -> Result<()> {
    let pid = recorded_pid(name).with_context(|| format!("{name} is not running"))?;
    self::signal(pid, signal).with_context(|| format!("signalling {name}"))
}

/// kill(2) of a lab process found by the caller.
pub fn signal(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill(2) on a pid of the lab's that the caller found alive.
    if unsafe { libc::kill(pid, signal) } != 0 {
        anyhow::bail!("kill -{signal} {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGTERM, wait up to 10 s, then SIGKILL; forgets the record.
pub fn stop_recorded(name: &str) {
    if let Some(pid) = recorded_pid(name) {
        stop_pid(pid);
    }
    let rest: Vec<(String, i32)> = records().into_iter().filter(|(n, _)| n != name).collect();
    let _ = write_records(&rest);
}

/// Stops every recorded process (kubelet and kube-proxy first, then containerd, then the
/// routers, then the mount-namespace holders) and removes the record.
pub fn stop_all() {
    let mut all = records();
    all.sort_by_key(|(n, _)| match n.split('-').next() {
        Some("kubelet" | "proxy") => 0,
        Some("containerd") => 1,
        Some("mounts") => 4,
        _ => 3,
    });
    for (_, pid) in all {
        if alive(pid) {
            stop_pid(pid);
        }
    }
    let _ = fs::remove_file(pids_file());
}

fn stop_pid(pid: i32) {
    herald_control_plane::terminate_pid(pid as u32, Duration::from_secs(10));
}

fn alive(pid: i32) -> bool {
    herald_control_plane::alive(pid as u32)
}

pub fn record_detect_ms(ms: u64) -> Result<()> {
    fs::write(run_dir().join("detect-ms"), ms.to_string()).context("writing detect-ms")
}

pub fn recorded_detect_ms() -> Option<u64> {
    fs::read_to_string(run_dir().join("detect-ms"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn record_mode(mode: LabMode) -> Result<()> {
    fs::write(run_dir().join("mode"), mode.name()).context("writing the lab's mode")
}

/// The mode the running lab was brought up in (layer 2 when none is recorded).
pub fn recorded_mode() -> LabMode {
    fs::read_to_string(run_dir().join("mode"))
        .ok()
        .and_then(|m| LabMode::parse(&m))
        .unwrap_or_default()
}

/// True when `up` has run and not been taken down.
pub fn is_up() -> bool {
    pids_file().is_file()
}

/// The detection setting the running lab's speakers use.
pub fn detect_ms() -> u64 {
    recorded_detect_ms().unwrap_or(DEFAULT_DETECT_MS)
}
