//! The real `herald` binary and the real kernel XDP path: a node and a client namespace joined by
//! a veth. Herald is attached to the node end in skb (generic) mode: in driver mode a veth drops
//! XDP_TX frames unless its peer runs an XDP program too.
//!
//! Each test owns its namespaces and a private bpffs (`HERALD_PIN_DIR` points into it), so tests
//! run in parallel without sharing maps, and everything disappears on drop even after a failure.
//!
//! Announcements use MACs the node does not have, and addresses the node kernel does not own,
//! so every answer seen provably comes from the XDP program. The client accepts gratuitous
//! packets for neighbours it does not know yet: `arp_accept=1` for ARP, and for NDP
//! `accept_untracked_na=1` with IPv6 forwarding on (RFC 9131 applies it to routers only).
//!
//! Run: `cargo build -p herald && cargo test -p herald-tests --test netns_xdp` (as root).

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

struct Lab {
    // Dropped in this order: pins first, then the namespaces (and the veth with them).
    bpffs: Bpffs,
    node: Netns,
    client: Netns,
    node_if: String,
    client_if: String,
    herald: std::path::PathBuf,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let bpffs = Bpffs::new().expect("private bpffs");
        let node = Netns::new("hxn").expect("node namespace");
        let client = Netns::new("hxc").expect("client namespace");
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

    fn node_mac(&self) -> String {
        let out = self
            .node
            .ip(["-o", "link", "show", "dev", &self.node_if])
            .expect("ip link");
        field_after(&out, "link/ether").expect("node MAC")
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

    fn attach_skb(&self) {
        let out = self.herald_ok(&["attach", "--iface", &self.node_if, "--mode", "skb"]);
        eprintln!("attach: {}", out.trim());
        assert!(out.contains("attached in skb mode"), "{out}");
    }
}

fn field_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(|w| w.to_lowercase())
}

#[test]
fn ipv4_answers_gratuitous_arp_and_withdraw() {
    let lab = Lab::new();
    let ip = "198.51.100.10";
    let mac = "02:00:5e:00:00:10";
    assert_ne!(lab.node_mac(), mac);
    assert!(
        !lab.node.ip(["addr"]).unwrap().contains(ip),
        "the node kernel must not own {ip}"
    );

    lab.attach_skb();
    let program = lab
        .node_xdp_program()
        .expect("an XDP program on the node end");
    let again = lab.herald_ok(&["attach", "--iface", &lab.node_if, "--mode", "skb"]);
    assert!(
        again.contains("already attached (skb mode)"),
        "attach twice: {again}"
    );
    assert_eq!(
        lab.node_xdp_program(),
        Some(program),
        "attach twice reuses the pinned link: the same program stays attached"
    );
    let json = lab.list_json();
    assert_eq!(json["attachments"][0]["iface"], lab.node_if.as_str());
    assert_eq!(json["attachments"][0]["mode"], "skb");

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

    let entry = lab.address(ip).expect("announced address listed");
    assert_eq!(entry["mac"], mac);
    assert!(
        entry["requests"].as_u64() >= Some(1) && entry["replies"].as_u64() >= Some(1),
        "{entry}"
    );
    assert!(lab.list_json()["counters"]["arp_replies"].as_u64() >= Some(1));

    let out = lab.herald_ok(&["withdraw", ip, "--iface", &lab.node_if]);
    assert!(out.contains("withdrew"), "{out}");
    assert_eq!(lab.arping(ip), None, "answers stop after withdraw");
    assert!(lab.address(ip).is_none());
    let out = lab.herald_ok(&["withdraw", ip, "--iface", &lab.node_if]);
    assert!(out.contains("was not announced"), "withdraw twice: {out}");

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

#[test]
fn ipv6_answers_unsolicited_na_multicast_group_and_withdraw() {
    let lab = Lab::new();
    let (a, b) = ("2001:db8::10", "2001:db8::1:0:0:10");
    let mac = "02:00:5e:00:00:11";
    let group = "33:33:ff:00:00:10";
    lab.attach_skb();
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
    assert!(lab.list_json()["counters"]["na_replies"].as_u64() >= Some(1));

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

#[test]
fn guard_keeps_answering_after_kill_until_timeout_then_stops() {
    let lab = Lab::new();
    let (v4, v6) = ("198.51.100.20", "2001:db8::20");
    let mac = "02:00:5e:00:00:20";
    let run = lab
        .herald_command(&[
            "run",
            "--iface",
            &lab.node_if,
            "--mode",
            "skb",
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
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn herald xdp run");
    let mut run = KillOnDrop(run);
    assert!(
        poll_until(SETTLE, || lab.arping(v4).as_deref() == Some(mac)),
        "herald xdp run answers for {v4}"
    );
    assert_eq!(lab.ndisc6(v6).as_deref(), Some(mac));
    assert_eq!(lab.list_json()["guard"]["state"], "fresh");

    run.0.kill().expect("SIGKILL");
    run.0.wait().expect("reap");
    // The pinned program and maps outlive the process: answers continue (the guard timeout is
    // far longer than one ARP round trip)...
    assert_eq!(
        lab.arping(v4).as_deref(),
        Some(mac),
        "answers continue right after the kill"
    );
    // ...until the heartbeat is older than the timeout; then they stop, with the addresses still
    // announced: the guard, not a withdraw, silenced them.
    assert!(
        poll_until(Duration::from_secs(30), || lab.arping(v4).is_none()),
        "answers stop after the guard timeout"
    );
    assert_eq!(lab.ndisc6(v6), None);
    let json = lab.list_json();
    assert_eq!(json["guard"]["state"], "stale", "{json}");
    assert!(json["counters"]["silenced"].as_u64() >= Some(1), "{json}");
    let listed: Vec<&str> = json["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["ip"].as_str())
        .collect();
    assert!(listed.contains(&v4) && listed.contains(&v6), "{listed:?}");
}

#[test]
fn sigterm_withdraws_and_exits_cleanly() {
    let lab = Lab::new();
    let ip = "198.51.100.30";
    let mac = "02:00:5e:00:00:30";
    let run = lab
        .herald_command(&[
            "run",
            "--iface",
            &lab.node_if,
            "--mode",
            "skb",
            "--announce",
            ip,
            "--mac",
            mac,
            "--guard-timeout",
            "4s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn herald xdp run");
    let mut run = KillOnDrop(run);
    assert!(poll_until(SETTLE, || lab.arping(ip).as_deref() == Some(mac)));
    run.signal(libc::SIGTERM).expect("SIGTERM");
    let status = run.0.wait().expect("reap");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(lab.address(ip).is_none(), "withdrawn on SIGTERM");
    assert_eq!(lab.list_json()["guard"]["state"], "off");
    assert_eq!(lab.arping(ip), None);
    // The link stays: a restarted process resumes without re-attaching.
    assert_eq!(lab.list_json()["attachments"][0]["mode"], "skb");
}

#[test]
fn bad_input_gives_one_clear_line() {
    let lab = Lab::new();
    lab.attach_skb();
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

    // Announcing on an interface without the program would never be answered.
    lab.node.ip(["link", "set", &dummy, "arp", "on"]).unwrap();
    let err = lab.herald_err(&["announce", "198.51.100.10", "--iface", &dummy]);
    assert!(err.contains("no Herald XDP program attached"), "{err}");

    // Without privileges: one line naming the missing capability, before touching anything.
    let mut cmd = lab.node.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&lab.herald)
        .args(["xdp", "attach", "--iface", iface])
        .env("HERALD_PIN_DIR", lab.bpffs.dir.join("herald"))
        .env("RUST_BACKTRACE", "0");
    let out = cmd.output().expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing CAP_BPF, CAP_NET_ADMIN"), "{err}");

    // Nothing above changed the data plane.
    assert!(lab.addresses().is_empty(), "{:?}", lab.addresses());
}

/// The userspace fallback (`--dataplane userspace`): no XDP program anywhere, the same maps,
/// the same answers and counters, from an AF_PACKET socket in the `herald xdp run` process.
#[test]
fn userspace_fallback_answers_from_the_same_maps() {
    let lab = Lab::new();
    let (v4, v6) = ("198.51.100.40", "2001:db8::40");
    let mac = "02:00:5e:00:00:40";
    let run = lab
        .herald_command(&[
            "run",
            "--dataplane",
            "userspace",
            "--iface",
            &lab.node_if,
            "--announce",
            v4,
            "--announce",
            v6,
            "--mac",
            mac,
            "--gratuitous-window",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn herald xdp run --dataplane userspace");
    let run = KillOnDrop(run);
    assert!(
        poll_until(SETTLE, || lab.arping(v4).as_deref() == Some(mac)),
        "the userspace responder answers ARP for {v4}"
    );
    assert!(
        poll_until(SETTLE, || lab.ndisc6(v6).as_deref() == Some(mac)),
        "the userspace responder answers NDP for {v6}"
    );
    assert_eq!(lab.node_xdp_program(), None, "no XDP program attached");
    assert_eq!(
        lab.arping("198.51.100.41"),
        None,
        "unknown addresses unanswered"
    );
    let json = lab.list_json();
    assert!(
        json["counters"]["arp_replies"].as_u64() >= Some(1),
        "{json}"
    );
    assert!(json["counters"]["na_replies"].as_u64() >= Some(1), "{json}");
    let entry = lab.address(v4).expect("announced address listed");
    assert!(entry["replies"].as_u64() >= Some(1), "{entry}");

    run.signal(libc::SIGTERM).expect("SIGTERM");
    let mut run = run;
    assert!(run.0.wait().expect("reap").success());
    assert_eq!(lab.arping(v4), None, "answers stop with the process");
}
