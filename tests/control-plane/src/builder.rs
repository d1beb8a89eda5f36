//! How a control plane is started: the builder's settings, the ports, and each process's
//! command line.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::credentials::{self, ADMIN, Credentials, Identity};
use crate::process::{self, free_ports, stop_recorded};
use crate::{Binaries, ControlPlane};

/// How a [`ControlPlane`] is started. By default: owned, in a temporary run directory, on free
/// loopback ports, Service CIDR 10.96.0.0/16, etcd's data on disk, no kube-controller-manager,
/// [`Identity::defaults`].
#[derive(Clone, Debug)]
pub struct Builder {
    binaries: Binaries,
    run_dir: Option<PathBuf>,
    bind: String,
    port: Option<u16>,
    service_cidrs: Vec<String>,
    etcd_in_memory: bool,
    etcd_args: Vec<String>,
    apiserver_args: Vec<String>,
    controller_manager: bool,
    controller_manager_args: Vec<String>,
    identities: Vec<Identity>,
    kubelets: Vec<String>,
    ready_timeout: Duration,
    stop_grace: Duration,
    detached: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            binaries: Binaries::workspace(),
            run_dir: None,
            bind: "127.0.0.1".into(),
            port: None,
            service_cidrs: vec!["10.96.0.0/16".into()],
            etcd_in_memory: false,
            etcd_args: Vec::new(),
            apiserver_args: Vec::new(),
            controller_manager: false,
            controller_manager_args: Vec::new(),
            identities: Identity::defaults(),
            kubelets: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(10),
            detached: false,
        }
    }
}

impl Builder {
    /// Where the binaries are (default: this workspace's `target/kube/bin`).
    pub fn binaries(mut self, binaries: Binaries) -> Builder {
        self.binaries = binaries;
        self
    }

    /// The run directory: credentials, kubeconfigs, certificates, logs and (unless in memory)
    /// etcd's data. Anything there is removed first, after stopping what a detached plane
    /// recorded there. Default: a fresh temporary directory, removed with the plane.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.run_dir = Some(dir.into());
        self
    }

    /// Address kube-apiserver binds to (default 127.0.0.1). Any other address is also
    /// advertised; a loopback one may not be, so the endpoint reconciler is off there.
    pub fn bind(mut self, address: &str) -> Builder {
        self.bind = address.to_string();
        self
    }

    /// kube-apiserver's secure port, with etcd on `port + 1000` (peer `port + 1001`) and
    /// kube-controller-manager's on `port + 2000`. Default: free loopback ports for all.
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// The Service ClusterIP range(s) (default 10.96.0.0/16); an IPv4 and an IPv6 range make
    /// the cluster dual-stack.
    pub fn service_cidrs<S: Into<String>>(mut self, cidrs: impl IntoIterator<Item = S>) -> Builder {
        self.service_cidrs = cidrs.into_iter().map(Into::into).collect();
        self
    }

    /// etcd's data in /dev/shm (removed with the plane) instead of the run directory.
    pub fn etcd_in_memory(mut self, in_memory: bool) -> Builder {
        self.etcd_in_memory = in_memory;
        self
    }

    /// Appends flags to etcd's command line.
    pub fn etcd_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Builder {
        self.etcd_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends flags to kube-apiserver's command line.
    pub fn apiserver_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Builder {
        self.apiserver_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also runs kube-controller-manager, as admin, with every controller but node-lifecycle
    /// (default: not run).
    pub fn controller_manager(mut self, run: bool) -> Builder {
        self.controller_manager = run;
        self
    }

    /// Appends flags to kube-controller-manager's command line.
    pub fn controller_manager_args<S: Into<String>>(
        mut self,
        args: impl IntoIterator<Item = S>,
    ) -> Builder {
        self.controller_manager_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// The users in the token file (default [`Identity::defaults`]); one must be [`ADMIN`].
    pub fn identities(mut self, identities: impl IntoIterator<Item = Identity>) -> Builder {
        self.identities = identities.into_iter().collect();
        self
    }

    /// Real kubelets named `nodes` will join: each gets an identity `system:node:<name>` (group
    /// `system:nodes`, kubeconfig `<name>.kubeconfig`) and kube-proxy one (`kube-proxy`);
    /// kube-apiserver runs the NodeRestriction admission plugin and reaches kubelets by their
    /// InternalIP; kube-controller-manager runs every controller (node-lifecycle included) and
    /// publishes the cluster CA to Pods; kube-scheduler runs (DaemonSet and Deployment Pods
    /// are placed by it).
    pub fn kubelets<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Builder {
        self.kubelets = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// How long kube-apiserver may take to answer `/readyz` with ok (default 120 s); half of
    /// it for its serving certificate to appear.
    pub fn ready_timeout(mut self, timeout: Duration) -> Builder {
        self.ready_timeout = timeout;
        self
    }

    /// Between SIGTERM and SIGKILL when stopping a process (default 10 s).
    pub fn stop_grace(mut self, grace: Duration) -> Builder {
        self.stop_grace = grace;
        self
    }

    /// The processes outlive the handle and this process; they are recorded in
    /// `<run dir>/pids` for [`stop_recorded`] (or [`ControlPlane::stop`]).
    pub fn detached(mut self, detached: bool) -> Builder {
        self.detached = detached;
        self
    }

    /// Starts etcd and kube-apiserver, writes the kubeconfigs, waits until kube-apiserver is
    /// ready, then starts kube-controller-manager when asked.
    pub fn start(self) -> Result<ControlPlane> {
        if !self.identities.iter().any(|id| id.name == ADMIN) {
            bail!("the control plane needs an identity named {ADMIN}");
        }
        if self.service_cidrs.is_empty() {
            bail!("the control plane needs a Service CIDR");
        }
        let mut needed = vec![Binaries::ETCD, Binaries::KUBE_APISERVER, Binaries::KUBECTL];
        if self.controller_manager {
            needed.push(Binaries::KUBE_CONTROLLER_MANAGER);
        }
        self.binaries.require(&needed)?;

        let (dir, temporary) = if let Some(dir) = &self.run_dir {
            if dir.join(process::PIDS_FILE).is_file() {
                stop_recorded(dir)?;
            }
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), false)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("herald-kube-")
                .tempdir()?
                .keep();
            (dir, true)
        };
        let etcd_data = if self.etcd_in_memory {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let data = PathBuf::from(format!(
                "/dev/shm/herald-etcd-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&data);
            data
        } else {
            dir.join("etcd")
        };
        let mut identities = self.identities.clone();
        if !self.kubelets.is_empty() {
            for node in &self.kubelets {
                identities.push(Identity::new(
                    node,
                    &format!("system:node:{node}"),
                    &["system:nodes"],
                ));
            }
            identities.push(Identity::new("kube-proxy", "system:kube-proxy", &[]));
            self.binaries.require(&[Binaries::KUBE_SCHEDULER])?;
        }
        let credentials = Credentials::in_dir(&dir);
        let ports = self.ports()?;
        let server = format!("https://{}:{}", self.bind, ports.apiserver);
        let apiserver_args = self.apiserver_flags(&dir, &ports, &credentials);
        let plane = ControlPlane {
            dir: dir.clone(),
            server: server.clone(),
            apiserver_port: ports.apiserver,
            binaries: self.binaries.clone(),
            detached: self.detached,
            temporary,
            etcd_memory: self.etcd_in_memory.then(|| etcd_data.clone()),
            apiserver_args,
            ready_timeout: self.ready_timeout,
            stop_grace: self.stop_grace,
            processes: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
        };
        // From here on, a failure drops `plane`, which stops what it started and removes what
        // it made (an owned plane).
        credentials.write(&dir, &identities)?;
        plane.start_process("etcd", self.etcd_command(&etcd_data, &ports))?;
        plane.start_apiserver()?;
        credentials::write_kubeconfigs(&dir, &server, &identities, self.ready_timeout / 2)?;
        plane.wait_ready()?;

        if self.controller_manager {
            let kcm =
                self.controller_manager_command(&plane.kubeconfig(ADMIN), &ports, &credentials);
            plane.start_process("kube-controller-manager", kcm)?;
        }
        if !self.kubelets.is_empty() {
            let mut scheduler = Command::new(self.binaries.path(Binaries::KUBE_SCHEDULER));
            scheduler
                .arg(format!(
                    "--kubeconfig={}",
                    plane.kubeconfig(ADMIN).display()
                ))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", ports.scheduler))
                .arg("--leader-elect=false");
            plane.start_process("kube-scheduler", scheduler)?;
        }
        Ok(plane)
    }

    fn ports(&self) -> Result<Ports> {
        let [apiserver, etcd, etcd_peer, controller_manager, scheduler] = match self.port {
            Some(port) => [port, port + 1000, port + 1001, port + 2000, port + 2001],
            None => free_ports()?,
        };
        Ok(Ports {
            apiserver,
            etcd,
            etcd_peer,
            controller_manager,
            scheduler,
        })
    }

    fn etcd_command(&self, data: &Path, ports: &Ports) -> Command {
        let client = format!("http://127.0.0.1:{}", ports.etcd);
        let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        let mut etcd = Command::new(self.binaries.path(Binaries::ETCD));
        etcd.arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .args(&self.etcd_args);
        etcd
    }

    /// kube-apiserver's flags, kept by the plane to restart it with the same ones.
    fn apiserver_flags(
        &self,
        dir: &Path,
        ports: &Ports,
        credentials: &Credentials,
    ) -> Vec<OsString> {
        let mut args: Vec<String> = Vec::new();
        if self.bind.starts_with("127.") {
            // A loopback address may not be advertised; nothing in-cluster needs the endpoint.
            args.push("--endpoint-reconciler-type=none".into());
        } else {
            args.push(format!("--advertise-address={}", self.bind));
        }
        args.extend([
            format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd),
            format!("--bind-address={}", self.bind),
            format!("--secure-port={}", ports.apiserver),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!(
                "--service-cluster-ip-range={}",
                self.service_cidrs.join(",")
            ),
            "--authorization-mode=Node,RBAC".into(),
            format!("--token-auth-file={}", credentials.tokens.display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!(
                "--service-account-key-file={}",
                credentials.pubkey.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                credentials.key.display()
            ),
        ]);
        if !self.kubelets.is_empty() {
            args.extend([
                "--enable-admission-plugins=NodeRestriction".into(),
                // Otherwise node names are resolved through the host's resolver.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        }
        args.extend(self.apiserver_args.iter().cloned());
        args.into_iter().map(OsString::from).collect()
    }

    /// kube-controller-manager as admin, every controller but node-lifecycle.
    fn controller_manager_command(
        &self,
        admin: &Path,
        ports: &Ports,
        credentials: &Credentials,
    ) -> Command {
        let mut kcm = Command::new(self.binaries.path(Binaries::KUBE_CONTROLLER_MANAGER));
        kcm.arg(format!("--kubeconfig={}", admin.display()))
            .arg(format!("--authentication-kubeconfig={}", admin.display()))
            .arg(format!("--authorization-kubeconfig={}", admin.display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                credentials.key.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", ports.controller_manager))
            .arg("--leader-elect=false");
        if self.kubelets.is_empty() {
            // Without kubelets the node-lifecycle controller would taint every Node
            // unreachable and evict its Pods.
            kcm.arg("--controllers=*,-node-lifecycle-controller");
        } else {
            // Pods read the CA from the kube-root-ca.crt ConfigMap this publishes.
            kcm.arg("--controllers=*")
                .arg(format!("--root-ca-file={}", credentials.ca.display()));
        }
        kcm.args(&self.controller_manager_args);
        kcm
    }
}

struct Ports {
    apiserver: u16,
    etcd: u16,
    etcd_peer: u16,
    controller_manager: u16,
    scheduler: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn apiserver_flags_by_default_authorize_with_node_and_rbac_on_loopback() {
        let builder = ControlPlane::builder().apiserver_args(["--max-requests-inflight=1000"]);
        let dir = Path::new("/run/plane");
        let ports = Ports {
            apiserver: 1,
            etcd: 2,
            etcd_peer: 3,
            controller_manager: 4,
            scheduler: 5,
        };
        let flags = strings(&builder.apiserver_flags(dir, &ports, &Credentials::in_dir(dir)));
        assert_eq!(
            flags,
            [
                "--endpoint-reconciler-type=none",
                "--etcd-servers=http://127.0.0.1:2",
                "--bind-address=127.0.0.1",
                "--secure-port=1",
                "--cert-dir=/run/plane/certs",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--token-auth-file=/run/plane/tokens.csv",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file=/run/plane/sa.pub",
                "--service-account-signing-key-file=/run/plane/sa.key",
                "--max-requests-inflight=1000",
            ]
        );
    }

    #[test]
    fn a_fixed_port_places_etcd_and_the_controller_manager_beside_it() {
        let builder = ControlPlane::builder()
            .bind("203.0.113.1")
            .port(16443)
            .service_cidrs(["10.96.0.0/16", "fd00:96::/108"])
            .etcd_args(["--unsafe-no-fsync"])
            .controller_manager(true);
        let dir = Path::new("/run/plane");
        let credentials = Credentials::in_dir(dir);
        let ports = builder.ports().unwrap();
        let flags = strings(&builder.apiserver_flags(dir, &ports, &credentials));
        assert_eq!(flags[0], "--advertise-address=203.0.113.1");
        assert!(flags.contains(&"--etcd-servers=http://127.0.0.1:17443".to_string()));
        assert!(flags.contains(&"--secure-port=16443".to_string()));
        assert!(
            flags.contains(&"--service-cluster-ip-range=10.96.0.0/16,fd00:96::/108".to_string())
        );
        let etcd = args(&builder.etcd_command(&dir.join("etcd"), &ports));
        assert_eq!(
            etcd,
            [
                "--data-dir=/run/plane/etcd",
                "--listen-client-urls=http://127.0.0.1:17443",
                "--advertise-client-urls=http://127.0.0.1:17443",
                "--listen-peer-urls=http://127.0.0.1:17444",
                "--initial-advertise-peer-urls=http://127.0.0.1:17444",
                "--initial-cluster=default=http://127.0.0.1:17444",
                "--unsafe-no-fsync",
            ]
        );
        let kcm = args(&builder.controller_manager_command(
            &dir.join("admin.kubeconfig"),
            &ports,
            &credentials,
        ));
        assert!(kcm.contains(&"--secure-port=18443".to_string()));
        assert!(kcm.contains(&"--controllers=*,-node-lifecycle-controller".to_string()));
        assert!(kcm.contains(&"--leader-elect=false".to_string()));
        assert!(kcm.contains(&"--kubeconfig=/run/plane/admin.kubeconfig".to_string()));
    }

    #[test]
    fn start_refuses_identities_without_admin() {
        let err = ControlPlane::builder()
            .identities([Identity::service_account("ns", "sa")])
            .start()
            .err()
            .expect("no admin");
        assert!(err.to_string().contains("admin"), "{err}");
    }
}
