//! Drives the lab (`cargo xtask lab`) from tests through the built xtask binary
//! (`target/debug/xtask lab …`; `cargo xtask` from inside a test would wait on the build lock).
//! The lab is brought up once per test binary (replacing any lab already up on the machine) and
//! taken down at exit; tests run one at a time and undo their own objects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Lab node names (xtask/src/lab/mod.rs).
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Generous deadline for asynchronous effects (behaviour is tested, not speed).
pub const DEADLINE: Duration = Duration::from_secs(60);
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn target_debug() -> PathBuf {
    workspace_root().join("target/debug")
}

pub fn xtask_bin() -> PathBuf {
    let bin = target_debug().join("xtask");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p xtask` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Tests share one lab: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

extern "C" fn lab_down_at_exit() {
    // Keep the lab (and its logs under target/lab/run/) for a post-mortem.
    if std::env::var_os("HERALD_KEEP_LAB").is_some() {
        return;
    }
    let _ = Command::new(target_debug().join("xtask"))
        .args(["lab", "down"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Brings the lab up once in layer 2 mode on real nodes (without building: the test command
/// builds first).
pub fn lab() {
    lab_in("l2");
}

/// Brings the lab up once in `mode` (`l2` or `bgp`) on real nodes: one mode per test binary.
pub fn lab_in(mode: &str) {
    lab_with(&["--mode", mode]);
}

/// Brings the lab up once with `args` after `lab up --no-build`: one lab per test binary.
fn lab_with(args: &[&str]) {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "lab tests need root (namespaces, XDP)"
        );
        let out = Command::new(xtask_bin())
            .args(["lab", "up", "--no-build"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(lab_down_at_exit);
        }
        if !out.status.success() {
            return Err(format!(
                "xtask lab up failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = up {
        panic!("{e}");
    }
}

/// `xtask lab <args>`: stdout, panicking with stderr on failure.
pub fn xtask_lab(args: &[&str]) -> String {
    let out = Command::new(xtask_bin())
        .arg("lab")
        .args(args)
        .output()
        .expect("running xtask");
    assert!(
        out.status.success(),
        "xtask lab {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lab status --json`; `client` adds the client's arping/ndisc6/TCP view.
pub fn status(client: bool) -> Value {
    let mut args = vec!["status", "--json"];
    if !client {
        args.push("--no-client");
    }
    serde_json::from_str(&xtask_lab(&args)).expect("status JSON")
}

/// Nodes whose XDP maps hold `ip` with a live guard.
pub fn xdp_announcers(ip: &str) -> Vec<String> {
    let status = status(false);
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
        .filter(|a| a["ip"].as_str() == Some(ip))
        .flat_map(|a| a["xdp_announcers"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Nodes whose XDP maps hold `ip`, whatever their guard says, and the nodes whose maps could
/// not be read at all (no pins, or `herald xdp list` failed).
pub fn xdp_holders(ip: &str) -> (Vec<String>, Vec<String>) {
    let status = status(false);
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    let name = |n: &Value| n["name"].as_str().unwrap_or("?").to_string();
    let holders = nodes
        .iter()
        .filter(|n| {
            n["xdp_addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(ip)))
        })
        .map(name)
        .collect();
    let unread = nodes
        .iter()
        .filter(|n| n["guard"].is_null())
        .map(name)
        .collect();
    (holders, unread)
}

pub fn node_mac(node: &str) -> String {
    let status = status(false);
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"].as_str() == Some(node))
        .and_then(|n| n["mac"].as_str())
        .unwrap_or_else(|| panic!("no MAC for {node}"))
        .to_lowercase()
}

pub fn speaker_pid(node: &str) -> Option<i32> {
    let status = status(false);
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"].as_str() == Some(node))
        .and_then(|n| n["speaker_pid"].as_i64())
        .map(|p| p as i32)
}

/// ARP probes from the client: per-node answer counts, rounds with several MACs, unanswered rounds.
pub struct Probe {
    pub by_node: BTreeMap<String, u64>,
    pub several: u64,
    pub unanswered: Vec<u64>,
    pub rounds: u64,
    /// The nodes that answered the last round.
    pub last_round_nodes: Vec<String>,
}

pub fn parse_probe(text: &str) -> Probe {
    let json: Value = serde_json::from_str(text.trim()).expect("probe JSON");
    Probe {
        by_node: json["answers_by_node"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        several: json["rounds_with_several_macs"].as_u64().unwrap_or(0),
        unanswered: json["unanswered_rounds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        rounds: json["rounds"].as_u64().unwrap_or(0),
        last_round_nodes: json["last_round_nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub fn probe_arp(ip: &str, count: usize, interval_ms: u64) -> Probe {
    parse_probe(&xtask_lab(&[
        "probe",
        "--ip",
        ip,
        "--count",
        &count.to_string(),
        "--interval-ms",
        &interval_ms.to_string(),
    ]))
}

/// Starts a probe in the background (collect it with [`finish_probe`]).
pub fn start_probe(ip: &str, count: usize, interval_ms: u64) -> std::process::Child {
    probe_command(ip, count, interval_ms)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the probe")
}

/// Starts a probe that goes on past `count` rounds until `node` has answered the last ones.
pub fn start_probe_until(
    ip: &str,
    count: usize,
    interval_ms: u64,
    node: &str,
) -> std::process::Child {
    probe_command(ip, count, interval_ms)
        .args(["--until-answered-by", node])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the probe")
}

/// Whether a background probe is still sending: checked right after the operation it watches
/// returns, so that the probe is known to have covered all of it.
pub fn still_probing(probe: &mut std::process::Child) -> bool {
    matches!(probe.try_wait(), Ok(None))
}

/// A probe that goes on past `count` rounds until [`OpenProbe::finish`]: it covers an operation
/// of unknown length.
pub struct OpenProbe {
    child: std::process::Child,
    stop: PathBuf,
}

impl OpenProbe {
    pub fn start(ip: &str, count: usize, interval_ms: u64) -> OpenProbe {
        let stop = std::env::temp_dir().join(format!(
            "herald-probe-stop-{}-{}",
            std::process::id(),
            PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&stop);
        let child = probe_command(ip, count, interval_ms)
            .arg("--until-file")
            .arg(&stop)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the probe");
        OpenProbe { child, stop }
    }

    /// Ends the probe at its next round, and whether it was still probing when told to.
    pub fn finish(mut self) -> (Probe, bool) {
        let covered = still_probing(&mut self.child);
        std::fs::write(&self.stop, b"").expect("the probe's stop file");
        let probe = finish_probe(self.child);
        let _ = std::fs::remove_file(&self.stop);
        (probe, covered)
    }
}

static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn probe_command(ip: &str, count: usize, interval_ms: u64) -> Command {
    let mut cmd = Command::new(xtask_bin());
    cmd.args(["lab", "probe", "--ip", ip])
        .args(["--count", &count.to_string()])
        .args(["--interval-ms", &interval_ms.to_string()]);
    cmd
}

pub fn finish_probe(child: std::process::Child) -> Probe {
    let out = child.wait_with_output().expect("probe output");
    assert!(out.status.success(), "probe failed");
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

/// MACs answering the client's Neighbor Solicitations for `ip` (ndisc6 -m: all answers).
pub fn ndp_macs(ip: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "hl-client",
            "ndisc6",
            "-m",
            "-r",
            "2",
            "-w",
            "500",
            ip,
            "eth0",
        ])
        .output()
        .expect("running ndisc6");
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("link-layer address:").nth(1))
        .map(|m| m.trim().to_lowercase())
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

fn kubectl_cmd() -> Command {
    let mut cmd = Command::new(workspace_root().join("target/kube/bin/kubectl"));
    cmd.arg(format!(
        "--kubeconfig={}",
        workspace_root()
            .join("target/lab/run/kube/admin.kubeconfig")
            .display()
    ));
    cmd
}

/// kubectl as admin; panics on failure.
pub fn kubectl(args: &[&str]) -> String {
    try_kubectl(args).unwrap_or_else(|e| panic!("{e}"))
}

pub fn try_kubectl(args: &[&str]) -> Result<String, String> {
    let out = kubectl_cmd()
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// kubectl as `identity` (admin, controller, speaker).
pub fn kubectl_as(identity: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(workspace_root().join("target/kube/bin/kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            workspace_root()
                .join(format!("target/lab/run/kube/{identity}.kubeconfig"))
                .display()
        ))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `kubectl auth can-i <args>` as `identity`: "yes" or "no" (kubectl exits 1 on "no").
pub fn can_i(identity: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("target/kube/bin/kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            workspace_root()
                .join(format!("target/lab/run/kube/{identity}.kubeconfig"))
                .display()
        ))
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn apply(yaml: &str) {
    herald_tests::kubectl_apply(kubectl_cmd(), yaml);
}

/// LoadBalancer ingress IPs of a Service in status order.
pub fn service_ips(namespace: &str, name: &str) -> Vec<String> {
    try_kubectl(&[
        "-n",
        namespace,
        "get",
        "service",
        name,
        "-o",
        "jsonpath={range .status.loadBalancer.ingress[*]}{.ip}{\"\\n\"}{end}",
    ])
    .map(|o| o.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

/// Nodes in MetalLB's layer 2 order for `ip` (no preferences): SHA-256 of `node#ip` ascending.
pub fn election_order(ip: &str, nodes: &[&str]) -> Vec<String> {
    let ip: IpAddr = ip.parse().expect("IP");
    let mut sorted: Vec<&str> = nodes.to_vec();
    sorted.sort_by_key(|n| herald::election::election_hash(n, &ip));
    sorted.into_iter().map(str::to_string).collect()
}

/// An unused pool IPv4 address (198.51.100.150-199) whose order starts with `first`.
pub fn ip_where_first(first: &str) -> String {
    (150..200)
        .map(|i| format!("198.51.100.{i}"))
        .find(|ip| election_order(ip, &NODES)[0] == first)
        .unwrap_or_else(|| panic!("no address in 198.51.100.150-199 sorts {first} first"))
}

/// Polls `check` until it returns true; false after `timeout`.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until process `pid` has exited (gone or a zombie), polling every 2 ms so that a
/// supervisor-style restart can follow at once.
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.contains(") Z") => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    false
}

/// Waits until only `node` answers ARP for `ip` in 10 consecutive 20 ms rounds.
pub fn wait_answered_by(ip: &str, node: &str) -> bool {
    wait_until(DEADLINE, || {
        let p = probe_arp(ip, 10, 20);
        p.by_node.len() == 1 && p.by_node.get(node) == Some(&10) && p.several == 0
    })
}

/// Waits for the kubelet to restart the speaker container of `node` a test killed (after its
/// crash back-off).
pub fn wait_speaker_restarted(node: &str) {
    assert!(
        wait_until(Duration::from_secs(330), || speaker_pid(node).is_some()),
        "the kubelet did not restart {node}'s speaker container"
    );
}

/// Takes `node`'s port on the lab's switch down or up (a cut cable: the node loses carrier).
pub fn set_switch_port(node: &str, up: bool) {
    let status = Command::new("ip")
        .args([
            "-n",
            "hl-sw",
            "link",
            "set",
            &format!("p-{node}"),
            if up { "up" } else { "down" },
        ])
        .status()
        .expect("ip link set");
    assert!(status.success(), "ip link set p-{node} failed");
}

pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on the lab's speaker pid.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
