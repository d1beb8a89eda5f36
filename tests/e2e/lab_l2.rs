//! Layer 2 behaviour in the lab: real kube-apiserver, kube-controller-manager,
//! `herald controller` and three `herald speaker`s with XDP in node namespaces; a client namespace
//! resolves LoadBalancer IPs with ARP (raw probes) and NDP (ndisc6). Needs root and the builds
//! `cargo xtask test` makes (eBPF object, herald, xtask, the Kubernetes binaries).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/lab/mod.rs"]
mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use lab::*;

const DEMO: (&str, &str) = ("default", "web");

fn demo_ips() -> Vec<String> {
    let mut ips = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            ips = service_ips(DEMO.0, DEMO.1);
            ips.len() == 2
        }),
        "default/web never got an IPv4 and an IPv6 address: {ips:?}"
    );
    ips
}

fn only(node: &str, count: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(node.to_string(), count)])
}

/// Both families of a dual-stack Service are answered by one node — the first of the election
/// order for the first status address — in the XDP maps, over ARP and NDP, and in ServiceL2Status.
#[test]
fn ipv4_and_ipv6_answered_by_exactly_the_elected_node() {
    let _serial = serial();
    lab();
    let ips = demo_ips();
    let winner = election_order(&ips[0], &NODES)[0].clone();
    let (v4, v6) = if ips[0].contains(':') {
        (ips[1].clone(), ips[0].clone())
    } else {
        (ips[0].clone(), ips[1].clone())
    };
    for ip in [&v4, &v6] {
        assert!(
            wait_until(DEADLINE, || xdp_announcers(ip) == vec![winner.clone()]),
            "XDP maps: {ip} should be announced by {winner} only, got {:?}",
            xdp_announcers(ip)
        );
    }
    let probe = probe_arp(&v4, 50, 20);
    assert_eq!(probe.by_node, only(&winner, 50), "ARP answers for {v4}");
    assert_eq!(probe.several, 0, "rounds answered by several MACs");
    assert!(
        probe.unanswered.is_empty(),
        "unanswered: {:?}",
        probe.unanswered
    );

    assert!(
        wait_until(DEADLINE, || ndp_macs(&v6) == vec![node_mac(&winner)]),
        "NDP answers for {v6}: {:?}, expected only {winner} ({})",
        ndp_macs(&v6),
        node_mac(&winner)
    );

    // The speakers write ServiceL2Status in the background: wait for exactly the winner's.
    let l2_nodes = || {
        kubectl(&[
            "get",
            "servicel2statuses",
            "-n",
            "metallb-system",
            "-o",
            "jsonpath={range .items[?(@.status.serviceName==\"web\")]}{.status.node}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    assert!(
        wait_until(DEADLINE, || l2_nodes() == vec![winner.clone()]),
        "ServiceL2Status for web should name {winner} only: {:?}",
        l2_nodes()
    );

    // Through the IP to a backend (the lab's kube-proxy puts the IP on the winner's lo).
    let status = status(true);
    let web = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["service"] == "default/web")
        .expect("default/web in status");
    for a in web["addresses"].as_array().into_iter().flatten() {
        assert_eq!(
            a["tcp"]["ok"], true,
            "TCP through {}: {}",
            a["ip"], a["tcp"]
        );
        assert_eq!(a["tcp"]["served_by"], winner.as_str());
    }
}

const LOCAL_YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: local-web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: local-web}
  template:
    metadata:
      labels: {app: local-web}
    spec:
      containers:
        - name: web
          image: herald-lab/backend
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: local-web
  namespace: default
  annotations:
    metallb.io/loadBalancerIPs: "IP"
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: local-web}
  ports: [{port: 8080, targetPort: 8080}]
"#;

fn pod_on(label: &str, node: &str) -> String {
    let out = kubectl(&[
        "-n",
        "default",
        "get",
        "pods",
        "-l",
        label,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
    ]);
    out.lines()
        .find_map(|l| {
            let (pod, n) = l.split_once(' ')?;
            (n == node).then(|| pod.to_string())
        })
        .unwrap_or_else(|| panic!("no {label} pod on {node}: {out}"))
}

fn delete_local() {
    let _ = try_kubectl(&[
        "-n",
        "default",
        "delete",
        "service,deployment",
        "local-web",
        "--wait=true",
    ]);
}

/// externalTrafficPolicy Local: only nodes with a ready endpoint are candidates, so when the
/// elected node's pod stops being ready the IP moves to the next node in order that has one.
#[test]
fn local_policy_moves_the_ip_to_a_node_with_ready_endpoints() {
    let _serial = serial();
    lab();
    delete_local();
    let ip = ip_where_first("node-a");
    let order = election_order(&ip, &NODES);
    apply(&LOCAL_YAML.replace("\"IP\"", &format!("\"{ip}\"")));
    assert!(
        wait_until(DEADLINE, || service_ips("default", "local-web")
            == vec![ip.clone()]),
        "local-web never got {ip}"
    );
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip) == vec![order[0].clone()]),
        "with ready pods everywhere {} should announce {ip}: {:?}",
        order[0],
        xdp_announcers(&ip)
    );
    assert!(wait_answered_by(&ip, &order[0]));

    // The first node's pod fails its readiness probe: the IP moves to the second.
    let pod = pod_on("app=local-web", &order[0]);
    kubectl(&[
        "-n",
        "default",
        "annotate",
        "pod",
        &pod,
        "lab.herald.dev/ready=false",
        "--overwrite",
    ]);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip) == vec![order[1].clone()]),
        "without a ready endpoint on {}, {} should announce {ip}: {:?}",
        order[0],
        order[1],
        xdp_announcers(&ip)
    );
    assert!(
        wait_answered_by(&ip, &order[1]),
        "ARP for {ip} not answered by {} alone",
        order[1]
    );

    // And the second's too: only the third has a ready endpoint left.
    let pod = pod_on("app=local-web", &order[1]);
    kubectl(&[
        "-n",
        "default",
        "annotate",
        "pod",
        &pod,
        "lab.herald.dev/ready=false",
        "--overwrite",
    ]);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip) == vec![order[2].clone()]),
        "only {} has a ready endpoint: {:?}",
        order[2],
        xdp_announcers(&ip)
    );
    let probe = probe_arp(&ip, 30, 20);
    assert_eq!(probe.by_node, only(&order[2], 30));

    // No ready endpoint anywhere: nobody announces, and the kernels stay silent although every
    // node holds the IP on its `lo` (the lab's kube-proxy; arp_ignore=1) — only Herald answers.
    let pod = pod_on("app=local-web", &order[2]);
    kubectl(&[
        "-n",
        "default",
        "annotate",
        "pod",
        &pod,
        "lab.herald.dev/ready=false",
        "--overwrite",
    ]);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip).is_empty()),
        "without ready endpoints nobody should announce {ip}: {:?}",
        xdp_announcers(&ip)
    );
    for node in NODES {
        let lo = std::process::Command::new("ip")
            .args(["-n", &format!("hl-{node}"), "addr", "show", "dev", "lo"])
            .output()
            .expect("ip addr");
        assert!(
            String::from_utf8_lossy(&lo.stdout).contains(&format!("{ip}/32")),
            "{ip} should be on {node}'s lo"
        );
    }
    let probe = probe_arp(&ip, 30, 20);
    assert!(
        probe.by_node.is_empty(),
        "someone answered {ip}: {:?}",
        probe.by_node
    );
    assert_eq!(probe.unanswered.len(), 30);
    delete_local();
}

const EXCLUDED_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: excluded-test
  namespace: default
  annotations:
    metallb.io/loadBalancerIPs: "IP"
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080}]
"#;

/// A node labelled node.kubernetes.io/exclude-from-external-load-balancers never answers, even
/// for an IP it would otherwise win.
#[test]
fn excluded_node_never_answers() {
    let _serial = serial();
    lab();
    let excluded = "node-b";
    let ip = ip_where_first(excluded);
    let order = election_order(&ip, &NODES);
    let delete_service = || {
        let _ = try_kubectl(&[
            "-n",
            "default",
            "delete",
            "service",
            "excluded-test",
            "--wait=true",
        ]);
    };
    delete_service();
    kubectl(&[
        "label",
        "node",
        excluded,
        &format!("{EXCLUDE_LABEL}=true"),
        "--overwrite",
    ]);
    // Whatever happens below, the node loses the label again and the Service goes: the other
    // lab tests expect all three nodes eligible.
    let _restore = Restore(|| {
        let _ = try_kubectl(&["label", "node", excluded, &format!("{EXCLUDE_LABEL}-")]);
        delete_service();
    });
    apply(&EXCLUDED_YAML.replace("\"IP\"", &format!("\"{ip}\"")));
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip) == vec![order[1].clone()]),
        "{ip}: {} is excluded, {} should announce: {:?}",
        order[0],
        order[1],
        xdp_announcers(&ip)
    );
    let probe = probe_arp(&ip, 100, 20);
    assert_eq!(probe.by_node, only(&order[1], 100), "ARP answers for {ip}");
    assert!(!xdp_announcers(&ip).contains(&excluded.to_string()));

    // Without the label the node wins again (the test restores the node as it found it).
    kubectl(&["label", "node", excluded, &format!("{EXCLUDE_LABEL}-")]);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip)
            == vec![excluded.to_string()]),
        "unlabelled, {excluded} should announce {ip} again: {:?}",
        xdp_announcers(&ip)
    );
    // `_restore` deletes the Service.
}

/// Runs its closure when dropped, also when the test panics (restores shared lab state).
struct Restore<F: FnMut()>(F);

impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// After the announcer's speaker dies, and separately after its link goes down, exactly one node
/// answers: the next in election order; the repaired node takes the IP back, and again only one
/// node answers.
#[test]
fn after_failover_exactly_one_node_answers() {
    let _serial = serial();
    lab();
    let ips = demo_ips();
    let v4 = ips.iter().find(|i| !i.contains(':')).expect("IPv4").clone();
    let order = election_order(&ips[0], &NODES);
    let (first, second) = (order[0].clone(), order[1].clone());
    assert!(
        wait_answered_by(&v4, &first),
        "{first} should answer {v4} before the fault"
    );

    // Speaker crash.
    let pid = speaker_pid(&first).expect("speaker running");
    signal(pid, libc::SIGKILL);
    assert!(
        wait_answered_by(&v4, &second),
        "{second} never took over {v4} after the crash"
    );
    let probe = probe_arp(&v4, 50, 20);
    assert_eq!(probe.by_node, only(&second, 50), "after the crash");
    assert_eq!(probe.several, 0);
    assert_eq!(xdp_announcers(&v4), vec![second.clone()]);
    restart_speaker(&first);
    assert!(
        wait_answered_by(&v4, &first),
        "{first} never took {v4} back after restarting"
    );
    let probe = probe_arp(&v4, 50, 20);
    assert_eq!(probe.by_node, only(&first, 50), "after the restart");

    // Link down.
    set_link(&first, false);
    let took_over = wait_answered_by(&v4, &second);
    let probe = probe_arp(&v4, 50, 20);
    set_link(&first, true);
    assert!(
        took_over,
        "{second} never took over {v4} after {first}'s link went down"
    );
    assert_eq!(probe.by_node, only(&second, 50), "during the link outage");
    assert_eq!(probe.several, 0);
    // Repaired: one announcer again (no split brain once the partition heals).
    assert!(
        wait_until(DEADLINE, || {
            let p = probe_arp(&v4, 25, 20);
            p.by_node.len() == 1 && p.several == 0 && p.unanswered.is_empty()
        }),
        "after the link came back, not exactly one node answers {v4}"
    );
    assert!(
        wait_answered_by(&v4, &first),
        "{first} never took {v4} back after its link returned"
    );
}

/// Restarts of the announcing node's speaker while the client sends an ARP request every 20 ms.
/// Neither leaves a request unanswered:
/// - graceful (SIGTERM then start, as in a rolling upgrade): the peers take over at once on
///   leave, and the hand-back overlaps;
/// - crash (SIGKILL, restarted by a supervisor at once): the pinned maps keep answering and the
///   new process refreshes the guard before its budget `B` runs out. (A crash whose restart takes
///   longer than `B` is a failover: the guard silences the node before a survivor may take over,
///   which `after_failover_exactly_one_node_answers` and `cargo xtask bench failover` cover.)
#[test]
fn speaker_restart_leaves_no_arp_unanswered() {
    let _serial = serial();
    lab();
    let ips = demo_ips();
    let v4 = ips.iter().find(|i| !i.contains(':')).expect("IPv4").clone();
    let first = election_order(&ips[0], &NODES)[0].clone();
    let mut failures = Vec::new();
    for (kind, sig) in [("crash", libc::SIGKILL), ("graceful", libc::SIGTERM)] {
        assert!(
            wait_answered_by(&v4, &first),
            "{first} should answer {v4} before the {kind} restart"
        );
        let probe = start_probe(&v4, 300, 20);
        std::thread::sleep(Duration::from_secs(1));
        let pid = speaker_pid(&first).expect("speaker running");
        signal(pid, sig);
        assert!(
            wait_exit(pid, Duration::from_secs(20)),
            "speaker {pid} did not exit on signal {sig}"
        );
        restart_speaker(&first);
        let result = finish_probe(probe);
        assert_eq!(result.rounds, 300);
        eprintln!(
            "{kind} restart: unanswered 20 ms rounds {:?}, answers {:?}",
            result.unanswered, result.by_node
        );
        if !result.unanswered.is_empty() {
            failures.push(format!(
                "{kind} restart: unanswered 20 ms rounds {:?} (answers {:?})",
                result.unanswered, result.by_node
            ));
        }
    }
    assert!(wait_answered_by(&v4, &first));
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// The speakers run as system:serviceaccount:metallb-system:speaker, the cluster enforces exactly
/// the ClusterRole in manifests/rbac-speaker.yaml, and what they need works under it.
#[test]
fn speakers_authenticate_as_the_speaker_service_account() {
    let _serial = serial();
    lab();
    let who = kubectl_as(
        "speaker",
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .expect("whoami as speaker");
    assert_eq!(who, "system:serviceaccount:metallb-system:speaker");

    for node in NODES {
        let pid = speaker_pid(node).unwrap_or_else(|| panic!("speaker on {node} not running"));
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(
            cmdline.contains("speaker.kubeconfig"),
            "{node}'s speaker does not use the speaker kubeconfig: {cmdline:?}"
        );
    }

    // The rules in force are those of manifests/rbac-speaker.yaml.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac-speaker.yaml"),
    )
    .expect("manifests/rbac-speaker.yaml");
    let docs: Vec<serde_json::Value> = manifest
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str(doc).ok())
        .collect();
    let shipped = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole in rbac-speaker.yaml");
    let name = shipped["metadata"]["name"].as_str().expect("name");
    let live: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "clusterrole", name, "-o", "json"])).expect("json");
    assert_eq!(
        live["rules"], shipped["rules"],
        "ClusterRole {name} differs from the manifest"
    );

    // Allowed: its own ServiceL2Status objects; refused: anything the manifest does not grant.
    let can = |args: &[&str]| can_i("speaker", args);
    assert_eq!(
        can(&[
            "create",
            "servicel2statuses.metallb.io",
            "-n",
            "metallb-system"
        ]),
        "yes"
    );
    assert_eq!(can(&["update", "services/status", "-n", "default"]), "no");
    assert_eq!(can(&["create", "pods", "-n", "metallb-system"]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "kube-system"]), "no");

    // Under these rules the speakers did their job: ServiceL2Status for web (written in the
    // background, so waited for), no 403 in their logs.
    assert!(
        wait_until(DEADLINE, || !kubectl(&[
            "get",
            "servicel2statuses",
            "-n",
            "metallb-system",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()),
        "no ServiceL2Status written by the speakers"
    );
    for node in NODES {
        let log = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../target/lab/run/speaker-{node}.log")),
        )
        .unwrap_or_default();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "{node}'s speaker was refused something: {}",
            log.lines()
                .find(|l| l.to_lowercase().contains("forbidden"))
                .unwrap_or("")
        );
    }
}
