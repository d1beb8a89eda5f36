//! Layer 2 behaviour in the lab on real nodes: kube-apiserver, kube-controller-manager,
//! kube-scheduler, and kubelet + containerd + kube-proxy in three node namespaces, Herald's
//! controller and speakers as pods from its manifests, backends as real pods; a client namespace
//! resolves LoadBalancer IPs with ARP (raw probes) and NDP (ndisc6). Needs root and the builds
//! `cargo xtask test` makes (eBPF object, herald, xtask, the Kubernetes binaries, node runtime,
//! images).

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

    // Through the IP to a backend: kube-proxy on the winner forwards to any ready pod
    // (externalTrafficPolicy Cluster).
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
        let backend = a["tcp"]["served_by"].as_str().unwrap_or_default();
        assert!(NODES.contains(&backend), "served by a lab pod: {backend:?}");
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
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector: {matchLabels: {app: local-web}}
      containers:
        - name: web
          image: localhost/herald-lab/backend:1
          imagePullPolicy: Never
          command:
            - /bin/busybox
            - sh
            - -c
            - /bin/busybox touch /state/ready && exec /bin/busybox httpd -f -p 8080 -h /state
          ports: [{containerPort: 8080}]
          # Ready while /state/ready exists: the test removes it to fail the probe.
          readinessProbe:
            exec: {command: [/bin/busybox, test, -e, /state/ready]}
            periodSeconds: 1
          volumeMounts: [{name: state, mountPath: /state}]
      volumes: [{name: state, emptyDir: {}}]
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

/// Fails `pod`'s readiness probe (the kubelet takes it out of the EndpointSlice).
fn unready(pod: &str) {
    kubectl(&[
        "-n",
        "default",
        "exec",
        pod,
        "--",
        "/bin/busybox",
        "rm",
        "/state/ready",
    ]);
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
    unready(&pod);
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
    unready(&pod);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip) == vec![order[2].clone()]),
        "only {} has a ready endpoint: {:?}",
        order[2],
        xdp_announcers(&ip)
    );
    let probe = probe_arp(&ip, 30, 20);
    assert_eq!(probe.by_node, only(&order[2], 30));

    // No ready endpoint anywhere: nobody announces, and no kernel answers (kube-proxy's rules
    // hold the IP, no interface does) — only Herald answers.
    let pod = pod_on("app=local-web", &order[2]);
    unready(&pod);
    assert!(
        wait_until(DEADLINE, || xdp_announcers(&ip).is_empty()),
        "without ready endpoints nobody should announce {ip}: {:?}",
        xdp_announcers(&ip)
    );
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

/// After the announcer's speaker hangs, and separately after its cable is cut, exactly one node
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

    // Speaker hung (frozen: its container still runs, so the kubelet restarts nothing).
    let pid = speaker_pid(&first).expect("speaker running");
    signal(pid, libc::SIGSTOP);
    let took_over = wait_answered_by(&v4, &second);
    let probe = probe_arp(&v4, 50, 20);
    let announcers = xdp_announcers(&v4);
    signal(pid, libc::SIGCONT);
    assert!(
        took_over,
        "{second} never took over {v4} while {first}'s speaker was frozen"
    );
    assert_eq!(probe.by_node, only(&second, 50), "while frozen");
    assert_eq!(probe.several, 0);
    assert_eq!(announcers, vec![second.clone()]);
    assert!(
        wait_answered_by(&v4, &first),
        "{first} never took {v4} back after its speaker resumed"
    );
    let probe = probe_arp(&v4, 50, 20);
    assert_eq!(probe.by_node, only(&first, 50), "after resuming");

    // The node's cable cut at the switch.
    set_switch_port(&first, false);
    let took_over = wait_answered_by(&v4, &second);
    let probe = probe_arp(&v4, 50, 20);
    set_switch_port(&first, true);
    assert!(
        took_over,
        "{second} never took over {v4} after {first}'s cable was cut"
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
        "{first} never took {v4} back after its cable returned"
    );
}

/// Restarts of the announcing node's speaker pod's process while the client sends an ARP
/// request every 20 ms:
/// - graceful (SIGTERM; the kubelet starts the container again): the peers take over at once
///   on leave and the hand-back overlaps, so no request goes unanswered;
/// - crash (SIGKILL; the kubelet restarts the container): a restart within the guard budget `B`
///   finds the guard fresh and the pinned maps answer throughout. The kubelet notices the exit
///   on its next relist (up to a second), later than `B` (250 ms with the manifest's 500 ms
///   detection), so the crash is a failover: the guard silences the node before a survivor may
///   take over, which leaves one gap (the unanswered rounds form a single run), and the
///   restarted speaker takes its address back (hand-backs overlap: two answers for a few
///   rounds, never none).
#[test]
fn speaker_restart_leaves_one_gap_on_a_crash_and_none_when_graceful() {
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
        // Probed until the restarted speaker has its address back, however long the kubelet
        // takes to restart it.
        let probe = start_probe_until(&v4, 300, 20, &first);
        std::thread::sleep(Duration::from_secs(1));
        let pid = speaker_pid(&first).expect("speaker running");
        signal(pid, sig);
        assert!(
            wait_exit(pid, Duration::from_secs(20)),
            "speaker {pid} did not exit on signal {sig}"
        );
        wait_speaker_restarted(&first);
        let result = finish_probe(probe);
        assert!(result.rounds >= 300, "{} rounds", result.rounds);
        if !result.last_round_nodes.contains(&first) {
            failures.push(format!(
                "{kind} restart: {first} never answered again during the probe (last round: {:?})",
                result.last_round_nodes
            ));
        }
        eprintln!(
            "{kind} restart: unanswered 20 ms rounds {:?}, answers {:?}",
            result.unanswered, result.by_node
        );
        let gaps = result
            .unanswered
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .count()
            + usize::from(!result.unanswered.is_empty());
        if gaps > usize::from(kind == "crash") {
            failures.push(format!(
                "{kind} restart: {gaps} runs of unanswered 20 ms rounds {:?} (answers {:?})",
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

    let speakers = |jsonpath: &str| {
        kubectl(&[
            "-n",
            "metallb-system",
            "get",
            "pods",
            "-l",
            "component=speaker",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    let accounts = speakers("{.items[*].spec.serviceAccountName}");
    assert_eq!(
        accounts.split_whitespace().collect::<Vec<_>>(),
        ["speaker"; 3],
        "the speaker pods' service account"
    );

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
    // ConfigMaps: MetalLB's raw FRR configuration only (read to refuse it).
    assert_eq!(
        can(&["watch", "configmaps/bgpextras", "-n", "metallb-system"]),
        "yes"
    );
    assert_eq!(
        can(&["get", "configmaps/kube-root-ca.crt", "-n", "metallb-system"]),
        "no"
    );

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
    let pods = speakers("{.items[*].metadata.name}");
    assert_eq!(pods.split_whitespace().count(), NODES.len(), "{pods}");
    for pod in pods.split_whitespace() {
        let log = kubectl(&["-n", "metallb-system", "logs", pod]);
        assert!(!log.is_empty(), "{pod} logged nothing");
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "{pod} was refused something: {}",
            log.lines()
                .find(|l| l.to_lowercase().contains("forbidden"))
                .unwrap_or("")
        );
    }
}
