//! Real Kubernetes nodes in the lab's node namespaces: per node a mount namespace with its own
//! bpffs (held by a sleeping process), containerd with runc and the CNI bridge plugin, kubelet
//! and kube-proxy (iptables mode), all built from their Go modules (`cargo xtask kube build
//! --nodes`). Images come from `cargo xtask image` through `ctr images import`; nothing is pulled.
//!
//! Addresses: pods of node N (1-based) get 10.244.N.0/24 and 2001:db8:244:N::/64 on the node's
//! `cni0` bridge; each node routes the other nodes' pod subnets to their uplink address, so
//! kube-proxy can send a Service's traffic to a pod anywhere. ClusterIPs (10.96.0.0/16) are
//! routed on-link so kube-proxy's DNAT applies to the node's own connections.
//!
//! What kubelet and the CNI plugins write outside their configured directories (fixed host paths:
//! `/var/log/containers`, `/var/lib/kubelet/device-plugins`, `/var/lib/cni`, `/run/containerd`)
//! is removed by [`stop_all`] when the lab made it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::kubectl::wait_for;
use super::procs;
use super::spec::{NODES, NodeSpec, SERVICE_CIDR, UPLINK, kubeconfig, run_dir};
use super::topo::{ip, sysctl};
use crate::image::Images;
use crate::kube;

/// Pod subnets of all nodes (kube-proxy's `clusterCIDR`).
const POD_CIDRS: &str = "10.244.0.0/16,2001:db8:244::/48";
/// The label every lab node carries (tests select on it).
pub const LAB_LABEL: &str = "herald.dev/lab=true";
/// Host paths kubelet, containerd and CNI use whatever they are told; removed on teardown when
/// the lab created them.
const HOST_PATHS: [&str; 5] = [
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/containerd",
];

fn nodes_dir() -> PathBuf {
    run_dir().join("nodes")
}

fn node_dir(node: &NodeSpec) -> PathBuf {
    nodes_dir().join(node.name)
}

fn index(node: &NodeSpec) -> usize {
    NODES.iter().position(|n| n == node).unwrap_or(0) + 1
}

fn pod_v4(node: &NodeSpec) -> String {
    format!("10.244.{}.0/24", index(node))
}

fn pod_v6(node: &NodeSpec) -> String {
    format!("2001:db8:244:{}::/64", index(node))
}

fn bin(name: &str) -> PathBuf {
    kube::binaries().dir.join(name)
}

/// The containerd socket of `node`.
pub fn containerd_socket(node: &NodeSpec) -> PathBuf {
    node_dir(node).join("containerd/containerd.sock")
}

/// `ctr` against `node`'s containerd, namespace `k8s.io` (where kubelet's containers are).
pub fn ctr(node: &NodeSpec) -> Command {
    let mut cmd = Command::new(bin(kube::CTR));
    cmd.arg("-a")
        .arg(containerd_socket(node))
        .args(["-n", "k8s.io"]);
    cmd
}

/// The pid holding `node`'s mount namespace.
pub fn holder(node: &NodeSpec) -> Option<u32> {
    procs::recorded_pid(&format!("mounts-{}", node.name)).map(|p| p as u32)
}

/// Which of the fixed host paths exist now: the ones that do not are the lab's to remove.
fn absent_host_paths() -> Vec<&'static str> {
    HOST_PATHS
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect()
}

/// Starts every node and waits until all are Ready. `images` are imported into each node's
/// containerd before kubelet starts.
pub fn start_all(images: &Images) -> Result<()> {
    fs::create_dir_all(nodes_dir())?;
    fs::write(
        nodes_dir().join("host-paths-made"),
        absent_host_paths().join("\n"),
    )?;
    fs::write(
        nodes_dir().join("resolv.conf"),
        // Pods must not inherit the host's resolver; nothing answers DNS in the lab.
        "nameserver 203.0.113.1\n",
    )?;
    for node in NODES {
        start(&node, images)?;
    }
    Ok(())
}

fn start(node: &NodeSpec, images: &Images) -> Result<()> {
    let dir = node_dir(node);
    for sub in [
        "containerd",
        "cni",
        "kubelet",
        "podlogs",
        "ipam",
        "runc",
        "opt",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    routes(node)?;
    let holder = procs::spawn_recorded(
        &format!("mounts-{}", node.name),
        None,
        Command::new("unshare").args(["--mount", "--propagation", "private", "sleep", "infinity"]),
    )?;
    wait_namespace(holder)?;
    // Mounts made by containers propagate back (kubelet needs `/` shared), and a fresh bpffs:
    // this node's pins are its own.
    let status = Command::new("nsenter")
        .arg(format!("--mount=/proc/{holder}/ns/mnt"))
        .args([
            "--",
            "sh",
            "-c",
            "mount --make-rshared / && mount -t bpf bpf /sys/fs/bpf && mount --make-shared /sys/fs/bpf",
        ])
        .status()?;
    if !status.success() {
        bail!("{}: setting up the mount namespace failed", node.name);
    }
    fs::write(dir.join("containerd.toml"), containerd_config(node))?;
    fs::write(dir.join("cni/10-lab.conflist"), cni_config(node))?;
    fs::write(dir.join("kubelet.yaml"), kubelet_config(node))?;
    fs::write(dir.join("kube-proxy.yaml"), kube_proxy_config(node))?;
    start_containerd(node)?;
    import(node, images)?;
    let path = node_path();
    procs::spawn_recorded_in(
        &format!("kubelet-{}", node.name),
        Some(node.netns),
        Some(holder),
        Command::new(bin(kube::KUBELET))
            .arg("--config")
            .arg(dir.join("kubelet.yaml"))
            .arg("--kubeconfig")
            .arg(kubeconfig(node.name))
            .arg("--root-dir")
            .arg(dir.join("kubelet"))
            .arg("--cert-dir")
            .arg(dir.join("kubelet/pki"))
            .arg(format!("--hostname-override={}", node.name))
            .arg(format!("--node-ip={},{}", node.v4, node.v6))
            .arg(format!("--node-labels={LAB_LABEL}"))
            .env("PATH", &path),
    )?;
    procs::spawn_recorded_in(
        &format!("proxy-{}", node.name),
        Some(node.netns),
        Some(holder),
        Command::new(bin(kube::KUBE_PROXY))
            .arg("--config")
            .arg(dir.join("kube-proxy.yaml"))
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )?;
    Ok(())
}

/// `PATH` of a node's daemons: the built binaries first (containerd finds its shim there).
fn node_path() -> String {
    format!(
        "{}:/usr/sbin:/usr/bin:/sbin:/bin",
        kube::binaries().dir.display()
    )
}

/// Starts `node`'s containerd (again, after [`kill_containerd`]) and waits for its socket.
pub fn start_containerd(node: &NodeSpec) -> Result<()> {
    let holder = holder(node).with_context(|| format!("{} has no mount namespace", node.name))?;
    let socket = containerd_socket(node);
    let _ = fs::remove_file(&socket);
    procs::spawn_recorded_in(
        &format!("containerd-{}", node.name),
        Some(node.netns),
        Some(holder),
        Command::new(bin(kube::CONTAINERD))
            .arg("--config")
            .arg(node_dir(node).join("containerd.toml"))
            .env("PATH", node_path()),
    )?;
    wait_for(
        &format!("{}'s containerd socket", node.name),
        Duration::from_secs(20),
        || socket.exists().then_some(()),
    )
}

/// SIGKILLs `node`'s containerd (a runtime that dies): the containers keep running under their
/// shims.
pub fn kill_containerd(node: &NodeSpec) -> Result<()> {
    procs::kill_recorded(&format!("containerd-{}", node.name), libc::SIGKILL)
}

/// Imports `images` into `node`'s containerd.
pub fn import(node: &NodeSpec, images: &Images) -> Result<()> {
    for image in images.all() {
        import_archive(node, &image.archive)?;
    }
    Ok(())
}

/// Imports one docker archive into `node`'s containerd.
pub fn import_archive(node: &NodeSpec, archive: &Path) -> Result<()> {
    let out = ctr(node)
        .args(["images", "import"])
        .arg(archive)
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "{}: ctr images import {} failed: {}",
            node.name,
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn wait_namespace(holder: u32) -> Result<()> {
    // The holder is `unshare`, which execs `sleep` once its namespace exists.
    wait_for("the node's mount namespace", Duration::from_secs(5), || {
        let own = fs::read_link("/proc/self/ns/mnt").ok()?;
        let held = fs::read_link(format!("/proc/{holder}/ns/mnt")).ok()?;
        let comm = fs::read_to_string(format!("/proc/{holder}/comm")).ok()?;
        (own != held && comm.trim() == "sleep").then_some(())
    })
}

/// On-link ClusterIPs and the other nodes' pod subnets through their uplink addresses.
fn routes(node: &NodeSpec) -> Result<()> {
    for cidr in SERVICE_CIDR.split(',') {
        ip(&["-n", node.netns, "route", "add", cidr, "dev", UPLINK])?;
    }
    for other in NODES.iter().filter(|n| *n != node) {
        ip(&[
            "-n",
            node.netns,
            "route",
            "add",
            &pod_v4(other),
            "via",
            &other.v4.to_string(),
        ])?;
        ip(&[
            "-n",
            node.netns,
            "route",
            "add",
            &pod_v6(other),
            "via",
            &other.v6.to_string(),
        ])?;
    }
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        sysctl(node.netns, key, "1")?;
    }
    Ok(())
}

fn containerd_config(node: &NodeSpec) -> String {
    let d = node_dir(node);
    let d = d.display();
    let runc = bin(kube::RUNC);
    let cni = bin(kube::CNI_DIR);
    let pause = crate::image::PAUSE;
    format!(
        r"version = 3
root = '{d}/containerd/root'
state = '{d}/containerd/state'
[grpc]
  address = '{d}/containerd/containerd.sock'
[ttrpc]
  address = '{d}/containerd/containerd.sock.ttrpc'
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause}'
  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE on this machine: negative OOM scores are refused to runc.
    restrict_oom_score_adj = true
    # Pod network namespaces under the node's state, not the host's /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{d}/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni}']
      conf_dir = '{d}/cni'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
  [plugins.'io.containerd.internal.v1.opt']
    path = '{d}/opt'
  # NRI's socket path is global: one per machine.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
",
        runc = runc.display(),
        cni = cni.display(),
    )
}

fn cni_config(node: &NodeSpec) -> String {
    let ipam = node_dir(node).join("ipam");
    format!(
        r#"{{ "cniVersion": "1.0.0", "name": "herald-lab",
  "plugins": [
    {{ "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {{ "type": "host-local", "dataDir": "{ipam}",
                "ranges": [[{{ "subnet": "{v4}" }}], [{{ "subnet": "{v6}" }}]],
                "routes": [{{ "dst": "0.0.0.0/0" }}, {{ "dst": "::/0" }}] }} }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }} ] }}
"#,
        ipam = ipam.display(),
        v4 = pod_v4(node),
        v6 = pod_v6(node),
    )
}

fn kubelet_config(node: &NodeSpec) -> String {
    let d = node_dir(node);
    format!(
        r"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
address: {v4}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {logs}
clusterDomain: cluster.local
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# A short lease (renewed every 2 s) and the control plane's 12 s grace period: a stopped kubelet
# makes its Node NotReady in seconds, not the default 40.
nodeLeaseDurationSeconds: 8
nodeStatusUpdateFrequency: 4s
resolvConf: {resolv}
",
        v4 = node.v4,
        sock = containerd_socket(node).display(),
        logs = d.join("podlogs").display(),
        resolv = nodes_dir().join("resolv.conf").display(),
    )
}

fn kube_proxy_config(node: &NodeSpec) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
mode: iptables
hostnameOverride: {name}
clusterCIDR: "{POD_CIDRS}"
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: ["{v4}/32"]
"#,
        kc = kubeconfig("kube-proxy").display(),
        name = node.name,
        v4 = node.v4,
    )
}

/// Stops every node: kubelet and kube-proxy, every container (SIGKILL through ctr), containerd
/// and its shims, the mount namespaces; then removes the fixed host paths the lab created.
pub fn stop_all() {
    if !nodes_dir().exists() {
        return;
    }
    for node in NODES {
        for name in ["kubelet", "proxy"] {
            procs::stop_recorded(&format!("{name}-{}", node.name));
        }
    }
    for node in NODES {
        if !containerd_socket(&node).exists() {
            continue;
        }
        let tasks = ctr(&node)
            .args(["tasks", "ls", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for task in tasks.lines().filter(|t| !t.trim().is_empty()) {
            let _ = ctr(&node)
                .args(["tasks", "kill", "-a", "-s", "SIGKILL", task.trim()])
                .output();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for node in NODES {
        procs::stop_recorded(&format!("containerd-{}", node.name));
        kill_shims(&node);
        procs::stop_recorded(&format!("mounts-{}", node.name));
    }
    remove_host_paths();
}

/// Processes whose command line `matches`, by pid.
fn processes(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            matches(&args).then_some(pid)
        })
        .collect()
}

/// The host pid of the `herald <subcommand>` container process running in `node`'s network
/// namespace (the speaker: hostNetwork), if one runs.
pub fn herald_in_node(node: &NodeSpec, subcommand: &str) -> Option<i32> {
    container_in_node(node, |args| {
        args.first().is_some_and(|a| a == "/herald") && args.get(1).is_some_and(|a| a == subcommand)
    })
}

/// The host pid of MetalLB's speaker container process (`/speaker`) in `node`'s network
/// namespace, if one runs.
pub fn metallb_speaker_in_node(node: &NodeSpec) -> Option<i32> {
    container_in_node(node, |args| args.first().is_some_and(|a| a == "/speaker"))
}

/// The first process in `node`'s network namespace whose command line `matches`.
fn container_in_node(node: &NodeSpec, matches: impl Fn(&[String]) -> bool) -> Option<i32> {
    use std::os::unix::fs::MetadataExt as _;
    let netns = fs::metadata(format!("/run/netns/{}", node.netns))
        .ok()?
        .ino();
    processes(|args| matches(args)).into_iter().find(|pid| {
        fs::read_link(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|l| l.to_string_lossy() == format!("net:[{netns}]"))
    })
}

/// What `node`'s speaker containers logged (every run the kubelet keeps), from the node's pod
/// log directory.
pub fn speaker_log(node: &NodeSpec) -> String {
    let mut text = String::new();
    let pods = fs::read_dir(node_dir(node).join("podlogs"));
    for pod in pods.into_iter().flatten().flatten() {
        if !pod
            .file_name()
            .to_string_lossy()
            .starts_with("metallb-system_speaker-")
        {
            continue;
        }
        let runs = fs::read_dir(pod.path().join("speaker"));
        for run in runs.into_iter().flatten().flatten() {
            text.push_str(&fs::read_to_string(run.path()).unwrap_or_default());
        }
    }
    text
}

/// `node`'s bpffs directory Herald's speaker pod pins under (`/sys/fs/bpf/herald` in the node's
/// mount namespace), as the host reaches it.
pub fn pin_dir_in_node(node: &NodeSpec) -> Option<PathBuf> {
    Some(PathBuf::from(format!(
        "/proc/{}/root/sys/fs/bpf/herald",
        holder(node)?
    )))
}

/// Shim processes of `node`'s containerd (found by its socket on their command line).
fn kill_shims(node: &NodeSpec) {
    let socket = containerd_socket(node).display().to_string();
    let shims = processes(|args| {
        args.first().is_some_and(|a| a.ends_with(kube::SHIM)) && args.iter().any(|a| a == &socket)
    });
    for pid in shims {
        // SAFETY: kill(2) on a shim of this lab's containerd.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn remove_host_paths() {
    let made = fs::read_to_string(nodes_dir().join("host-paths-made")).unwrap_or_default();
    // Deepest first; a path holding something the lab did not make stays.
    let mut made: Vec<&str> = made.lines().filter(|l| !l.is_empty()).collect();
    made.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in made {
        let _ = fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_subnets_are_distinct_per_node_and_inside_the_cluster_cidrs() {
        let v4: Vec<String> = NODES.iter().map(pod_v4).collect();
        let v6: Vec<String> = NODES.iter().map(pod_v6).collect();
        assert_eq!(v4, ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(
            v6,
            [
                "2001:db8:244:1::/64",
                "2001:db8:244:2::/64",
                "2001:db8:244:3::/64"
            ]
        );
        let cidrs: Vec<ipnet::IpNet> = POD_CIDRS.split(',').map(|c| c.parse().unwrap()).collect();
        for subnet in v4.iter().chain(&v6) {
            let net: ipnet::IpNet = subnet.parse().unwrap();
            assert!(cidrs.iter().any(|c| c.contains(&net)), "{subnet}");
        }
    }

    #[test]
    fn configs_name_the_node_and_its_own_directories() {
        let node = NODES[1];
        let containerd = containerd_config(&node);
        assert!(containerd.contains("restrict_oom_score_adj = true"));
        assert!(containerd.contains(&format!("sandbox = '{}'", crate::image::PAUSE)));
        assert!(containerd.contains("/nodes/node-b/containerd/containerd.sock"));
        let cni: serde_json::Value = serde_json::from_str(&cni_config(&node)).unwrap();
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.2.0/24"
        );
        let kubelet = kubelet_config(&node);
        assert!(kubelet.contains("address: 203.0.113.12\n"));
        assert!(kube_proxy_config(&node).contains("hostnameOverride: node-b\n"));
    }
}
