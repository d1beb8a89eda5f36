//! `cargo xtask kube build | up | down`: a real Kubernetes control plane (etcd, kube-apiserver with
//! RBAC and static token identities, kube-controller-manager) built from the Kubernetes Go modules
//! at v1.37.2 and run on this machine, for tests and the lab. Facts behind it: DEVELOPERS.md.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// Identities in the static token file: (user, token file name, groups).
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

/// Commands built from tests/kube/go.mod, and the binary name `go build` gives each.
const BINARIES: &[(&str, &str)] = &[
    ("go.etcd.io/etcd/server/v3", "server"),
    ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
    (
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-controller-manager",
    ),
    ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
];

#[derive(clap::Subcommand)]
pub enum KubeCommand {
    /// Build etcd, kube-apiserver, kube-controller-manager and kubectl into target/kube/bin.
    Build,
    /// Start the control plane; prints the directory holding one kubeconfig per identity.
    Up(UpArgs),
    /// Stop exactly the processes `up` started.
    Down,
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Address kube-apiserver binds and advertises (the lab uses its bridge address).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// kube-apiserver secure port.
    #[arg(long, default_value_t = 16443)]
    pub port: u16,
    /// Service ClusterIP range(s), comma-separated (the lab adds an IPv6 range for dual stack).
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: String,
}

pub fn run(cmd: &KubeCommand) -> Result<()> {
    match cmd {
        KubeCommand::Build => build().map(|_| ()),
        KubeCommand::Up(args) => up(args).map(|dir| println!("{}", dir.display())),
        KubeCommand::Down => down(),
    }
}

fn kube_dir() -> PathBuf {
    workspace_root().join("target/kube")
}

pub fn bin(name: &str) -> PathBuf {
    kube_dir().join("bin").join(name)
}

/// Builds the control plane binaries (Go's own caches make a warm rebuild take seconds).
pub fn build() -> Result<PathBuf> {
    let module = workspace_root().join("tests/kube");
    let out = kube_dir().join("bin");
    fs::create_dir_all(&out)?;
    for (pkg, name) in BINARIES {
        if out.join(name).is_file() && !stale(&out.join(name), &module.join("go.mod")) {
            continue;
        }
        println!(
            "==> go build {pkg} (cold: kube-apiserver ~9 min, controller-manager ~4 min on 2 cores)"
        );
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(pkg)
            .current_dir(&module)
            .env("GOFLAGS", "-mod=mod")
            .status()
            .context("running go (is Go installed?)")?;
        if !status.success() {
            bail!("go build {pkg} failed: {status}");
        }
    }
    Ok(out)
}

fn stale(binary: &Path, source: &Path) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(binary), modified(source)) {
        (Some(b), Some(s)) => b < s,
        _ => true,
    }
}

/// Starts etcd, kube-apiserver and kube-controller-manager; returns the run directory.
pub fn up(args: &UpArgs) -> Result<PathBuf> {
    up_in(&kube_dir().join("run"), args)
}

/// `up` with its own run directory (the lab keeps its control plane apart from `kube up`'s).
pub fn up_in(run: &Path, args: &UpArgs) -> Result<PathBuf> {
    build()?;
    let run = run.to_path_buf();
    if run.join("pids").is_file() {
        down_in(&run)?;
    }
    let _ = fs::remove_dir_all(&run);
    let Credentials {
        key,
        pubkey,
        tokens,
    } = write_credentials(&run)?;

    let etcd_port = args.port + 1000;
    let mut pids = Vec::new();
    pids.push(spawn(
        &run,
        "etcd",
        Command::new(bin("server"))
            .arg(format!("--data-dir={}", run.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                etcd_port + 1
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                etcd_port + 1
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{}",
                etcd_port + 1
            )),
    )?);
    let mut apiserver = Command::new(bin("kube-apiserver"));
    if args.bind.starts_with("127.") {
        // A loopback address may not be advertised; nothing in-cluster needs the endpoint.
        apiserver.arg("--endpoint-reconciler-type=none");
    } else {
        apiserver.arg(format!("--advertise-address={}", args.bind));
    }
    pids.push(spawn(
        &run,
        "kube-apiserver",
        apiserver
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--bind-address={}", args.bind))
            .arg(format!("--secure-port={}", args.port))
            .arg(format!("--cert-dir={}", run.join("certs").display()))
            .arg(format!("--service-cluster-ip-range={}", args.service_cidr))
            .arg("--authorization-mode=Node,RBAC")
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", pubkey.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            )),
    )?);
    fs::write(
        run.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;

    let server = format!("https://{}:{}", args.bind, args.port);
    write_kubeconfigs(&run, &server)?;
    wait_ready(&run.join("admin.kubeconfig"))?;

    let admin = run.join("admin.kubeconfig");
    pids.push(spawn(
        &run,
        "kube-controller-manager",
        Command::new(bin("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", admin.display()))
            .arg(format!("--authentication-kubeconfig={}", admin.display()))
            .arg(format!("--authorization-kubeconfig={}", admin.display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                key.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", args.port + 2000))
            .arg("--leader-elect=false")
            .arg("--controllers=*,-node-lifecycle-controller"),
    )?);
    fs::write(
        run.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    println!(
        "control plane up at {server}; kubeconfigs: {}/{{admin,controller,speaker}}.kubeconfig",
        run.display()
    );
    Ok(run)
}

/// What kube-apiserver is started with, written by [`write_credentials`].
pub struct Credentials {
    /// Service-account signing key and its public half.
    pub key: PathBuf,
    pub pubkey: PathBuf,
    /// The static token file (`--token-auth-file`) naming every identity.
    pub tokens: PathBuf,
}

/// Writes into `dir` a service-account key pair, a random token per identity (`<name>.token`)
/// and the token file listing them, and creates `dir/certs` for the API server's own.
pub fn write_credentials(dir: &Path) -> Result<Credentials> {
    fs::create_dir_all(dir.join("certs"))?;
    let key = dir.join("sa.key");
    let pubkey = dir.join("sa.pub");
    sh(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048"))?;
    sh(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pubkey))?;
    let mut lines = String::new();
    for (user, file, groups) in IDENTITIES {
        let token = random_token()?;
        lines.push_str(&format!("{token},{user},{file},\"{groups}\"\n"));
        fs::write(dir.join(format!("{file}.token")), &token)?;
    }
    let tokens = dir.join("tokens.csv");
    fs::write(&tokens, lines)?;
    Ok(Credentials {
        key,
        pubkey,
        tokens,
    })
}

/// Waits for the serving certificate kube-apiserver writes under `dir/certs`, then writes
/// `dir/<name>.kubeconfig` for every identity of [`write_credentials`], pointing at `server`.
pub fn write_kubeconfigs(dir: &Path, server: &str) -> Result<()> {
    let ca = wait_for_cert(&dir.join("certs"))?;
    for (user, file, _) in IDENTITIES {
        let token = fs::read_to_string(dir.join(format!("{file}.token")))?;
        fs::write(
            dir.join(format!("{file}.kubeconfig")),
            kubeconfig(server, &ca, user, &token),
        )?;
    }
    Ok(())
}

/// Stops the processes recorded by `up` (and nothing else).
pub fn down() -> Result<()> {
    down_in(&kube_dir().join("run"))
}

/// `down` for a control plane started with [`up_in`].
pub fn down_in(run: &Path) -> Result<()> {
    let pids_file = run.join("pids");
    let Ok(text) = fs::read_to_string(&pids_file) else {
        return Ok(());
    };
    for pid in text
        .lines()
        .rev()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        // SAFETY: kill(2) with a pid we started; errors (already gone) are ignored.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    fs::remove_file(&pids_file)?;
    Ok(())
}

fn alive(pid: i32) -> bool {
    // Our children are not reaped by us once xtask exits; a zombie counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn spawn(run: &Path, name: &str, cmd: &mut Command) -> Result<u32> {
    let log = fs::File::create(run.join(format!("{name}.log")))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(child.id())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn wait_for_cert(cert_dir: &Path) -> Result<PathBuf> {
    let cert = cert_dir.join("apiserver.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cert.is_file() {
            return Ok(cert);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "kube-apiserver wrote no serving certificate in 60 s; see {}",
        cert_dir
            .parent()
            .unwrap_or(cert_dir)
            .join("kube-apiserver.log")
            .display()
    )
}

/// Waits until the API server that `admin` (a kubeconfig) names answers `/readyz` with ok.
pub fn wait_ready(admin: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let out = Command::new(bin("kubectl"))
            .arg(format!("--kubeconfig={}", admin.display()))
            .args(["get", "--raw", "/readyz"])
            .output()?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "kube-apiserver not ready after 120 s (see kube-apiserver.log beside {})",
        admin.display()
    )
}

fn kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: herald\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: \"{user}\"\n  user:\n    token: {token}\ncontexts:\n- name: herald\n  context:\n    cluster: herald\n    user: \"{user}\"\ncurrent-context: herald\n",
        ca = ca.display()
    )
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
