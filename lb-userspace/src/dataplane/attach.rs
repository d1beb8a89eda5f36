//! Attaching the responder to an interface, in the mode [`super::xdp_mode`] picks, and moving a
//! pinned link to another mode.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use lb_common::maps::PROG_NAME;

use super::fallback::Fallback;
use super::netdev::Interface;
use super::xdp_mode::{self, Pinned, SkbReason};
use super::{AttachMode, Attached, AttachedMode, Dataplane, DataplaneError, Result, pins};

impl Dataplane {
    /// Attaches the responder to `iface` and pins the link, so it keeps running after this
    /// process exits. Idempotent: a live pinned link in the wanted mode is left as it is; one in
    /// another mode is replaced ([`xdp_mode::pinned`]).
    pub fn attach(&self, iface: &Interface, request: AttachMode) -> Result<Attached> {
        let driver = iface.driver().ok();
        if let Some((_, mode, path)) = self.link_of(&iface.name)? {
            let linked =
                pins::pinned_link_ifindex(&path).map_err(|source| DataplaneError::PinDir {
                    path: path.clone(),
                    source,
                })?;
            if linked == iface.index {
                return match xdp_mode::pinned(request, mode, driver.as_deref()) {
                    // The pinned link is live on this interface: reuse it, with no gap, and
                    // give it this process's program (an upgrade takes effect).
                    Pinned::Keep => Ok(Attached {
                        program_updated: self.refresh_program(iface, &path),
                        iface: iface.name.clone(),
                        mode,
                        already: true,
                        driver_refused: None,
                        skb_reason: None,
                        moved_from: None,
                        covered: false,
                    }),
                    Pinned::MoveTo(to, reason) => self.move_link(iface, mode, to, reason),
                };
            }
            // The interface was deleted (ifindex 0), maybe re-created under the same name: the
            // pin holds a dead link. Drop it and attach afresh.
            std::fs::remove_file(&path)
                .map_err(|source| DataplaneError::PinDir { path, source })?;
            return self.attach(iface, request);
        }
        let tries = xdp_mode::tries(request, driver.as_deref());
        let mut program = LoadedProgram::load(&self.pin_dir)?;
        let mut driver_refused = None;
        for (i, &mode) in tries.modes.iter().enumerate() {
            match program.attach_pinned(self, iface, mode) {
                Ok(()) => {
                    return Ok(Attached {
                        iface: iface.name.clone(),
                        mode,
                        already: false,
                        driver_refused,
                        skb_reason: tries.skipped_driver,
                        moved_from: None,
                        covered: false,
                        program_updated: false,
                    });
                }
                Err(e) if i + 1 < tries.modes.len() => driver_refused = Some(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        unreachable!("every attach mode list is non-empty")
    }

    /// Swaps this process's program into the live pinned link at `path` (`BPF_LINK_UPDATE`:
    /// atomic, no request sees no program), once per interface per process. False when it was
    /// done before or failed (logged; the link keeps its program).
    fn refresh_program(&self, iface: &Interface, path: &Path) -> bool {
        let mut refreshed = self
            .refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if refreshed.contains(&iface.index) {
            return false;
        }
        refreshed.push(iface.index);
        let update = || -> Result<()> {
            let mut program = LoadedProgram::load(&self.pin_dir)?;
            let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::PinnedLink {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| {
                DataplaneError::PinnedLink {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                }
            })?;
            let xdp = program_of(&mut program.ebpf)?;
            let id = xdp.attach_to_link(link).map_err(program_err)?;
            // Owned here only to close the descriptor: the pin keeps the link.
            drop(xdp.take_link(id).map_err(program_err)?);
            Ok(())
        };
        match update() {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(iface = %iface.name, %error, "could not give the pinned XDP link this version's program; it keeps the one it has");
                false
            }
        }
    }

    /// Replaces the pinned link of `iface` (in mode `from`) by one in mode `to`. The kernel
    /// holds one XDP program per interface across modes, so the old link is detached first;
    /// the program is loaded before, so the gap is two syscalls. `reason`: why `auto` moves to
    /// skb mode (None for an explicit request).
    pub fn move_link(
        &self,
        iface: &Interface,
        from: AttachedMode,
        to: AttachedMode,
        reason: Option<SkbReason>,
    ) -> Result<Attached> {
        let old = self.pin_dir.join(pins::link_pin_name(&iface.name, from));
        let mut program = LoadedProgram::load(&self.pin_dir)?;
        // Requests that reach the stack while no program is attached are answered from the
        // same maps in userspace; with a program attached none reach this socket.
        let cover = Cover::start(&self.pin_dir, iface);
        let started = Instant::now();
        pins::detach_pinned_link(&old).map_err(|source| DataplaneError::PinDir {
            path: old.clone(),
            source,
        })?;
        let attached = program.attach_pinned(self, iface, to);
        let gap = started.elapsed();
        let covered = cover.is_some();
        drop(cover);
        let unpinned = std::fs::remove_file(&old).map_err(|source| DataplaneError::PinDir {
            path: old.clone(),
            source,
        });
        if let Err(error) = attached {
            // Put the old mode back rather than leave the interface silent.
            program.attach_pinned(self, iface, from)?;
            return Err(error);
        }
        unpinned?;
        Ok(Attached {
            iface: iface.name.clone(),
            mode: to,
            already: false,
            driver_refused: None,
            skb_reason: reason,
            moved_from: Some((from, gap)),
            covered,
            program_updated: false,
        })
    }
}

/// A userspace responder on an interface for the moment its XDP link is replaced; stopped and
/// joined on drop.
struct Cover {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cover {
    /// None (logged) when it cannot run, e.g. without CAP_NET_RAW: the move then leaves the
    /// interface unanswered for its duration.
    fn start(pin_dir: &Path, iface: &Interface) -> Option<Cover> {
        let opened = Fallback::open(iface).and_then(|f| Ok((f, Dataplane::open(pin_dir)?)));
        let (fallback, mut reader) = match opened {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(iface = %iface.name, %error, "no userspace answers while the XDP link is replaced");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cover-{}", iface.name))
            .spawn(move || {
                let _ = fallback.serve(&mut reader, &flag);
            })
            .ok()?;
        Some(Cover {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Cover {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The XDP program of the embedded object, loaded into the kernel and using the pinned maps.
struct LoadedProgram {
    ebpf: aya::Ebpf,
}

impl LoadedProgram {
    fn load(pin_dir: &Path) -> Result<LoadedProgram> {
        let mut ebpf = super::load_object(pin_dir)?;
        program_of(&mut ebpf)?.load().map_err(program_err)?;
        Ok(LoadedProgram { ebpf })
    }

    /// Attaches in `mode` and pins the link as `link_<mode>_<iface>`.
    fn attach_pinned(
        &mut self,
        dp: &Dataplane,
        iface: &Interface,
        mode: AttachedMode,
    ) -> Result<()> {
        let program = program_of(&mut self.ebpf)?;
        let xdp_mode = match mode {
            AttachedMode::Driver => XdpMode::Driver,
            AttachedMode::Skb => XdpMode::Skb,
        };
        let link_id =
            program
                .attach(iface.index, xdp_mode)
                .map_err(|e| DataplaneError::Attach {
                    iface: iface.name.clone(),
                    mode: mode.as_str(),
                    source: Box::new(e),
                })?;
        let link = program.take_link(link_id).map_err(program_err)?;
        let path = dp.pin_dir.join(pins::link_pin_name(&iface.name, mode));
        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::PinnedLink {
            path: path.clone(),
            source: Box::new(e),
        })?;
        fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
            path,
            source: Box::new(e),
        })?;
        Ok(())
    }
}

fn program_err(e: aya::programs::ProgramError) -> DataplaneError {
    DataplaneError::Program {
        name: PROG_NAME,
        source: Box::new(e),
    }
}

fn program_of(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROG_NAME)
        .ok_or(DataplaneError::ObjectMissing {
            what: "program",
            name: PROG_NAME,
        })?
        .try_into()
        .map_err(program_err)
}
