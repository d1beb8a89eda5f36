//! A `herald speaker` process in a node network namespace, as the speaker service account,
//! with its log in the control plane's directory and its metrics on the namespace's loopback.

use std::fs::File;
use std::process::Stdio;

use herald_tests::{Bpffs, KillOnDrop, Netns, herald_bin, unique};

use super::control_plane::{ControlPlane, free_port};
use super::netns::in_netns;

/// One node running a speaker.
pub struct Speaker {
    pub process: KillOnDrop,
    pub log: std::path::PathBuf,
    pub metrics_port: u16,
    pub netns: String,
}

impl Speaker {
    pub fn start(plane: &ControlPlane, host: &Netns, node: &str, bpffs: &Bpffs) -> Speaker {
        Speaker::start_with(plane, host, node, bpffs, &[])
    }

    /// [`Speaker::start`] with `extra` arguments.
    pub fn start_with(
        plane: &ControlPlane,
        host: &Netns,
        node: &str,
        bpffs: &Bpffs,
        extra: &[&str],
    ) -> Speaker {
        let log = plane.dir.join(format!("{}.log", unique("bgp-speaker")));
        let log_file = File::create(&log).unwrap();
        let metrics_port = free_port();
        let pin_dir = bpffs.dir.join(unique("herald"));
        let process = KillOnDrop(
            host.command(herald_bin())
                .args([
                    "speaker",
                    "--node-name",
                    node,
                    "--namespace",
                    "metallb-system",
                ])
                .arg(format!(
                    "--kubeconfig={}",
                    plane.kubeconfig("speaker").display()
                ))
                .arg(format!("--pin-dir={}", pin_dir.display()))
                .arg("--ml-bind-addr=")
                .arg("--interfaces-include=eth0")
                .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
                .arg("--xdp-mode=skb")
                .args(extra)
                .env("RUST_LOG", "info,kube=warn,herald::bgp=debug")
                .env_remove("KUBECONFIG")
                .env_remove("METALLB_NAMESPACE")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("herald speaker"),
        );
        Speaker {
            process,
            log,
            metrics_port,
            netns: host.name.clone(),
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    /// The body of `path` on the speaker's metrics/status port ("" when it does not answer).
    pub fn get(&self, path: &'static str) -> String {
        let port = self.metrics_port;
        in_netns(&self.netns, move || {
            super::herald::Herald::http_get_at("127.0.0.1", port, path)
        })
        .map(|(_, body)| body)
        .unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.process.0.id() as i32, signal) };
    }
}
