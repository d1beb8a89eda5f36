//! Helpers shared by the end-to-end tests in `tests/e2e/` (namespaces, processes).
//!
//! Every resource a test creates is owned by a guard whose `Drop` removes it, so a failing
//! assertion (a panic) still deletes namespaces, unmounts the private bpffs and kills children.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A short name unique to this process and call: interface names must fit in 15 bytes.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 10_000_000)
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run_ok<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Fails early, with the reason, when the test cannot run here (these tests need root).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "network-namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF)"
    );
}

/// A network namespace, deleted on drop (which also deletes its interfaces).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique(prefix);
        run_ok("ip", ["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command run inside the namespace through `ip netns exec` (which also gives it a
    /// matching /sys, while mounts elsewhere, such as a private bpffs under /tmp, stay visible).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n <ns> ...`, failing on error.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        Ok(String::from_utf8_lossy(&run_ok("ip", all)?.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let out = self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")])
            .output()?;
        if !out.status.success() {
            bail!(
                "sysctl {key}={value} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair with one end in each namespace (deleted with the namespaces).
pub fn veth_between(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run_ok(
        "ip",
        [
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    )?;
    Ok(())
}

/// A private bpffs mount in a fresh directory: pins made there disappear with the unmount,
/// whatever the test did, and tests running in parallel never see each other's maps.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    pub fn new() -> Result<Bpffs> {
        let dir = std::env::temp_dir().join(unique("herald-bpffs-"));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = Bpffs { dir };
        run_ok(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("bpf"),
                OsStr::new("bpf"),
                guard.dir.as_os_str(),
            ],
        )?;
        Ok(guard)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A child process killed (SIGKILL) and reaped on drop unless already waited for.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(self.0.id() as i32, signal) } != 0 {
            bail!(
                "kill({}, {signal}): {}",
                self.0.id(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `herald` binary: `$HERALD_BIN`, else `herald` beside the test's own target directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/herald`). Cargo does not build another
/// package's binary for a test, so the test command builds it first (`cargo build -p herald`).
pub fn herald_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("herald");
    assert!(
        bin.is_file(),
        "herald binary not found at {}: run `cargo build -p herald` first (or set HERALD_BIN)",
        bin.display()
    );
    bin
}

/// Calls `check` until it returns true or `timeout` passes; true when it succeeded. For
/// waiting on asynchronous effects without asserting on elapsed time.
pub fn poll_until(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    poll_until_every(timeout, Duration::from_millis(100), check)
}

/// [`poll_until`], looking every `every`.
pub fn poll_until_every(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Runs `kubectl` (already pointed at a cluster) as `kubectl apply -f -` with `yaml` on stdin.
pub fn kubectl_apply_output(mut kubectl: Command, yaml: &str) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = kubectl
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("writing YAML");
    child.wait_with_output().expect("kubectl")
}

/// [`kubectl_apply_output`] that must succeed: panics with kubectl's stderr and the YAML.
pub fn kubectl_apply(kubectl: Command, yaml: &str) {
    let out = kubectl_apply_output(kubectl, yaml);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}
