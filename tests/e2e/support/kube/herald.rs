//! Runs the real `herald controller` binary as the controller service account (its kubeconfig),
//! so the RBAC shipped in `manifests/` is what the API server enforces.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::control_plane::{ControlPlane, free_port, herald_binary};

pub struct Herald {
    child: Option<Child>,
    pub name: String,
    pub metrics_port: u16,
    pub health_port: u16,
    pub log: PathBuf,
}

impl Herald {
    /// Starts `herald controller` named `name` (its Lease identity) with `extra` flags.
    pub fn start(plane: &ControlPlane, name: &str, extra: &[&str]) -> Herald {
        Self::start_with_log(plane, name, extra, Some("info,kube=warn"))
    }

    /// Like [`Herald::start`] with `RUST_LOG` set to `rust_log`, or unset when `None`.
    pub fn start_with_log(
        plane: &ControlPlane,
        name: &str,
        extra: &[&str],
        rust_log: Option<&str>,
    ) -> Herald {
        let metrics_port = free_port();
        let health_port = free_port();
        let log = plane.dir.join(format!("herald-{name}-{}.log", unique()));
        let file = std::fs::File::create(&log).expect("herald log file");
        let mut command = Command::new(herald_binary());
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("controller")
            .arg(format!(
                "--kubeconfig={}",
                plane.kubeconfig("controller").display()
            ))
            .arg("--namespace=metallb-system")
            .arg(format!("--port={metrics_port}"))
            .arg(format!("--health-probe-port={health_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pod-name={name}"))
            .arg("--ml-secret-name=memberlist")
            .args(
                // A short lease for single-replica tests (a new leader after a restart need not
                // wait long); a test may pass its own.
                (!extra.iter().any(|a| a.starts_with("--lease-duration")))
                    .then_some("--lease-duration=3"),
            )
            .args(extra)
            .env_remove("KUBECONFIG")
            .env_remove("METALLB_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("starting herald controller");
        Herald {
            child: Some(child),
            name: name.to_string(),
            metrics_port,
            health_port,
            log,
        }
    }

    /// SIGTERM and wait: a graceful stop (the Lease is released).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            herald_control_plane::terminate(&mut child, Duration::from_secs(20));
        }
    }

    /// SIGKILL: a crash (the Lease must expire before another replica leads).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGSTOP freezes, SIGCONT thaws).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).expect("pid");
            // SAFETY: kill(2) on our own child.
            assert_eq!(
                unsafe { libc::kill(pid, signal) },
                0,
                "kill({pid}, {signal})"
            );
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on `port`: (status code, body), or None when nothing answers.
    pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
        Self::http_get_at("127.0.0.1", port, path)
    }

    /// GET `path` from `host:port`: (status code, body); `None` when nothing answers.
    pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect((host, port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    pub fn metrics(&self) -> String {
        Self::http_get(self.metrics_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
