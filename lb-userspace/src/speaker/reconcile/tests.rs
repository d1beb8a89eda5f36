//! Reconcile through the in-memory data plane: what reaches the data plane, in which order, and
//! what is queued for the API server.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::api::{IPAddressPool, L2Advertisement};
use crate::dataplane::fake::{FakePlane, Op};
use crate::speaker::announcer::L2Announcer;
use crate::speaker::interfaces::{self, InterfaceFacts, InterfaceFilter};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

const NODE: &str = "node-a";
const BUDGET: Duration = Duration::from_millis(250);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(cidr: &str) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "pool", "namespace": "metallb-system"},
        "spec": {"addresses": [cidr]}
    }))
    .unwrap()
}

fn l2_advertisement() -> L2Advertisement {
    serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "l2", "namespace": "metallb-system"},
        "spec": {"ipAddressPools": ["pool"]}
    }))
    .unwrap()
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn service(name: &str, addr: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1"},
        "status": {"loadBalancer": {"ingress": [{"ip": addr}]}}
    }))
    .unwrap()
}

fn slice(service: &str, node: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "nodeName": node,
                       "conditions": {"ready": true}}]
    }))
    .unwrap()
}

fn facts(name: &str) -> InterfaceFacts {
    interfaces::usable(name)
}

/// One node with `eth0` (index 2), a pool, an advertisement and the given Services, each with
/// an endpoint on this node.
fn view(services: &[(&str, &str)]) -> ClusterView {
    ClusterView {
        pools: vec![pool("198.51.100.0/24")],
        l2_advertisements: vec![l2_advertisement()],
        nodes: vec![node(NODE), node("node-b")],
        services: services
            .iter()
            .map(|(n, a)| Arc::new(service(n, a)))
            .collect(),
        endpoint_slices: services
            .iter()
            .map(|(n, _)| Arc::new(slice(n, NODE)))
            .collect(),
        ..ClusterView::default()
    }
}

struct Rig {
    plane: FakePlane,
    announcer: L2Announcer<FakePlane>,
    reconciler: Reconciler,
    writes: mpsc::UnboundedReceiver<Write>,
    statuses: PendingStatuses,
}

impl Rig {
    fn new() -> Rig {
        let plane = FakePlane::with_interfaces(&[("eth0", 2)]);
        let metrics = Arc::new(SpeakerMetrics::new());
        let mut announcer = L2Announcer::new(
            plane.clone(),
            InterfaceFilter::metallb_default(),
            BUDGET,
            metrics.clone(),
        );
        assert!(announcer.rescan(&[facts("eth0")]));
        let (tx, writes) = mpsc::unbounded_channel();
        let reconciler = Reconciler::new(
            Settings {
                node: NODE.into(),
                lb_class: None,
                ignore_exclude_lb: false,
                bgp_mode: crate::config::BgpMode::Native,
            },
            metrics,
            tx,
        );
        assert_eq!(plane.take_ops(), vec![Op::Attach("eth0".into())]);
        Rig {
            plane,
            announcer,
            statuses: reconciler.pending_statuses(),
            reconciler,
            writes,
        }
    }

    /// One pass with `live` speakers (this node and node-b by default) at `now`.
    fn pass(&mut self, view: &ClusterView, live: &[&str], now: Duration) -> Vec<Op> {
        self.pass_said(view, live, now).1
    }

    /// One pass, with what it said it did.
    fn pass_said(&mut self, view: &ClusterView, live: &[&str], now: Duration) -> (Pass, Vec<Op>) {
        let live: BTreeSet<String> = live.iter().map(ToString::to_string).collect();
        let eligible = self.announcer.eligible().clone();
        let pass =
            self.reconciler
                .reconcile(view, Some(&live), &eligible, &mut self.announcer, now);
        (pass, self.plane.take_ops())
    }

    fn writes(&mut self) -> Vec<Write> {
        let mut out = Vec::new();
        while let Ok(w) = self.writes.try_recv() {
            out.push(w);
        }
        out
    }
}

fn announce(addr: &str) -> Op {
    Op::Announce("eth0".into(), ip(addr))
}

fn withdraw(addr: &str) -> Op {
    Op::Withdraw("eth0".into(), ip(addr))
}

fn gratuitous(addr: &str) -> Op {
    Op::Gratuitous("eth0".into(), ip(addr))
}

#[test]
fn an_elected_address_is_announced_then_gratuitous_then_written() {
    let mut rig = Rig::new();
    let ops = rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    assert_eq!(
        ops,
        vec![announce("198.51.100.10"), gratuitous("198.51.100.10")]
    );
    let writes = rig.writes();
    assert!(
        matches!(writes.first(), Some(Write::ConfigState(None, _))),
        "{writes:?}"
    );
    assert_eq!(
        writes.last(),
        Some(&Write::Statuses),
        "statuses are written last"
    );
    let (statuses, _) = rig.statuses.take().expect("statuses pending");
    assert!(statuses.l2.contains_key("default/web"), "{statuses:?}");
    assert!(
        writes.iter().any(|w| matches!(w,
            Write::Event(e, Some(uid)) if e.reason == "nodeAssigned" && uid == "uid-web")),
        "{writes:?}"
    );
    // Nothing changed: nothing reaches the data plane, no Event again.
    let ops = rig.pass(
        &view(&[("web", "198.51.100.10")]),
        &[NODE],
        Duration::from_secs(1),
    );
    assert_eq!(ops, vec![]);
    let writes = rig.writes();
    assert!(
        !writes.iter().any(|w| matches!(w, Write::Event(..))),
        "{writes:?}"
    );
}

#[test]
fn a_hand_over_waits_out_the_guard_budget_before_withdrawing() {
    let mut rig = Rig::new();
    let v = view(&[("web", "198.51.100.10")]);
    rig.pass(&v, &[NODE], Duration::ZERO);
    // This node's speaker is no longer live: node-b is elected.
    let t0 = Duration::from_secs(10);
    assert_eq!(rig.pass(&v, &["node-b"], t0), vec![], "no gap");
    assert!(rig.announcer.handover_pending());
    assert_eq!(rig.pass(&v, &["node-b"], t0 + BUDGET / 2), vec![]);
    assert_eq!(
        rig.pass(&v, &["node-b"], t0 + BUDGET),
        vec![withdraw("198.51.100.10")]
    );
    assert!(!rig.announcer.handover_pending());
}

#[test]
fn a_hand_over_called_off_withdraws_nothing() {
    let mut rig = Rig::new();
    let v = view(&[("web", "198.51.100.10")]);
    rig.pass(&v, &[NODE], Duration::ZERO);
    let t0 = Duration::from_secs(10);
    rig.pass(&v, &["node-b"], t0);
    // Elected here again before the budget ran out: the pending withdrawal is forgotten.
    assert_eq!(rig.pass(&v, &[NODE], t0 + BUDGET / 2), vec![]);
    assert!(!rig.announcer.handover_pending());
    assert_eq!(rig.pass(&v, &[NODE], t0 + BUDGET * 4), vec![]);
}

#[test]
fn withdrawals_come_before_announcements_in_one_pass() {
    let mut rig = Rig::new();
    rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    // The Service moves to another address: the old one is withdrawn (once due), the new one
    // announced; in the pass where both happen, the withdrawal goes first.
    let moved = view(&[("web", "198.51.100.11")]);
    let t0 = Duration::from_secs(5);
    let ops = rig.pass(&moved, &[NODE], t0);
    assert_eq!(
        ops,
        vec![announce("198.51.100.11"), gratuitous("198.51.100.11")]
    );
    // .10 has waited out the budget; .11 starts waiting now.
    let ops = rig.pass(&view(&[("api", "198.51.100.12")]), &[NODE], t0 + BUDGET);
    assert_eq!(
        ops,
        vec![
            withdraw("198.51.100.10"),
            announce("198.51.100.12"),
            gratuitous("198.51.100.12"),
        ]
    );
}

#[test]
fn a_failed_announcement_is_a_warning_event_and_no_gratuitous_round() {
    let mut rig = Rig::new();
    rig.plane.state().announce_fails.insert(ip("198.51.100.10"));
    let ops = rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    assert_eq!(ops, vec![announce("198.51.100.10")]);
    let writes = rig.writes();
    let failed = writes
        .iter()
        .position(|w| matches!(w, Write::Event(e, _) if e.reason == "announceFailed" && e.warning));
    let statuses = writes.iter().position(|w| *w == Write::Statuses);
    assert!(
        matches!((failed, statuses), (Some(f), Some(s)) if f < s),
        "the failure Event is queued, before the statuses: {writes:?}"
    );
    // The next pass tries again.
    rig.plane.state().announce_fails.clear();
    let ops = rig.pass(
        &view(&[("web", "198.51.100.10")]),
        &[NODE],
        Duration::from_secs(1),
    );
    assert_eq!(
        ops,
        vec![announce("198.51.100.10"), gratuitous("198.51.100.10")]
    );
}

#[test]
fn entries_on_unknown_interfaces_are_withdrawn_first() {
    let mut rig = Rig::new();
    // Left pinned by an earlier run on an interface that is gone (index 9).
    rig.plane.state().keys.insert((9, ip("198.51.100.99")));
    let ops = rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    assert_eq!(
        ops,
        vec![
            Op::Withdraw(String::new(), ip("198.51.100.99")),
            announce("198.51.100.10"),
            gratuitous("198.51.100.10"),
        ]
    );
}

#[test]
fn an_invalid_configuration_keeps_the_last_good_one_serving() {
    let mut rig = Rig::new();
    let good = view(&[("web", "198.51.100.10")]);
    rig.pass(&good, &[NODE], Duration::ZERO);
    rig.writes();
    let mut bad = good.clone();
    // Two pools overlapping: rejected as a whole.
    let mut other = pool("198.51.100.0/25");
    other.metadata.name = Some("other".into());
    bad.pools.push(other);
    let (pass, ops) = rig.pass_said(&bad, &[NODE], Duration::from_secs(1));
    assert_eq!(ops, vec![], "nothing withdrawn while the config is invalid");
    assert_eq!(
        pass,
        Pass::Applied,
        "the last good configuration still serves"
    );
    let writes = rig.writes();
    assert!(
        matches!(writes.first(), Some(Write::ConfigState(Some(errors), _)) if errors.contains("overlap")),
        "{writes:?}"
    );
    // Valid again: reported once.
    rig.pass(&good, &[NODE], Duration::from_secs(2));
    let writes = rig.writes();
    assert!(
        matches!(writes.first(), Some(Write::ConfigState(None, _))),
        "{writes:?}"
    );
}

#[test]
fn an_unreadable_object_keeps_the_last_good_configuration_and_is_reported() {
    let mut rig = Rig::new();
    let good = view(&[("web", "198.51.100.10")]);
    rig.pass(&good, &[NODE], Duration::ZERO);
    rig.writes();
    let mut unread = good.clone();
    unread.rejected = vec!["IPAddressPool \"metallb-system/x\": cannot be read: bad".into()];
    // The pool it may have been is gone from the caches, yet nothing is withdrawn.
    unread.pools.clear();
    let (pass, ops) = rig.pass_said(&unread, &[NODE], Duration::from_secs(1));
    assert_eq!((pass, ops), (Pass::Applied, vec![]));
    let writes = rig.writes();
    assert!(
        matches!(writes.first(), Some(Write::ConfigState(Some(e), _)) if e.contains("cannot be read")),
        "{writes:?}"
    );
}

#[test]
fn without_any_valid_configuration_nothing_is_announced() {
    let mut rig = Rig::new();
    let mut bad = view(&[("web", "198.51.100.10")]);
    let mut other = pool("198.51.100.0/25");
    other.metadata.name = Some("other".into());
    bad.pools.push(other);
    assert_eq!(
        rig.pass_said(&bad, &[NODE], Duration::ZERO),
        (Pass::NoConfig, vec![])
    );
    let writes = rig.writes();
    assert_eq!(writes.len(), 1, "only ConfigurationState: {writes:?}");
}

#[test]
fn withdraw_everything_empties_the_data_plane() {
    let mut rig = Rig::new();
    rig.pass(
        &view(&[("web", "198.51.100.10"), ("api", "198.51.100.11")]),
        &[NODE],
        Duration::ZERO,
    );
    rig.plane.take_ops();
    rig.announcer.withdraw_everything();
    let ops = rig.plane.take_ops();
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, Op::Withdraw(..)))
            .count(),
        2,
        "{ops:?}"
    );
    assert!(rig.plane.state().keys.is_empty());
}

#[test]
fn an_interface_that_cannot_answer_is_not_used() {
    let plane = FakePlane::with_interfaces(&[("eth0", 2), ("eth1", 3)]);
    plane.state().attach_fails.insert("eth1".into());
    let mut announcer = L2Announcer::new(
        plane.clone(),
        InterfaceFilter::metallb_default(),
        BUDGET,
        Arc::new(SpeakerMetrics::new()),
    );
    announcer.rescan(&[facts("eth0"), facts("eth1")]);
    let names: Vec<&str> = announcer
        .eligible()
        .ipv4
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["eth0"]);
    assert_eq!(
        plane.take_ops(),
        vec![Op::Attach("eth0".into()), Op::Attach("eth1".into())]
    );
    // A rescan with the same interfaces changes nothing.
    assert!(!announcer.rescan(&[facts("eth0"), facts("eth1")]));
    let (refused, served) = announcer.answerable();
    assert_eq!(served, 1);
    assert_eq!(refused.keys().collect::<Vec<_>>(), ["eth1"]);
    assert!(
        refused["eth1"].contains("refused by the test"),
        "{refused:?}"
    );
    // The last interface refuses too: nothing answers, and the refusals say why.
    plane.state().attach_fails.insert("eth0".into());
    assert!(announcer.rescan(&[facts("eth0"), facts("eth1")]));
    let (refused, served) = announcer.answerable();
    assert_eq!((served, refused.len()), (0, 2));
    // Freed again: both answer, nothing refused.
    plane.state().attach_fails.clear();
    assert!(announcer.rescan(&[facts("eth0"), facts("eth1")]));
    let (refused, served) = announcer.answerable();
    assert_eq!((served, refused.len()), (2, 0));
}

#[test]
fn a_foreign_claim_on_an_announced_address_is_a_warning_event_once_a_minute() {
    use crate::dataplane::edges::ForeignClaim;
    use crate::dataplane::keys::Mac;
    let mut rig = Rig::new();
    rig.pass(
        &view(&[("web", "198.51.100.10"), ("db", "198.51.100.11")]),
        &[NODE],
        Duration::ZERO,
    );
    rig.writes();
    let claim = |addr: &str, last: u8| ForeignClaim {
        ifindex: 2,
        ip: ip(addr),
        mac: Mac([2, 0, 0, 0, 0, last]),
        count: 1,
    };
    let claimed = |rig: &mut Rig, claims: Vec<ForeignClaim>, now: Duration| {
        rig.plane.state().claims = claims;
        let seen = rig.announcer.observe();
        rig.reconciler.report_claims(&seen.claims, now);
        rig.writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::Event(e, uid) if e.reason == "addressClaimed" => Some((e, uid)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let events = claimed(
        &mut rig,
        vec![claim("198.51.100.10", 9), claim("198.51.100.99", 9)],
        Duration::from_secs(1),
    );
    // Only the announced address, on its Service, naming the MAC and the interface.
    assert_eq!(events.len(), 1, "{events:?}");
    let (event, uid) = &events[0];
    assert!(event.warning);
    assert_eq!(
        (event.name.as_str(), uid.as_deref()),
        ("web", Some("uid-web"))
    );
    assert!(
        event.message.contains("02:00:00:00:00:09") && event.message.contains("\"eth0\""),
        "{}",
        event.message
    );
    // The same claim again within the minute: counted, not reported again; another MAC is.
    let again = claimed(
        &mut rig,
        vec![claim("198.51.100.10", 9), claim("198.51.100.10", 7)],
        Duration::from_secs(30),
    );
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].0.message.contains("02:00:00:00:00:07"));
    // After the minute, reported again.
    let later = claimed(
        &mut rig,
        vec![claim("198.51.100.10", 9)],
        Duration::from_secs(62),
    );
    assert_eq!(later.len(), 1, "{later:?}");
    let text = rig.reconciler.metrics.encode();
    assert!(
        text.contains("herald_layer2_foreign_claims_total{ip=\"198.51.100.10\"} 4"),
        "{text}"
    );
}

#[test]
fn passes_faster_than_the_writer_leave_one_pending_status_set_the_newest() {
    let mut rig = Rig::new();
    rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    rig.pass(
        &view(&[("web", "198.51.100.10"), ("api", "198.51.100.11")]),
        &[NODE],
        Duration::from_secs(1),
    );
    let markers = rig
        .writes()
        .iter()
        .filter(|w| **w == Write::Statuses)
        .count();
    assert_eq!(markers, 1, "one status write queued for two passes");
    let (statuses, _) = rig.statuses.take().expect("statuses pending");
    assert!(
        statuses.l2.contains_key("default/api"),
        "the newest set: {statuses:?}"
    );
    assert!(rig.statuses.take().is_none(), "taken once");
    // Once the writer took it, the next pass queues a status write again.
    rig.pass(
        &view(&[("web", "198.51.100.10")]),
        &[NODE],
        Duration::from_secs(2),
    );
    assert!(rig.writes().contains(&Write::Statuses));
}

#[test]
fn an_xdp_mode_change_is_a_warning_event_on_the_node_and_counted() {
    use crate::dataplane::AttachedMode;
    use crate::dataplane::xdp_mode::ModeChange;
    let mut rig = Rig::new();
    rig.pass(&view(&[("web", "198.51.100.10")]), &[NODE], Duration::ZERO);
    rig.writes();
    let change = ModeChange {
        iface: "eth0".into(),
        from: Some(AttachedMode::Driver),
        to: AttachedMode::Skb,
        reason: "tx_dropped",
        message: "XDP on eth0: moved from driver mode to skb mode".into(),
    };
    rig.plane.state().mode_changes = vec![change.clone()];
    let seen = rig.announcer.observe();
    assert_eq!(seen.mode_changes, vec![change.clone()]);
    rig.reconciler.report_mode_changes(&seen.mode_changes);
    assert_eq!(
        rig.writes(),
        vec![Write::NodeEvent(true, "xdpModeChanged", change.message)]
    );
    let text = rig.reconciler.metrics.encode();
    assert!(
        text.contains(
            "herald_xdp_mode_changes_total{iface=\"eth0\",mode=\"skb\",reason=\"tx_dropped\"} 1"
        ),
        "{text}"
    );
    // Reported once: the next look has nothing new.
    assert!(rig.announcer.observe().mode_changes.is_empty());
}
