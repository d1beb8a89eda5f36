//! Herald as real pods on real nodes (`cargo xtask lab up --nodes real`): kubelet, containerd,
//! runc, CNI and kube-proxy in each node namespace, Herald installed from `manifests/` with
//! `kubectl apply -k` (the image built here is the only change), backends as real pods. What
//! the manifests promise is checked on the running containers, and the operations an admin does
//! are checked with a client probing the Service IP every 20 ms.
//!
//! Needs root and the builds `cargo xtask test` makes (the node runtime and the images too).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/lab/mod.rs"]
mod lab;

use std::collections::BTreeSet;
use std::time::Duration;

use lab::*;

const DEMO: (&str, &str) = ("default", "web");
const SYSTEM: &str = "metallb-system";

fn demo_v4() -> String {
    let mut ips = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            ips = service_ips(DEMO.0, DEMO.1);
            ips.len() == 2
        }),
        "default/web never got two addresses: {ips:?}"
    );
    ips.into_iter()
        .find(|ip| !ip.contains(':'))
        .expect("an IPv4 address")
}

/// The real lab, one test at a time: the demo Service's IPv4 address and the node elected for
/// it, once that node answers it.
fn announced() -> (std::sync::MutexGuard<'static, ()>, String, String) {
    let serial = serial();
    lab();
    let v4 = demo_v4();
    let winner = election_order(&v4, &NODES)[0].clone();
    assert!(wait_answered_by(&v4, &winner), "{v4} answered by {winner}");
    (serial, v4, winner)
}

/// The client's TCP connection through `ip` as `lab status` reports it (`ok`, `served_by`).
fn tcp_through(ip: &str) -> serde_json::Value {
    let status = status(true);
    status["services"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"].as_str() == Some(ip))
        .map(|a| a["tcp"].clone())
        .unwrap()
}

/// Whether `node`'s Ready condition is True.
fn node_ready(node: &str) -> bool {
    kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .trim()
        == "True"
}

/// `/proc/<pid>/status` field `key` (e.g. `CapEff`), trimmed.
fn proc_status(pid: i32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Capability bits of the names in `manifests/speaker.yaml`'s `add:` list.
fn manifest_capability_mask() -> u64 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/speaker.yaml");
    let text = std::fs::read_to_string(path).expect("speaker.yaml");
    let list = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("add:"))
        .expect("capabilities.add in speaker.yaml");
    let bit = |name: &str| match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("unknown capability {other} in speaker.yaml"),
    };
    list.trim_matches(|c| c == '[' || c == ']' || c == ' ')
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .filter(|c| !c.is_empty())
        .map(|c| 1u64 << bit(c))
        .sum()
}

/// The host pid of the controller container's process.
fn controller_pid() -> i32 {
    let mut pid = None;
    assert!(
        wait_until(DEADLINE, || {
            pid = herald_processes("controller").first().copied();
            pid.is_some()
        }),
        "no herald controller process"
    );
    pid.unwrap()
}

/// Host pids of `/herald <subcommand>` processes.
fn herald_processes(subcommand: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first() == Some(&&b"/herald"[..]) && args.get(1) == Some(&subcommand.as_bytes())
        })
        .collect()
}

/// Waits (up to 3 minutes) until `what` in `namespace` is rolled out.
fn rolled_out(namespace: &str, what: &str) {
    kubectl(&["-n", namespace, "rollout", "status", what, "--timeout=180s"]);
}

/// Rolls the speaker DaemonSet to `image` (returns once the change is accepted).
fn set_speaker_image(image: &str) {
    kubectl(&[
        "-n",
        SYSTEM,
        "set",
        "image",
        "daemonset/speaker",
        &format!("speaker={image}"),
    ]);
}

fn speaker_pod_on(node: &str) -> String {
    speaker_pods_on(node, "{.items[0].metadata.name}")
}

/// `jsonpath` over the speaker pods on `node`, trimmed.
fn speaker_pods_on(node: &str, jsonpath: &str) -> String {
    speaker_pods(
        &["--field-selector", &format!("spec.nodeName={node}")],
        jsonpath,
    )
}

/// `jsonpath` over the speaker pods that `filter` (more `kubectl get` arguments) selects, trimmed.
fn speaker_pods(filter: &[&str], jsonpath: &str) -> String {
    let jsonpath = format!("jsonpath={jsonpath}");
    let mut args = vec!["-n", SYSTEM, "get", "pods", "-l", "component=speaker"];
    args.extend_from_slice(filter);
    args.extend(["-o", &jsonpath]);
    kubectl(&args).trim().to_string()
}

/// The speaker container's effective capabilities are exactly the manifest's list, with
/// no_new_privs and seccomp; the controller runs as uid 65534 with no capabilities, a read-only
/// root, and reaches the API server through the `kubernetes` Service.
#[test]
fn the_pods_run_with_exactly_what_the_manifests_grant() {
    let _serial = serial();
    lab();
    let want = manifest_capability_mask();
    for node in NODES {
        let mut pid = None;
        assert!(
            wait_until(DEADLINE, || {
                pid = speaker_pid(node);
                pid.is_some()
            }),
            "no speaker process on {node}"
        );
        let pid = pid.unwrap();
        let eff = u64::from_str_radix(&proc_status(pid, "CapEff"), 16).unwrap();
        assert_eq!(eff, want, "{node}: CapEff {eff:x}, manifest {want:x}");
        assert_eq!(proc_status(pid, "NoNewPrivs"), "1", "{node}");
        assert_eq!(
            proc_status(pid, "Seccomp"),
            "2",
            "{node}: seccomp filter mode"
        );
    }
    let pid = controller_pid();
    assert!(
        proc_status(pid, "Uid").starts_with("65534\t"),
        "controller uid"
    );
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("root mount");
    assert!(
        root.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{root}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let cluster_ip = kubectl(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        environ.contains(&format!("KUBERNETES_SERVICE_HOST={}", cluster_ip.trim())),
        "the controller's in-cluster config points at the kubernetes Service"
    );
    // It reached the API server that way: the demo Service has its addresses.
    demo_v4();
}

/// On the nodes' veths the speakers attach in skb mode (driver-mode replies would be dropped
/// there), pin in each node's own bpffs, and say so: a Warning Event on the Node and a metric
/// scraped from the pod's port.
#[test]
fn speakers_attach_in_skb_mode_on_veth_and_say_why() {
    let _serial = serial();
    lab();
    let status = status(false);
    for node in status["nodes"].as_array().unwrap() {
        let attachments: Vec<String> = node["xdp_attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{}={}",
                    a["iface"].as_str().unwrap_or("?"),
                    a["mode"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert!(
            attachments.contains(&"eth0=skb".to_string()),
            "{}: {attachments:?}",
            node["name"]
        );
    }
    let events = kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=xdpModeChanged",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}",
    ]);
    let nodes: BTreeSet<&str> = events.lines().collect();
    assert_eq!(nodes, NODES.iter().copied().collect(), "{events}");
    // A speaker that finds the link pinned keeps it and has nothing to report; one attaching
    // afresh counts it. Detach node-c's eth0 link: its speaker's next interface scan attaches
    // it again, and its counter (scraped from the pod's port) goes up by one.
    let changes = || {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", "http://203.0.113.13:7472/metrics"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let count = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "herald_xdp_mode_changes_total{iface=\"eth0\",mode=\"skb\",reason=\"veth\"} ",
                )
            })
            .map_or(0, |v| v.trim().parse::<u64>().unwrap_or(0));
        (count, text.contains("herald_dataplane_mode{iface=\"eth0\""))
    };
    assert!(
        wait_until(DEADLINE, || changes().1),
        "node-c's speaker exports its metrics"
    );
    let speaker = speaker_pid("node-c");
    let before = changes().0;
    let pins = format!("/proc/{}/root/sys/fs/bpf/herald", mount_holder("node-c"));
    let detach = std::process::Command::new("nsenter")
        .args(["--net=/run/netns/hl-node-c", "--"])
        .arg(herald_bin())
        .args(["xdp", "--pin-dir", &pins, "detach", "--iface", "eth0"])
        .output()
        .expect("herald xdp detach");
    assert!(detach.status.success(), "{detach:?}");
    assert!(
        wait_until(DEADLINE, || changes().0 == before + 1),
        "the re-attach is counted once: {} after {before}",
        changes().0
    );
    assert_eq!(
        speaker_pid("node-c"),
        speaker,
        "the same speaker re-attached"
    );
}

/// The pid holding `node`'s mount namespace (its `sleep infinity`), from the lab's records.
fn mount_holder(node: &str) -> i32 {
    let pids = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab/run/pids"),
    )
    .expect("the lab's pid file");
    pids.lines()
        .find_map(|l| l.strip_prefix(&format!("mounts-{node} ")))
        .and_then(|p| p.trim().parse().ok())
        .expect("a mount-namespace holder")
}

fn herald_bin() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/herald")
}

/// The elected node answers ARP for the Service, and a TCP connection through the address
/// reaches a real pod.
#[test]
fn the_elected_node_answers_and_traffic_reaches_real_pods() {
    let (_serial, v4, winner) = announced();
    let probe = probe_arp(&v4, 50, 20);
    assert_eq!(probe.by_node.keys().collect::<Vec<_>>(), vec![&winner]);
    assert!(probe.unanswered.is_empty(), "{:?}", probe.unanswered);
    let tcp = tcp_through(&v4);
    assert_eq!(tcp["ok"], true, "{tcp}");
    let backend = tcp["served_by"].as_str().unwrap_or_default();
    assert!(
        NODES.contains(&backend),
        "served by a pod on a lab node: {backend:?}"
    );
}

/// `kubectl delete pod` of the announcing speaker: the address stays answered all along (the
/// old pod withdraws and another node takes over, or the new pod reuses the pinned maps).
#[test]
fn deleting_the_announcing_speaker_pod_leaves_no_probe_unanswered() {
    let (_serial, v4, winner) = announced();
    let pod = speaker_pod_on(&winner);
    let probe = OpenProbe::start(&v4, 50, 20);
    std::thread::sleep(Duration::from_secs(1));
    kubectl(&["-n", SYSTEM, "delete", "pod", &pod, "--wait=true"]);
    let (probe, covered) = probe.finish();
    assert!(covered, "the probe ended before the pod's deletion did");
    eprintln!("answers during the pod's deletion: {:?}", probe.by_node);
    assert!(
        probe.unanswered.is_empty(),
        "unanswered rounds: {:?}",
        probe.unanswered
    );
    rolled_out(SYSTEM, "daemonset/speaker");
    assert!(wait_answered_by(&v4, &winner), "{winner} answers again");
}

/// Deleting the controller pod changes no Service's address.
#[test]
fn deleting_the_controller_pod_keeps_every_address() {
    let _serial = serial();
    lab();
    demo_v4();
    let before = service_ips(DEMO.0, DEMO.1);
    kubectl(&[
        "-n",
        SYSTEM,
        "delete",
        "pod",
        "-l",
        "component=controller",
        "--wait=true",
    ]);
    rolled_out(SYSTEM, "deployment/controller");
    // A change the new controller must act on: a second Service gets an address, the first
    // keeps its own.
    apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-two\n  namespace: default\nspec:\n  type: LoadBalancer\n  selector:\n    app: web\n  ports:\n    - port: 8081\n      targetPort: 8080\n",
    );
    assert!(
        wait_until(DEADLINE, || !service_ips("default", "web-two").is_empty()),
        "the new controller allocates"
    );
    assert_eq!(service_ips(DEMO.0, DEMO.1), before);
    kubectl(&["-n", "default", "delete", "service", "web-two"]);
}

/// A rolling update of the speaker DaemonSet to a new image tag: every speaker pod is replaced,
/// and the Service address is answered all along.
#[test]
fn a_speaker_rollout_to_a_new_image_leaves_no_probe_unanswered() {
    let (_serial, v4, _winner) = announced();
    let tag = format!("rollout-{}", std::process::id());
    let out = xtask_lab(&["import-image", "--tag", &tag]);
    // The reference is the last line (the build steps print before it).
    let image = out.lines().last().unwrap_or_default().trim();
    // Probed until the rollout (three pods, one at a time) has ended.
    let probe = OpenProbe::start(&v4, 50, 20);
    set_speaker_image(image);
    rolled_out(SYSTEM, "daemonset/speaker");
    let images = kubectl(&[
        "-n",
        SYSTEM,
        "get",
        "pods",
        "-l",
        "component=speaker",
        "-o",
        "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}",
    ]);
    let (probe, covered) = probe.finish();
    eprintln!(
        "rollout: {} rounds, answers {:?}",
        probe.rounds, probe.by_node
    );
    assert!(covered, "the probe ended before the rollout did");
    assert_eq!(
        images.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from([image]),
        "every speaker runs the new image"
    );
    assert!(
        probe.unanswered.is_empty(),
        "unanswered rounds: {:?}",
        probe.unanswered
    );
    // A speaker stopped gracefully leaves the gossip, then answers one more probe period while
    // the next node takes over (make before break): some rounds see both.
    eprintln!(
        "rounds answered by two nodes during hand-overs: {}",
        probe.several
    );
}

/// `kubectl drain` of the announcing node evicts its backend; its speaker (a DaemonSet pod)
/// stays and keeps announcing, as MetalLB's does (cordoning does not exclude a node from
/// announcing), and the traffic reaches the pods left on the other nodes.
#[test]
fn draining_the_announcing_node_keeps_the_address_answered() {
    let (_serial, v4, winner) = announced();
    // Probed until the drain has returned, however long its evictions take.
    let probe = OpenProbe::start(&v4, 50, 20);
    kubectl(&[
        "drain",
        &winner,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    let (probe, covered) = probe.finish();
    eprintln!("drain: {} rounds", probe.rounds);
    assert!(covered, "the probe ended before the drain did");
    assert!(probe.unanswered.is_empty(), "{:?}", probe.unanswered);
    assert_eq!(probe.by_node.keys().collect::<Vec<_>>(), vec![&winner]);
    let tcp = tcp_through(&v4);
    assert_eq!(tcp["ok"], true, "{tcp}");
    assert_ne!(
        tcp["served_by"].as_str(),
        Some(winner.as_str()),
        "no backend left there"
    );
    kubectl(&["uncordon", &winner]);
    kubectl(&["-n", "default", "rollout", "restart", "deployment/web"]);
    rolled_out("default", "deployment/web");
}

/// The announcing node's kubelet stops (its Node goes NotReady; its speaker, still running,
/// keeps answering), then its link is cut: another node answers, and the time it took is
/// printed.
#[test]
fn a_node_with_its_kubelet_stopped_and_its_link_cut_is_replaced() {
    let (_serial, v4, winner) = announced();
    xtask_lab(&["kubelet", &winner]);
    let not_ready = wait_until(DEADLINE, || !node_ready(&winner));
    let still = probe_arp(&v4, 10, 20);
    // The cable is cut at the switch: the node sees its carrier go, its routes stay.
    set_switch_port(&winner, false);
    let cut = std::time::Instant::now();
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != winner).collect();
    let replaced = wait_until(DEADLINE, || {
        let p = probe_arp(&v4, 1, 20);
        p.by_node.keys().any(|n| others.contains(&n.as_str()))
    });
    let took = cut.elapsed();
    set_switch_port(&winner, true);
    xtask_lab(&["kubelet", &winner, "--resume"]);
    eprintln!("another node answered {took:?} after the link cut");
    assert!(not_ready, "{winner} went NotReady with its kubelet stopped");
    assert_eq!(
        still.by_node.get(&winner),
        Some(&10),
        "the speaker answers while its kubelet is stopped"
    );
    assert!(replaced, "another node answers {v4}");
    assert!(wait_until(DEADLINE, || node_ready(&winner)));
    assert!(wait_answered_by(&v4, &winner), "{winner} answers again");
}

/// The waiting reason of `node`'s speaker container (e.g. `ErrImagePull`), if it waits.
fn speaker_waiting_reason(node: &str) -> String {
    speaker_pods_on(
        node,
        "{.items[*].status.containerStatuses[0].state.waiting.reason}",
    )
}

/// The messages of the Events on `pod` in the speakers' namespace (of `reason` only, if given).
fn pod_events(pod: &str, reason: Option<&str>) -> String {
    let mut selector = format!("involvedObject.name={pod}");
    if let Some(reason) = reason {
        selector.push_str(&format!(",reason={reason}"));
    }
    kubectl(&[
        "-n",
        SYSTEM,
        "get",
        "events",
        "--field-selector",
        &selector,
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ])
}

/// Whether `others` alone answer `v4` (every probe round, within the deadline), and the nodes
/// whose maps then hold `v4` with a live guard.
fn others_answer(v4: &str, others: &[&str]) -> (bool, Vec<String>) {
    let answered = wait_until(DEADLINE, || {
        let p = probe_arp(v4, 10, 20);
        p.unanswered.is_empty() && p.by_node.keys().all(|n| others.contains(&n.as_str()))
    });
    (answered, xdp_announcers(v4))
}

/// While `winner`'s speaker was out the other nodes answered `v4` (`answered`) and `winner`
/// held no live answer (`stale`: nodes with one); after the repair (`when`) it answers again.
fn covered_then_healed(v4: &str, winner: &str, answered: bool, stale: &[String], when: &str) {
    assert!(
        answered,
        "the other nodes answer {v4} while {winner}'s speaker is out"
    );
    assert!(
        !stale.iter().any(|n| n == winner),
        "{winner} answers nothing stale: {stale:?}"
    );
    assert!(
        wait_answered_by(v4, winner),
        "{winner} answers {v4} again {when}"
    );
}

/// A new speaker image that one node lacks (and cannot pull): that node's new pod stays
/// waiting and its Events say why; the node's old speaker withdrew on its way out, so it never
/// answers a stale address, and the other nodes keep the Service answered. Rolling back heals it.
#[test]
fn an_image_missing_on_one_node_leaves_the_others_answering() {
    let (_serial, v4, winner) = announced();
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != winner).collect();
    let tag = format!("partial-{}", std::process::id());
    let out = xtask_lab(&["import-image", "--tag", &tag, "--nodes", &others.join(",")]);
    let image = out.lines().last().unwrap_or_default().trim().to_string();
    set_speaker_image(&image);
    let stuck = wait_until(Duration::from_secs(180), || {
        let reason = speaker_waiting_reason(&winner);
        reason.contains("ImagePull") || reason.contains("ErrImage")
    });
    let reason = speaker_waiting_reason(&winner);
    let events = pod_events(&speaker_pod_on(&winner), None);
    let (answered, stale) = others_answer(&v4, &others);
    // Withdrawn from its maps, not merely silenced by its guard.
    let (holders, unread) = xdp_holders(&v4);
    kubectl(&["-n", SYSTEM, "rollout", "undo", "daemonset/speaker"]);
    rolled_out(SYSTEM, "daemonset/speaker");
    assert!(
        stuck,
        "{winner}'s new speaker waits for its image: {reason:?}"
    );
    assert!(
        events.contains(&image),
        "the pod's Events name the image: {events}"
    );
    assert!(
        !unread.contains(&winner) && !holders.contains(&winner),
        "{winner}'s old speaker withdrew {v4} on its way out: held by {holders:?}, maps unread on {unread:?}"
    );
    covered_then_healed(&v4, &winner, answered, &stale, "after the rollback");
}

/// A foreign XDP program, as another tool would attach it: LLVM IR compiled by `llc`, loaded
/// by iproute2 in generic mode. It passes every packet.
fn foreign_xdp_object() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-foreign-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ir = dir.join("pass.ll");
    std::fs::write(
        &ir,
        "target triple = \"bpf\"\n\
         @_license = global [4 x i8] c\"GPL\\00\", section \"license\", align 1\n\
         define i32 @pass(i8* %ctx) section \"xdp\" {\n  ret i32 2\n}\n",
    )
    .unwrap();
    let object = dir.join("pass.o");
    let out = std::process::Command::new("llc")
        .args(["-march=bpf", "-filetype=obj", "-o"])
        .arg(&object)
        .arg(&ir)
        .output()
        .expect("llc");
    assert!(
        out.status.success(),
        "llc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    object
}

/// Runs `script` with `sh` in `node`'s network and mount namespaces (its bpffs).
fn in_node(node: &str, script: &str) -> std::process::Output {
    std::process::Command::new("nsenter")
        .args([
            &format!("--mount=/proc/{}/ns/mnt", mount_holder(node)),
            &format!("--net=/run/netns/hl-{node}"),
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("nsenter")
}

/// Another XDP program takes the announcing node's interfaces from Herald (its links detached,
/// the foreign program attached in their place): the speaker cannot attach, says why in its log
/// and an Event on its Pod, and stops — the kubelet's restarts end in CrashLoopBackOff — so the
/// other nodes are elected and answer, and nothing stale answers on the failing node. Freeing
/// the interface heals it.
#[test]
fn a_speaker_that_cannot_attach_stops_and_the_others_answer() {
    let (_serial, v4, winner) = announced();
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != winner).collect();
    let object = foreign_xdp_object();
    // Both interfaces the speaker answers on (the uplink and the direct link). It re-attaches
    // a detached link on its next scan: retry until the foreign program got in between.
    let take = format!(
        "for dev in eth0 eth1; do \
           for i in 1 2 3 4 5; do \
             for l in /sys/fs/bpf/herald/link_*_$dev; do [ -e \"$l\" ] && bpftool link detach pinned \"$l\"; done; \
             ip link set dev $dev xdpgeneric obj {} sec xdp && continue 2; sleep 0.2; \
           done; exit 1; \
         done",
        object.display()
    );
    let taken = in_node(&winner, &take);
    let pod = speaker_pod_on(&winner);
    let crash_looping = wait_until(Duration::from_secs(120), || {
        speaker_waiting_reason(&winner) == "CrashLoopBackOff"
    });
    let exit_code = speaker_pods_on(
        &winner,
        "{.items[*].status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    let events = pod_events(&pod, Some("cannotAnswer"));
    let log = try_kubectl(&["-n", SYSTEM, "logs", &pod, "--previous"]).unwrap_or_else(|e| e);
    let (answered, stale) = others_answer(&v4, &others);
    // Free the interface; a fresh pod skips the back-off.
    let freed = in_node(
        &winner,
        "ip link set dev eth0 xdpgeneric off && ip link set dev eth1 xdpgeneric off",
    );
    kubectl(&["-n", SYSTEM, "delete", "pod", &pod, "--wait=true"]);
    rolled_out(SYSTEM, "daemonset/speaker");
    let _ = std::fs::remove_dir_all(object.parent().unwrap());
    assert!(
        taken.status.success(),
        "the foreign program took eth0 on {winner}: {}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(freed.status.success(), "the foreign program came off");
    assert!(
        crash_looping,
        "{winner}'s speaker crash-loops: {:?}",
        speaker_waiting_reason(&winner)
    );
    assert_eq!(exit_code, "1", "the speaker exits with an error");
    assert!(
        events.contains("no interface on node")
            && events.contains("eth0: ")
            && events.contains("eth1: ")
            && events.contains("busy"),
        "an Event on the Pod says why: {events:?}"
    );
    assert!(
        log.contains("no interface on node"),
        "the log says why: {log}"
    );
    covered_then_healed(&v4, &winner, answered, &stale, "once the interface is free");
}

/// The images of the speaker pods (one per node).
fn speaker_images() -> Vec<String> {
    speaker_pods(&[], "{.items[*].spec.containers[0].image}")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A drop-in both ways: MetalLB v0.15.2's own manifest applied over Herald's install rolls
/// the nodes over to MetalLB's speakers, which answer the same Service from the same
/// configuration objects — from the same node, as both elect alike — with no Herald XDP
/// program left on any node; Herald's manifests applied back take over again.
#[test]
fn metallb_and_herald_replace_each_other_from_their_own_manifests() {
    let (_serial, v4, winner) = announced();
    xtask_lab(&["switch", "metallb"]);
    let metallb_images = speaker_images();
    let metallb_answers = wait_until(DEADLINE, || {
        let p = probe_arp(&v4, 10, 20);
        p.unanswered.is_empty() && p.by_node.keys().collect::<Vec<_>>() == [&winner]
    });
    let nodes = status(false)["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let attached: Vec<serde_json::Value> = nodes
        .iter()
        .flat_map(|n| n["xdp_attachments"].as_array().cloned().unwrap_or_default())
        .collect();
    // The kernel's own view of every node's interfaces, not only Herald's pins: no XDP
    // program on any of them (the lab attaches none of its own).
    let links: Vec<(String, String)> = nodes
        .iter()
        .filter_map(|n| n["netns"].as_str())
        .map(|ns| {
            let out = std::process::Command::new("ip")
                .args(["-n", ns, "link", "show"])
                .output()
                .expect("ip link");
            (
                ns.to_string(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect();
    xtask_lab(&["switch", "herald"]);
    assert_eq!(
        links.len(),
        NODES.len(),
        "every node's links read: {links:?}"
    );
    for (ns, text) in &links {
        assert!(text.contains("lo:"), "{ns}: no links listed: {text}");
        assert!(
            !text.contains("prog/xdp"),
            "{ns}: an XDP program is left under MetalLB: {text}"
        );
    }
    assert_eq!(
        metallb_images, ["localhost/metallb/speaker:v0.15.2"; 3],
        "MetalLB's speakers run"
    );
    assert!(
        metallb_answers,
        "MetalLB's speaker on {winner} answers {v4}"
    );
    assert!(
        attached.is_empty(),
        "Herald's XDP left behind: {attached:?}"
    );
    assert!(
        speaker_images()
            .iter()
            .all(|i| i.starts_with("localhost/herald:")),
        "Herald's speakers are back: {:?}",
        speaker_images()
    );
    assert!(wait_answered_by(&v4, &winner), "Herald answers {v4} again");
}

/// The announcing node's containerd dies: its containers keep running under their shims, so
/// the speaker keeps answering; containerd started again, the node carries on.
#[test]
fn a_node_whose_containerd_dies_keeps_the_address_answered() {
    let (_serial, v4, winner) = announced();
    let pid = speaker_pid(&winner);
    xtask_lab(&["containerd", &winner]);
    let probe = probe_arp(&v4, 250, 20);
    let same = speaker_pid(&winner);
    xtask_lab(&["containerd", &winner, "--start"]);
    assert!(probe.unanswered.is_empty(), "{:?}", probe.unanswered);
    assert_eq!(same, pid, "the speaker container outlives containerd");
    assert!(wait_until(DEADLINE, || node_ready(&winner)));
    rolled_out(SYSTEM, "daemonset/speaker");
    assert!(wait_answered_by(&v4, &winner));
}
