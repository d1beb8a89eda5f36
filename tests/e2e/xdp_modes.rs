//! Which XDP mode the real `herald` picks on a veth, against the real kernel: a node and a client
//! namespace joined by a veth whose client end runs no XDP program — what a container's or a
//! lab node's interface looks like.
//!
//! - Driver mode there answers nothing: the program replies (XDP_TX), the veth drops every reply
//!   and counts it as a TX drop. `auto` therefore attaches in skb mode on a veth, and moves a
//!   pinned driver-mode link there to skb mode, saying so.
//! - An explicit `--mode` moves a pinned link to that mode, and the address keeps being answered.
//!   With an XDP program on the client end too, driver mode answers on a veth.
//!
//! Run: `cargo build -p herald && cargo test -p herald-tests --test xdp_modes` (as root).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use herald_tests::{Bpffs, Netns, herald_bin, poll_until, require_root, unique, veth_between};

const NODE_V4: &str = "198.51.100.1";
const CLIENT_V4: &str = "198.51.100.2";
const SERVICE_V4: &str = "198.51.100.80";
const SERVICE_MAC: &str = "02:00:5e:00:00:80";
const SETTLE: Duration = Duration::from_secs(10);

struct Pair {
    // Dropped first: the pins go before the namespaces.
    bpffs: Bpffs,
    node: Netns,
    client: Netns,
    node_if: String,
    client_if: String,
}

impl Pair {
    fn new(prefix: &str) -> Pair {
        require_root();
        let bpffs = Bpffs::new().expect("private bpffs");
        let node = Netns::new(&format!("{prefix}n")).expect("node namespace");
        let client = Netns::new(&format!("{prefix}c")).expect("client namespace");
        let (node_if, client_if) = (unique("mn"), unique("mc"));
        veth_between(&node, &node_if, &client, &client_if).expect("veth");
        for (ns, dev, v4) in [(&node, &node_if, NODE_V4), (&client, &client_if, CLIENT_V4)] {
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", dev])
                .expect("address");
            ns.ip(["link", "set", dev, "up"]).expect("up");
        }
        Pair {
            bpffs,
            node,
            client,
            node_if,
            client_if,
        }
    }

    fn pin_dir(&self, side: &str) -> PathBuf {
        self.bpffs.dir.join(side)
    }

    /// `herald xdp ARGS` in the node namespace; the output whatever the status.
    fn herald(&self, args: &[&str]) -> Output {
        self.node
            .command(herald_bin())
            .args(["xdp", "--pin-dir"])
            .arg(self.pin_dir("node"))
            .args(args)
            .output()
            .expect("herald xdp")
    }

    fn herald_ok(&self, args: &[&str]) -> String {
        let out = self.herald(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "herald xdp {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn attach(&self, mode: &str) -> String {
        self.herald_ok(&["attach", "--iface", &self.node_if, "--mode", mode])
    }

    fn announce(&self) {
        self.herald_ok(&[
            "announce",
            "--iface",
            &self.node_if,
            "--mac",
            SERVICE_MAC,
            "--gratuitous-window",
            "0",
            SERVICE_V4,
        ]);
    }

    fn list(&self) -> serde_json::Value {
        serde_json::from_str(&self.herald_ok(&["list", "-o", "json"])).expect("list JSON")
    }

    /// The node interface's data plane as `herald xdp list` shows it (`xdp-driver`, `xdp-skb`).
    fn dataplane(&self) -> String {
        self.list()["interfaces"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["iface"] == self.node_if.as_str()))
            .and_then(|i| i["dataplane"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    fn replies(&self) -> u64 {
        self.list()["counters"]["arp_replies"].as_u64().unwrap_or(0)
    }

    /// The link pins in the node's pin directory.
    fn link_pins(&self) -> Vec<String> {
        let mut pins: Vec<String> = std::fs::read_dir(self.pin_dir("node"))
            .expect("pin dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("link_"))
            .collect();
        pins.sort();
        pins
    }

    /// The node interface's TX drop counter (`ip -s link`).
    fn node_tx_dropped(&self) -> u64 {
        let out = self
            .node
            .ip(["-j", "-s", "link", "show", "dev", &self.node_if])
            .expect("ip -s link");
        let json: serde_json::Value = serde_json::from_str(&out).expect("ip JSON");
        json[0]["stats64"]["tx"]["dropped"]
            .as_u64()
            .expect("tx dropped")
    }

    /// One ARP request from the client: the MAC that answered, if any.
    fn arping(&self) -> Option<String> {
        let out = self
            .client
            .command("arping")
            .args([
                "-i",
                &self.client_if,
                "-c",
                "1",
                "-w",
                "1",
                "-r",
                SERVICE_V4,
            ])
            .output()
            .expect("arping");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// `count` ARP requests from the client, one every 5 ms, in the background.
    fn arping_every_5ms(&self, count: u32) -> std::process::Child {
        self.client
            .command("arping")
            .args([
                "-i",
                &self.client_if,
                "-c",
                &count.to_string(),
                "-W",
                "0.005",
                SERVICE_V4,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("arping")
    }

    fn answered(&self) -> bool {
        poll_until(SETTLE, || self.arping().as_deref() == Some(SERVICE_MAC))
    }
}

#[test]
fn auto_attaches_in_skb_mode_on_a_veth_and_answers() {
    let pair = Pair::new("hma");
    let out = pair.attach("auto");
    assert!(
        out.contains(&format!("XDP on {}: attached in skb mode", pair.node_if))
            && out.contains("veth"),
        "{out}"
    );
    assert_eq!(pair.dataplane(), "xdp-skb");
    pair.announce();
    assert!(pair.answered(), "skb mode answers on the veth");
    // A second attach keeps the link as it is.
    assert!(pair.attach("auto").contains("already attached (skb mode)"));
}

#[test]
fn driver_mode_replies_are_dropped_on_a_veth_and_auto_moves_the_link_to_skb() {
    let pair = Pair::new("hmd");
    let out = pair.attach("driver");
    assert!(out.contains("attached in driver mode"), "{out}");
    pair.announce();
    let (replies, dropped) = (pair.replies(), pair.node_tx_dropped());
    for _ in 0..3 {
        assert_eq!(
            pair.arping(),
            None,
            "driver-mode replies never leave the veth"
        );
    }
    // What the speaker's watch reads: every reply the program sent is a TX drop.
    let sent = pair.replies() - replies;
    assert!(sent >= 3, "the program replied ({sent})");
    assert!(
        pair.node_tx_dropped() - dropped >= sent,
        "the veth counted the replies as TX drops"
    );

    // A restarted Herald under `auto` finds the pinned driver link and moves it.
    let out = pair.attach("auto");
    assert!(
        out.contains(&format!(
            "XDP on {}: moved from driver mode to skb mode (",
            pair.node_if
        )) && out
            .contains("µs without XDP, answered in userspace meanwhile): the interface is a veth"),
        "{out}"
    );
    assert_eq!(pair.dataplane(), "xdp-skb");
    assert_eq!(pair.link_pins(), vec![format!("link_skb_{}", pair.node_if)]);
    // The maps were kept: the address is answered without announcing it again.
    assert!(pair.answered(), "answered after the move");
}

#[test]
fn an_explicit_mode_moves_a_pinned_link_and_the_address_stays_answered() {
    let pair = Pair::new("hme");
    // An XDP program on the client end lets driver-mode replies cross the veth.
    let client_pins = pair.pin_dir("client");
    let out = pair
        .client
        .command(herald_bin())
        .args(["xdp", "--pin-dir"])
        .arg(&client_pins)
        .args(["attach", "--iface", &pair.client_if, "--mode", "driver"])
        .output()
        .expect("herald xdp attach on the client end");
    assert!(out.status.success(), "{out:?}");

    assert!(pair.attach("skb").contains("attached in skb mode"));
    pair.announce();
    assert!(pair.answered());
    // A request every 5 ms while the link moves six times: each move leaves the interface
    // without XDP for a few tens of ms, which a userspace responder covers.
    let probe = pair.arping_every_5ms(600);
    std::thread::sleep(Duration::from_millis(200));
    for (mode, from) in [
        ("driver", "skb"),
        ("skb", "driver"),
        ("driver", "skb"),
        ("skb", "driver"),
        ("driver", "skb"),
    ] {
        let out = pair.attach(mode);
        assert!(
            out.contains(&format!("moved from {from} mode to {mode} mode (")),
            "{out}"
        );
        assert!(out.contains("answered in userspace meanwhile"), "{out}");
        assert_eq!(pair.dataplane(), format!("xdp-{mode}"));
        assert_eq!(
            pair.link_pins(),
            vec![format!("link_{mode}_{}", pair.node_if)]
        );
    }
    let summary = arping_summary(probe);
    eprintln!("{summary}");
    assert!(
        every_request_answered_once(&summary),
        "every request answered once while the link moved: {summary}"
    );
    assert!(pair.answered(), "answered in driver mode");
}

/// The program id behind the node's pinned link (bpftool).
fn linked_program(pair: &Pair) -> u64 {
    let pin = pair.pin_dir("node").join(&pair.link_pins()[0]);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(&pin)
        .output()
        .expect("bpftool");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    json["prog_id"].as_u64().expect("prog_id")
}

/// A restarted Herald keeps the live pinned link and swaps its own program into it
/// (`BPF_LINK_UPDATE`): an upgrade takes effect, and no request goes unanswered meanwhile.
#[test]
fn a_kept_link_gets_the_new_program_without_a_gap() {
    let pair = Pair::new("hmu");
    pair.attach("skb");
    pair.announce();
    assert!(pair.answered());
    let probe = pair.arping_every_5ms(300);
    let mut programs = vec![linked_program(&pair)];
    for _ in 0..3 {
        let out = pair.attach("auto");
        assert!(
            out.contains("already attached (skb mode), program replaced by this version's"),
            "{out}"
        );
        programs.push(linked_program(&pair));
    }
    let summary = arping_summary(probe);
    eprintln!("{summary}; programs {programs:?}");
    let distinct: std::collections::BTreeSet<_> = programs.iter().collect();
    assert_eq!(
        distinct.len(),
        programs.len(),
        "each attach brought its program: {programs:?}"
    );
    assert!(every_request_answered_once(&summary), "{summary}");
    assert_eq!(pair.link_pins().len(), 1);
}

/// From arping's summary (`N packets transmitted, M packets received, P% unanswered (K
/// extra)`): as many replies as requests and none extra. The rounded percentage would hide a
/// lost request or two among hundreds.
fn every_request_answered_once(summary: &str) -> bool {
    let number_before = |word: &str| -> Option<u64> {
        let at = summary.find(word)?;
        summary[..at]
            .split_whitespace()
            .last()?
            .trim_start_matches('(')
            .parse()
            .ok()
    };
    match (
        number_before(" packets transmitted"),
        number_before(" packets received"),
        number_before(" extra)"),
    ) {
        (Some(sent), Some(received), Some(extra)) => sent > 0 && received == sent && extra == 0,
        _ => false,
    }
}

#[test]
fn arping_summaries_are_read_exactly() {
    let all = "300 packets transmitted, 300 packets received,   0% unanswered (0 extra)";
    assert!(every_request_answered_once(all));
    // One lost in 300 still prints 0%.
    let one_lost = "300 packets transmitted, 299 packets received,   0% unanswered (0 extra)";
    assert!(!every_request_answered_once(one_lost));
    let doubled = "3 packets transmitted, 3 packets received,   0% unanswered (1 extra)";
    assert!(!every_request_answered_once(doubled));
    assert!(!every_request_answered_once(""));
}

/// arping's summary line (`N packets transmitted, … % unanswered (K extra)`) once it is done.
fn arping_summary(probe: std::process::Child) -> String {
    let out = probe.wait_with_output().expect("arping output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_string()
}
