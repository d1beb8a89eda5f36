//! Switching the real nodes between Herald and MetalLB v0.15.2, both as pods, the way a user
//! migrates either way: MetalLB's own `metallb-native.yaml` (from its Go module) applied over
//! Herald's install, and Herald's overlay applied back. Both keep the same namespace, Service
//! accounts, DaemonSet `speaker` and Deployment `controller`, so each apply is a rolling update
//! of the other; the configuration objects (pools, advertisements) stay and serve both.
//!
//! What the lab leaves out of MetalLB's manifest, and why: the Namespace (there already); its
//! CRDs (kube-apiserver 1.37 refuses them: `int32` fields bounded beyond int32 — Herald's CRDs
//! define the same objects); the ValidatingWebhookConfiguration (the lab's kube-apiserver does not
//! route to pod addresses), with the controller's own `--webhook-mode=disabled` to match. The
//! images are MetalLB's binaries built here (`cargo xtask image --metallb`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::install;
use super::kubectl::kubectl;
use super::nodes;
use super::spec::{NODES, herald_exe, run_dir};
use crate::image::{self, METALLB_VERSION};

/// Which load balancer the real nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Implementation {
    Herald,
    Metallb,
}

/// Kinds of MetalLB's manifest the lab does not apply (see the module's doc).
const LEFT_OUT: [&str; 3] = [
    "Namespace",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
];

/// MetalLB's `metallb-native.yaml` as the lab applies it: without [`LEFT_OUT`], its images
/// swapped for `localhost/metallb/…` and the controller's webhook disabled.
pub fn metallb_manifest(native: &str) -> Result<String> {
    let mut kept = Vec::new();
    for doc in native.split("\n---\n") {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim);
        if kind.is_some_and(|k| LEFT_OUT.contains(&k)) {
            continue;
        }
        let mut doc = doc.replace("quay.io/metallb/", "localhost/metallb/");
        if kind == Some("Deployment") && doc.contains("/controller:") {
            let port = "        - --port=7472\n";
            if !doc.contains(port) {
                bail!("MetalLB's controller Deployment has no `{}`", port.trim());
            }
            doc = doc.replacen(
                port,
                &format!("{port}        - --webhook-mode=disabled\n"),
                1,
            );
        }
        kept.push(doc);
    }
    let text = kept.join("\n---\n");
    for image in ["controller", "speaker"] {
        let reference = format!("localhost/metallb/{image}:{METALLB_VERSION}");
        if !text.contains(&reference) {
            bail!("MetalLB's manifest names no {image} image {METALLB_VERSION}");
        }
    }
    Ok(text)
}

/// MetalLB's own manifest in the Go module cache, downloaded when missing.
fn native_manifest() -> Result<PathBuf> {
    let module = format!("go.universe.tf/metallb@{METALLB_VERSION}");
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(std::env::temp_dir())
        .output()
        .context("running go mod download")?;
    if !out.status.success() {
        bail!(
            "go mod download {module}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("go mod download -json")?;
    let dir = info["Dir"]
        .as_str()
        .context("no Dir from go mod download")?;
    Ok(PathBuf::from(dir).join("config/manifests/metallb-native.yaml"))
}

/// Rolls the real nodes over to `to`, waiting for the rollout; from Herald to MetalLB it also
/// detaches Herald's XDP programs, so nothing of Herald sees a frame afterwards.
pub fn switch(to: Implementation) -> Result<()> {
    match to {
        Implementation::Metallb => {
            let native = native_manifest()?;
            let text = std::fs::read_to_string(&native)
                .with_context(|| format!("reading {}", native.display()))?;
            let manifest = metallb_manifest(&text)?;
            for built in image::metallb()? {
                for node in NODES {
                    nodes::import_archive(&node, &built.archive)?;
                }
            }
            let path = run_dir().join("metallb.yaml");
            std::fs::write(&path, manifest)?;
            kubectl(&["apply", "-f", &path.display().to_string()])?;
            install::wait_rolled_out()?;
            detach_herald()
        }
        Implementation::Herald => {
            // The image may have been rebuilt since the nodes got theirs (a new tag).
            let herald = image::build()?.herald;
            for node in NODES {
                nodes::import_archive(&node, &herald.archive)?;
            }
            install::apply(&herald)
        }
    }
}

/// Detaches Herald's XDP programs and removes its pins on every node (its speakers are gone).
fn detach_herald() -> Result<()> {
    for node in NODES {
        let pins = nodes::pin_dir_in_node(&node)
            .with_context(|| format!("{}: no mount namespace", node.name))?;
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg("--")
            .arg(herald_exe())
            .arg("xdp")
            .arg("--pin-dir")
            .arg(&pins)
            .arg("detach")
            .output()
            .context("running herald xdp detach")?;
        if !out.status.success() {
            bail!(
                "{}: herald xdp detach: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n---\n\
apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: controller\nspec:\n  template:\n    spec:\n      containers:\n      - args:\n        - --port=7472\n        - --log-level=info\n        image: quay.io/metallb/controller:v0.15.2\n---\n\
apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: speaker\nspec:\n  template:\n    spec:\n      containers:\n      - args:\n        - --port=7472\n        image: quay.io/metallb/speaker:v0.15.2\n---\n\
apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: metallb-webhook-configuration\n";

    #[test]
    fn keeps_the_workloads_with_local_images_and_no_webhook() {
        let text = metallb_manifest(NATIVE).unwrap();
        for gone in LEFT_OUT {
            assert!(!text.contains(&format!("kind: {gone}")), "{text}");
        }
        assert!(text.contains("image: localhost/metallb/controller:v0.15.2"));
        assert!(text.contains("image: localhost/metallb/speaker:v0.15.2"));
        assert!(!text.contains("quay.io"));
        assert_eq!(text.matches("--webhook-mode=disabled").count(), 1);
        assert!(
            text.contains("        - --port=7472\n        - --webhook-mode=disabled\n        - --log-level=info"),
            "only the controller gets the flag: {text}"
        );
    }

    #[test]
    fn refuses_a_manifest_it_cannot_adapt() {
        let no_port = NATIVE.replace("--port=7472\n        - --log-level", "--log-level");
        assert!(metallb_manifest(&no_port).is_err());
        let other_version = NATIVE.replace("v0.15.2", "v0.14.9");
        assert!(metallb_manifest(&other_version).is_err());
    }
}
