//! The bench's namespaces, veths and private bpffs, removed on drop: the API server's side on
//! the host, the speaker's node namespace and a client namespace for its announcements.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

pub(super) const HOST_API: &str = "203.0.113.1";
pub(super) const NODE_API: &str = "203.0.113.2";
const NODE_API_IF: &str = "api0";
pub(super) const NODE_LAN_IF: &str = "lan0";
const CLIENT_IF: &str = "cl0";

/// The bench's namespaces and veths, removed on drop.
pub(super) struct Net {
    pub(super) node_ns: String,
    client_ns: String,
    host_if: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    pub(super) fn new() -> Result<Net> {
        let pid = std::process::id();
        let net = Net {
            node_ns: format!("herald-smem-node-{pid}"),
            client_ns: format!("herald-smem-client-{pid}"),
            host_if: format!("hsm{}", pid % 1_000_000),
        };
        ip(&["netns", "add", &net.node_ns])?;
        ip(&["netns", "add", &net.client_ns])?;
        let (node, client) = (net.node_ns.as_str(), net.client_ns.as_str());
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            NODE_API_IF,
            "netns",
            node,
        ])?;
        ip(&[
            "link",
            "add",
            NODE_LAN_IF,
            "netns",
            node,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            client,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{HOST_API}/30"),
            "dev",
            &net.host_if,
        ])?;
        ip(&["link", "set", &net.host_if, "up"])?;
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            &format!("{NODE_API}/30"),
            "dev",
            NODE_API_IF,
        ])?;
        for (ns, dev) in [
            (node, "lo"),
            (node, NODE_API_IF),
            (node, NODE_LAN_IF),
            (client, "lo"),
            (client, CLIENT_IF),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        for ns in [&self.node_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A bpffs of the bench's own under /tmp, unmounted on drop.
pub(super) struct PrivateBpffs {
    pub(super) dir: PathBuf,
}

impl PrivateBpffs {
    pub(super) fn new() -> Result<PrivateBpffs> {
        let dir = std::env::temp_dir().join(format!("herald-smem-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let bpffs = PrivateBpffs { dir };
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs.dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "mounting bpffs at {}: {}",
                bpffs.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(bpffs)
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
