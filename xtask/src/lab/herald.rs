//! The speakers on the lab's nodes, as pods of the DaemonSet `speaker` (Herald's or, after `lab
//! switch metallb`, MetalLB's): [`Speakers`], the same faults for either implementation, and the
//! speaker flags a benchmark changes by a rolling update of the DaemonSet ([`set_speaker_flag`]).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::install;
use super::kubectl::{kubectl, wait_for};
use super::nodes;
use super::procs;
use super::spec::{NODES, NodeSpec};

/// Which implementation's speakers a fault hits and a repair waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speakers {
    Herald,
    Metallb,
}

impl Speakers {
    pub fn label(self) -> &'static str {
        match self {
            Speakers::Herald => "Herald",
            Speakers::Metallb => "MetalLB",
        }
    }

    /// The host pid of `node`'s speaker container, if one runs.
    pub fn pid(self, node: &NodeSpec) -> Option<i32> {
        match self {
            Speakers::Herald => speaker_pid(node),
            Speakers::Metallb => nodes::metallb_speaker_in_node(node),
        }
    }

    /// The host pid of `node`'s speaker; a container the kubelet is restarting (its liveness
    /// probe failed, say) is waited for.
    pub fn running_pid(self, node: &NodeSpec) -> Result<i32> {
        match self.pid(node) {
            Some(pid) => Ok(pid),
            None => self.wait_running(node),
        }
    }

    /// SIGCONT of `node`'s speaker frozen as `pid`. A container the kubelet killed and restarted
    /// meanwhile (its liveness probe failed during the freeze) runs unfrozen already.
    pub fn thaw(self, node: &NodeSpec, pid: i32) -> Result<()> {
        match procs::signal(pid, libc::SIGCONT) {
            Err(_) if self.pid(node) != Some(pid) => Ok(()),
            other => other,
        }
    }

    /// Waits until `node`'s speaker container runs (the kubelet restarts a killed one, after
    /// its crash back-off); its host pid.
    pub fn wait_running(self, node: &NodeSpec) -> Result<i32> {
        wait_for(
            &format!(
                "the kubelet to (re)start {}'s {} speaker container",
                node.name,
                self.label()
            ),
            Duration::from_secs(330),
            || self.pid(node),
        )
    }
}

/// SIGSTOP of a speaker found before (a timed fault signals at once).
pub fn freeze_pid(pid: i32) -> Result<()> {
    procs::signal(pid, libc::SIGSTOP)
}

/// The host pid of Herald's speaker on `node`, if one runs.
pub fn speaker_pid(node: &NodeSpec) -> Option<i32> {
    nodes::herald_in_node(node, "speaker")
}

/// The timing line the first speaker logs at start (`detect_ms=… guard_budget_ms=…
/// earliest_takeover_ms=…`), so benchmarks print the settings in force.
pub fn speaker_timing_line() -> String {
    nodes::speaker_log(&NODES[0])
        .lines()
        .rev()
        .find(|l| l.contains("detect_ms="))
        .map_or_else(
            || "speaker timing not logged".to_string(),
            |l| {
                l.split_whitespace()
                    .filter(|w| w.contains("_ms="))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        )
}

/// The speaker container's args with `--name=…` replaced by `--name=value` (removed when
/// `value` is None).
pub fn with_flag(args: &[String], name: &str, value: Option<&str>) -> Vec<String> {
    let prefix = format!("--{name}=");
    let mut out: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with(&prefix) && **a != format!("--{name}"))
        .cloned()
        .collect();
    if let Some(value) = value {
        out.push(format!("{prefix}{value}"));
    }
    out
}

/// Sets (or, with None, removes) one flag of Herald's speaker DaemonSet and waits for the
/// rolling update; nothing happens when the args already say so.
pub fn set_speaker_flag(name: &str, value: Option<&str>) -> Result<()> {
    let current: Vec<String> = serde_json::from_str(&kubectl(&[
        "-n",
        "metallb-system",
        "get",
        "daemonset",
        "speaker",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ])?)
    .context("the speaker DaemonSet's args")?;
    if current.first().map(String::as_str) != Some("speaker") {
        bail!(
            "the speaker DaemonSet is not Herald's (args {current:?}): `cargo xtask lab switch herald`"
        );
    }
    let wanted = with_flag(&current, name, value);
    if wanted == current {
        return Ok(());
    }
    let patch = serde_json::json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/args",
        "value": wanted,
    }]);
    kubectl(&[
        "-n",
        "metallb-system",
        "patch",
        "daemonset",
        "speaker",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    install::wait_rolled_out()
}

/// Rolls Herald's speakers out with `--detect-ms=detect_ms` and records it (for `lab status`,
/// `lab failover` and the benchmarks).
pub fn set_speaker_detect_ms(detect_ms: u64) -> Result<()> {
    set_speaker_flag("detect-ms", Some(&detect_ms.to_string()))?;
    procs::record_detect_ms(detect_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn a_flag_is_replaced_added_or_removed() {
        let base = args(&["speaker", "--detect-ms=500"]);
        assert_eq!(
            with_flag(&base, "xdp-mode", Some("driver")),
            args(&["speaker", "--detect-ms=500", "--xdp-mode=driver"])
        );
        let driver = with_flag(&base, "xdp-mode", Some("driver"));
        assert_eq!(
            with_flag(&driver, "xdp-mode", Some("skb")),
            args(&["speaker", "--detect-ms=500", "--xdp-mode=skb"])
        );
        assert_eq!(with_flag(&driver, "xdp-mode", None), base);
        assert_eq!(
            with_flag(&base, "xdp-mode", None),
            base,
            "absent stays absent"
        );
        assert_eq!(
            with_flag(&base, "detect-ms", Some("200")),
            args(&["speaker", "--detect-ms=200"])
        );
    }
}
