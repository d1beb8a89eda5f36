//! A real Kubernetes control plane (etcd + kube-apiserver with RBAC and static token identities)
//! started once per test binary, in a temp dir on free loopback ports, from the binaries
//! `cargo xtask kube build` puts in `target/kube/bin`. Same flags as `xtask/src/kube.rs`; no state
//! is shared with `cargo xtask kube up`.
//!
//! The processes are spawned from one long-lived supervisor thread with `PR_SET_PDEATHSIG`, so
//! they die with the test binary even when it is killed; an `atexit` hook stops them and removes
//! the temp dir on a normal exit.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Identities in the static token file: (user, file stem, groups).
const IDENTITIES: &[(&str, &str, &str)] = &[
    ("admin", "admin", "system:masters"),
    (
        "system:serviceaccount:metallb-system:controller",
        "controller",
        "system:serviceaccounts,system:serviceaccounts:metallb-system",
    ),
    (
        "system:serviceaccount:metallb-system:speaker",
        "speaker",
        "system:serviceaccounts,system:serviceaccounts:metallb-system",
    ),
];

/// The workspace's `target/` directory, found from the test executable (target/debug/deps/x).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // deps → debug (profile) → target
    while dir.file_name().is_some_and(|n| n != "target") {
        if !dir.pop() {
            break;
        }
    }
    dir
}

/// `target/<profile>/herald`: the real binary the tests run.
pub fn herald_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("herald");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p herald` (cargo xtask test does)",
        bin.display()
    );
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        let sources = workspace_root().join("lb-userspace/src");
        if let (Some(built), Some(edited)) = (modified(&bin), newest_modification(&sources))
            && built < edited
        {
            eprintln!(
                "warning: {} is older than {}: these tests run the binary, rebuild it with `cargo build -p herald`",
                bin.display(),
                sources.display()
            );
        }
    });
    bin
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification time of any file under `dir`.
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(time) = modified(&path) {
                newest = newest.max(Some(time));
            }
        }
    }
    newest
}

/// The workspace root (the directory holding `manifests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn kube_bin(name: &str) -> PathBuf {
    let bin = target_dir().join("kube/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo xtask kube build` first (builds etcd, kube-apiserver and kubectl from tests/kube/go.mod; CI does it before the tests)",
        bin.display()
    );
    bin
}

pub fn kubectl_path() -> PathBuf {
    kube_bin("kubectl")
}

/// Work to run on the supervisor thread (spawning there ties the child's life to it).
type Job = Box<dyn FnOnce() + Send>;

fn supervisor() -> &'static Mutex<mpsc::Sender<Job>> {
    static SUPERVISOR: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("control-plane-supervisor".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                // Never return: children die when this thread does.
                loop {
                    std::thread::park();
                }
            })
            .expect("supervisor thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` on the supervisor thread with SIGKILL as parent-death signal.
pub fn spawn_supervised(mut cmd: Command) -> std::io::Result<Child> {
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
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .expect("supervisor alive");
    rx.recv().expect("supervisor answered")
}

/// The running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    pub apiserver_port: u16,
    etcd_port: u16,
    procs: Mutex<Procs>,
}

struct Procs {
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();
static CLEANUP_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    if let Some(plane) = PLANE.get() {
        plane.stop_all();
    }
    if let Some(dir) = CLEANUP_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// A free loopback TCP port (bound then released; the race with other processes is tolerable
/// for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(|| {
        let plane =
            ControlPlane::start().unwrap_or_else(|e| panic!("starting the control plane: {e}"));
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        plane
    })
}

impl ControlPlane {
    fn start() -> Result<Self, String> {
        for name in ["server", "kube-apiserver", "kubectl"] {
            kube_bin(name);
        }
        let dir = tempfile::Builder::new()
            .prefix("herald-kube-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let _ = CLEANUP_DIR.set(dir.clone());
        fs::create_dir_all(dir.join("certs")).map_err(|e| e.to_string())?;
        let key = dir.join("sa.key");
        let pubkey = dir.join("sa.pub");
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pubkey))?;

        let mut tokens = String::new();
        for (user, stem, groups) in IDENTITIES {
            let token = random_token();
            tokens.push_str(&format!("{token},{user},{stem},\"{groups}\"\n"));
            fs::write(dir.join(format!("{stem}.token")), &token).map_err(|e| e.to_string())?;
        }
        fs::write(dir.join("tokens.csv"), tokens).map_err(|e| e.to_string())?;

        let etcd_port = free_port();
        let apiserver_port = free_port();
        let plane = ControlPlane {
            server: format!("https://127.0.0.1:{apiserver_port}"),
            dir: dir.clone(),
            apiserver_port,
            etcd_port,
            procs: Mutex::new(Procs {
                etcd: None,
                apiserver: None,
            }),
        };
        plane.start_etcd()?;
        plane.start_apiserver()?;
        let ca = wait_for_file(&dir.join("certs/apiserver.crt"), Duration::from_secs(90))?;
        for (user, stem, _) in IDENTITIES {
            let token =
                fs::read_to_string(dir.join(format!("{stem}.token"))).map_err(|e| e.to_string())?;
            fs::write(
                plane.kubeconfig(stem),
                kubeconfig(&plane.server, &ca, user, &token),
            )
            .map_err(|e| e.to_string())?;
        }
        plane.wait_ready(Duration::from_secs(180))?;
        Ok(plane)
    }

    fn start_etcd(&self) -> Result<(), String> {
        let port = self.etcd_port;
        let peer = free_port();
        let mut cmd = Command::new(kube_bin("server"));
        cmd.arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            // Tests need no durability across machine crashes; fsync only costs time here.
            .arg("--unsafe-no-fsync");
        let child = spawn_logged(cmd, &self.dir.join("etcd.log"))?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).etcd = Some(child);
        Ok(())
    }

    fn start_apiserver(&self) -> Result<(), String> {
        let dir = &self.dir;
        let mut cmd = Command::new(kube_bin("kube-apiserver"));
        cmd.arg("--endpoint-reconciler-type=none")
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_port
            ))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.apiserver_port))
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--authorization-mode=Node,RBAC")
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kube-apiserver.log"))
            .map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = spawn_supervised(cmd).map_err(|e| format!("starting kube-apiserver: {e}"))?;
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apiserver = Some(child);
        Ok(())
    }

    /// Path of the kubeconfig for `identity` (admin, controller, speaker).
    pub fn kubeconfig(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.kubeconfig"))
    }

    /// `kubectl` as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg(format!(
            "--kubeconfig={}",
            self.kubeconfig("admin").display()
        ));
        cmd
    }

    /// Runs kubectl as admin; returns stdout or an error with stderr.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .kubectl()
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.kubectl_run(&["get", "--raw", "/readyz"]) {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(format!(
            "kube-apiserver not ready in {timeout:?}: {last} (log: {})",
            self.dir.join("kube-apiserver.log").display()
        ))
    }

    /// Stops kube-apiserver (SIGKILL: an abrupt loss for clients) and starts it again on the
    /// same port and etcd; waits until it is ready.
    pub fn restart_apiserver(&self, down_for: Duration) -> Result<(), String> {
        if let Some(mut child) = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apiserver
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.start_apiserver()?;
        self.wait_ready(Duration::from_secs(180))
    }

    fn stop_all(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for child in [procs.apiserver.take(), procs.etcd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}

fn stop(mut child: Child) {
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let file = fs::File::create(log).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file);
    let program = cmd.get_program().to_string_lossy().into_owned();
    spawn_supervised(cmd).map_err(|e| format!("starting {program}: {e}"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_for_file(path: &Path, timeout: Duration) -> Result<PathBuf, String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{} did not appear in {timeout:?}", path.display()))
}

fn kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: herald\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: \"{user}\"\n  user:\n    token: {token}\ncontexts:\n- name: herald\n  context:\n    cluster: herald\n    user: \"{user}\"\ncurrent-context: herald\n",
        ca = ca.display()
    )
}
