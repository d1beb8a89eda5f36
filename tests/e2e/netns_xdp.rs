//! The real `herald` binary against the real kernel: a node and a client namespace joined by a
//! veth, every test run twice, once per data-plane implementation (`both!` below):
//!
//! - `xdp`: the XDP program attached to the node end in skb (generic) mode (in driver mode a
//!   veth drops XDP_TX frames unless its peer runs an XDP program too);
//! - `userspace`: the AF_PACKET fallback responder (`--dataplane userspace`), a process reading
//!   the same maps; `herald xdp attach --dataplane userspace` runs it in the foreground, the way
//!   the pinned XDP link answers, and `announce`/`withdraw`/`list` work the same against both.
//!
//! Each test owns its namespaces (`hx*` for XDP, `hu*` for userspace) and a private bpffs
//! (`HERALD_PIN_DIR` points into it), so tests run in parallel without sharing maps, and
//! everything disappears on drop even after a failure.
//!
//! Announcements use MACs the node does not have, and addresses the node kernel does not own,
//! so every answer seen provably comes from Herald. The client accepts gratuitous packets for
//! neighbours it does not know yet: `arp_accept=1` for ARP, and for NDP
//! `accept_untracked_na=1` with IPv6 forwarding on (RFC 9131 applies it to routers only).
//!
//! Run: `cargo build -p herald && cargo test -p herald-tests --test netns_xdp` (as root).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herald_tests::{
    Bpffs, KillOnDrop, Netns, herald_bin, poll_until, require_root, unique, veth_between,
};

const NODE_V4: &str = "198.51.100.1";
const CLIENT_V4: &str = "198.51.100.2";
const NODE_V6: &str = "2001:db8::1";
const CLIENT_V6: &str = "2001:db8::2";
/// Long enough for any asynchronous effect here; polls return as soon as it shows.
const SETTLE: Duration = Duration::from_secs(15);

/// Which implementation answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Xdp,
    Userspace,
}

impl Impl {
    fn dataplane(self) -> &'static str {
        match self {
            Impl::Xdp => "xdp",
            Impl::Userspace => "userspace",
        }
    }

    /// What `herald xdp list` shows for the interface.
    fn listed_mode(self) -> &'static str {
        match self {
            Impl::Xdp => "xdp-skb",
            Impl::Userspace => "userspace",
        }
    }
}

/// One `#[test]` per implementation for a `fn name(Impl)`: `name::xdp` and `name::userspace`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn xdp() {
                super::$name(super::Impl::Xdp)
            }
            #[test]
            fn userspace() {
                super::$name(super::Impl::Userspace)
            }
        }
    )*};
}

both!(
    ipv4_answers_gratuitous_arp_and_withdraw,
    ipv6_answers_unsolicited_na_multicast_group_and_withdraw,
    guard_keeps_answering_after_kill_until_timeout_then_stops,
    sigterm_withdraws_and_exits_cleanly,
    bad_input_gives_one_clear_line,
    hostile_flood_is_never_answered_and_never_stops_the_responder,
    refused_replies_are_counted_drops_never_an_exit,
);

struct Lab {
    imp: Impl,
    // Dropped in this order: the userspace responder, the pins, then the namespaces (and the
    // veth with them).
    responder: RefCell<Option<KillOnDrop>>,
    bpffs: Bpffs,
    node: Netns,
    client: Netns,
    node_if: String,
    client_if: String,
    herald: std::path::PathBuf,
}

impl Lab {
    fn new(imp: Impl) -> Lab {
        require_root();
        let bpffs = Bpffs::new().expect("private bpffs");
        let (node_prefix, client_prefix) = match imp {
            Impl::Xdp => ("hxn", "hxc"),
            Impl::Userspace => ("hun", "huc"),
        };
        let node = Netns::new(node_prefix).expect("node namespace");
        let client = Netns::new(client_prefix).expect("client namespace");
        let node_if = unique("hn");
        let client_if = unique("hc");
        veth_between(&node, &node_if, &client, &client_if).expect("veth");
        for (ns, dev, v4, v6) in [
            (&node, &node_if, NODE_V4, NODE_V6),
            (&client, &client_if, CLIENT_V4, CLIENT_V6),
        ] {
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", dev])
                .expect("IPv4 address");
            ns.ip(["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])
                .expect("IPv6 address");
            ns.ip(["link", "set", dev, "up"]).expect("link up");
        }
        // A freshly created link drops unsolicited NAs until its IPv6 set-up (carrier seen,
        // link-local past duplicate address detection) is done: wait for that on both ends.
        for (ns, dev) in [(&node, &node_if), (&client, &client_if)] {
            let ready = || {
                let all = ns
                    .ip(["-6", "addr", "show", "dev", dev, "scope", "link"])
                    .unwrap_or_default();
                let tentative = ns
                    .ip(["-6", "addr", "show", "dev", dev, "tentative"])
                    .unwrap_or_default();
                all.contains("fe80::") && tentative.trim().is_empty()
            };
            assert!(
                poll_until(SETTLE, ready),
                "{dev}: IPv6 link-local never became usable"
            );
        }
        client
            .sysctl(&format!("net.ipv4.conf.{client_if}.arp_accept"), "1")
            .expect("arp_accept");
        client
            .sysctl(&format!("net.ipv6.conf.{client_if}.forwarding"), "1")
            .expect("forwarding");
        client
            .sysctl(
                &format!("net.ipv6.conf.{client_if}.accept_untracked_na"),
                "1",
            )
            .expect("accept_untracked_na");
        Lab {
            imp,
            responder: RefCell::new(None),
            bpffs,
            node,
            client,
            node_if,
            client_if,
            herald: herald_bin(),
        }
    }

    fn herald_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.node.command(&self.herald);
        cmd.arg("xdp")
            .args(args)
            .env("HERALD_PIN_DIR", self.bpffs.dir.join("herald"))
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
        cmd
    }

    fn herald(&self, args: &[&str]) -> Output {
        self.herald_command(args).output().expect("running herald")
    }

    /// Runs `herald xdp ARGS`, asserting success; returns stdout.
    fn herald_ok(&self, args: &[&str]) -> String {
        let out = self.herald(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "herald xdp {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `herald xdp ARGS`, asserting failure with exactly one line on stderr; returns it.
    fn herald_err(&self, args: &[&str]) -> String {
        let out = self.herald(args);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(
            !out.status.success(),
            "herald xdp {args:?} succeeded unexpectedly"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "herald xdp {args:?}: expected one error line, got:\n{stderr}"
        );
        stderr
    }

    fn list_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.herald_ok(&["list", "-o", "json"]))
            .expect("list -o json is JSON")
    }

    fn counter(&self, name: &str) -> u64 {
        self.list_json()["counters"][name].as_u64().unwrap_or(0)
    }

    fn node_mac(&self) -> String {
        let out = self
            .node
            .ip(["-o", "link", "show", "dev", &self.node_if])
            .expect("ip link");
        field_after(&out, "link/ether").expect("node MAC")
    }

    fn client_mac(&self) -> [u8; 6] {
        let out = self
            .client
            .ip(["-o", "link", "show", "dev", &self.client_if])
            .expect("ip link");
        parse_mac(&field_after(&out, "link/ether").expect("client MAC"))
    }

    /// One ARP request from the client: the MAC that answered, if any.
    fn arping(&self, ip: &str) -> Option<String> {
        let out = self
            .client
            .command("arping")
            .args(["-i", &self.client_if, "-c", "1", "-w", "1", "-r", ip])
            .output()
            .expect("arping");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// One Neighbor Solicitation from the client: the target link-layer address, if any.
    fn ndisc6(&self, ip: &str) -> Option<String> {
        let out = self
            .client
            .command("ndisc6")
            .args(["-q", "-1", "-r", "1", "-w", "800", ip, &self.client_if])
            .output()
            .expect("ndisc6");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// The MAC the client's neighbour table holds for `ip`, if any.
    fn client_neighbour(&self, ip: &str) -> Option<String> {
        let out = self
            .client
            .ip(["neigh", "show", ip, "dev", &self.client_if])
            .ok()?;
        field_after(&out, "lladdr")
    }

    /// `prog/xdp id N` of the node end: which program instance is attached.
    fn node_xdp_program(&self) -> Option<String> {
        let out = self.node.ip(["link", "show", "dev", &self.node_if]).ok()?;
        let mut words = out.split_whitespace().skip_while(|w| *w != "prog/xdp");
        // "prog/xdp id 436 name herald_xdp ..."
        words.nth(2).map(str::to_string)
    }

    fn node_link_groups(&self) -> String {
        self.node
            .ip(["maddr", "show", "dev", &self.node_if])
            .expect("ip maddr")
    }

    fn addresses(&self) -> Vec<serde_json::Value> {
        self.list_json()["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn address(&self, ip: &str) -> Option<serde_json::Value> {
        self.addresses().into_iter().find(|a| a["ip"] == ip)
    }

    /// `herald xdp list`'s entry for the node interface: (dataplane, active).
    fn listed_interface(&self) -> Option<(String, bool)> {
        let json = self.list_json();
        json["interfaces"]
            .as_array()?
            .iter()
            .find(|i| i["iface"] == self.node_if.as_str())
            .map(|i| {
                (
                    i["dataplane"].as_str().unwrap_or_default().to_string(),
                    i["active"].as_bool().unwrap_or(false),
                )
            })
    }

    /// Makes the node interface answer, as `herald xdp attach --dataplane <impl>` does: XDP
    /// attaches (pinned) and the command exits; userspace keeps answering in the foreground.
    fn attach(&self) {
        match self.imp {
            Impl::Xdp => {
                let out = self.herald_ok(&["attach", "--iface", &self.node_if, "--mode", "skb"]);
                eprintln!("attach: {}", out.trim());
                assert!(out.contains("attached in skb mode"), "{out}");
            }
            Impl::Userspace => {
                let child = self
                    .herald_command(&[
                        "attach",
                        "--dataplane",
                        "userspace",
                        "--iface",
                        &self.node_if,
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("spawn herald xdp attach --dataplane userspace");
                *self.responder.borrow_mut() = Some(KillOnDrop(child));
                assert!(
                    poll_until(SETTLE, || self.listed_interface()
                        == Some(("userspace".into(), true))),
                    "the userspace responder is listed: {}",
                    self.list_json()
                );
            }
        }
        assert_eq!(
            self.listed_interface(),
            Some((self.imp.listed_mode().to_string(), true))
        );
        assert_eq!(
            self.node_xdp_program().is_some(),
            self.imp == Impl::Xdp,
            "an XDP program is attached only for the XDP implementation"
        );
    }

    /// True while the foreground userspace responder runs (always true for XDP).
    fn responder_running(&self) -> bool {
        match self.responder.borrow_mut().as_mut() {
            Some(child) => child.0.try_wait().expect("try_wait").is_none(),
            None => self.imp == Impl::Xdp,
        }
    }

    /// Stops the userspace responder with SIGTERM; asserts a clean exit. Returns its stdout.
    fn stop_responder(&self) -> String {
        let Some(mut child) = self.responder.borrow_mut().take() else {
            return String::new();
        };
        child.signal(libc::SIGTERM).expect("SIGTERM");
        let status = child.0.wait().expect("reap");
        let mut out = String::new();
        if let Some(mut stdout) = child.0.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
        }
        assert!(
            status.success(),
            "responder exit after SIGTERM: {status}\n{out}"
        );
        out
    }

    /// `herald xdp run --dataplane <impl> ... ARGS`, spawned.
    fn run(&self, args: &[&str]) -> KillOnDrop {
        let mut all = vec![
            "run",
            "--dataplane",
            self.imp.dataplane(),
            "--iface",
            &self.node_if,
            "--mode",
            "skb",
        ];
        all.extend_from_slice(args);
        let child = self
            .herald_command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn herald xdp run");
        KillOnDrop(child)
    }
}

fn field_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(str::to_lowercase)
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

fn ipv4_answers_gratuitous_arp_and_withdraw(imp: Impl) {
    let lab = Lab::new(imp);
    let ip = "198.51.100.10";
    let mac = "02:00:5e:00:00:10";
    assert_ne!(lab.node_mac(), mac);
    assert!(
        !lab.node.ip(["addr"]).unwrap().contains(ip),
        "the node kernel must not own {ip}"
    );

    lab.attach();
    match imp {
        Impl::Xdp => {
            let program = lab
                .node_xdp_program()
                .expect("an XDP program on the node end");
            let again = lab.herald_ok(&["attach", "--iface", &lab.node_if, "--mode", "skb"]);
            assert!(
                again.contains("already attached (skb mode)"),
                "attach twice: {again}"
            );
            let now = lab.node_xdp_program();
            assert!(
                now.is_some() && now.as_ref() != Some(&program),
                "attach twice keeps the pinned link and swaps this binary's program into it \
                 (an upgrade takes effect): {program:?} then {now:?}"
            );
            let json = lab.list_json();
            assert_eq!(json["attachments"][0]["iface"], lab.node_if.as_str());
            assert_eq!(json["attachments"][0]["mode"], "skb");
        }
        Impl::Userspace => {
            // Attach twice: the running responder is reused, no second one starts.
            let again = lab.herald_ok(&[
                "attach",
                "--dataplane",
                "userspace",
                "--iface",
                &lab.node_if,
            ]);
            assert!(
                again.contains("already answered in userspace (pid"),
                "attach twice: {again}"
            );
            let json = lab.list_json();
            assert_eq!(
                json["interfaces"].as_array().map(Vec::len),
                Some(1),
                "{json}"
            );
            assert!(json["attachments"].as_array().unwrap().is_empty(), "{json}");
            let text = lab.herald_ok(&["list"]);
            assert!(
                text.contains(&format!("{} mode userspace (pid", lab.node_if)),
                "{text}"
            );
        }
    }

    assert_eq!(
        lab.arping(ip),
        None,
        "nothing answers for {ip} before it is announced"
    );
    assert_eq!(lab.client_neighbour(ip), None);

    lab.herald_ok(&[
        "announce",
        ip,
        "--iface",
        &lab.node_if,
        "--mac",
        mac,
        "--gratuitous-window",
        "0",
    ]);
    assert!(
        poll_until(SETTLE, || lab.client_neighbour(ip).as_deref() == Some(mac)),
        "the gratuitous ARP did not put {ip} -> {mac} in the client's table: {:?}",
        lab.client_neighbour(ip)
    );
    assert_eq!(lab.arping(ip).as_deref(), Some(mac));
    assert_eq!(
        lab.arping("198.51.100.11"),
        None,
        "unknown addresses unanswered"
    );

    // Counters are written in batches by the userspace responder: poll, as for any effect.
    assert!(
        poll_until(SETTLE, || lab.address(ip).is_some_and(|entry| {
            entry["requests"].as_u64() >= Some(1) && entry["replies"].as_u64() >= Some(1)
        })),
        "per-address counters: {:?}",
        lab.address(ip)
    );
    assert_eq!(lab.address(ip).expect("listed")["mac"], mac);
    assert!(poll_until(SETTLE, || lab.counter("arp_replies") >= 1));
    assert!(
        poll_until(SETTLE, || lab.counter("passed") >= 1),
        "the request for an unknown address counts as passed"
    );

    let out = lab.herald_ok(&["withdraw", ip, "--iface", &lab.node_if]);
    assert!(out.contains("withdrew"), "{out}");
    assert_eq!(lab.arping(ip), None, "answers stop after withdraw");
    assert!(lab.address(ip).is_none());
    let out = lab.herald_ok(&["withdraw", ip, "--iface", &lab.node_if]);
    assert!(out.contains("was not announced"), "withdraw twice: {out}");

    match imp {
        Impl::Xdp => {
            let out = lab.herald_ok(&["detach"]);
            assert!(
                out.contains("detached (skb mode)") && out.contains("removed the maps"),
                "{out}"
            );
            assert!(
                !lab.node
                    .ip(["link", "show", "dev", &lab.node_if])
                    .unwrap()
                    .contains("xdp")
            );
        }
        Impl::Userspace => {
            // The maps stay while the responder reads them.
            let out = lab.herald_ok(&["detach"]);
            assert!(
                out.contains("kept the maps") && !out.contains("removed the maps"),
                "{out}"
            );
            let summary = lab.stop_responder();
            assert!(summary.contains("userspace responder:"), "{summary}");
            assert!(
                summary.contains("stopped answering in userspace"),
                "{summary}"
            );
            assert_eq!(
                lab.listed_interface(),
                None,
                "the marker goes with the process"
            );
            let out = lab.herald_ok(&["detach"]);
            assert!(out.contains("removed the maps"), "{out}");
        }
    }
}

fn ipv6_answers_unsolicited_na_multicast_group_and_withdraw(imp: Impl) {
    let lab = Lab::new(imp);
    let (a, b) = ("2001:db8::10", "2001:db8::1:0:0:10");
    let mac = "02:00:5e:00:00:11";
    let group = "33:33:ff:00:00:10";
    lab.attach();
    assert!(!lab.node_link_groups().contains(group));

    lab.herald_ok(&[
        "announce",
        a,
        "--iface",
        &lab.node_if,
        "--mac",
        mac,
        "--gratuitous-window",
        "0",
    ]);
    assert!(
        poll_until(SETTLE, || lab.client_neighbour(a).as_deref() == Some(mac)),
        "the unsolicited NA did not put {a} -> {mac} in the client's table: {:?}",
        lab.client_neighbour(a)
    );
    assert_eq!(lab.ndisc6(a).as_deref(), Some(mac));
    assert!(
        lab.node_link_groups().contains(group),
        "solicited-node group joined:\n{}",
        lab.node_link_groups()
    );
    assert!(poll_until(SETTLE, || lab.counter("na_replies") >= 1));

    // Same low 24 bits: both need the group; withdrawing one keeps it for the other.
    lab.herald_ok(&[
        "announce",
        b,
        "--iface",
        &lab.node_if,
        "--mac",
        mac,
        "--gratuitous-window",
        "0",
    ]);
    lab.herald_ok(&["withdraw", a, "--iface", &lab.node_if]);
    assert!(
        lab.node_link_groups().contains(group),
        "group kept while {b} needs it"
    );
    assert_eq!(lab.ndisc6(a), None, "answers for {a} stop after withdraw");
    assert_eq!(lab.ndisc6(b).as_deref(), Some(mac));
    lab.herald_ok(&["withdraw", b, "--iface", &lab.node_if]);
    assert!(
        !lab.node_link_groups().contains(group),
        "group left with the last address:\n{}",
        lab.node_link_groups()
    );
    assert_eq!(lab.ndisc6(b), None);
}

/// The answerer outlives the `herald xdp run` process that beats the guard (the pinned XDP
/// program; the `attach --dataplane userspace` process): after that process is killed, answers
/// continue until the guard's timeout, then stop although the addresses are still announced.
fn guard_keeps_answering_after_kill_until_timeout_then_stops(imp: Impl) {
    let lab = Lab::new(imp);
    let (v4, v6) = ("198.51.100.20", "2001:db8::20");
    let mac = "02:00:5e:00:00:20";
    lab.attach();
    let mut run = lab.run(&[
        "--announce",
        v4,
        "--announce",
        v6,
        "--mac",
        mac,
        "--guard-timeout",
        "4s",
        "--gratuitous-window",
        "0",
    ]);
    assert!(
        poll_until(SETTLE, || lab.arping(v4).as_deref() == Some(mac)),
        "herald xdp run answers for {v4}"
    );
    assert_eq!(lab.ndisc6(v6).as_deref(), Some(mac));
    assert_eq!(lab.list_json()["guard"]["state"], "fresh");

    run.0.kill().expect("SIGKILL");
    run.0.wait().expect("reap");
    // The answerer outlives the process: answers continue (the guard timeout, 4 s, is far
    // longer than this 2 s window, which only forgives one lost reply on a loaded machine)...
    assert!(
        poll_until(Duration::from_secs(2), || lab.arping(v4).as_deref()
            == Some(mac)),
        "answers continue right after the kill"
    );
    // ...until the heartbeat is older than the timeout; then they stop, with the addresses still
    // announced: the guard, not a withdraw, silenced them. Wait for the guard itself to run out
    // (one lost arping reply on a loaded machine must not pass for silence), then both
    // families must be silent. The program reads a coarse clock that may lag `list` by a tick,
    // hence the poll for ARP; from then on silence is permanent, so NDP is checked once.
    assert!(
        poll_until(
            Duration::from_secs(30),
            || lab.list_json()["guard"]["state"] == "stale"
        ),
        "the guard never ran out: {}",
        lab.list_json()
    );
    assert!(
        poll_until(SETTLE, || lab.arping(v4).is_none()),
        "ARP answers continue after the guard ran out"
    );
    assert_eq!(lab.ndisc6(v6), None, "NDP answers after the guard ran out");
    assert!(lab.responder_running(), "the answerer itself still runs");
    assert!(
        poll_until(SETTLE, || lab.counter("silenced") >= 1),
        "{}",
        lab.list_json()
    );
    let json = lab.list_json();
    assert_eq!(json["guard"]["state"], "stale", "{json}");
    let listed: Vec<&str> = json["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["ip"].as_str())
        .collect();
    assert!(listed.contains(&v4) && listed.contains(&v6), "{listed:?}");
}

/// `herald xdp run --dataplane <impl>` alone (it attaches, or answers itself): SIGTERM
/// withdraws and exits 0.
fn sigterm_withdraws_and_exits_cleanly(imp: Impl) {
    let lab = Lab::new(imp);
    let (ip, v6) = ("198.51.100.30", "2001:db8::30");
    let mac = "02:00:5e:00:00:30";
    let mut run = lab.run(&[
        "--announce",
        ip,
        "--announce",
        v6,
        "--mac",
        mac,
        "--guard-timeout",
        "4s",
    ]);
    assert!(poll_until(SETTLE, || lab.arping(ip).as_deref() == Some(mac)));
    assert!(poll_until(SETTLE, || lab.ndisc6(v6).as_deref() == Some(mac)));
    assert_eq!(
        lab.listed_interface(),
        Some((imp.listed_mode().to_string(), true))
    );
    assert_eq!(lab.node_xdp_program().is_some(), imp == Impl::Xdp);
    assert!(poll_until(SETTLE, || lab.counter("arp_replies") >= 1
        && lab.counter("na_replies") >= 1));
    run.signal(libc::SIGTERM).expect("SIGTERM");
    let status = run.0.wait().expect("reap");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(lab.address(ip).is_none(), "withdrawn on SIGTERM");
    assert_eq!(lab.list_json()["guard"]["state"], "off");
    assert_eq!(lab.arping(ip), None);
    assert_eq!(lab.ndisc6(v6), None);
    match imp {
        // The link stays: a restarted process resumes without re-attaching.
        Impl::Xdp => assert_eq!(lab.list_json()["attachments"][0]["mode"], "skb"),
        // The responder was the process: nothing is listed any more.
        Impl::Userspace => assert_eq!(lab.listed_interface(), None),
    }
}

fn bad_input_gives_one_clear_line(imp: Impl) {
    let lab = Lab::new(imp);
    lab.attach();
    let iface = lab.node_if.as_str();

    let err = lab.herald_err(&["announce", "198.51.100.10", "--iface", "hx-no-such0"]);
    assert!(err.contains("\"hx-no-such0\" does not exist"), "{err}");
    let err = lab.herald_err(&["announce", "198.51.100.300", "--iface", iface]);
    assert!(
        err.contains("\"198.51.100.300\"") && err.contains("not an IPv4 or IPv6 address"),
        "{err}"
    );
    let err = lab.herald_err(&["announce", "224.0.0.5", "--iface", iface]);
    assert!(err.contains("multicast"), "{err}");
    let err = lab.herald_err(&[
        "announce",
        "198.51.100.10",
        "--iface",
        iface,
        "--mac",
        "01:00:5e:00:00:01",
    ]);
    assert!(err.contains("not a unicast"), "{err}");
    for ip in ["198.51.100.10", "2001:db8::10"] {
        let err = lab.herald_err(&["announce", ip, "--iface", "lo"]);
        assert!(
            err.contains("interface lo: cannot serve") && err.contains("loopback"),
            "{err}"
        );
    }

    // One answerer per interface: XDP and userspace never both answer there. Asking for
    // userspace where XDP is attached hands the interface over (the link is unpinned, the maps
    // stay); asking for XDP where a userspace responder runs is refused.
    match imp {
        Impl::Xdp => {
            let mut child = KillOnDrop(
                lab.herald_command(&["attach", "--dataplane", "userspace", "--iface", iface])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("spawn herald xdp attach --dataplane userspace"),
            );
            assert!(
                poll_until(SETTLE, || lab.listed_interface()
                    == Some(("userspace".into(), true))),
                "the userspace responder took over: {}",
                lab.list_json()
            );
            assert_eq!(lab.node_xdp_program(), None, "the XDP link was unpinned");
            child.signal(libc::SIGTERM).expect("SIGTERM");
            let status = child.0.wait().expect("reap");
            let mut out = String::new();
            if let Some(mut stdout) = child.0.stdout.take() {
                use std::io::Read;
                let _ = stdout.read_to_string(&mut out);
            }
            assert!(status.success(), "{status}\n{out}");
            assert!(
                out.contains("detached the XDP program (skb mode) to answer in userspace"),
                "{out}"
            );
            // Back to XDP for the rest of the test.
            lab.attach();
        }
        Impl::Userspace => {
            let err = lab.herald_err(&["attach", "--iface", iface, "--mode", "skb"]);
            assert!(err.contains("answered in userspace by pid"), "{err}");
            assert_eq!(lab.node_xdp_program(), None);
        }
    }
    // (clap's own usage error, several lines.)
    let out = lab.herald(&["attach", "--dataplane", "ebpf", "--iface", iface]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'ebpf'") && err.contains("xdp, userspace, auto"),
        "{err}"
    );

    // A NOARP interface cannot serve IPv4; without IPv6 (no link-local) it cannot serve IPv6.
    let (dummy, peer) = (unique("hd"), unique("hp"));
    lab.node
        .ip(["link", "add", &dummy, "type", "veth", "peer", "name", &peer])
        .unwrap();
    lab.node
        .sysctl(&format!("net.ipv6.conf.{dummy}.disable_ipv6"), "1")
        .unwrap();
    lab.node
        .ip(["link", "set", &dummy, "arp", "off", "up"])
        .unwrap();
    let err = lab.herald_err(&["announce", "198.51.100.10", "--iface", &dummy]);
    assert!(
        err.contains("cannot serve IPv4") && err.contains("NOARP"),
        "{err}"
    );
    let err = lab.herald_err(&["announce", "2001:db8::10", "--iface", &dummy]);
    assert!(
        err.contains("cannot serve IPv6") && err.contains("link-local"),
        "{err}"
    );

    // Announcing on an interface nothing answers on would never be answered.
    lab.node.ip(["link", "set", &dummy, "arp", "on"]).unwrap();
    let err = lab.herald_err(&["announce", "198.51.100.10", "--iface", &dummy]);
    assert!(err.contains("no Herald XDP program attached"), "{err}");

    // Without privileges: one line naming the missing capability, before touching anything.
    let mut cmd = lab.node.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&lab.herald)
        .args([
            "xdp",
            "attach",
            "--dataplane",
            imp.dataplane(),
            "--iface",
            iface,
        ])
        .env("HERALD_PIN_DIR", lab.bpffs.dir.join("herald"))
        .env("RUST_BACKTRACE", "0");
    let out = cmd.output().expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing CAP_BPF, CAP_NET_ADMIN"), "{err}");

    // Nothing above changed the data plane, and the answerer still runs.
    assert!(lab.addresses().is_empty(), "{:?}", lab.addresses());
    assert!(lab.responder_running());
    assert_eq!(
        lab.listed_interface(),
        Some((imp.listed_mode().to_string(), true))
    );
}

// ---- Hostile frames ------------------------------------------------------------------------

const ANNOUNCED_V4: [u8; 4] = [198, 51, 100, 50];
const ANNOUNCED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50,
];
const ANNOUNCED_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x50];
/// Requesters whose replies are legitimate: the flood's valid requests and the sentinel.
const FLOOD_REQUESTER: [u8; 4] = [198, 51, 100, 4];
const SENTINEL_REQUESTER: [u8; 4] = [198, 51, 100, 3];

fn arp_request(src_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// The ICMPv6 checksum (RFC 4443 §2.3) over the pseudo-header and `icmp`.
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A valid multicast Neighbor Solicitation for `target` with a source link-layer option; then
/// `spoil` may break it (after the checksum is computed, unless it recomputes).
fn neighbor_solicitation(src_mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let dst: [u8; 16] = [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15],
    ];
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    let sum = icmpv6_checksum(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0xff, target[13], target[14], target[15]]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&icmp);
    f
}

/// Frames Herald must never answer, each with what is wrong with it. At least one per
/// malformed class the programme counts, plus valid requests it must ignore.
fn hostile_frames(client_mac: [u8; 6], client_v6: [u8; 16]) -> Vec<(&'static str, Vec<u8>)> {
    let client_v4 = [198, 51, 100, 2];
    let good_arp = arp_request(client_mac, client_v4, ANNOUNCED_V4);
    let good_ns = neighbor_solicitation(client_mac, client_v6, ANNOUNCED_V6);
    let with = |base: &Vec<u8>, at: usize, bytes: &[u8]| {
        let mut f = base.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let mut frames = vec![
        ("ARP hardware length 5", with(&good_arp, 18, &[5])),
        ("ARP protocol type IPv6", with(&good_arp, 16, &[0x86, 0xdd])),
        ("ARP hardware type 6", with(&good_arp, 14, &[0, 6])),
        ("ARP truncated to 30 bytes", good_arp[..30].to_vec()),
        ("ARP ethertype only", good_arp[..14].to_vec()),
        ("ARP opcode 3", with(&good_arp, 20, &[0, 3])),
        ("ARP reply for the address", with(&good_arp, 20, &[0, 2])),
        (
            "gratuitous ARP for the address",
            with(&good_arp, 28, &ANNOUNCED_V4),
        ),
        (
            "ARP for an address not announced",
            with(&good_arp, 38, &[198, 51, 100, 51]),
        ),
        (
            "ARP unicast to another MAC",
            with(&good_arp, 0, &[0x02, 0, 0, 0, 0, 0x99]),
        ),
        ("NS with a bad checksum", with(&good_ns, 56, &[0xde, 0xad])),
        ("NS truncated to 60 bytes", good_ns[..60].to_vec()),
        (
            "NS payload length beyond the frame",
            with(&good_ns, 18, &[0x04, 0x00]),
        ),
        ("IPv6 version 4 carrying an NS", with(&good_ns, 14, &[0x40])),
    ];
    // Variants that need a recomputed checksum to fail exactly one RFC 4861 §7.1.1 rule.
    let resum = |mut f: Vec<u8>| {
        f[56..58].copy_from_slice(&[0, 0]);
        let (src, dst) = (
            <[u8; 16]>::try_from(&f[22..38]).unwrap(),
            <[u8; 16]>::try_from(&f[38..54]).unwrap(),
        );
        let sum = icmpv6_checksum(&src, &dst, &f[54..]);
        f[56..58].copy_from_slice(&sum.to_be_bytes());
        f
    };
    frames.push(("NS hop limit 64", resum(with(&good_ns, 21, &[64]))));
    frames.push(("NS code 1", resum(with(&good_ns, 55, &[1]))));
    frames.push(("NS option length 0", resum(with(&good_ns, 79, &[0]))));
    frames.push((
        "NS for a multicast target",
        resum(with(&good_ns, 62, &[0xff, 0x02])),
    ));
    frames.push((
        "DAD NS (source ::) with a source link-layer option",
        resum(with(&good_ns, 22, &[0; 16])),
    ));
    frames.push((
        "NS for an address not announced",
        neighbor_solicitation(client_mac, client_v6, {
            let mut t = ANNOUNCED_V6;
            t[15] = 0x51;
            t
        }),
    ));
    frames.push(("garbage with the ARP ethertype", {
        let mut f = vec![0xa5u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&client_mac);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    }));
    frames
}

/// Runs `f` on a thread inside `ns`'s network namespace (sockets made there stay there).
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns handle");
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// An AF_PACKET socket bound to `ifname` (in the calling thread's namespace), non-blocking.
fn packet_socket(ifname: &str) -> OwnedFd {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(all),
        )
    };
    assert!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: raw is a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "{ifname}: no such interface");
    // SAFETY: sockaddr_ll is plain old data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr valid for its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let big: libc::c_int = 8 << 20;
    // SAFETY: int option.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const big).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    fd
}

/// Sends `frame`; true when the kernel took it (a full queue is not an error for a flood).
fn send_frame(fd: &OwnedFd, frame: &[u8]) -> bool {
    // SAFETY: frame valid for its length.
    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) >= 0 }
}

/// Every frame queued on `fd` (non-blocking).
fn drain(fd: &OwnedFd) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        // SAFETY: buf valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return frames;
        }
        frames.push(buf[..n as usize].to_vec());
    }
}

/// Why a frame from the announced MAC is not a legitimate answer, or `None` when it is the
/// reply to one of the valid requests (the flood's or the sentinel's).
fn wrong_answer(frame: &[u8]) -> Option<String> {
    let legit_arp = frame.len() >= 42
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0, 2]
        && frame[28..32] == ANNOUNCED_V4
        && (frame[38..42] == FLOOD_REQUESTER || frame[38..42] == SENTINEL_REQUESTER);
    (!legit_arp).then(|| format!("{frame:02x?}"))
}

fn hostile_flood_is_never_answered_and_never_stops_the_responder(imp: Impl) {
    let lab = Lab::new(imp);
    let v4 = "198.51.100.50";
    let v6 = "2001:db8::50";
    let mac = "02:00:5e:00:00:50";
    lab.attach();
    for ip in [v4, v6] {
        lab.herald_ok(&[
            "announce",
            ip,
            "--iface",
            &lab.node_if,
            "--mac",
            mac,
            "--gratuitous-window",
            "0",
        ]);
    }
    assert_eq!(lab.arping(v4).as_deref(), Some(mac));
    assert_eq!(lab.ndisc6(v6).as_deref(), Some(mac));
    let malformed_before = lab.counter("malformed");

    let client_mac = lab.client_mac();
    let client_v6: [u8; 16] = CLIENT_V6.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let hostile = hostile_frames(client_mac, client_v6);
    let valid = arp_request(client_mac, FLOOD_REQUESTER, ANNOUNCED_V4);
    let sentinel = arp_request(client_mac, SENTINEL_REQUESTER, ANNOUNCED_V4);
    let client_if = lab.client_if.clone();
    // Rounds of every hostile frame, interleaved with valid requests whose replies exercise
    // the reply path under load (a full queue is a dropped reply, never an exit). Then a
    // sentinel request, repeated until answered: frames are handled in order, so by then the
    // flood has been dealt with.
    let (sent, wrong, sentinel_answered) = in_netns(&lab.client, move || {
        let capture = packet_socket(&client_if);
        let tx = packet_socket(&client_if);
        let mut sent = 0usize;
        for _ in 0..300 {
            for (_, frame) in &hostile {
                sent += usize::from(send_frame(&tx, frame));
            }
            for _ in 0..20 {
                send_frame(&tx, &valid);
            }
        }
        let mut wrong = Vec::new();
        let mut answered = false;
        for _ in 0..100 {
            send_frame(&tx, &sentinel);
            std::thread::sleep(Duration::from_millis(100));
            for frame in drain(&capture) {
                if frame.len() < 12 || frame[6..12] != ANNOUNCED_MAC {
                    continue;
                }
                if frame.len() >= 42 && frame[38..42] == SENTINEL_REQUESTER {
                    answered = true;
                }
                wrong.extend(wrong_answer(&frame));
            }
            if answered {
                break;
            }
        }
        (sent, wrong, answered)
    });
    assert!(sent > 0, "no hostile frame could be sent");
    assert!(
        sentinel_answered,
        "a valid request after the flood is answered"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers to hostile frames, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    assert!(lab.responder_running(), "the responder survived the flood");
    assert_eq!(
        lab.listed_interface(),
        Some((imp.listed_mode().to_string(), true))
    );
    assert!(
        poll_until(SETTLE, || lab.counter("malformed") > malformed_before),
        "the malformed counter moved: {}",
        lab.list_json()
    );
    // Still answering both families after the flood.
    assert_eq!(lab.arping(v4).as_deref(), Some(mac));
    assert_eq!(lab.ndisc6(v6).as_deref(), Some(mac));
    if imp == Impl::Userspace {
        let summary = lab.stop_responder();
        eprintln!("{summary}");
        assert!(summary.contains("userspace responder:"), "{summary}");
    }
}

/// A node whose transmit queue refuses every frame (a `pfifo` qdisc of length 0: sends fail
/// with ENOBUFS, as under a flood). XDP_TX bypasses the qdisc, so XDP keeps answering; the
/// userspace responder counts each refused reply as a drop, logs it and keeps serving, and
/// answers again once the queue accepts frames.
fn refused_replies_are_counted_drops_never_an_exit(imp: Impl) {
    let lab = Lab::new(imp);
    let ip = "198.51.100.60";
    let mac = "02:00:5e:00:00:60";
    lab.attach();
    lab.herald_ok(&[
        "announce",
        ip,
        "--iface",
        &lab.node_if,
        "--mac",
        mac,
        "--gratuitous-window",
        "0",
    ]);
    assert_eq!(lab.arping(ip).as_deref(), Some(mac));
    let tc = |args: &[&str]| {
        let out = lab.node.command("tc").args(args).output().expect("tc");
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tc(&[
        "qdisc",
        "add",
        "dev",
        &lab.node_if,
        "root",
        "pfifo",
        "limit",
        "0",
    ]);
    let passed_before = lab.counter("passed");
    let answered: Vec<bool> = (0..3).map(|_| lab.arping(ip).is_some()).collect();
    match imp {
        Impl::Xdp => assert_eq!(answered, [true; 3], "XDP_TX does not go through the qdisc"),
        Impl::Userspace => {
            assert_eq!(answered, [false; 3], "every reply was refused");
            assert!(
                poll_until(SETTLE, || lab.counter("passed") >= passed_before + 3),
                "refused replies count as passed (unanswered): {}",
                lab.list_json()
            );
        }
    }
    assert!(
        lab.responder_running(),
        "a refused send never ends the responder"
    );
    tc(&["qdisc", "del", "dev", &lab.node_if, "root"]);
    assert!(
        poll_until(SETTLE, || lab.arping(ip).as_deref() == Some(mac)),
        "answers again once the queue accepts frames"
    );
    if imp == Impl::Userspace {
        let summary = lab.stop_responder();
        let dropped: u64 = summary
            .split(" replies dropped by the kernel")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no drop count in {summary:?}"));
        assert!(dropped >= 3, "{summary}");
    }
}

/// `--dataplane auto` where XDP cannot attach: the interface already carries another XDP
/// link (a second Herald with its own pin directory, whose program passes everything), so
/// attaching fails and the command answers in userspace instead, saying so on stdout and in
/// `herald xdp list`.
#[test]
fn auto_falls_back_to_userspace_when_xdp_cannot_attach() {
    let lab = Lab::new(Impl::Userspace);
    let ip = "198.51.100.70";
    let mac = "02:00:5e:00:00:70";
    let other = lab.bpffs.dir.join("other");
    let other = other.to_str().expect("UTF-8 path");
    let out = lab.herald_ok(&[
        "--pin-dir",
        other,
        "attach",
        "--iface",
        &lab.node_if,
        "--mode",
        "skb",
    ]);
    assert!(out.contains("attached in skb mode"), "{out}");

    let mut run = lab.herald_command(&[
        "run",
        "--dataplane",
        "auto",
        "--mode",
        "skb",
        "--iface",
        &lab.node_if,
        "--announce",
        ip,
        "--mac",
        mac,
        "--gratuitous-window",
        "0",
    ]);
    let run = KillOnDrop(
        run.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn herald xdp run --dataplane auto"),
    );
    assert!(
        poll_until(SETTLE, || lab.arping(ip).as_deref() == Some(mac)),
        "the fallback answers for {ip}"
    );
    assert_eq!(lab.listed_interface(), Some(("userspace".into(), true)));
    assert!(poll_until(SETTLE, || lab.counter("arp_replies") >= 1));
    run.signal(libc::SIGTERM).expect("SIGTERM");
    let mut run = run;
    assert!(run.0.wait().expect("reap").success());
    let mut stdout = String::new();
    if let Some(mut pipe) = run.0.stdout.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stdout);
    }
    assert!(
        stdout.contains(&format!("{}: XDP cannot attach (", lab.node_if))
            && stdout.contains("); falling back to userspace"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}: answering in userspace (AF_PACKET)",
            lab.node_if
        )),
        "{stdout}"
    );
    assert_eq!(lab.arping(ip), None, "answers stop with the process");
    // The other Herald's link is untouched.
    let json: serde_json::Value =
        serde_json::from_str(&lab.herald_ok(&["--pin-dir", other, "list", "-o", "json"])).unwrap();
    assert_eq!(json["interfaces"][0]["dataplane"], "xdp-skb", "{json}");
}

/// Maps start with the guard closed: a process that dies between creating them (and announcing)
/// and its first heartbeat leaves nothing answering. Attaching by hand, with no daemon to keep a
/// heartbeat, turns the guard off on purpose.
#[test]
fn new_maps_start_closed_and_a_manual_attach_opens_them() {
    require_root();
    let bpffs = Bpffs::new().expect("bpffs");
    let pin_dir = bpffs.dir.join("fresh");
    let dp = herald::dataplane::Dataplane::open(&pin_dir).expect("open");
    assert_eq!(
        dp.guard_state().expect("guard"),
        herald::dataplane::GuardState::Closed
    );
    drop(dp);

    let node = Netns::new("hg").expect("netns");
    let (a, b) = (unique("ga"), unique("gb"));
    node.ip(["link", "add", &a, "type", "veth", "peer", "name", &b])
        .expect("veth");
    node.ip(["link", "set", &a, "up"]).expect("up");
    node.ip(["link", "set", &b, "up"]).expect("up");
    let pin = pin_dir.to_string_lossy().into_owned();
    let out = node
        .command(herald_bin())
        .args([
            "xdp",
            "--pin-dir",
            &pin,
            "attach",
            "--iface",
            &a,
            "--mode",
            "skb",
        ])
        .output()
        .expect("herald xdp attach");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("guard: off"), "{text}");
    let list = node
        .command(herald_bin())
        .args(["xdp", "--pin-dir", &pin, "list", "-o", "json"])
        .output()
        .expect("herald xdp list");
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(json["guard"]["state"], "off", "{json}");
    let _ = node
        .command(herald_bin())
        .args(["xdp", "--pin-dir", &pin, "detach"])
        .output();
}

/// `herald xdp` inside `ns` with the pins under `pin`; the output, whatever the exit status.
fn herald_xdp_in(ns: &Netns, pin: &std::path::Path, args: &[&str]) -> Output {
    ns.command(herald_bin())
        .args(["xdp", "--pin-dir"])
        .arg(pin)
        .args(args)
        .output()
        .expect("herald xdp")
}

/// A namespace with one veth pair up; returns the namespace and the end to attach to.
fn namespace_with_veth(prefix: &str) -> (Netns, String) {
    let (node, a, _) = namespace_with_veth_pair(prefix);
    (node, a)
}

/// A namespace with one veth pair up; returns the namespace, the end to attach to and its
/// peer (frames sent on the peer arrive at the attached end).
fn namespace_with_veth_pair(prefix: &str) -> (Netns, String, String) {
    let node = Netns::new(prefix).expect("netns");
    let (a, b) = (unique("ua"), unique("ub"));
    node.ip(["link", "add", &a, "type", "veth", "peer", "name", &b])
        .expect("veth");
    node.ip(["link", "set", &a, "up"]).expect("up");
    node.ip(["link", "set", &b, "up"]).expect("up");
    (node, a, b)
}

/// An upgrade from a Herald that pinned only the first four maps: opening its pin directory
/// creates the maps added since (foreign claims, extra counters, rate limit, flood guard and
/// their buckets) beside
/// the old ones, which keep their entries and values; the new program loads against the mix.
#[test]
fn opening_an_older_pin_directory_adds_the_new_maps_and_keeps_the_old() {
    use aya::maps::{Array, MapData, PerCpuHashMap, PerCpuValues};
    use herald::dataplane::{Dataplane, GuardState};
    use lb_common::maps::{
        Announcement, Guard, Ipv4Key, MAP_BUCKETS, MAP_CLAIMS4, MAP_CLAIMS6, MAP_EXTRA,
        MAP_FLOOD_LIMIT, MAP_FLOOD_SOURCES, MAP_GUARD, MAP_LIMIT, MAP_V4,
    };
    use lb_common::ratelimit::RateLimit;

    require_root();
    let bpffs = Bpffs::new().expect("bpffs");
    let pin_dir = bpffs.dir.join("older");
    drop(Dataplane::open(&pin_dir).expect("open"));
    let added = [
        MAP_EXTRA,
        MAP_CLAIMS4,
        MAP_CLAIMS6,
        MAP_LIMIT,
        MAP_BUCKETS,
        MAP_FLOOD_LIMIT,
        MAP_FLOOD_SOURCES,
    ];
    for name in added {
        std::fs::remove_file(pin_dir.join(name)).expect("unpin");
    }
    // What the older Herald left: an announced address and a guard turned off, written
    // straight into its pins.
    let vip = [198, 51, 100, 77];
    let mac = [2, 0, 0x5e, 0, 0, 0x77];
    let mut v4: PerCpuHashMap<MapData, Ipv4Key, Announcement> = PerCpuHashMap::try_from(
        aya::maps::Map::PerCpuHashMap(MapData::from_pin(pin_dir.join(MAP_V4)).expect("pin")),
    )
    .expect("per-CPU hash");
    let cpus = aya::util::nr_cpus().expect("CPUs").get() as usize;
    let entry = Announcement {
        mac,
        requests: 5,
        ..Announcement::default()
    };
    let key = Ipv4Key {
        ifindex: 7,
        addr: vip,
    };
    v4.insert(
        &key,
        PerCpuValues::try_from(vec![entry; cpus]).expect("values"),
        0,
    )
    .expect("insert");
    let mut guard: Array<MapData, Guard> = Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(pin_dir.join(MAP_GUARD)).expect("pin"),
    ))
    .expect("array");
    guard.set(0, &Guard::default(), 0).expect("guard off");
    drop((v4, guard));

    let dp = Dataplane::open_existing(&pin_dir)
        .expect("open the older directory")
        .expect("the older maps count as set up");
    for name in added {
        assert!(pin_dir.join(name).exists(), "{name} created");
    }
    let keys: Vec<_> = dp
        .keys()
        .expect("keys")
        .iter()
        .map(|k| (k.ifindex(), k.ip()))
        .collect();
    assert_eq!(keys, [(7, std::net::IpAddr::from(vip))], "old entries kept");
    let snapshot = dp.snapshot().expect("snapshot");
    assert_eq!(
        (snapshot.addresses[0].mac.0, snapshot.addresses[0].requests),
        (mac, 5 * cpus as u64)
    );
    assert_eq!(
        dp.guard_state().expect("guard"),
        GuardState::Off,
        "not closed again"
    );
    assert_eq!(dp.rate_limit().expect("limit"), RateLimit::DEFAULT);
    assert_eq!(
        dp.flood_limit().expect("flood limit"),
        RateLimit::FLOOD_DEFAULT
    );
    assert_eq!(dp.claims().expect("claims"), []);
    assert_eq!(
        dp.edge_counters().expect("counters"),
        herald::dataplane::edges::EdgeCounters::default()
    );
    drop(dp);

    // The new program loads against the old maps and the new ones together.
    let (node, iface) = namespace_with_veth("hu");
    let out = herald_xdp_in(
        &node,
        &pin_dir,
        &["attach", "--iface", &iface, "--mode", "skb"],
    );
    assert!(out.status.success(), "{out:?}");
    let list = herald_xdp_in(&node, &pin_dir, &["list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(json["addresses"][0]["ip"], "198.51.100.77", "{json}");
    let _ = herald_xdp_in(&node, &pin_dir, &["detach"]);
}

/// Why the maps added later are new maps rather than larger old ones: a pinned map is reused
/// only when its layout matches the program's (aya checks type, key and value sizes, capacity
/// and flags), so an older, shorter counter array would make the new program fail to load.
#[test]
fn a_pinned_map_of_another_capacity_is_refused_not_reused() {
    require_root();
    let bpffs = Bpffs::new().expect("bpffs");
    let pin_dir = bpffs.dir.join("shorter");
    drop(herald::dataplane::Dataplane::open(&pin_dir).expect("open"));
    let counters = pin_dir.join(lb_common::maps::MAP_COUNTERS);
    std::fs::remove_file(&counters).expect("unpin");
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&counters)
        .args([
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "4",
            "name",
            "HERALD_COUNTERS",
        ])
        .output()
        .expect("bpftool is installed");
    assert!(out.status.success(), "{out:?}");
    let (node, iface) = namespace_with_veth("hu");
    let out = herald_xdp_in(
        &node,
        &pin_dir,
        &["attach", "--iface", &iface, "--mode", "skb"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "attached over a shorter array: {out:?}"
    );
    assert!(
        stderr.contains("HERALD_COUNTERS") && stderr.contains("max_entries"),
        "{stderr}"
    );
}

#[test]
fn hostile_frames_are_what_they_say() {
    // The crafting itself: the valid bases are well-formed (checked with etherparse), and each
    // hostile frame differs from them.
    let mac = [2, 0, 0, 0, 0, 2];
    let v6 = CLIENT_V6.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let ns = neighbor_solicitation(mac, v6, ANNOUNCED_V6);
    let parsed = etherparse::SlicedPacket::from_ethernet(&ns).expect("NS parses");
    match parsed.transport {
        Some(etherparse::TransportSlice::Icmpv6(icmp)) => {
            assert_eq!(icmp.type_u8(), 135);
            let ip = match parsed.net {
                Some(etherparse::NetSlice::Ipv6(ip)) => ip,
                other => panic!("not IPv6: {other:?}"),
            };
            assert_eq!(
                icmp.icmp_type()
                    .calc_checksum(
                        ip.header().source(),
                        ip.header().destination(),
                        icmp.payload()
                    )
                    .ok(),
                Some(icmp.checksum()),
                "valid checksum"
            );
        }
        other => panic!("not ICMPv6: {other:?}"),
    }
    let arp = arp_request(mac, [198, 51, 100, 2], ANNOUNCED_V4);
    assert_eq!(arp.len(), 42);
    let frames = hostile_frames(mac, v6);
    assert!(frames.len() >= 20);
    for (what, frame) in &frames {
        assert!(frame != &arp && frame != &ns, "{what} is not hostile");
    }
}

/// `herald xdp attach --rate-limit` writes the limit the program applies (and a bad value is
/// refused before anything is touched); without the flag the pinned value is left as it is.
/// `herald xdp list` reads both limits back from the maps, and counts what they held back.
#[test]
fn attach_writes_the_rate_limit_it_is_given() {
    use lb_common::ratelimit::RateLimit;
    require_root();
    let bpffs = Bpffs::new().expect("bpffs");
    let pin_dir = bpffs.dir.join("limit");
    let (node, iface, peer) = namespace_with_veth_pair("hr");
    let attach = |extra: &[&str]| {
        let mut args = vec!["attach", "--iface", iface.as_str(), "--mode", "skb"];
        args.extend_from_slice(extra);
        herald_xdp_in(&node, &pin_dir, &args)
    };
    let limit = || {
        herald::dataplane::Dataplane::open_existing(&pin_dir)
            .expect("open")
            .expect("set up")
            .rate_limit()
            .expect("limit")
    };
    let out = attach(&["--rate-limit", "5/7", "--flood-limit", "9/3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        limit(),
        RateLimit {
            per_second: 5,
            burst: 7
        }
    );
    let listed = herald_xdp_in(&node, &pin_dir, &["list", "-o", "json"]);
    assert!(listed.status.success(), "{listed:?}");
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("list JSON");
    assert_eq!(
        json["limits"]["answers"],
        serde_json::json!({"per_second": 5, "burst": 7})
    );
    assert_eq!(
        json["limits"]["flood_guard"],
        serde_json::json!({"per_second": 9, "burst": 3})
    );
    let listed = herald_xdp_in(&node, &pin_dir, &["list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("limits: answers per requester MAC 5/s (burst 7); flood guard per source 9/s (burst 3)\n"),
        "{text}"
    );
    // 20 requests from one MAC at once: 7 answered (the burst), the other 13 passed to the
    // kernel unanswered and counted, and of those all but the flood guard's burst of 3 dropped.
    let out = herald_xdp_in(
        &node,
        &pin_dir,
        &[
            "announce",
            "198.51.100.77",
            "--iface",
            &iface,
            "--gratuitous-window",
            "0",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    in_netns(&node, move || {
        let tx = packet_socket(&peer);
        let request = arp_request(
            [0x02, 0x77, 0, 0, 0, 7],
            [198, 51, 100, 7],
            [198, 51, 100, 77],
        );
        for _ in 0..20 {
            assert!(send_frame(&tx, &request), "sending a request");
        }
    });
    let edges = || {
        let listed = herald_xdp_in(&node, &pin_dir, &["list", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("list JSON");
        let count = |name: &str| json["edges"][name].as_u64().expect("a counter");
        (count("rate_limited"), count("flood_dropped"))
    };
    assert!(
        poll_until(SETTLE, || edges().0 >= 10 && edges().1 >= 7),
        "rate_limited and flood_dropped as listed: {:?}",
        edges()
    );
    let out = attach(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(limit().per_second, 5, "left as it was");
    let out = attach(&["--rate-limit", "0"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(limit(), RateLimit::OFF);
    let out = attach(&["--rate-limit", "fast"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PER_SECOND[/BURST]"),
        "{out:?}"
    );
    let _ = herald_xdp_in(&node, &pin_dir, &["detach"]);
}
