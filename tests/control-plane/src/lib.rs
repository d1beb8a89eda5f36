//! A real Kubernetes control plane on this machine, for Herald's end-to-end tests, the lab
//! (`cargo xtask kube up`, `cargo xtask lab`) and the benchmarks: etcd, kube-apiserver with
//! `--authorization-mode=Node,RBAC`, a static token file naming each [`Identity`] and a
//! service-account key pair, and optionally kube-controller-manager (without the
//! node-lifecycle controller: there are no kubelets). The binaries are the ones
//! `cargo xtask kube build` puts in `target/kube/bin` ([`Binaries`]); facts behind the flags are
//! in DEVELOPERS.md.
//!
//! ```no_run
//! let plane = herald_control_plane::ControlPlane::builder()
//!     .service_cidrs(["10.96.0.0/16", "fd00:96::/108"])
//!     .start()?;
//! let out = plane.kubectl_run(&["get", "namespaces"])?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! A plane is either *owned* (the default: its processes die with the handle, or with this
//! process however it ends) or *detached* ([`Builder::detached`]: they keep running after the
//! starter exits, recorded in `<run dir>/pids` for [`stop_recorded`]).

mod binaries;
mod builder;
mod credentials;
mod process;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use binaries::Binaries;
pub use builder::Builder;
pub use credentials::{ADMIN, Identity};
pub use process::{alive, free_port, free_ports, stop_recorded, terminate, terminate_pid};

/// One control-plane process.
struct Process {
    name: String,
    pid: u32,
    /// Owned planes keep the child to reap it; a detached plane's is dropped at once.
    child: Option<Child>,
}

/// A running control plane. Owned planes stop on drop (or [`ControlPlane::stop`]); detached
/// ones keep running.
pub struct ControlPlane {
    /// The run directory: `<identity>.kubeconfig`, `<identity>.token`, `tokens.csv`, the
    /// service-account key pair, `certs/`, and `<process>.log` for every process.
    pub dir: PathBuf,
    /// `https://<bind address>:<port>`.
    pub server: String,
    pub apiserver_port: u16,
    binaries: Binaries,
    detached: bool,
    /// The run directory is a temporary one, removed with the plane.
    temporary: bool,
    /// etcd's data in /dev/shm, removed with the plane.
    etcd_memory: Option<PathBuf>,
    apiserver_args: Vec<OsString>,
    ready_timeout: Duration,
    stop_grace: Duration,
    /// The control plane's own processes, in start order.
    processes: Mutex<Vec<Process>>,
    /// Every process started here, with [`ControlPlane::spawn`] too: (name, pid).
    started: Mutex<Vec<(String, u32)>>,
}

impl ControlPlane {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Path of the kubeconfig of `identity` (an [`Identity::name`]).
    pub fn kubeconfig(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.kubeconfig"))
    }

    /// The bearer token of `identity`.
    pub fn token(&self, identity: &str) -> Result<String> {
        let path = self.dir.join(format!("{identity}.token"));
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Where the processes log (`<name>.log`): the run directory.
    pub fn logs_dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// `kubectl` as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.binaries.kubectl());
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig(ADMIN).display()));
        cmd
    }

    /// Runs kubectl as admin; its stdout, or an error with its output.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .kubectl()
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` as admin with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        use std::io::Write as _;
        let mut child = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `kubectl apply -k dir` as admin, then waits until every CRD is established.
    pub fn apply_kustomization(&self, dir: &Path) -> Result<()> {
        self.kubectl_run(&["apply", "-k", &dir.display().to_string()])?;
        self.wait_crds_established()
    }

    /// Waits (up to 120 s) until every CustomResourceDefinition is established (served).
    pub fn wait_crds_established(&self) -> Result<()> {
        self.kubectl_run(&[
            "wait",
            "--for=condition=established",
            "--timeout=120s",
            "crd",
            "--all",
        ])?;
        Ok(())
    }

    /// Starts a process beside the plane (a controller under test, say) that the caller owns
    /// and stops: stdin closed, output to `<run dir>/<name>.log` (truncated), listed by
    /// [`ControlPlane::processes`], and, on an owned plane, killed when this process exits.
    pub fn spawn(&self, name: &str, cmd: Command) -> Result<Child> {
        let log = self.dir.join(format!("{name}.log"));
        fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = process::spawn_logged(cmd, &log, !self.detached)
            .with_context(|| format!("starting {name}"))?;
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_string(), child.id()));
        Ok(child)
    }

    /// Every process started for or beside this plane, (name, pid), in start order: etcd,
    /// kube-apiserver (again after each restart), kube-controller-manager, then those of
    /// [`ControlPlane::spawn`]. Some may have exited.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn start_process(&self, name: &str, cmd: Command) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let child = process::spawn_logged(cmd, &log, !self.detached)
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        let mut processes = self
            .processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        processes.push(Process {
            name: name.to_string(),
            pid,
            child: (!self.detached).then_some(child),
        });
        if self.detached {
            process::record(
                &self.dir,
                &processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            )?;
        }
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_string(), pid));
        Ok(())
    }

    fn start_apiserver(&self) -> Result<()> {
        let mut cmd = Command::new(self.binaries.path(Binaries::KUBE_APISERVER));
        cmd.args(&self.apiserver_args);
        self.start_process("kube-apiserver", cmd)
    }

    /// Waits until kube-apiserver answers `/readyz` with ok.
    pub fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.kubectl_run(&["get", "--raw", "/readyz"]) {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!(
            "kube-apiserver not ready in {:?}: {} (log: {})",
            self.ready_timeout,
            last.trim(),
            self.dir.join("kube-apiserver.log").display()
        )
    }

    /// Kills kube-apiserver (SIGKILL: an abrupt loss for its clients), waits `down_for`, and
    /// starts it again with the same flags, port and etcd; waits until it is ready.
    pub fn restart_apiserver(&self, down_for: Duration) -> Result<()> {
        let old = {
            let mut processes = self
                .processes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let i = processes
                .iter()
                .position(|p| p.name == "kube-apiserver")
                .context("kube-apiserver is not running")?;
            processes.remove(i)
        };
        // SAFETY: kill(2) on the pid of a process this plane started.
        unsafe {
            libc::kill(old.pid as i32, libc::SIGKILL);
        }
        if let Some(mut child) = old.child {
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.start_apiserver()?;
        self.wait_ready()
    }

    /// Stops the control plane's processes, last started first (those of
    /// [`ControlPlane::spawn`] are the caller's). The run directory stays; idempotent.
    pub fn stop(&self) {
        let mut processes = self
            .processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut p) = processes.pop() {
            process::stop(p.pid, p.child.as_mut(), self.stop_grace);
        }
        if self.detached {
            let _ = fs::remove_file(self.dir.join(process::PIDS_FILE));
        }
    }

    /// Stops the plane and removes what it made that outlives no plane: etcd's in-memory data
    /// and a temporary run directory. What dropping an owned plane does; for a plane kept in a
    /// `static`, which is never dropped (call it from an exit hook).
    pub fn stop_and_remove(&self) {
        self.stop();
        if let Some(data) = &self.etcd_memory {
            let _ = fs::remove_dir_all(data);
        }
        if self.temporary {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if !self.detached {
            self.stop_and_remove();
        }
    }
}
