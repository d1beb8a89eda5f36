//! The real `herald speaker` in a node network namespace against a real kube-apiserver, as the
//! speaker service account (so `manifests/rbac-speaker.yaml` is what the server enforces), with
//! XDP on the node's uplink and a client namespace asking ARP for the Service's IP.
//!
//! The API server listens on loopback in the root namespace; the test forwards a loopback port
//! inside the node namespace to it (same port, so the kubeconfig and its certificate match).
//!
//! Needs root, the XDP object, `cargo xtask kube build` and `cargo build -p herald`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "support/kube/mod.rs"]
mod kube_support;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_tests::{
    Bpffs, KillOnDrop, Netns, herald_bin, poll_until, poll_until_every, require_root, unique,
    veth_between,
};
use kube_support::cluster::{Cluster, namespace_yaml, serial};
use kube_support::control_plane::free_port;
use kube_support::netns::{forward_api_into, in_netns};

const NODE: &str = "hlt-speaker-node";
const NODE_V4: &str = "203.0.113.11";
const CLIENT_V4: &str = "203.0.113.100";
const SERVICE_IP: &str = "198.51.100.77";
const SERVICE_IP6: &str = "2001:db8:0:2::77";
const NODE_V6: &str = "2001:db8:0:1::11";
const CLIENT_V6: &str = "2001:db8:0:1::100";
const POOL: &str = "speaker-e2e";
const PATIENCE: Duration = Duration::from_secs(60);
/// `--detect-ms` of the three gossiping speakers: a survivor declares a silent peer down no
/// earlier than 0.7 of it (1.4 s), so a gossip task stalled for a few hundred ms on a loaded CI
/// machine does not make a second node announce; the guard budget (half of it, 1 s) stays below
/// that takeover bound, so the killed speaker is silenced before anyone takes over.
const GOSSIP_DETECT_MS: u64 = 2000;

/// GET on `host:port` inside `ns`.
fn http_get_in_at(ns: &str, host: &'static str, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        kube_support::herald::Herald::http_get_at(host, port, &path)
    })
}

/// One ARP request from the client (Habets' arping, `-r`: the answering MAC only).
fn arp_answer(client: &Netns, dev: &str) -> Option<String> {
    let out = client
        .command("arping")
        .args(["-i", dev, "-c", "1", "-w", "1", "-r", SERVICE_IP])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Every MAC answering two ARP requests from the client (one second each), sorted: more than
/// one means two nodes answer for the address.
fn arp_answers(client: &Netns, dev: &str) -> Vec<String> {
    let Ok(out) = client
        .command("arping")
        .args(["-i", dev, "-c", "2", "-w", "2", SERVICE_IP])
        .output()
    else {
        return Vec::new();
    };
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(" bytes from ").nth(1)?.split_whitespace().next())
        .map(str::to_lowercase)
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// One Neighbor Solicitation from the client; the target link-layer address, if any.
fn nd_answer(client: &Netns, dev: &str) -> Option<String> {
    let out = client
        .command("ndisc6")
        .args(["-q", "-1", "-r", "1", "-w", "800", SERVICE_IP6, dev])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The first Event with `reason` about `kind` `namespace/name`, waited for up to 60 s:
/// (reason, type, note, reporting controller).
async fn event_about(
    cluster: &Cluster,
    regarding: (&str, &str, &str),
    reason: &str,
) -> Option<(String, String, String, String)> {
    event_saying(cluster, regarding, reason, "").await
}

/// The first Event about `regarding` with `reason` whose note contains `text`.
async fn event_saying(
    cluster: &Cluster,
    (namespace, kind, name): (&str, &str, &str),
    reason: &str,
    text: &str,
) -> Option<(String, String, String, String)> {
    for _ in 0..120 {
        let found = cluster
            .events(namespace, kind, name)
            .await
            .into_iter()
            .find(|(r, _, note, _)| r == reason && note.contains(text));
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(["-o", "link", "show", "dev", dev]).expect("ip link");
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether")
        .to_lowercase()
}

#[test]
fn speaker_announces_elected_service_and_withdraws() {
    run_serial(single_node());
}

async fn single_node() {
    require_root();
    let cluster = Cluster::reset().await;
    let plane = cluster.plane;

    // Topology: node (uplink, XDP) <-> client.
    let bpffs = Bpffs::new().expect("bpffs");
    let node = Netns::new("hsn").expect("node ns");
    let client = Netns::new("hsc").expect("client ns");
    let node_if = unique("sn");
    let client_if = unique("sc");
    veth_between(&node, &node_if, &client, &client_if).expect("veth");
    node.ip(["addr", "add", &format!("{NODE_V4}/24"), "dev", &node_if])
        .unwrap();
    client
        .ip(["addr", "add", &format!("{CLIENT_V4}/24"), "dev", &client_if])
        .unwrap();
    node.ip(["link", "set", &node_if, "up"]).unwrap();
    client.ip(["link", "set", &client_if, "up"]).unwrap();
    client
        .ip(["route", "add", "198.51.100.0/24", "dev", &client_if])
        .unwrap();
    node.ip([
        "addr",
        "add",
        &format!("{NODE_V6}/64"),
        "dev",
        &node_if,
        "nodad",
    ])
    .unwrap();
    client
        .ip([
            "addr",
            "add",
            &format!("{CLIENT_V6}/64"),
            "dev",
            &client_if,
            "nodad",
        ])
        .unwrap();
    client
        .ip(["-6", "route", "add", "2001:db8:0:2::/64", "dev", &client_if])
        .unwrap();
    // NDP needs the node's link-local address past duplicate address detection.
    assert!(
        poll_until(PATIENCE, || {
            let all = node
                .ip(["-6", "addr", "show", "dev", &node_if, "scope", "link"])
                .unwrap_or_default();
            let tentative = node
                .ip(["-6", "addr", "show", "dev", &node_if, "tentative"])
                .unwrap_or_default();
            all.contains("fe80::") && tentative.trim().is_empty()
        }),
        "node link-local never usable"
    );
    forward_api_into(&node.name, plane.apiserver_port);
    let node_mac = mac_of(&node, &node_if);

    // Cluster objects: the Node, a pool and an advertisement, a Service with an address in its
    // status and an endpoint on the node (written directly: no controller runs here).
    let ns = "speaker-e2e";
    cluster.apply(&namespace_yaml(ns));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels:\n    herald-test: \"true\"\n"
    ));
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.64/27, 2001:db8:0:2::/64]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{POOL}]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {POOL}-no-spec\n  namespace: metallb-system\n"
    ));
    cluster.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: memberlist\n  namespace: metallb-system\nstringData:\n  secretkey: e2e-secret-e2e-secret0\n",
    );
    cluster.announced_web_service(ns, &[SERVICE_IP, SERVICE_IP6], NODE);

    let metrics_port = free_port();
    let pin_dir = bpffs.dir.join("herald");
    // Each speaker process logs to a file of its own.
    let start_speaker = || {
        let log = plane.dir.join(format!("{}.log", unique("speaker")));
        let log_file = File::create(&log).unwrap();
        let speaker = KillOnDrop(
            node.command(herald_bin())
                .args([
                    "speaker",
                    "--node-name",
                    NODE,
                    "--namespace",
                    "metallb-system",
                ])
                .arg(format!(
                    "--kubeconfig={}",
                    plane.kubeconfig("speaker").display()
                ))
                .arg(format!("--pin-dir={}", pin_dir.display()))
                .arg(format!("--ml-bind-addr={NODE_V4}:7946"))
                .arg(format!("--interfaces-include={node_if}"))
                // A port only: the endpoints listen on the node address (the gossip's).
                .arg(format!("--metrics-addr={metrics_port}"))
                .arg("--xdp-mode=skb")
                .env("RUST_LOG", "info,kube=warn")
                .env_remove("KUBECONFIG")
                .env_remove("METALLB_NAMESPACE")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("herald speaker"),
        );
        (speaker, log)
    };
    let (speaker, log) = start_speaker();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // The client's ARP is answered with the node's MAC (from XDP: the node does not own the IP).
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(node_mac.as_str())),
        "no ARP answer for {SERVICE_IP}\n{}",
        logs()
    );
    assert!(
        poll_until(PATIENCE, || nd_answer(&client, &client_if).as_deref()
            == Some(node_mac.as_str())),
        "no NDP answer for {SERVICE_IP6}\n{}",
        logs()
    );
    // ServiceL2Status like MetalLB's.
    let statuses = cluster.kubectl(&[
        "get",
        "servicel2statuses",
        "-n",
        "metallb-system",
        "-l",
        &format!("metallb.io/node={NODE}"),
        "-o",
        "json",
    ]);
    let statuses: serde_json::Value = serde_json::from_str(&statuses).unwrap();
    let ok = poll_until(PATIENCE, || {
        let out = cluster.kubectl(&[
            "get",
            "servicel2statuses",
            "-n",
            "metallb-system",
            "-l",
            &format!("metallb.io/node={NODE},metallb.io/service-name=web"),
            "-o",
            "jsonpath={.items[*].status.node}/{.items[*].status.serviceNamespace}/{.items[*].metadata.name}",
        ]);
        out.starts_with(&format!("{NODE}/{ns}/l2-"))
    });
    assert!(ok, "no ServiceL2Status: {statuses}\n{}", logs());
    // ConfigurationState speaker-<node>, as MetalLB's speakers keep it.
    let state_field = |jsonpath: &str| {
        cluster
            .plane
            .kubectl_run(&[
                "get",
                "configurationstates",
                &format!("speaker-{NODE}"),
                "-n",
                "metallb-system",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .unwrap_or_default()
    };
    let state = || {
        state_field(
            "{.status.result}/{.status.conditions[0].type}/{.metadata.labels.metallb\\.io/component-type}",
        )
    };
    assert!(
        poll_until(PATIENCE, || state()
            == "Valid/configReconcilerValid/speaker"),
        "ConfigurationState: {:?}\n{}",
        state(),
        logs()
    );
    // The nodeAssigned Event from metallb-speaker.
    let assigned = event_about(&cluster, (ns, "Service", "web"), "nodeAssigned").await;
    let (_, kind, note, component) =
        assigned.unwrap_or_else(|| panic!("no nodeAssigned\n{}", logs()));
    assert_eq!(kind, "Normal");
    assert_eq!(
        note,
        format!("announcing from node \"{NODE}\" with protocol \"layer2\"")
    );
    assert_eq!(component, "metallb-speaker");
    // Metrics under MetalLB's names.
    let (code, body) =
        http_get_in_at(&node.name, NODE_V4, metrics_port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains(&format!(
            "metallb_speaker_announced{{ip=\"{SERVICE_IP}\",node=\"{NODE}\",protocol=\"layer2\",service=\"{ns}/web\"}} 1"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "metallb_layer2_gratuitous_sent{{ip=\"{SERVICE_IP}\"}}"
        )),
        "{body}"
    );
    // The client's requests and the XDP answers are counted from the per-address map counters.
    let counted = |name: &str| -> u64 {
        http_get_in_at(&node.name, NODE_V4, metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{ip=\"{SERVICE_IP}\"}} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        poll_until(PATIENCE, || counted("metallb_layer2_requests_received")
            >= 1
            && counted("metallb_layer2_responses_sent") >= 1),
        "layer2 counters never moved: {:?}",
        http_get_in_at(&node.name, NODE_V4, metrics_port, "/metrics")
    );
    assert!(
        counted("metallb_layer2_gratuitous_sent") >= 2,
        "one ARP round is 2 packets"
    );
    assert_eq!(
        http_get_in_at(&node.name, NODE_V4, metrics_port, "/readyz").map(|r| r.0),
        Some(200)
    );
    // Another host claims the Service's address (gratuitous ARP from the client with its own
    // MAC): the XDP program passes it and records it; the speaker counts it and raises a
    // Warning Event on the Service naming the MAC.
    let client_mac = mac_of(&client, &client_if);
    let out = client
        .command("arping")
        .args([
            "-U", "-c", "2", "-i", &client_if, "-S", SERVICE_IP, SERVICE_IP,
        ])
        .output()
        .expect("arping -U");
    let claimed = event_about(&cluster, (ns, "Service", "web"), "addressClaimed").await;
    let (_, kind, note, _) =
        claimed.unwrap_or_else(|| panic!("no addressClaimed Event (arping: {out:?})\n{}", logs()));
    assert_eq!(kind, "Warning");
    assert!(note.contains(&client_mac), "{note}");
    let body = http_get_in_at(&node.name, NODE_V4, metrics_port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        body.contains(&format!(
            "herald_layer2_foreign_claims_total{{ip=\"{SERVICE_IP}\"}}"
        )),
        "{body}"
    );
    // Not on every interface: nothing listens on the node's loopback.
    assert_eq!(
        http_get_in_at(&node.name, "127.0.0.1", metrics_port, "/readyz"),
        None,
        "the endpoints listen beyond the node address"
    );

    // The exclusion label takes the node out: nobody answers.
    cluster.kubectl(&[
        "label",
        "node",
        NODE,
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ]);
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).is_none()),
        "excluded node still answers\n{}",
        logs()
    );
    cluster.kubectl(&[
        "label",
        "node",
        NODE,
        "node.kubernetes.io/exclude-from-external-load-balancers-",
    ]);
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).is_some()),
        "node does not answer again after the label is removed\n{}",
        logs()
    );

    // MetalLB's raw FRR configuration (ConfigMap bgpextras) is refused with a reason; the last
    // good configuration keeps serving, and removing the ConfigMap makes it valid again.
    let summary = || state_field("{.status.errorSummary}");
    cluster.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bgpextras\n  namespace: metallb-system\ndata:\n  extras: |\n    router bgp 64512\n",
    );
    assert!(
        poll_until(PATIENCE, || state().starts_with("Invalid/")
            && summary().contains("bgpextras")
            && summary().contains("raw FRR configuration is not supported")),
        "ConfigMap bgpextras is not refused: {:?} {:?}\n{}",
        state(),
        summary(),
        logs()
    );
    assert!(
        arp_answer(&client, &client_if).is_some(),
        "the last good configuration stops serving\n{}",
        logs()
    );
    let extras_refused = event_saying(
        &cluster,
        (
            "metallb-system",
            "ConfigurationState",
            &format!("speaker-{NODE}"),
        ),
        "ConfigurationError",
        "bgpextras",
    )
    .await;
    assert!(
        extras_refused.is_some(),
        "no ConfigurationError Event names bgpextras\n{}",
        logs()
    );
    cluster.kubectl(&["-n", "metallb-system", "delete", "configmap", "bgpextras"]);
    assert!(
        poll_until(PATIENCE, || state()
            == "Valid/configReconcilerValid/speaker"),
        "still invalid without ConfigMap bgpextras: {:?} {:?}\n{}",
        state(),
        summary(),
        logs()
    );

    // Fail closed, 1: a restart that finds no valid configuration answers nothing it pinned
    // before. An overlapping pool makes the configuration invalid; the running speaker keeps
    // its last good one, a restarted one has none.
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}-overlap\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.64/28]\n"
    ));
    assert!(
        poll_until(PATIENCE, || state().starts_with("Invalid/")),
        "the overlapping pool is not reported: {:?}\n{}",
        state(),
        logs()
    );
    // And a Warning Event on the speaker's ConfigurationState names the pool.
    let speaker_state = format!("speaker-{NODE}");
    let refused = event_saying(
        &cluster,
        ("metallb-system", "ConfigurationState", &speaker_state),
        "ConfigurationError",
        &format!("{POOL}-overlap"),
    )
    .await;
    let (_, kind, note, component) =
        refused.unwrap_or_else(|| panic!("no ConfigurationError Event\n{}", logs()));
    assert_eq!(
        (kind.as_str(), component.as_str()),
        ("Warning", "metallb-speaker")
    );
    assert!(note.contains(&format!("{POOL}-overlap")), "{note}");
    assert!(
        arp_answer(&client, &client_if).is_some(),
        "the last good configuration stops serving\n{}",
        logs()
    );
    let mut speaker = speaker;
    speaker.signal(libc::SIGKILL).unwrap();
    let _ = speaker.0.wait();
    let (speaker, log) = start_speaker();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        poll_until(PATIENCE, || logs().contains("no valid configuration yet")),
        "the restarted speaker never saw the invalid configuration\n{}",
        logs()
    );
    assert!(
        poll_until(Duration::from_secs(5), || arp_answer(&client, &client_if)
            .is_none()),
        "restarted with an invalid configuration, still answers what it pinned before\n{}",
        logs()
    );
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            arp_answer(&client, &client_if).is_none(),
            "answers again with no valid configuration\n{}",
            logs()
        );
    }
    cluster.kubectl(&[
        "delete",
        "ipaddresspool",
        &format!("{POOL}-overlap"),
        "-n",
        "metallb-system",
    ]);
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(node_mac.as_str())),
        "valid again, not answered again\n{}",
        logs()
    );

    // What `herald xdp list` shows in the node; the test fails if it cannot be read.
    let listed = || -> serde_json::Value {
        let out = node
            .command(herald_bin())
            .args(["xdp", "list", "-o", "json", "--pin-dir"])
            .arg(&pin_dir)
            .output()
            .expect("herald xdp list");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("herald xdp list JSON")
    };

    // Fail closed, 2: the maps are never without a guard. A speaker killed right after its
    // first announcement leaves a guard that is closed or armed, never off, and nothing
    // answering past the guard bound.
    let mut speaker = speaker;
    speaker.signal(libc::SIGKILL).unwrap();
    let _ = speaker.0.wait();
    let detached = node
        .command(herald_bin())
        .args(["xdp", "detach", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .expect("herald xdp detach");
    assert!(detached.status.success(), "{detached:?}");
    assert!(
        poll_until(Duration::from_secs(5), || arp_answer(&client, &client_if)
            .is_none()),
        "still answered after detach"
    );
    let (mut speaker, log) = start_speaker();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        poll_until_every(PATIENCE, Duration::from_millis(1), || logs()
            .contains("announced")),
        "the fresh speaker never announced\n{}",
        logs()
    );
    speaker.signal(libc::SIGKILL).unwrap();
    let _ = speaker.0.wait();
    let guard = listed()["guard"]["state"].clone();
    assert!(
        guard.is_string() && guard != "off",
        "a killed speaker left the guard {guard}\n{}",
        logs()
    );
    // The guard bound is half the detection time (250 ms by default); give it four times that.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..3 {
        assert!(
            arp_answer(&client, &client_if).is_none(),
            "killed right after announcing, still answered past the guard bound\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (speaker, log) = start_speaker();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(node_mac.as_str())),
        "a new speaker does not answer again\n{}",
        logs()
    );

    // Graceful stop: every address withdrawn.
    speaker.signal(libc::SIGTERM).unwrap();
    let mut speaker = speaker;
    let exited = poll_until(Duration::from_secs(10), || {
        speaker.0.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "speaker did not stop on SIGTERM\n{}", logs());
    // Withdrawn from the maps on the way out, not merely silenced by the guard.
    let left = listed();
    assert!(
        left["addresses"].as_array().is_some_and(Vec::is_empty),
        "addresses left in the maps after a graceful stop: {left}\n{}",
        logs()
    );
    assert!(
        arp_answer(&client, &client_if).is_none(),
        "still answered after a graceful stop\n{}",
        logs()
    );
    assert!(
        nd_answer(&client, &client_if).is_none(),
        "IPv6 still answered after a graceful stop\n{}",
        logs()
    );

    // Clean up what other tests must not see.
    let overlap = format!("{POOL}-overlap");
    let no_spec = format!("{POOL}-no-spec");
    for args in [
        vec!["delete", "service", "web", "-n", ns, "--wait=true"],
        vec!["delete", "endpointslice", "web-1", "-n", ns],
        vec!["delete", "l2advertisement", POOL, "-n", "metallb-system"],
        vec![
            "delete",
            "l2advertisement",
            &no_spec,
            "-n",
            "metallb-system",
            "--ignore-not-found",
        ],
        vec!["delete", "ipaddresspool", POOL, "-n", "metallb-system"],
        vec![
            "delete",
            "ipaddresspool",
            &overlap,
            "-n",
            "metallb-system",
            "--ignore-not-found",
        ],
        vec!["delete", "node", NODE],
        vec![
            "delete",
            "configurationstates",
            "-n",
            "metallb-system",
            "-l",
            "metallb.io/component-type=speaker",
        ],
        vec![
            "delete",
            "servicel2statuses",
            "-n",
            "metallb-system",
            "-l",
            &format!("metallb.io/node={NODE}"),
        ],
    ] {
        let _ = cluster.plane.kubectl_run(&args);
    }
    drop(node);
    drop(client);
    drop(bpffs);
    let _ = Command::new("true").status();
}

/// Runs one scenario alone (they share the cluster's configuration) on its own runtime.
fn run_serial(scenario: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(scenario);
}

/// One node of the three-node topology.
struct LabNode {
    name: String,
    ns: Netns,
    uplink: String,
    addr: String,
    mac: String,
    pins: std::path::PathBuf,
}

/// What `herald xdp list` in `node` shows: (addresses announced, guard state).
fn xdp_state(node: &LabNode) -> (Vec<String>, String) {
    let out = node
        .ns
        .command(herald_bin())
        .args(["xdp", "list", "-o", "json"])
        .env("HERALD_PIN_DIR", &node.pins)
        .output()
        .expect("herald xdp list");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let ips = json["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        ips,
        json["guard"]["state"].as_str().unwrap_or("").to_string(),
    )
}

/// Three speakers gossiping over a bridge: the election's winner answers alone; killed
/// (SIGKILL, no goodbye), its guard silences it and the next node in the election takes over.
#[test]
fn three_speakers_elect_one_and_fail_over_on_kill() {
    run_serial(three_nodes());
}

async fn three_nodes() {
    require_root();
    let cluster = Cluster::reset().await;
    let plane = cluster.plane;
    let bpffs = Bpffs::new().expect("bpffs");
    let switch = Netns::new("hfs").expect("switch ns");
    switch.ip(["link", "add", "br0", "type", "bridge"]).unwrap();
    switch.ip(["link", "set", "br0", "up"]).unwrap();
    let client = Netns::new("hfc").expect("client ns");
    let client_if = unique("fc");
    let client_sw = unique("fw");
    veth_between(&client, &client_if, &switch, &client_sw).unwrap();
    switch
        .ip(["link", "set", &client_sw, "master", "br0", "up"])
        .unwrap();
    client
        .ip(["addr", "add", &format!("{CLIENT_V4}/24"), "dev", &client_if])
        .unwrap();
    client.ip(["link", "set", &client_if, "up"]).unwrap();
    client
        .ip(["route", "add", "198.51.100.0/24", "dev", &client_if])
        .unwrap();

    let ns = "speaker-e2e-3";
    cluster.apply(&namespace_yaml(ns));
    let mut nodes = Vec::new();
    for (i, letter) in ["a", "b", "c"].iter().enumerate() {
        let name = format!("hlt-fo-{letter}");
        let node_ns = Netns::new("hfn").expect("node ns");
        let uplink = unique("fu");
        let port = unique("fp");
        veth_between(&node_ns, &uplink, &switch, &port).unwrap();
        switch
            .ip(["link", "set", &port, "master", "br0", "up"])
            .unwrap();
        let addr = format!("203.0.113.{}", 21 + i);
        node_ns
            .ip(["addr", "add", &format!("{addr}/24"), "dev", &uplink])
            .unwrap();
        node_ns.ip(["link", "set", &uplink, "up"]).unwrap();
        forward_api_into(&node_ns.name, plane.apiserver_port);
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    herald-test: \"true\"\n"
        ));
        // The speaker Pod the lab's kubelet would report: the gossip seed.
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: speaker-{letter}\n  namespace: metallb-system\n  labels:\n    app: metallb\n    component: speaker\nspec:\n  nodeName: {name}\n  serviceAccountName: speaker\n  automountServiceAccountToken: false\n  containers:\n  - name: speaker\n    image: herald:latest\n"
        ));
        cluster.kubectl(&[
            "patch",
            "pod",
            &format!("speaker-{letter}"),
            "-n",
            "metallb-system",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{addr}\",\"podIPs\":[{{\"ip\":\"{addr}\"}}]}}}}"
            ),
        ]);
        let mac = mac_of(&node_ns, &uplink);
        nodes.push(LabNode {
            pins: bpffs.dir.join(&name),
            name,
            ns: node_ns,
            uplink,
            addr,
            mac,
        });
    }
    cluster.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.64/27]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {POOL}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{POOL}]\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: memberlist\n  namespace: metallb-system\nstringData:\n  secretkey: e2e-secret-e2e-secret0\n"
    ));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\n  labels:\n    herald-test: \"true\"\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80, protocol: TCP}}]\n"
    ));
    cluster.kubectl(&[
        "patch",
        "service",
        "web",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            "{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{SERVICE_IP}\"}}]}}}}}}"
        ),
    ]);
    let endpoints: String = nodes
        .iter()
        .map(|n| {
            format!(
                "- addresses: [10.1.0.5]\n  nodeName: {}\n  conditions: {{ready: true}}\n",
                n.name
            )
        })
        .collect();
    cluster.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n{endpoints}ports:\n- port: 80\n  protocol: TCP\n"
    ));

    // The election order every speaker computes.
    let ip: std::net::IpAddr = SERVICE_IP.parse().unwrap();
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|i| herald::election::election_hash(&nodes[*i].name, &ip));

    let mut speakers = Vec::new();
    let mut logs = Vec::new();
    for n in &nodes {
        let log = plane.dir.join(format!("{}.log", unique(&n.name)));
        let file = File::create(&log).unwrap();
        logs.push(log);
        speakers.push(Some(KillOnDrop(
            n.ns.command(herald_bin())
                .args([
                    "speaker",
                    "--node-name",
                    &n.name,
                    "--namespace",
                    "metallb-system",
                ])
                .arg(format!(
                    "--kubeconfig={}",
                    plane.kubeconfig("speaker").display()
                ))
                .arg(format!("--pin-dir={}", n.pins.display()))
                .arg(format!("--ml-bind-addr={}:7946", n.addr))
                .arg(format!("--interfaces-include={}", n.uplink))
                .arg("--metrics-addr=")
                .arg("--xdp-mode=skb")
                .arg(format!("--detect-ms={GOSSIP_DETECT_MS}"))
                .env("RUST_LOG", "info,kube=warn")
                .env_remove("KUBECONFIG")
                .env_remove("METALLB_NAMESPACE")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("herald speaker"),
        )));
    }
    let all_logs = || {
        logs.iter()
            .map(|l| {
                format!(
                    "== {}\n{}",
                    l.display(),
                    std::fs::read_to_string(l).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let announcers = |nodes: &[LabNode]| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| xdp_state(n).0.contains(&SERVICE_IP.to_string()))
            .map(|n| n.name.clone())
            .collect()
    };

    // Exactly the election's winner answers, once all three see each other.
    let winner = &nodes[order[0]];
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(winner.mac.as_str())
            && announcers(&nodes) == vec![winner.name.clone()]),
        "expected {} alone, announcers {:?}\n{}",
        winner.name,
        announcers(&nodes),
        all_logs()
    );
    // Stays that way (no flapping once membership settled).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        announcers(&nodes),
        vec![winner.name.clone()],
        "{}",
        all_logs()
    );

    // SIGKILL the winner: its pinned map keeps the entry, but the guard silences it, and the
    // next node in the election takes over.
    let killed_at = std::time::Instant::now();
    drop(speakers[order[0]].take());
    let next = &nodes[order[1]];
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(next.mac.as_str())),
        "{} never took over\n{}",
        next.name,
        all_logs()
    );
    // Informational only (the bench measures failover properly).
    eprintln!(
        "takeover seen by the client {:?} after the kill (arping polls every 100 ms)",
        killed_at.elapsed()
    );
    if std::env::var_os("HERALD_E2E_LOGS").is_some() {
        eprintln!(
            "kill at {:?}\n{}",
            std::time::SystemTime::now() - killed_at.elapsed(),
            all_logs()
        );
    }
    let (dead_ips, dead_guard) = xdp_state(winner);
    assert!(
        dead_ips.contains(&SERVICE_IP.to_string()),
        "the killed speaker's map entry stays pinned"
    );
    assert_eq!(
        dead_guard, "stale",
        "the killed speaker's guard must have run out"
    );
    let live_announcers: Vec<String> = announcers(&nodes)
        .into_iter()
        .filter(|n| *n != winner.name)
        .collect();
    assert_eq!(live_announcers, vec![next.name.clone()], "{}", all_logs());

    // The killed speaker restarts on its pinned maps, rejoins the gossip and, first in the
    // election again, takes the address back; the interim announcer withdraws.
    let log = plane.dir.join(format!("{}.log", unique("restart")));
    let file = File::create(&log).unwrap();
    logs.push(log);
    speakers[order[0]] = Some(KillOnDrop(
        winner
            .ns
            .command(herald_bin())
            .args([
                "speaker",
                "--node-name",
                &winner.name,
                "--namespace",
                "metallb-system",
            ])
            .arg(format!(
                "--kubeconfig={}",
                plane.kubeconfig("speaker").display()
            ))
            .arg(format!("--pin-dir={}", winner.pins.display()))
            .arg(format!("--ml-bind-addr={}:7946", winner.addr))
            .arg(format!("--interfaces-include={}", winner.uplink))
            .arg("--metrics-addr=")
            .arg("--xdp-mode=skb")
            .arg(format!("--detect-ms={GOSSIP_DETECT_MS}"))
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG")
            .env_remove("METALLB_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("herald speaker restart"),
    ));
    let all_logs = || {
        logs.iter()
            .map(|l| {
                format!(
                    "== {}\n{}",
                    l.display(),
                    std::fs::read_to_string(l).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        poll_until(PATIENCE, || arp_answer(&client, &client_if).as_deref()
            == Some(winner.mac.as_str())
            && announcers(&nodes) == vec![winner.name.clone()]
            && xdp_state(winner).1 == "fresh"),
        "restarted {} did not take the address back alone: announcers {:?}\n{}",
        winner.name,
        announcers(&nodes),
        all_logs()
    );

    // Isolated is not alone: with every speaker Pod Ready, cut the winner's gossip off from
    // both peers (blackhole routes both ways; the client still reaches every node). The peers
    // declare it down and the next node takes over; the winner, hearing nobody while the API
    // server shows the others Ready, must let its guard run out rather than answer beside it.
    for letter in ["a", "b", "c"] {
        cluster.kubectl(&[
            "patch",
            "pod",
            &format!("speaker-{letter}"),
            "-n",
            "metallb-system",
            "--subresource=status",
            "--type=merge",
            "-p",
            "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}",
        ]);
    }
    let others: Vec<&LabNode> = nodes.iter().filter(|n| n.name != winner.name).collect();
    let blackholes = |verb: &str| {
        for other in &others {
            winner
                .ns
                .ip(["route", verb, "blackhole", &format!("{}/32", other.addr)])
                .unwrap();
            other
                .ns
                .ip(["route", verb, "blackhole", &format!("{}/32", winner.addr)])
                .unwrap();
        }
    };
    blackholes("add");
    assert!(
        poll_until(PATIENCE, || xdp_state(winner).1 == "stale"
            && arp_answers(&client, &client_if) == vec![next.mac.clone()]),
        "the cut-off {} kept answering (guard {}), answers {:?}\n{}",
        winner.name,
        xdp_state(winner).1,
        arp_answers(&client, &client_if),
        all_logs()
    );
    // It stays silent while cut off.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(xdp_state(winner).1, "stale", "{}", all_logs());
    assert_eq!(arp_answers(&client, &client_if), vec![next.mac.clone()]);
    assert!(
        all_logs().contains("isolated: no peer heard"),
        "no isolation warning\n{}",
        all_logs()
    );
    // Healed: it hears its peers again and takes the address back alone.
    blackholes("del");
    assert!(
        poll_until(PATIENCE, || xdp_state(winner).1 == "fresh"
            && arp_answers(&client, &client_if) == vec![winner.mac.clone()]
            && announcers(&nodes) == vec![winner.name.clone()]),
        "healed {} did not take the address back alone: announcers {:?}\n{}",
        winner.name,
        announcers(&nodes),
        all_logs()
    );

    // Clean up.
    drop(speakers);
    for args in [
        vec!["delete", "service", "web", "-n", ns, "--wait=true"],
        vec!["delete", "endpointslice", "web-1", "-n", ns],
        vec!["delete", "l2advertisement", POOL, "-n", "metallb-system"],
        vec!["delete", "ipaddresspool", POOL, "-n", "metallb-system"],
        vec![
            "delete",
            "pods",
            "-n",
            "metallb-system",
            "-l",
            "app=metallb,component=speaker",
            "--force",
            "--grace-period=0",
        ],
        vec!["delete", "nodes", "-l", "herald-test=true"],
        vec![
            "delete",
            "servicel2statuses",
            "-n",
            "metallb-system",
            "--all",
        ],
    ] {
        let _ = cluster.plane.kubectl_run(&args);
    }
    drop(nodes);
    drop(client);
    drop(switch);
    drop(bpffs);
}
