//! Who answers ARP/NDP on an interface: the XDP program or a userspace AF_PACKET responder
//! ([`super::fallback`]) in this process — one policy for every caller (`herald xdp attach`,
//! `herald xdp run`, the speaker).
//!
//! The policy, per interface, from `--dataplane` and what is already there:
//!
//! | already there                          | `xdp`                  | `userspace`                 | `auto`                          |
//! |----------------------------------------|------------------------|-----------------------------|---------------------------------|
//! | this process's responder               | refused (stop it)      | kept                        | kept                            |
//! | another live process's responder       | refused (stop it)      | that process answers        | that process answers            |
//! | a pinned XDP link                      | kept (no gap)          | link unpinned, then ours    | kept                            |
//! | nothing                                | XDP attached, pinned   | ours started                | XDP, else ours                  |
//!
//! Two answerers never serve one interface (every reply would go out twice). An interface that
//! fell back to userspace under `auto` stays there while this process runs: retrying XDP would
//! load the program again on every rescan. Taking over from a pinned XDP link keeps the maps, so
//! the addresses stay announced across the switch. A responder of this process leaves a marker
//! ([`super::markers`]) that other processes read, and removes it when it stops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::fallback::{Fallback, FallbackCounts, FallbackStats};
use super::markers::{self, Marker};
use super::netdev::Interface;
use super::{
    AttachMode, Attached, AttachedMode, Dataplane, DataplaneChoice, DataplaneError, Result,
    ServedBy,
};

/// What is on an interface before [`decide`] picks who answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// This process runs a live userspace responder there.
    pub own_responder: bool,
    /// Another live process answers there in userspace.
    pub other_process: Option<u32>,
    /// A pinned XDP link exists for the interface.
    pub xdp_link: Option<AttachedMode>,
    /// Under `auto`, this process already fell back to userspace there.
    pub fell_back: bool,
}

/// What to do on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Another answerer is there and XDP was asked for: stop it first.
    Refuse { pid: u32 },
    /// Another process answers in userspace from the same maps: leave it.
    UseOtherProcess { pid: u32 },
    /// This process's responder runs already.
    KeepOwn,
    /// Attach the XDP program (idempotent); on failure fall back to userspace when `fallback`.
    AttachXdp { fallback: bool },
    /// Start this process's userspace responder, unpinning the XDP link first when one exists.
    StartOwn { release_xdp: bool },
}

/// The policy of the module documentation, as a pure function.
pub fn decide(choice: DataplaneChoice, found: Found) -> Step {
    let own_pid = std::process::id();
    match choice {
        DataplaneChoice::Xdp => {
            if found.own_responder {
                Step::Refuse { pid: own_pid }
            } else if let Some(pid) = found.other_process {
                Step::Refuse { pid }
            } else {
                Step::AttachXdp { fallback: false }
            }
        }
        DataplaneChoice::Userspace | DataplaneChoice::Auto if found.own_responder => Step::KeepOwn,
        DataplaneChoice::Userspace | DataplaneChoice::Auto if found.other_process.is_some() => {
            Step::UseOtherProcess {
                pid: found.other_process.unwrap_or(own_pid),
            }
        }
        DataplaneChoice::Userspace => Step::StartOwn {
            release_xdp: found.xdp_link.is_some(),
        },
        DataplaneChoice::Auto if found.fell_back => Step::StartOwn {
            release_xdp: found.xdp_link.is_some(),
        },
        DataplaneChoice::Auto => Step::AttachXdp { fallback: true },
    }
}

/// Who answers on an interface after [`Answerers::serve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// The XDP program, attached now or before.
    Xdp(Attached),
    /// This process, in userspace.
    Own {
        /// The responder started now (false: it was running).
        started: bool,
        /// The XDP link that was unpinned to make room for it.
        released_xdp: Option<AttachedMode>,
        /// Why XDP could not attach, when `auto` fell back.
        xdp_refused: Option<String>,
    },
    /// Another live process answers there in userspace.
    OtherProcess(u32),
}

impl Serving {
    pub fn served_by(&self) -> ServedBy {
        match self {
            Serving::Xdp(attached) => attached.mode.into(),
            Serving::Own { .. } | Serving::OtherProcess(_) => ServedBy::Userspace,
        }
    }
}

/// A userspace responder thread of this process.
struct Responder {
    index: u32,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<()>>,
}

/// How a responder of this process ended.
#[derive(Debug)]
pub struct Ended {
    pub iface: String,
    pub index: u32,
    /// `Err` with the socket error, or the panic.
    pub outcome: std::result::Result<(), String>,
}

/// The answerers of this process, one per interface it serves.
pub struct Answerers {
    pin_dir: PathBuf,
    choice: DataplaneChoice,
    mode: AttachMode,
    own: BTreeMap<String, Responder>,
    /// Counters of the responders, kept across a restarted one (metrics stay monotonic).
    stats: BTreeMap<String, Arc<FallbackStats>>,
    /// Interfaces (name, index) that fell back to userspace under `auto`.
    fell_back: BTreeSet<(String, u32)>,
}

impl Answerers {
    pub fn new(pin_dir: &Path, choice: DataplaneChoice, mode: AttachMode) -> Answerers {
        Answerers {
            pin_dir: pin_dir.to_path_buf(),
            choice,
            mode,
            own: BTreeMap::new(),
            stats: BTreeMap::new(),
            fell_back: BTreeSet::new(),
        }
    }

    pub fn choice(&self) -> DataplaneChoice {
        self.choice
    }

    /// Makes sure something answers on `iface`, per the policy; says who. `dp` learns about a
    /// responder of this process so that it accepts announcements there.
    pub fn serve(&mut self, dp: &mut Dataplane, iface: &Interface) -> Result<Serving> {
        let own_running = self
            .own
            .get(&iface.name)
            .is_some_and(|r| r.index == iface.index && !r.handle.is_finished());
        if !own_running {
            self.stop(dp, &iface.name);
        }
        let own_pid = std::process::id();
        let found = Found {
            own_responder: own_running,
            other_process: markers::live_responder(&self.pin_dir, &iface.name)?
                .filter(|pid| *pid != own_pid),
            xdp_link: dp.attached_mode(&iface.name)?,
            fell_back: self.fell_back.contains(&(iface.name.clone(), iface.index)),
        };
        match decide(self.choice, found) {
            Step::Refuse { pid } => Err(DataplaneError::AnsweredInUserspace {
                iface: iface.name.clone(),
                pid,
            }),
            Step::UseOtherProcess { pid } => Ok(Serving::OtherProcess(pid)),
            Step::KeepOwn => Ok(Serving::Own {
                started: false,
                released_xdp: None,
                xdp_refused: None,
            }),
            Step::AttachXdp { fallback } => match dp.attach(iface, self.mode) {
                Ok(attached) => Ok(Serving::Xdp(attached)),
                Err(error) if fallback => {
                    tracing::warn!(iface = %iface.name, %error,
                        "XDP cannot attach; falling back to userspace (AF_PACKET responder)");
                    self.fell_back.insert((iface.name.clone(), iface.index));
                    self.start_own(dp, iface, false, Some(error.to_string()))
                }
                Err(error) => Err(error),
            },
            Step::StartOwn { release_xdp } => self.start_own(dp, iface, release_xdp, None),
        }
    }

    fn start_own(
        &mut self,
        dp: &mut Dataplane,
        iface: &Interface,
        release_xdp: bool,
        xdp_refused: Option<String>,
    ) -> Result<Serving> {
        let released_xdp = if release_xdp {
            let mode = dp.attached_mode(&iface.name)?;
            if dp.release_link(&iface.name)? {
                tracing::warn!(iface = %iface.name,
                    "unpinned the XDP link: this interface is answered in userspace now");
            }
            mode
        } else {
            None
        };
        let stats = self.stats.entry(iface.name.clone()).or_default().clone();
        let fallback = Fallback::open_with_stats(iface, stats)?;
        let mut reader = Dataplane::open(&self.pin_dir)?;
        let marker = Marker::create(&self.pin_dir, &iface.name)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("answer-{}", iface.name))
            .spawn(move || {
                let result = fallback.serve(&mut reader, &flag);
                drop(marker);
                result
            })
            .map_err(|source| DataplaneError::Io {
                op: "starting the userspace responder thread",
                source,
            })?;
        dp.serve_in_userspace(iface);
        tracing::info!(iface = %iface.name, "answering in userspace (AF_PACKET)");
        self.own.insert(
            iface.name.clone(),
            Responder {
                index: iface.index,
                stop,
                handle,
            },
        );
        Ok(Serving::Own {
            started: true,
            released_xdp,
            xdp_refused,
        })
    }

    /// Stops this process's responder on `name`, if any (it ends within its poll interval);
    /// returns how it ended when it had ended already.
    pub fn stop(&mut self, dp: &mut Dataplane, name: &str) -> Option<Ended> {
        let r = self.own.remove(name)?;
        r.stop.store(true, Ordering::Relaxed);
        dp.stop_serving_in_userspace(r.index);
        r.handle
            .is_finished()
            .then(|| ended(name.to_string(), r.index, r.handle))
    }

    /// Stops every responder of this process not on an interface in `keep`.
    pub fn retain(&mut self, dp: &mut Dataplane, keep: &BTreeSet<String>) {
        let unused: Vec<String> = self
            .own
            .keys()
            .filter(|name| !keep.contains(*name))
            .cloned()
            .collect();
        for name in unused {
            if let Some(ended) = self.stop(dp, &name) {
                log_ended(&ended);
            }
        }
    }

    /// Responders of this process that ended on their own (socket gone), removed from the set.
    pub fn take_ended(&mut self, dp: &mut Dataplane) -> Vec<Ended> {
        let finished: Vec<String> = self
            .own
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        finished
            .into_iter()
            .filter_map(|name| self.stop(dp, &name))
            .collect()
    }

    /// Stops every responder of this process and waits for their threads; returns how each
    /// ended.
    pub fn stop_all(&mut self) -> Vec<Ended> {
        let all = std::mem::take(&mut self.own);
        for r in all.values() {
            r.stop.store(true, Ordering::Relaxed);
        }
        all.into_iter()
            .map(|(name, r)| ended(name, r.index, r.handle))
            .collect()
    }

    /// Counters of this process's responders (also of stopped ones), by interface.
    pub fn counts(&self) -> Vec<(String, FallbackCounts)> {
        self.stats
            .iter()
            .map(|(name, stats)| (name.clone(), stats.counts()))
            .collect()
    }
}

/// Stops the threads when the owner goes away early (an error return): a thread left serving
/// would keep answering without the process meaning to.
impl Drop for Answerers {
    fn drop(&mut self) {
        for r in self.own.values() {
            r.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn ended(iface: String, index: u32, handle: JoinHandle<Result<()>>) -> Ended {
    let outcome = match handle.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the responder thread panicked".to_string()),
    };
    Ended {
        iface,
        index,
        outcome,
    }
}

/// Logs a responder that ended with an error.
pub fn log_ended(ended: &Ended) {
    if let Err(error) = &ended.outcome {
        tracing::error!(iface = %ended.iface, %error, "userspace responder ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DataplaneChoice; 3] = [
        DataplaneChoice::Xdp,
        DataplaneChoice::Userspace,
        DataplaneChoice::Auto,
    ];

    fn every_found() -> Vec<Found> {
        let mut out = Vec::new();
        for own_responder in [false, true] {
            for other_process in [None, Some(7)] {
                for xdp_link in [None, Some(AttachedMode::Driver), Some(AttachedMode::Skb)] {
                    for fell_back in [false, true] {
                        out.push(Found {
                            own_responder,
                            other_process,
                            xdp_link,
                            fell_back,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn never_two_answerers_on_one_interface() {
        for choice in ALL {
            for found in every_found() {
                let step = decide(choice, found);
                let someone_else = found.own_responder || found.other_process.is_some();
                match step {
                    // Starting ours (or attaching XDP) with another answerer there would double
                    // every reply.
                    Step::AttachXdp { .. } | Step::StartOwn { .. } => {
                        assert!(!someone_else, "{choice:?} {found:?} -> {step:?}");
                    }
                    _ => {}
                }
                if let Step::StartOwn { release_xdp } = step {
                    assert_eq!(release_xdp, found.xdp_link.is_some(), "{found:?}");
                }
            }
        }
    }

    #[test]
    fn xdp_is_refused_while_a_userspace_responder_answers() {
        let other = Found {
            other_process: Some(42),
            ..Found::default()
        };
        assert_eq!(
            decide(DataplaneChoice::Xdp, other),
            Step::Refuse { pid: 42 }
        );
        let own = Found {
            own_responder: true,
            ..Found::default()
        };
        assert!(matches!(
            decide(DataplaneChoice::Xdp, own),
            Step::Refuse { .. }
        ));
    }

    #[test]
    fn userspace_takes_over_from_a_pinned_link() {
        let linked = Found {
            xdp_link: Some(AttachedMode::Skb),
            ..Found::default()
        };
        assert_eq!(
            decide(DataplaneChoice::Userspace, linked),
            Step::StartOwn { release_xdp: true }
        );
        // Auto keeps a working XDP link (attach is idempotent).
        assert_eq!(
            decide(DataplaneChoice::Auto, linked),
            Step::AttachXdp { fallback: true }
        );
        assert_eq!(
            decide(DataplaneChoice::Xdp, linked),
            Step::AttachXdp { fallback: false }
        );
    }

    #[test]
    fn auto_stays_in_userspace_once_fallen_back() {
        let fell = Found {
            fell_back: true,
            ..Found::default()
        };
        assert_eq!(
            decide(DataplaneChoice::Auto, fell),
            Step::StartOwn { release_xdp: false }
        );
        let running = Found {
            fell_back: true,
            own_responder: true,
            ..Found::default()
        };
        assert_eq!(decide(DataplaneChoice::Auto, running), Step::KeepOwn);
        assert_eq!(
            decide(DataplaneChoice::Auto, Found::default()),
            Step::AttachXdp { fallback: true }
        );
    }

    #[test]
    fn another_process_is_left_answering_unless_xdp_is_asked_for() {
        let other = Found {
            other_process: Some(9),
            xdp_link: Some(AttachedMode::Skb),
            ..Found::default()
        };
        for choice in [DataplaneChoice::Userspace, DataplaneChoice::Auto] {
            assert_eq!(decide(choice, other), Step::UseOtherProcess { pid: 9 });
        }
    }
}
