//! Herald as the lab runs it, out of cluster as the manifests' service accounts: the controller
//! on the host, a speaker in each node namespace (XDP on `eth0` and `eth1`, pins under
//! [`PIN_ROOT`]); stopping, restarting and killing them for failover trials and for `bench
//! vs-metallb`, and [`Speakers`], the same faults for either implementation.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::kubectl::{memberlist_secret, wait_for};
use super::metallb;
use super::procs;
use super::spec::{
    NODES, NodeSpec, Nodes, PIN_ROOT, UPLINK, herald_exe, kubeconfig, pin_dir, run_dir,
};
use super::topo::DIRECT_IF;

pub(super) const BPFFS: &str = "/sys/fs/bpf";

/// Marker: `up` mounted bpffs at /sys/fs/bpf, so `down` unmounts it.
pub(super) const MOUNTED_BPFFS: &str = "mounted-bpffs";

/// Mounts bpffs at /sys/fs/bpf when nothing is there (as systemd does at boot) and creates the
/// lab's pin root; the speakers create their per-node directories below it.
pub(super) fn ensure_pin_root() -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = std::ffi::CString::new(BPFFS)?;
    // SAFETY: statfs into a zeroed struct we own.
    let is_bpffs = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    };
    if !is_bpffs {
        println!("==> mounting bpffs at /sys/fs/bpf");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf", BPFFS])
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t bpf bpf {BPFFS} failed: {status}");
        }
        fs::write(run_dir().join(MOUNTED_BPFFS), "")?;
    }
    fs::create_dir_all(PIN_ROOT).with_context(|| format!("creating {PIN_ROOT}"))
}

/// Starts Herald's controller on the host as the controller service account.
pub(super) fn start_herald_controller() -> Result<u32> {
    procs::spawn_recorded(
        "controller",
        None,
        Command::new(herald_exe())
            .arg("controller")
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("controller").display()
            ))
            .args([
                "--namespace=metallb-system",
                "--port=19120",
                "--health-probe-port=19121",
                "--bind-address=127.0.0.1",
                "--pod-name=lab-controller",
                "--ml-secret-name=memberlist",
            ])
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG"),
    )
}

/// Which implementation's speakers a fault hits and a repair restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speakers {
    /// `herald speaker`, restarted with this `--detect-ms`.
    Herald { detect_ms: u64 },
    /// MetalLB's speaker (`metallb.rs`).
    Metallb,
}

impl Speakers {
    pub fn label(self) -> &'static str {
        match self {
            Speakers::Herald { .. } => "Herald",
            Speakers::Metallb => "MetalLB",
        }
    }

    /// The pid of `node`'s speaker (process or pod), if one runs.
    pub fn pid(self, node: &NodeSpec) -> Option<i32> {
        match (self, procs::recorded_nodes()) {
            (Speakers::Herald { .. }, _) => speaker_pid(node),
            (Speakers::Metallb, Nodes::Real) => super::nodes::metallb_speaker_in_node(node),
            (Speakers::Metallb, Nodes::Played) => metallb::speaker_pid(node),
        }
    }

    /// SIGKILL of `node`'s speaker (a crash: pinned maps stay).
    pub fn kill(self, node: &NodeSpec) -> Result<()> {
        self.signal(node, libc::SIGKILL)
    }

    /// SIGSTOP (`frozen`) or SIGCONT of `node`'s speaker.
    pub fn freeze(self, node: &NodeSpec, frozen: bool) -> Result<()> {
        self.signal(node, if frozen { libc::SIGSTOP } else { libc::SIGCONT })
    }

    /// Signals `node`'s speaker; on real nodes a container the kubelet is restarting (its
    /// liveness probe failed, say) is waited for.
    fn signal(self, node: &NodeSpec, signal: i32) -> Result<()> {
        let pid = match (self.pid(node), procs::recorded_nodes()) {
            (Some(pid), _) => pid,
            (None, Nodes::Real) => wait_speaker_container(node, self)? as i32,
            (None, Nodes::Played) => {
                bail!("no {} speaker runs on {}", self.label(), node.name)
            }
        };
        procs::signal(pid, signal)
    }

    /// Starts (or restarts) `node`'s speaker; on real nodes, waits for the kubelet to.
    pub fn start(self, node: &NodeSpec) -> Result<()> {
        match (self, procs::recorded_nodes()) {
            (Speakers::Herald { detect_ms }, _) => start_speaker(node, detect_ms).map(|_| ()),
            (Speakers::Metallb, Nodes::Played) => metallb::start_speaker(node).map(|_| ()),
            (Speakers::Metallb, Nodes::Real) => wait_speaker_container(node, self).map(|_| ()),
        }
    }
}

/// Stops Herald for a MetalLB run: speakers get SIGTERM (they leave the gossip and withdraw),
/// then each node's XDP program is detached and its pins removed, then the controller stops —
/// so nothing of Herald sees or answers a frame afterwards.
pub fn stop_herald() -> Result<()> {
    for node in NODES {
        procs::stop_recorded(&format!("speaker-{}", node.name));
    }
    detach_herald_xdp()?;
    procs::stop_recorded("controller");
    Ok(())
}

/// Detaches each node's XDP program and removes its pins (the speakers must be stopped).
fn detach_herald_xdp() -> Result<()> {
    for node in NODES {
        let pins = pin_dir(&node);
        if !pins.exists() {
            continue;
        }
        // nsenter keeps the host's mount namespace (and so /sys/fs/bpf); `ip netns exec` would not.
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg(herald_exe())
            .args(["xdp", "detach", "--pin-dir"])
            .arg(&pins)
            .output()
            .context("running nsenter … herald xdp detach")?;
        if !out.status.success() {
            bail!(
                "herald xdp detach on {} failed: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = fs::remove_dir_all(&pins);
    }
    Ok(())
}

/// Restarts the three speakers with XDP in `xdp_mode` (`skb`, the lab's, or `driver`): they
/// stop, XDP is detached (one mode per interface at a time), they start again. `bench
/// vs-metallb` uses driver mode for its direct links, whose client ends accept XDP_TX frames;
/// on the bridge ports (no XDP, no NAPI) driver-mode XDP_TX frames are dropped, so the segment
/// is not answered until the lab's skb mode is back.
pub fn restart_herald_speakers(detect_ms: u64, xdp_mode: &str) -> Result<()> {
    for node in NODES {
        procs::stop_recorded(&format!("speaker-{}", node.name));
    }
    detach_herald_xdp()?;
    ensure_pin_root()?;
    for node in NODES {
        spawn_speaker(&node, detect_ms, xdp_mode)?;
    }
    Ok(())
}

/// Starts Herald's controller and speakers again (after [`stop_herald`]).
pub fn start_herald(detect_ms: u64) -> Result<()> {
    procs::record_detect_ms(detect_ms)?;
    ensure_pin_root()?;
    if procs::recorded_pid("controller").is_none() {
        start_herald_controller()?;
    }
    wait_memberlist_secret()?;
    for node in NODES {
        start_speaker(&node, detect_ms)?;
    }
    Ok(())
}

/// True when Herald's controller or any of its speakers runs.
pub fn herald_running() -> bool {
    procs::recorded_pid("controller").is_some() || NODES.iter().any(|n| speaker_pid(n).is_some())
}

/// Starts (or restarts) `node`'s speaker inside its namespace as the speaker service account.
/// On real nodes the kubelet restarts the speaker's container by itself: this waits for it.
pub fn start_speaker(node: &NodeSpec, detect_ms: u64) -> Result<u32> {
    match procs::recorded_nodes() {
        Nodes::Real => wait_speaker_container(node, Speakers::Herald { detect_ms }),
        Nodes::Played => spawn_speaker(node, detect_ms, "skb"),
    }
}

/// Waits until `node`'s speaker container of `speakers` runs (the kubelet restarts a killed
/// one, after its crash back-off); its pid on the host.
fn wait_speaker_container(node: &NodeSpec, speakers: Speakers) -> Result<u32> {
    let pid = wait_for(
        &format!("the kubelet to restart {}'s speaker container", node.name),
        Duration::from_secs(330),
        || speakers.pid(node),
    )?;
    u32::try_from(pid).context("speaker pid")
}

fn spawn_speaker(node: &NodeSpec, detect_ms: u64, xdp_mode: &str) -> Result<u32> {
    let name = format!("speaker-{}", node.name);
    procs::stop_recorded(&name);
    procs::spawn_recorded(
        &name,
        Some(node.netns),
        Command::new(herald_exe())
            .arg("speaker")
            .arg(format!("--node-name={}", node.name))
            .arg(format!("--kubeconfig={}", kubeconfig("speaker").display()))
            .arg("--namespace=metallb-system")
            .arg(format!("--pin-dir={}", pin_dir(node).display()))
            .arg(format!("--ml-bind-addr={}:7946", node.v4))
            .arg(format!("--metrics-addr={}:7472", node.v4))
            .arg(format!("--interfaces-include={UPLINK},{DIRECT_IF}"))
            .arg(format!("--xdp-mode={xdp_mode}"))
            .arg(format!("--detect-ms={detect_ms}"))
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG")
            .env_remove("HERALD_PIN_DIR"),
    )
}

/// The pid of `node`'s running speaker (process or pod), if any.
pub fn speaker_pid(node: &NodeSpec) -> Option<i32> {
    match procs::recorded_nodes() {
        Nodes::Real => super::nodes::herald_in_node(node, "speaker"),
        Nodes::Played => procs::recorded_pid(&format!("speaker-{}", node.name)),
    }
}

/// Where `node`'s speaker pins its maps and links, as the host reaches it.
pub fn speaker_pins(node: &NodeSpec) -> std::path::PathBuf {
    match procs::recorded_nodes() {
        Nodes::Real => super::nodes::pin_dir_in_node(node).unwrap_or_else(|| pin_dir(node)),
        Nodes::Played => pin_dir(node),
    }
}

/// Restarts every speaker with `--detect-ms detect_ms` (and records it).
pub fn restart_speakers(detect_ms: u64) -> Result<()> {
    if procs::recorded_nodes() == Nodes::Real {
        bail!(
            "on real nodes the speakers' --detect-ms comes from the DaemonSet (manifests/speaker.yaml); \
             bring the lab up with `--nodes played` for a run at {detect_ms} ms"
        );
    }
    procs::record_detect_ms(detect_ms)?;
    for node in NODES {
        start_speaker(&node, detect_ms)?;
    }
    Ok(())
}

/// The timing line the first speaker logs at start (`detect_ms=… guard_budget_ms=…
/// earliest_takeover_ms=…`), so benchmarks print the settings in force.
pub fn speaker_timing_line() -> String {
    let log = match procs::recorded_nodes() {
        Nodes::Real => super::nodes::speaker_log(&NODES[0]),
        Nodes::Played => {
            fs::read_to_string(run_dir().join(format!("speaker-{}.log", NODES[0].name)))
                .unwrap_or_default()
        }
    };
    log.lines()
        .rev()
        .find(|l| l.contains("detect_ms="))
        .map_or_else(
            || "speaker timing not logged".to_string(),
            |l| {
                l.split_whitespace()
                    .filter(|w| w.contains("_ms="))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        )
}

pub(super) fn wait_memberlist_secret() -> Result<()> {
    wait_for(
        "the controller to create Secret metallb-system/memberlist",
        Duration::from_secs(60),
        || memberlist_secret("name").ok().map(|_| ()),
    )
}
