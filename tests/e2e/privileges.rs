//! What the speaker's privileges really need, checked against this kernel with the real
//! `herald xdp` commands (the same data-plane code the speaker runs), each under an exact
//! capability set made with `setpriv`/`capsh`:
//!
//! - the capability list of `manifests/speaker.yaml` (read from the file) is enough to load,
//!   attach and announce, and the client's ARP request is answered; neither CAP_SYS_ADMIN nor
//!   CAP_PERFMON is in it (the verifier then checks the program as an unprivileged one:
//!   Spectre v1 sanitation, no pointer subtraction);
//! - every capability in it is needed: without CAP_BPF / CAP_NET_ADMIN / CAP_NET_RAW Herald
//!   names what is missing;
//! - a non-root uid with those capabilities as ambient capabilities works against a pin
//!   directory it owns, and cannot open pins root made;
//! - under no_new_privs a file capability survives execve only where the capability was
//!   already in the permitted set before it (what decides whether a non-root container with
//!   `allowPrivilegeEscalation: false` could use file capabilities);
//! - a bind mount of a bpffs subdirectory (what a hostPath of `/sys/fs/bpf/herald` gives a
//!   container) holds the pins, in the mount point itself or below it, and a host without bpffs
//!   at `/sys/fs/bpf` gives a clear error (and no directory can be made there).
//!
//! Needs root, the XDP object and `cargo build -p herald`. Every process runs in namespaces
//! this test makes (network namespaces entered with `nsenter --net`, mount namespaces with
//! `unshare -m`), with pins in a private bpffs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use herald_tests::{Bpffs, Netns, herald_bin, poll_until, require_root, unique, veth_between};

const NODE_V4: &str = "198.51.100.1";
const CLIENT_V4: &str = "198.51.100.2";
const VIP: &str = "198.51.100.10";
const VIP_MAC: &str = "02:00:5e:00:00:10";
const NOBODY: u32 = 65534;

/// Capability numbers (linux/capability.h) of the names the manifest uses.
fn cap_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not one this test knows"),
    }
}

/// The `capabilities.add` list of the speaker container in `manifests/speaker.yaml`.
fn manifest_caps() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/speaker.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/speaker.yaml");
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("add:"))
        .expect("a `capabilities.add:` line in speaker.yaml");
    let caps: Vec<String> = line
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!caps.is_empty(), "empty capability list: {line}");
    caps
}

fn without(caps: &[String], name: &str) -> Vec<String> {
    caps.iter().filter(|c| *c != name).cloned().collect()
}

/// setpriv's spelling: `-all,+bpf,+net_admin`.
fn setpriv_list(caps: &[String]) -> String {
    let mut list = String::from("-all");
    for c in caps {
        list.push_str(",+");
        list.push_str(&c.to_lowercase());
    }
    list
}

/// How the process under test is started.
enum As {
    /// uid 0 with exactly `caps` as the bounding set and an empty inheritable set: what a
    /// container runtime gives a root container with `drop: [ALL]` and `add: caps`.
    Root(Vec<String>),
    /// uid/gid 65534 with `caps` as inheritable and ambient capabilities.
    NobodyAmbient(Vec<String>),
}

impl As {
    fn prefix(&self) -> Vec<String> {
        match self {
            As::Root(caps) => vec![
                "setpriv".into(),
                "--inh-caps=-all".into(),
                format!("--bounding-set={}", setpriv_list(caps)),
                "--".into(),
            ],
            As::NobodyAmbient(caps) => vec![
                "setpriv".into(),
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                format!("--inh-caps={}", setpriv_list(caps)),
                format!("--ambient-caps={}", setpriv_list(caps)),
                format!("--bounding-set={}", setpriv_list(caps)),
                "--".into(),
            ],
        }
    }

    fn caps(&self) -> &[String] {
        match self {
            As::Root(caps) | As::NobodyAmbient(caps) => caps,
        }
    }
}

/// `program args` in network namespace `ns` (nsenter: the mount namespace, and so the
/// private bpffs, stays the host's), started as `who` says.
fn command_as(ns: &str, who: &As, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .args(who.prefix())
        .arg(program)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node and a client namespace over a veth, and a private bpffs.
struct Lab {
    node: Netns,
    client: Netns,
    node_if: String,
    client_if: String,
    bpffs: Bpffs,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let bpffs = Bpffs::new().expect("private bpffs");
        let node = Netns::new("hpn").expect("node namespace");
        let client = Netns::new("hpc").expect("client namespace");
        let node_if = unique("pn");
        let client_if = unique("pc");
        veth_between(&node, &node_if, &client, &client_if).expect("veth");
        for (ns, dev, v4) in [(&node, &node_if, NODE_V4), (&client, &client_if, CLIENT_V4)] {
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", dev])
                .expect("address");
            ns.ip(["link", "set", dev, "up"]).expect("link up");
        }
        Lab {
            node,
            client,
            node_if,
            client_if,
            bpffs,
        }
    }

    /// A pin directory in the private bpffs, owned by `uid`.
    fn pin_dir(&self, uid: u32) -> PathBuf {
        let dir = self.bpffs.dir.join(unique("herald"));
        std::fs::create_dir(&dir).expect("pin dir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).expect("chown pin dir");
        dir
    }

    /// `herald xdp ARGS` in the node namespace as `who`, pins in `pin_dir`.
    fn herald(&self, who: &As, pin_dir: &Path, args: &[&str]) -> Output {
        let mut cmd = command_as(&self.node.name, who, &herald_bin(), &["xdp"]);
        cmd.args(args).env("HERALD_PIN_DIR", pin_dir);
        cmd.output().expect("running herald")
    }

    fn herald_env(&self, who: &As, pin_dir: &Path, args: &[&str], env: (&str, &str)) -> Output {
        let mut cmd = command_as(&self.node.name, who, &herald_bin(), &["xdp"]);
        cmd.args(args)
            .env("HERALD_PIN_DIR", pin_dir)
            .env(env.0, env.1);
        cmd.output().expect("running herald")
    }

    fn herald_ok(&self, who: &As, pin_dir: &Path, args: &[&str]) -> String {
        let out = self.herald(who, pin_dir, args);
        assert!(
            out.status.success(),
            "herald xdp {args:?} with {:?} failed:\n{}",
            who.caps(),
            text(&out)
        );
        text(&out)
    }

    fn attach_args(&self) -> Vec<String> {
        ["attach", "--iface", &self.node_if, "--mode", "skb"]
            .map(String::from)
            .to_vec()
    }

    fn announce_args(&self) -> Vec<String> {
        [
            "announce",
            VIP,
            "--iface",
            &self.node_if,
            "--mac",
            VIP_MAC,
            "--gratuitous-window",
            "0",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The effective capability set the process under test gets (read by a shell started
    /// the same way).
    fn effective_caps(&self, who: &As) -> u64 {
        let out = command_as(
            &self.node.name,
            who,
            Path::new("/bin/grep"),
            &["CapEff", "/proc/self/status"],
        )
        .output()
        .expect("grep");
        let line = String::from_utf8_lossy(&out.stdout);
        let hex = line.split_whitespace().nth(1).expect("CapEff value");
        u64::from_str_radix(hex, 16).expect("hex")
    }

    /// The MAC answering one ARP request for VIP from the client (Habets' arping, `-r`).
    fn arping(&self) -> Option<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.client.name))
            .args([
                "arping",
                "-i",
                &self.client_if,
                "-c",
                "1",
                "-w",
                "1",
                "-r",
                VIP,
            ])
            .output()
            .expect("arping");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// Attach + announce as `who`, then the client's ARP request is answered with VIP_MAC.
    fn attach_announce_answer(&self, who: &As, pin_dir: &Path) {
        let attach = self.attach_args();
        let attach: Vec<&str> = attach.iter().map(String::as_str).collect();
        let out = self.herald_ok(who, pin_dir, &attach);
        assert!(out.contains("attached in skb mode"), "{out}");
        let announce = self.announce_args();
        let announce: Vec<&str> = announce.iter().map(String::as_str).collect();
        let out = self.herald_ok(who, pin_dir, &announce);
        assert!(out.contains(&format!("announced {VIP}")), "{out}");
        assert!(
            poll_until(Duration::from_secs(10), || self.arping().as_deref()
                == Some(VIP_MAC)),
            "no ARP answer for {VIP} from {VIP_MAC} with {:?}",
            who.caps()
        );
    }
}

fn mask(caps: &[String]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << cap_number(c))
}

#[test]
fn manifest_capabilities_load_attach_announce_and_answer() {
    let lab = Lab::new();
    let caps = manifest_caps();
    for needless in ["SYS_ADMIN", "PERFMON"] {
        assert!(
            !caps.iter().any(|c| c == needless),
            "the speaker must not need CAP_{needless}: {caps:?}"
        );
    }
    let who = As::Root(caps.clone());
    assert_eq!(
        lab.effective_caps(&who),
        mask(&caps),
        "the process runs with exactly the manifest's capabilities"
    );
    let pins = lab.pin_dir(0);
    lab.attach_announce_answer(&who, &pins);
    // A second attach (a restarted speaker) reuses the pinned link with the same set.
    let attach = lab.attach_args();
    let attach: Vec<&str> = attach.iter().map(String::as_str).collect();
    let again = lab.herald_ok(&who, &pins, &attach);
    assert!(again.contains("already attached (skb mode)"), "{again}");
    let list = lab.herald_ok(&who, &pins, &["list"]);
    assert!(list.contains(VIP), "{list}");
}

/// CAP_BPF and CAP_NET_ADMIN are checked before any syscall (one line naming what is
/// missing), and the kernel itself refuses the attach without either when that check is
/// skipped; CAP_NET_RAW is what `announce` (gratuitous ARP) adds.
#[test]
fn each_other_manifest_capability_is_needed() {
    let lab = Lab::new();
    let caps = manifest_caps();
    let attach = lab.attach_args();
    let attach: Vec<&str> = attach.iter().map(String::as_str).collect();
    for (dropped, cap_name) in [("BPF", "CAP_BPF"), ("NET_ADMIN", "CAP_NET_ADMIN")] {
        let pins = lab.pin_dir(0);
        let out = lab.herald(&As::Root(without(&caps, dropped)), &pins, &attach);
        let said = text(&out);
        assert!(!out.status.success(), "attach without {cap_name}: {said}");
        assert!(
            said.contains("herald xdp attach needs")
                && said.contains(&format!("missing {cap_name}")),
            "without {cap_name}: {said}"
        );
        // Herald's own check skipped: the kernel refuses.
        let out = lab.herald_env(
            &As::Root(without(&caps, dropped)),
            &pins,
            &attach,
            ("HERALD_SKIP_CAPABILITY_CHECK", "1"),
        );
        let refused = text(&out);
        eprintln!("without {cap_name}, unchecked: {refused}");
        assert!(
            !out.status.success(),
            "the kernel let an attach without {cap_name} through: {refused}"
        );
        assert!(
            !refused.contains("herald xdp attach needs"),
            "the check was not skipped: {refused}"
        );
    }
    // Attached with everything, then announce without CAP_NET_RAW.
    let pins = lab.pin_dir(0);
    lab.herald_ok(&As::Root(caps.clone()), &pins, &attach);
    let announce = lab.announce_args();
    let announce: Vec<&str> = announce.iter().map(String::as_str).collect();
    let out = lab.herald(&As::Root(without(&caps, "NET_RAW")), &pins, &announce);
    let text = text(&out);
    assert!(
        !out.status.success(),
        "announce without CAP_NET_RAW: {text}"
    );
    assert!(text.contains("missing CAP_NET_RAW"), "{text}");
}

/// uid 65534 holding the manifest's capabilities as ambient capabilities: works against a
/// pin directory it owns; pins made by root (a speaker that ran as root before) it cannot
/// open, since bpffs checks file permissions and the set has no CAP_DAC_OVERRIDE.
#[test]
fn non_root_with_ambient_capabilities_answers_with_its_own_pins() {
    let lab = Lab::new();
    let caps = manifest_caps();
    let who = As::NobodyAmbient(caps.clone());
    assert_eq!(lab.effective_caps(&who), mask(&caps));
    let own = lab.pin_dir(NOBODY);
    lab.attach_announce_answer(&who, &own);

    let roots = lab.pin_dir(0);
    let root_who = As::Root(caps);
    let attach = lab.attach_args();
    let attach: Vec<&str> = attach.iter().map(String::as_str).collect();
    // Another interface would do as well; detach first so root's attach owns the link.
    lab.herald_ok(&who, &own, &["detach", "--iface", &lab.node_if]);
    lab.herald_ok(&root_who, &roots, &attach);
    let out = lab.herald(&who, &roots, &["list"]);
    let text = text(&out);
    assert!(
        !out.status.success() && text.contains("unreadable"),
        "a non-root speaker opened root's pins: {text}"
    );
}

/// What decides whether a non-root container can use file capabilities when Kubernetes
/// sets no_new_privs (`allowPrivilegeEscalation: false`): under no_new_privs the kernel
/// intersects the file's capabilities with the permitted set the process had before execve.
#[test]
fn no_new_privs_keeps_file_capabilities_only_within_the_permitted_set() {
    let lab = Lab::new();
    let caps = manifest_caps();
    let pins = lab.pin_dir(NOBODY);
    // A copy with file capabilities, on the target directory's file system (xattrs).
    let dir = herald_bin()
        .parent()
        .expect("profile dir")
        .join(unique("fcap-"));
    std::fs::create_dir(&dir).expect("fcap dir");
    let _cleanup = RemoveDir(dir.clone());
    let plain = herald_bin();
    let fcap = dir.join("herald");
    std::fs::copy(&plain, &fcap).expect("copy herald");
    let cap_text = caps
        .iter()
        .map(|c| format!("cap_{}", c.to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("setcap")
        .arg(format!("{cap_text}+ep"))
        .arg(&fcap)
        .output()
        .expect("setcap");
    assert!(out.status.success(), "setcap: {}", text(&out));
    std::fs::set_permissions(&fcap, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    // capsh: become 65534 keeping `before` in the permitted set (as a runtime does for a
    // non-root container's added capabilities), no ambient, then exec herald directly.
    let run = |binary: &Path, before: &str, nnp: bool| -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.node.name))
            .arg("capsh")
            .arg(format!(
                "--caps={cap_text},cap_setuid,cap_setgid,cap_setpcap+ep"
            ))
            .arg("--keep=1")
            .arg(format!("--gid={NOBODY}"))
            .arg(format!("--groups={NOBODY}"))
            .arg(format!("--uid={NOBODY}"))
            .arg(format!("--caps={before}"));
        if nnp {
            cmd.arg("--no-new-privs");
        }
        cmd.arg(format!("--shell={}", binary.display()))
            .args(["--", "xdp", "list"])
            .env("HERALD_PIN_DIR", &pins)
            .env("RUST_BACKTRACE", "0");
        cmd.output().expect("capsh")
    };
    let all = format!("{cap_text}+ep");
    // Neither inheritable nor ambient: a plain binary loses everything at execve.
    let out = run(&plain, &all, false);
    assert!(
        !out.status.success() && text(&out).contains("missing CAP_BPF"),
        "plain binary: {}",
        text(&out)
    );
    // File capabilities without no_new_privs: granted.
    let out = run(&fcap, "", false);
    assert!(out.status.success(), "file caps: {}", text(&out));
    // With no_new_privs and the capabilities already permitted before execve: kept.
    let out = run(&fcap, &all, true);
    assert!(
        out.status.success(),
        "file caps + no_new_privs: {}",
        text(&out)
    );
    // With no_new_privs and only CAP_BPF permitted before execve: only CAP_BPF survives (list
    // needs nothing more; announce would need the network capabilities).
    let out = run(&fcap, "cap_bpf+ep", true);
    assert!(out.status.success(), "{}", text(&out));
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", lab.node.name))
        .arg("capsh")
        .arg(format!(
            "--caps={cap_text},cap_setuid,cap_setgid,cap_setpcap+ep"
        ))
        .args(["--keep=1"])
        .arg(format!("--gid={NOBODY}"))
        .arg(format!("--groups={NOBODY}"))
        .arg(format!("--uid={NOBODY}"))
        .arg("--caps=cap_bpf+ep")
        .arg("--no-new-privs")
        .arg(format!("--shell={}", fcap.display()))
        .args([
            "--",
            "xdp",
            "attach",
            "--iface",
            &lab.node_if,
            "--mode",
            "skb",
        ])
        .env("HERALD_PIN_DIR", &pins)
        .env("RUST_BACKTRACE", "0");
    let out = cmd.output().expect("capsh");
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("missing CAP_NET_ADMIN"),
        "file caps beyond the permitted set under no_new_privs: {t}"
    );
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sh -c script` in a new private mount namespace and network namespace `ns`, as `who`
/// for the commands the script runs through "$AS".
fn in_private_mounts(ns: &str, who: &As, script: &str) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args([
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ])
        .env("AS", who.prefix().join(" "))
        .env("HERALD", herald_bin())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("unshare")
}

/// A hostPath volume of `/sys/fs/bpf/herald` is a bind mount of a bpffs subdirectory into
/// the container's own mount namespace. Pins in a directory below that mount are made,
/// survive the namespace (the "container") and are reused by the next one; so are pins in
/// the mount point itself, which is how the manifest mounts only the host's
/// `/sys/fs/bpf/herald` (at `/run/herald/pins`, `HERALD_PIN_DIR`).
#[test]
fn bpffs_subdirectory_bind_mount_holds_the_pins() {
    let lab = Lab::new();
    let who = As::Root(manifest_caps());
    let host_dir = lab.bpffs.dir.join(unique("hostherald"));
    std::fs::create_dir(&host_dir).unwrap();
    let mount_at = std::env::temp_dir().join(unique("herald-ctr-"));
    std::fs::create_dir(&mount_at).unwrap();
    let _cleanup = RemoveDir(mount_at.clone());
    let container = |pin_dir: &str| {
        in_private_mounts(
            &lab.node.name,
            &who,
            &format!(
                "mount --bind {host} {at} && stat -f -c %T {at} && HERALD_PIN_DIR={pin_dir} exec $AS \"$HERALD\" xdp attach --iface {iface} --mode skb",
                host = host_dir.display(),
                at = mount_at.display(),
                iface = lab.node_if,
            ),
        )
    };
    let below = format!("{}/pins", mount_at.display());
    let out = container(&below);
    let t = text(&out);
    assert!(out.status.success(), "pins below the bind mount: {t}");
    assert!(t.starts_with("bpf_fs"), "the bind mount is a bpffs: {t}");
    assert!(t.contains("attached in skb mode"), "{t}");
    assert!(
        host_dir.join("pins/HERALD_V4").exists(),
        "the pins outlive the mount namespace, on the host's bpffs"
    );
    let out = container(&below);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("already attached (skb mode)"),
        "a second container reuses the pinned link: {t}"
    );

    lab.herald_ok(
        &who,
        &host_dir.join("pins"),
        &["detach", "--iface", &lab.node_if],
    );
    // The mount point itself as the pin directory: what the manifest does.
    let at_mount = mount_at.display().to_string();
    let out = container(&at_mount);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("attached in skb mode"),
        "the mount point itself as the pin directory: {t}"
    );
    assert!(
        host_dir.join("HERALD_V4").exists(),
        "pinned on the host's bpffs"
    );
    let out = container(&at_mount);
    assert!(
        text(&out).contains("already attached (skb mode)"),
        "reused: {}",
        text(&out)
    );
    // Detach through the host's view so nothing stays attached.
    lab.herald_ok(&who, &host_dir, &["detach", "--iface", &lab.node_if]);
}

/// A host without bpffs at /sys/fs/bpf: nothing can be created there (so a hostPath
/// `DirectoryOrCreate` of `/sys/fs/bpf/herald` cannot be made), and the speaker, which runs
/// in its own mount namespace without CAP_SYS_ADMIN, says so instead of mounting.
#[test]
fn no_bpffs_at_sys_fs_bpf_is_a_clear_error() {
    let lab = Lab::new();
    let who = As::Root(manifest_caps());
    let out = in_private_mounts(
        &lab.node.name,
        &who,
        &format!(
            "umount -l /sys/fs/bpf 2>/dev/null; stat -f -c %T /sys/fs/bpf; \
             mkdir /sys/fs/bpf/herald 2>&1 && echo MKDIR-OK; \
             HERALD_PIN_DIR=/sys/fs/bpf/herald exec $AS \"$HERALD\" xdp attach --iface {} --mode skb",
            lab.node_if
        ),
    );
    let t = text(&out);
    assert!(
        t.starts_with("sysfs"),
        "/sys/fs/bpf is plain sysfs here: {t}"
    );
    assert!(
        !t.contains("MKDIR-OK") && t.contains("No such file or directory"),
        "mkdir under sysfs: {t}"
    );
    assert!(
        !out.status.success()
            && t.contains("is not a BPF filesystem in this private mount namespace"),
        "{t}"
    );
}
