//! Herald on the lab's real nodes, installed as a user installs it: `kubectl apply -k` of an
//! overlay over `manifests/` that sets only the image (built here, imported into every node).

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::kubectl::kubectl;
use super::spec::run_dir;
use crate::image::{HERALD_REPO, Image};
use crate::paths::workspace_root;

/// The lab's workload on real nodes (real pods behind the demo Service).
pub const WORKLOAD_PODS_YAML: &str = include_str!("manifests/workload-pods.yaml");

fn overlay_dir() -> PathBuf {
    run_dir().join("overlay")
}

/// `to` relative to `from` (both absolute), as kustomize wants a base.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// The overlay: `manifests/` with Herald's image set to `herald`.
pub fn overlay(herald: &Image) -> Result<String> {
    let tag = herald
        .reference
        .strip_prefix(&format!("{HERALD_REPO}:"))
        .with_context(|| format!("{} is not a {HERALD_REPO} image", herald.reference))?;
    let base = relative(&overlay_dir(), &workspace_root().join("manifests"));
    Ok(format!(
        "# Written by `cargo xtask lab up --nodes real`: Herald's manifests, with the image built\n\
         # here (`cargo xtask image`) and imported into every node.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n  - {base}\n\
         images:\n  - name: herald\n    newName: {HERALD_REPO}\n    newTag: {tag}\n",
        base = base.display()
    ))
}

/// Applies the overlay for `herald` and waits until the speaker DaemonSet and the controller
/// Deployment are rolled out.
pub fn apply(herald: &Image) -> Result<()> {
    let dir = overlay_dir();
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("kustomization.yaml"), overlay(herald)?)?;
    // CRDs first: kubectl resolves every kind before it applies anything.
    let dir = dir.display().to_string();
    for _ in 0..2 {
        if kubectl(&["apply", "-k", &dir]).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    kubectl(&["apply", "-k", &dir])?;
    wait_rolled_out()
}

/// The speakers' `--detect-ms` as `manifests/speaker.yaml` sets it (the speaker's own default
/// when it sets none).
pub fn manifest_detect_ms() -> Result<Option<u64>> {
    let path = workspace_root().join("manifests/speaker.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(detect_ms_in(&text))
}

fn detect_ms_in(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.trim()
            .trim_start_matches("- ")
            .strip_prefix("--detect-ms=")
            .and_then(|v| v.trim().trim_matches('"').parse().ok())
    })
}

/// Waits for the speaker DaemonSet and the controller Deployment to be rolled out.
pub fn wait_rolled_out() -> Result<()> {
    for what in ["daemonset/speaker", "deployment/controller"] {
        kubectl(&[
            "-n",
            "metallb-system",
            "rollout",
            "status",
            what,
            "--timeout=180s",
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(
                Path::new("/w/target/lab/run/overlay"),
                Path::new("/w/manifests")
            ),
            PathBuf::from("../../../../manifests")
        );
        assert_eq!(
            relative(Path::new("/a"), Path::new("/a/b")),
            PathBuf::from("b")
        );
    }

    #[test]
    fn reads_the_detection_time_from_the_speaker_args() {
        assert_eq!(
            detect_ms_in("args:\n  - speaker\n  - --detect-ms=500\n"),
            Some(500)
        );
        assert_eq!(detect_ms_in("args:\n  - speaker\n"), None);
        assert!(
            manifest_detect_ms().unwrap().is_some(),
            "manifests/speaker.yaml sets --detect-ms"
        );
    }

    #[test]
    fn the_overlay_changes_only_the_image() {
        let image = Image {
            reference: format!("{HERALD_REPO}:dev-0123456789ab"),
            archive: PathBuf::from("/x.tar"),
        };
        let text = overlay(&image).unwrap();
        assert!(text.contains("  - ../../../../manifests\n"), "{text}");
        assert!(text.contains("newTag: dev-0123456789ab\n"), "{text}");
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
            .collect();
        assert_eq!(
            keys,
            [
                "apiVersion: kustomize.config.k8s.io/v1beta1",
                "kind: Kustomization",
                "resources:",
                "images:"
            ]
        );
        let wrong = Image {
            reference: "docker.io/x:1".into(),
            archive: PathBuf::from("/x.tar"),
        };
        assert!(overlay(&wrong).is_err());
    }
}
