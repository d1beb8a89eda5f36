//! Who answers in userspace, seen from other processes: a process serving an interface through
//! an AF_PACKET responder leaves a marker in the pin directory, `userspace_<pid>_<ifname>` (an
//! empty directory: bpffs holds only pins and directories), so `herald xdp list`, `herald xdp
//! announce` and the speaker in other processes know who answers there.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{DataplaneError, Result};

const MARKER_PREFIX: &str = "userspace_";

pub fn marker_name(pid: u32, ifname: &str) -> String {
    format!("{MARKER_PREFIX}{pid}_{ifname}")
}

/// The pid and interface of a marker name, or `None` for any other entry.
pub fn parse_marker_name(file: &str) -> Option<(u32, String)> {
    let rest = file.strip_prefix(MARKER_PREFIX)?;
    let (pid, ifname) = rest.split_once('_')?;
    let pid = pid.parse().ok().filter(|p| *p > 0)?;
    (!ifname.is_empty()).then(|| (pid, ifname.to_string()))
}

/// A process that answers (or answered) for an interface in userspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserspaceResponder {
    pub iface: String,
    pub pid: u32,
    /// False when that process is gone (killed): nobody answers there.
    pub alive: bool,
    #[serde(skip)]
    pub path: PathBuf,
}

/// True while `pid` is a process running the same program as this one (a recycled pid running
/// something else does not count).
fn herald_process_alive(pid: u32) -> bool {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// The userspace responders marked in `pin_dir`, sorted by interface.
pub fn responders(pin_dir: &Path) -> Result<Vec<UserspaceResponder>> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DataplaneError::PinDir {
                path: pin_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if let Some((pid, iface)) = entry.file_name().to_str().and_then(parse_marker_name) {
            found.push(UserspaceResponder {
                alive: herald_process_alive(pid),
                iface,
                pid,
                path: entry.path(),
            });
        }
    }
    found.sort_by(|a, b| (&a.iface, a.pid).cmp(&(&b.iface, b.pid)));
    Ok(found)
}

/// The live process answering for `ifname` in userspace, if any.
pub fn live_responder(pin_dir: &Path, ifname: &str) -> Result<Option<u32>> {
    Ok(responders(pin_dir)?
        .into_iter()
        .find(|r| r.alive && r.iface == ifname)
        .map(|r| r.pid))
}

/// Removes the markers of processes that are gone; returns how many.
pub fn remove_dead_markers(pin_dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for r in responders(pin_dir)?.into_iter().filter(|r| !r.alive) {
        match std::fs::remove_dir(&r.path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DataplaneError::PinDir {
                    path: r.path,
                    source,
                });
            }
        }
    }
    Ok(removed)
}

/// This process's marker for one interface; removed on drop.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
}

impl Marker {
    pub fn create(pin_dir: &Path, ifname: &str) -> Result<Marker> {
        remove_dead_markers(pin_dir)?;
        let path = pin_dir.join(marker_name(std::process::id(), ifname));
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(DataplaneError::PinDir { path, source }),
        }
        Ok(Marker { path })
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip() {
        assert_eq!(marker_name(42, "eth0.100"), "userspace_42_eth0.100");
        assert_eq!(
            parse_marker_name("userspace_42_eth0.100"),
            Some((42, "eth0.100".to_string()))
        );
        assert_eq!(
            parse_marker_name("userspace_7_my_if"),
            Some((7, "my_if".to_string()))
        );
        for other in [
            "HERALD_V4",
            "link_skb_eth0",
            "userspace_",
            "userspace_x_eth0",
            "userspace_0_eth0",
            "userspace_12_",
            "userspace_12",
        ] {
            assert_eq!(parse_marker_name(other), None, "{other}");
        }
    }

    #[test]
    fn markers_in_a_directory_and_liveness() {
        let dir = std::env::temp_dir().join(format!("herald-markers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let own = Marker::create(&dir, "eth0").unwrap();
        // A pid that cannot exist (beyond pid_max) stands for a killed process.
        std::fs::create_dir(dir.join(marker_name(u32::MAX - 1, "eth1"))).unwrap();
        std::fs::write(dir.join("HERALD_V4"), b"").unwrap();
        let found = responders(&dir).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].alive && found[0].iface == "eth0");
        assert!(!found[1].alive && found[1].iface == "eth1");
        assert_eq!(
            live_responder(&dir, "eth0").unwrap(),
            Some(std::process::id())
        );
        assert_eq!(live_responder(&dir, "eth1").unwrap(), None);
        assert_eq!(remove_dead_markers(&dir).unwrap(), 1);
        drop(own);
        assert!(responders(&dir).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
