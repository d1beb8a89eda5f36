//! The bench's namespaces: `node` (the responder under test) and `client` (generator and
//! receiver), one veth between them, a private bpffs for Herald's pins, and the CPU placement.
//! Everything is removed on drop, and leftovers of a killed earlier run are removed at start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const NODE_V4: &str = "198.51.100.1";
pub const CLIENT_V4: &str = "198.51.100.2";
/// Sender address of the ARP latency probes.
pub const PROBE_V4: &str = "198.51.100.3";
pub const VIP_V4: &str = "198.51.100.10";
pub const NODE_V6: &str = "2001:db8::1";
pub const CLIENT_V6: &str = "2001:db8::2";
pub const VIP_V6: &str = "2001:db8::10";
/// Addresses the kernel answers for beside Herald in the side-by-side step (not in Herald's
/// maps, so its program passes their requests on).
pub const BESIDE_V4: &str = "198.51.100.11";
pub const BESIDE_V6: &str = "2001:db8::11";

const NS_PREFIX: &str = "herald-bench-";
const BPFFS_PREFIX: &str = "herald-bench-bpffs-";

/// CPU the generator, receiver and client-side softirqs run on.
pub const CLIENT_CPU: usize = 0;
/// CPU the responder runs on (node-side softirqs, NAPI thread, fallback process).
pub const NODE_CPU: usize = 1;

pub struct Lab {
    pub node_ns: String,
    pub client_ns: String,
    pub node_if: String,
    pub client_if: String,
    /// A second veth pair in the client namespace, the flood's circle where there are no live
    /// frames (`floodloop`): seeds are sent on the first end, the second broadcasts.
    pub flood_ifs: (String, String),
    pub bpffs: PathBuf,
    pub herald: PathBuf,
    /// `--flood-limit` for `herald xdp attach`; `None`: Herald's default.
    pub flood_limit: Option<String>,
}

/// Runs `program` and returns its stdout; an error names the command and its stderr.
pub(super) fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and bpffs mounts left by bench runs whose process is gone.
pub fn remove_leftovers() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(BPFFS_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !pid_alive(pid) {
                let _ = Command::new("umount").arg("-l").arg(e.path()).output();
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

impl Lab {
    pub fn new(herald: PathBuf, flood_limit: Option<String>) -> Result<Lab> {
        remove_leftovers();
        let pid = std::process::id();
        let lab = Lab {
            node_ns: format!("{NS_PREFIX}node-{pid}"),
            client_ns: format!("{NS_PREFIX}client-{pid}"),
            node_if: format!("hbn{}", pid % 100_000),
            client_if: format!("hbc{}", pid % 100_000),
            flood_ifs: (
                format!("hbg{}", pid % 100_000),
                format!("hbf{}", pid % 100_000),
            ),
            bpffs: std::env::temp_dir().join(format!("{BPFFS_PREFIX}{pid}")),
            herald,
            flood_limit,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        run("ip", &["netns", "add", &self.node_ns])?;
        run("ip", &["netns", "add", &self.client_ns])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &self.node_if,
                "netns",
                &self.node_ns,
                "type",
                "veth",
                "peer",
                "name",
                &self.client_if,
                "netns",
                &self.client_ns,
            ],
        )?;
        for (ns, dev, v4, v6) in [
            (&self.node_ns, &self.node_if, NODE_V4, NODE_V6),
            (&self.client_ns, &self.client_if, CLIENT_V4, CLIENT_V6),
        ] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        // Node-side receive processing (backlog) on NODE_CPU, client side on CLIENT_CPU.
        self.write_sys(
            &self.node_ns,
            &format!("class/net/{}/queues/rx-0/rps_cpus", self.node_if),
            &cpu_mask(NODE_CPU),
        )?;
        self.write_sys(
            &self.client_ns,
            &format!("class/net/{}/queues/rx-0/rps_cpus", self.client_if),
            &cpu_mask(CLIENT_CPU),
        )?;
        // NAPI on the node end in every mode (GRO on a veth enables it), as behind a real NIC;
        // the live-frames generator needs it, and threaded NAPI lets it be pinned.
        let node_if = self.node_if.clone();
        super::net::in_netns(&self.node_ns, move || super::live::set_gro(&node_if, true))?;
        // Every frame the client sends then takes that ring, in every mode, as on a NIC: a veth
        // hands a socket's frames to its peer's NAPI only if the sender has no TSO (which XDP on
        // the node switches off by itself), and otherwise to the backlog, where in kernel mode
        // the probes would pass beside the ring the flood fills.
        let client_if = self.client_if.clone();
        super::net::in_netns(&self.client_ns, move || {
            super::live::set_tso(&client_if, false)
        })?;
        self.write_sys(
            &self.node_ns,
            &format!("class/net/{}/threaded", self.node_if),
            "1",
        )?;
        self.build_flood_pair()?;
        std::fs::create_dir_all(&self.bpffs)
            .with_context(|| format!("creating {}", self.bpffs.display()))?;
        run(
            "mount",
            &["-t", "bpf", "bpf", &self.bpffs.to_string_lossy()],
        )?;
        Ok(())
    }

    /// The pair behind [`Lab::flood_ifs`].
    fn build_flood_pair(&self) -> Result<()> {
        let (a, b) = &self.flood_ifs;
        self.ip(
            &self.client_ns,
            &["link", "add", a, "type", "veth", "peer", "name", b],
        )?;
        for dev in [a, b] {
            // No IPv6 link-local address: the ends would otherwise send frames of their own
            // (router solicitations, MLD) into the circle.
            self.ip(
                &self.client_ns,
                &["link", "set", dev, "addrgenmode", "none"],
            )?;
            self.ip(&self.client_ns, &["link", "set", dev, "up"])?;
            // The circle never idles: in softirq it would hold the client CPU against the
            // bench's own threads (the probes stopped). In NAPI threads at normal priority, the
            // scheduler shares the CPU. GRO gives the ends their NAPI (and threads) before any
            // XDP program is attached.
            let name = dev.clone();
            super::net::in_netns(&self.client_ns, move || super::live::set_gro(&name, true))?;
            self.pinned_napi_threads(&self.client_ns, dev, CLIENT_CPU)?;
        }
        Ok(())
    }

    /// Writes a sysfs file as seen from inside `ns` (`ip netns exec` mounts that namespace's /sys).
    #[allow(
        clippy::unused_self,
        reason = "acts on the lab's namespaces; called through the lab"
    )]
    pub fn write_sys(&self, ns: &str, rel: &str, value: &str) -> Result<()> {
        super::net::sysfs_sh(Some(ns), &format!("echo {value} > /sys/{rel}")).map(|_| ())
    }

    #[allow(
        clippy::unused_self,
        reason = "acts on the lab's namespaces; called through the lab"
    )]
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn pin_dir(&self, side: &str) -> String {
        self.bpffs.join(side).to_string_lossy().into_owned()
    }

    /// `herald xdp ARGS` inside `ns` with the pins of `side`; stdout.
    pub fn herald(&self, ns: &str, side: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.herald)
            .arg("xdp")
            .args(args)
            .env("HERALD_PIN_DIR", self.pin_dir(side))
            .output()
            .context("running herald")?;
        if !out.status.success() {
            bail!(
                "herald xdp {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Time `herald xdp list` takes in the node namespace (a control-plane call during a flood).
    pub fn time_list(&self, side: &str) -> Option<Duration> {
        let start = Instant::now();
        self.herald(&self.node_ns, side, &["list"]).ok()?;
        Some(start.elapsed())
    }

    /// Attaches Herald's XDP program to the node interface in `mode` and announces both VIPs.
    /// (Driver mode needs an XDP program on the client end too, or the veth drops XDP_TX frames:
    /// the bench's reply counter is one, attached in every mode.)
    /// Returns the node's NAPI threads (where the program runs in driver mode).
    pub fn start_xdp(&self, mode: &str) -> Result<Vec<u32>> {
        // The client floods from one MAC: the per-source limit would cap it at 1,000/s.
        let mut args = vec![
            "attach",
            "--iface",
            &self.node_if,
            "--mode",
            mode,
            "--rate-limit",
            "0",
        ];
        if let Some(limit) = &self.flood_limit {
            args.extend(["--flood-limit", limit]);
        }
        let out = self.herald(&self.node_ns, "node", &args)?;
        if !out.contains(&format!("{mode} mode")) {
            bail!(
                "herald attached in another mode than {mode}: {}",
                out.trim()
            );
        }
        for vip in [VIP_V4, VIP_V6] {
            self.herald(
                &self.node_ns,
                "node",
                &[
                    "announce",
                    vip,
                    "--iface",
                    &self.node_if,
                    "--gratuitous-window",
                    "0",
                ],
            )?;
        }
        self.node_napi()
    }

    pub fn stop_xdp(&self) -> Result<()> {
        self.herald(&self.node_ns, "node", &["detach"]).map(|_| ())
    }

    /// Pins the node's NAPI thread(s) to the node CPU, SCHED_FIFO; their pids.
    pub fn node_napi(&self) -> Result<Vec<u32>> {
        self.threaded_napi(&self.node_ns, &self.node_if, NODE_CPU)
    }

    /// Pins the client's NAPI thread(s) to the client CPU (once the reply counter gave it NAPI).
    pub fn client_napi(&self) -> Result<Vec<u32>> {
        self.write_sys(
            &self.client_ns,
            &format!("class/net/{}/threaded", self.client_if),
            "1",
        )?;
        self.threaded_napi(&self.client_ns, &self.client_if, CLIENT_CPU)
    }

    fn threaded_napi(&self, ns: &str, ifname: &str, cpu: usize) -> Result<Vec<u32>> {
        let pids = self.pinned_napi_threads(ns, ifname, cpu)?;
        for &pid in &pids {
            realtime(pid);
        }
        Ok(pids)
    }

    /// Threaded NAPI on `ifname` (which must have NAPI), its threads pinned to `cpu` at the
    /// priority they have.
    fn pinned_napi_threads(&self, ns: &str, ifname: &str, cpu: usize) -> Result<Vec<u32>> {
        self.write_sys(ns, &format!("class/net/{ifname}/threaded"), "1")?;
        let prefix = format!("napi/{ifname}-");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = threads_named(&prefix);
            if !pids.is_empty() {
                for &pid in &pids {
                    super::net::pin_thread(pid, cpu)?;
                }
                return Ok(pids);
            }
            if Instant::now() > deadline {
                bail!("no NAPI thread {prefix}* after enabling threaded NAPI");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The kernel answers for the VIPs itself: both configured on the node interface.
    pub fn start_kernel(&self) -> Result<()> {
        self.kernel_addresses("add", VIP_V4, VIP_V6)
    }

    pub fn stop_kernel(&self) -> Result<()> {
        self.kernel_addresses("del", VIP_V4, VIP_V6)
    }

    /// The kernel answers for the second pair of addresses ([`BESIDE_V4`], [`BESIDE_V6`]) beside
    /// whatever answers for the VIPs: Herald's program passes their requests on to it.
    pub fn start_kernel_beside(&self) -> Result<()> {
        self.kernel_addresses("add", BESIDE_V4, BESIDE_V6)
    }

    pub fn stop_kernel_beside(&self) -> Result<()> {
        self.kernel_addresses("del", BESIDE_V4, BESIDE_V6)
    }

    /// `ip addr add|del` of `v4`/32 and `v6`/128 on the node interface. Removing tries both and
    /// takes an address already gone as removed (a half-done add leaves one of the two).
    fn kernel_addresses(&self, op: &str, v4: &str, v6: &str) -> Result<()> {
        let (v4, v6) = (format!("{v4}/32"), format!("{v6}/128"));
        let addr = |a: &str, extra: &[&str]| {
            let mut args = vec!["addr", op, a, "dev", self.node_if.as_str()];
            args.extend_from_slice(extra);
            self.ip(&self.node_ns, &args).map(|_| ())
        };
        if op == "add" {
            // Stops at the first failure: the caller removes what was added.
            addr(&v4, &[])?;
            return addr(&v6, &["nodad"]);
        }
        let gone = |r: Result<()>| {
            r.or_else(|e| {
                if format!("{e:#}").contains("Cannot assign requested address") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        let (a, b) = (gone(addr(&v4, &[])), gone(addr(&v6, &[])));
        a.and(b)
    }

    /// Starts Herald's userspace (AF_PACKET) responder on the node CPU.
    pub fn start_userspace(&self) -> Result<Child> {
        let log = std::fs::File::create(self.bpffs.with_extension("fallback.log"))
            .context("fallback log")?;
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node_ns,
                "nice",
                "-n",
                "-20",
                "taskset",
                "-c",
            ])
            .arg(NODE_CPU.to_string())
            .arg(&self.herald)
            .args([
                "xdp",
                "run",
                "--dataplane",
                "userspace",
                "--iface",
                &self.node_if,
                "--announce",
                VIP_V4,
                "--announce",
                VIP_V6,
                "--guard-timeout",
                "0",
                "--gratuitous-window",
                "0",
                "--rate-limit",
                "0",
            ])
            .env("HERALD_PIN_DIR", self.pin_dir("userspace"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting herald xdp run --dataplane userspace")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node_ns])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client_ns])
            .output();
        let _ = Command::new("umount").arg("-l").arg(&self.bpffs).output();
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

/// SCHED_FIFO priority 50 for a NAPI thread: packet processing then preempts every normal task
/// on its CPU (the generator included, on the client side) as a hard interrupt would, and the
/// kernel's RT throttling still leaves 5% to everyone else.
pub fn realtime(pid: u32) {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: valid sched_param for a pid; failure leaves the thread as it was.
    unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &raw const param) };
}

/// SCHED_OTHER for `pid` (a killed earlier run may have left it SCHED_FIFO); failure leaves it
/// as it was.
pub fn normal_policy(pid: u32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid sched_param for a pid; failure leaves the thread as it was.
    unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_OTHER, &raw const param) };
}

fn get_nice(pid: u32) -> Option<i32> {
    // SAFETY: getpriority has no memory preconditions; errno distinguishes -1.
    unsafe {
        *libc::__errno_location() = 0;
        let v = libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t);
        (*libc::__errno_location() == 0).then_some(v)
    }
}

pub fn set_nice(pid: u32, nice: i32) {
    // SAFETY: setpriority on a pid; failure leaves it as it was.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
}

/// While alive, the softirq threads run at nice -20 (they carry packet work once softirqs are
/// deferred, and this machine is shared with compilers); their old nice values come back on drop.
pub struct SoftirqBoost {
    old: Vec<(u32, i32)>,
}

impl SoftirqBoost {
    pub fn new() -> SoftirqBoost {
        let old: Vec<(u32, i32)> = threads_named("ksoftirqd/")
            .into_iter()
            .filter_map(|pid| Some((pid, get_nice(pid)?)))
            .collect();
        for &(pid, _) in &old {
            set_nice(pid, -20);
        }
        SoftirqBoost { old }
    }
}

impl Drop for SoftirqBoost {
    fn drop(&mut self) {
        for &(pid, nice) in &self.old {
            set_nice(pid, nice);
        }
    }
}

fn cpu_mask(cpu: usize) -> String {
    format!("{:x}", 1u64 << cpu)
}

/// Pids of kernel threads whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<u32> {
    // comm holds at most 15 bytes.
    let prefix: String = prefix.chars().take(15).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// Whether this `herald` has the userspace fallback (`--dataplane` on `herald xdp run`).
pub fn has_userspace_fallback(herald: &Path) -> bool {
    Command::new(herald)
        .args(["xdp", "run", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--dataplane"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_masks_are_hex_bitmaps() {
        assert_eq!(cpu_mask(0), "1");
        assert_eq!(cpu_mask(1), "2");
        assert_eq!(cpu_mask(4), "10");
    }
}
