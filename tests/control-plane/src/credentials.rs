//! What kube-apiserver authenticates with: a service-account key pair, a static token file with
//! one random token per [`Identity`], and a kubeconfig per identity that trusts the API server's
//! self-signed serving certificate.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Name of the identity the harness itself acts as (readiness checks, kube-controller-manager,
/// [`crate::ControlPlane::kubectl`]); it must be in `system:masters`.
pub const ADMIN: &str = "admin";
const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
/// The cluster CA alone, in the run directory.
pub const CA_FILE: &str = "ca.crt";

/// A user in the static token file (`--token-auth-file`): its token goes to `<name>.token` and
/// its kubeconfig to `<name>.kubeconfig` in the run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// File stem of its token and kubeconfig, and the uid in the token file.
    pub name: String,
    /// User name the API server authenticates.
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(name: &str, user: &str, groups: &[&str]) -> Identity {
        Identity {
            name: name.to_string(),
            user: user.to_string(),
            groups: groups
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        }
    }

    /// `admin`, in `system:masters`.
    pub fn admin() -> Identity {
        Identity::new(ADMIN, ADMIN, &["system:masters"])
    }

    /// The service account `namespace/account` as a token user (named `account`), with the
    /// groups a service account token carries, so RBAC bound to the account applies.
    pub fn service_account(namespace: &str, account: &str) -> Identity {
        Identity::new(
            account,
            &format!("system:serviceaccount:{namespace}:{account}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    /// Admin and the two service accounts Herald (and MetalLB) run as: `controller` and
    /// `speaker` in `metallb-system`.
    pub fn defaults() -> Vec<Identity> {
        vec![
            Identity::admin(),
            Identity::service_account("metallb-system", "controller"),
            Identity::service_account("metallb-system", "speaker"),
        ]
    }
}

/// Files [`Credentials::write`] writes into a run directory.
pub(crate) struct Credentials {
    /// Service-account signing key and its public half.
    pub key: PathBuf,
    pub pubkey: PathBuf,
    /// The static token file naming every identity.
    pub tokens: PathBuf,
    /// The CA that signed kube-apiserver's serving certificate, alone (written by
    /// [`write_kubeconfigs`]).
    pub ca: PathBuf,
}

impl Credentials {
    pub fn in_dir(dir: &Path) -> Credentials {
        Credentials {
            key: dir.join("sa.key"),
            pubkey: dir.join("sa.pub"),
            tokens: dir.join("tokens.csv"),
            ca: dir.join(CA_FILE),
        }
    }

    /// Writes the service-account key pair, a random token per identity (`<name>.token`) and
    /// the token file listing them, and creates `dir/certs` for the API server's own.
    pub fn write(&self, dir: &Path, identities: &[Identity]) -> Result<()> {
        fs::create_dir_all(dir.join("certs"))?;
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&self.key)
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&self.key)
            .arg("-out")
            .arg(&self.pubkey))?;
        let mut lines = String::new();
        for id in identities {
            let token = random_token()?;
            lines.push_str(&format!(
                "{token},{},{},\"{}\"\n",
                id.user,
                id.name,
                id.groups.join(",")
            ));
            fs::write(dir.join(format!("{}.token", id.name)), &token)?;
        }
        fs::write(&self.tokens, lines)?;
        Ok(())
    }
}

/// Waits (up to `timeout`) for the serving certificate kube-apiserver writes under `dir/certs`,
/// then writes `dir/<name>.kubeconfig` for every identity, pointing at `server`.
pub(crate) fn write_kubeconfigs(
    dir: &Path,
    server: &str,
    identities: &[Identity],
    timeout: Duration,
) -> Result<()> {
    let ca = wait_for_cert(&dir.join("certs"), timeout)?;
    // kube-apiserver's self-made chain is the serving certificate, then its CA (read again
    // while the file is still being written).
    let deadline = Instant::now() + timeout;
    let chain = loop {
        let chain = fs::read_to_string(&ca)?;
        if chain.matches(BEGIN).count() >= 2 && chain.trim_end().ends_with("-----") {
            break chain;
        }
        if Instant::now() > deadline {
            bail!("{} holds no serving certificate and CA", ca.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let last = chain.rfind(BEGIN).unwrap_or(0);
    fs::write(dir.join(CA_FILE), &chain[last..])?;
    for id in identities {
        let token = fs::read_to_string(dir.join(format!("{}.token", id.name)))?;
        fs::write(
            dir.join(format!("{}.kubeconfig", id.name)),
            kubeconfig(server, &ca, &id.user, &token),
        )?;
    }
    Ok(())
}

fn wait_for_cert(cert_dir: &Path, timeout: Duration) -> Result<PathBuf> {
    let cert = cert_dir.join("apiserver.crt");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cert.is_file() {
            return Ok(cert);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "kube-apiserver wrote no serving certificate in {timeout:?}; see {}",
        cert_dir
            .parent()
            .unwrap_or(cert_dir)
            .join("kube-apiserver.log")
            .display()
    )
}

fn kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: herald\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: \"{user}\"\n  user:\n    token: {token}\ncontexts:\n- name: herald\n  context:\n    cluster: herald\n    user: \"{user}\"\ncurrent-context: herald\n",
        ca = ca.display()
    )
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_identities_are_admin_and_metallb_service_accounts() {
        let ids = Identity::defaults();
        assert_eq!(ids[0], Identity::new("admin", "admin", &["system:masters"]));
        assert_eq!(
            ids[1],
            Identity::new(
                "controller",
                "system:serviceaccount:metallb-system:controller",
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:metallb-system"
                ],
            )
        );
        assert_eq!(ids[2].name, "speaker");
        assert_eq!(ids[2].user, "system:serviceaccount:metallb-system:speaker");
    }

    #[test]
    fn kubeconfig_names_server_ca_and_token() {
        let text = kubeconfig(
            "https://127.0.0.1:6443",
            Path::new("/run/certs/apiserver.crt"),
            "system:serviceaccount:ns:sa",
            "abc",
        );
        assert!(text.contains("    server: https://127.0.0.1:6443\n"));
        assert!(text.contains("    certificate-authority: /run/certs/apiserver.crt\n"));
        assert!(
            text.contains("- name: \"system:serviceaccount:ns:sa\"\n  user:\n    token: abc\n")
        );
    }
}
