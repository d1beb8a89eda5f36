//! The guard's heartbeat on its own OS thread with its own map handle, so nothing in an async
//! runtime can delay it, and a hung runtime cannot keep it beating (the caller's `decide` reads
//! only atomics the live parts of the process update).
//!
//! Every `every`, the thread asks `decide` what to write: a fresh heartbeat with a timeout, or
//! nothing (the guard runs out and the program stops answering). It stops when told to or when
//! `decide` says so. A failed write is logged and the thread beats on, or, with
//! [`OnError::Stop`], ends it (the error is returned by [`Heartbeat::stop`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{DataplaneError, Result};

/// What the guard thread does on one beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Write a heartbeat: the program answers until `timeout` from now.
    Refresh(Duration),
    /// Write nothing this time.
    Skip,
    /// End the thread.
    Stop,
}

/// What a failed heartbeat write does to the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Log it and try again on the next beat.
    Retry,
    /// End the thread with the error.
    Stop,
}

/// Where a heartbeat is written: the aya data plane, or a fake in tests.
pub trait Guard: Send + 'static {
    /// The program answers until `timeout` from now, unless refreshed.
    fn heartbeat(&mut self, timeout: Duration) -> Result<()>;
    /// Nothing is answered until the next heartbeat.
    fn close(&mut self) -> Result<()>;
}

impl Guard for super::Dataplane {
    fn heartbeat(&mut self, timeout: Duration) -> Result<()> {
        super::Dataplane::heartbeat(self, timeout)
    }

    fn close(&mut self) -> Result<()> {
        self.close_guard()
    }
}

/// A running heartbeat thread.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<()>>,
}

impl Heartbeat {
    /// Starts beating into `guard`; the first beat comes after `every`, unless `at_once`.
    pub fn spawn<G: Guard>(
        name: &str,
        mut guard: G,
        every: Duration,
        at_once: bool,
        on_error: OnError,
        mut decide: impl FnMut() -> Beat + Send + 'static,
    ) -> Result<Heartbeat> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut first = at_once;
                while !flag.load(Ordering::Relaxed) {
                    if !std::mem::take(&mut first) {
                        // Parked rather than asleep, so that `wake` can ask for a beat now.
                        std::thread::park_timeout(every);
                        if flag.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    match decide() {
                        Beat::Refresh(timeout) => match guard.heartbeat(timeout) {
                            Ok(()) => {}
                            Err(error) if on_error == OnError::Retry => {
                                tracing::error!(%error, "guard heartbeat failed");
                            }
                            Err(error) => return Err(error),
                        },
                        Beat::Skip => {}
                        Beat::Stop => break,
                    }
                }
                Ok(())
            })
            .map_err(|source| DataplaneError::Io {
                op: "starting the guard thread",
                source,
            })?;
        Ok(Heartbeat { stop, handle })
    }

    /// Asks for a beat now instead of at the end of the current interval.
    pub fn wake(&self) {
        self.handle.thread().unpark();
    }

    /// The thread ended by itself (a failed write, or `decide` said stop).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the thread (at once, or after a write in progress) and says how it ended.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        match self.handle.join() {
            Ok(result) => result,
            Err(_) => Err(DataplaneError::Io {
                op: "the guard thread",
                source: std::io::Error::other("panicked"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Beats `plan` (then stops) into a fresh guard with no pause; returns how the thread
    /// ended and what was written.
    fn run_plan(plan: Vec<Beat>, on_error: OnError) -> (Result<()>, Vec<Duration>) {
        let guard = Recorded::default();
        let mut plan = plan.into_iter();
        let beat = Heartbeat::spawn(
            "t",
            guard.clone(),
            Duration::from_millis(1),
            true,
            on_error,
            move || plan.next().unwrap_or(Beat::Stop),
        )
        .unwrap();
        wait_finished(&beat);
        let ended = beat.stop();
        let written = guard.0.lock().unwrap().clone();
        (ended, written)
    }

    fn wait_finished(beat: &Heartbeat) {
        while !beat.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Duration>>>);

    impl Guard for Recorded {
        fn heartbeat(&mut self, timeout: Duration) -> Result<()> {
            let mut beats = self.0.lock().map_err(|_| DataplaneError::Io {
                op: "test lock",
                source: std::io::Error::other("poisoned"),
            })?;
            if timeout.is_zero() {
                return Err(DataplaneError::Io {
                    op: "heartbeat",
                    source: std::io::Error::other("refused"),
                });
            }
            beats.push(timeout);
            Ok(())
        }

        fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_what_decide_says_and_stops_when_told() {
        let (ended, written) = run_plan(
            vec![
                Beat::Refresh(Duration::from_millis(5)),
                Beat::Skip,
                Beat::Refresh(Duration::from_millis(7)),
                Beat::Stop,
            ],
            OnError::Stop,
        );
        ended.unwrap();
        assert_eq!(
            written,
            vec![Duration::from_millis(5), Duration::from_millis(7)]
        );
    }

    #[test]
    fn a_failed_write_ends_the_thread_with_the_error() {
        let (ended, written) = run_plan(
            vec![
                Beat::Refresh(Duration::ZERO),
                Beat::Refresh(Duration::from_millis(3)),
            ],
            OnError::Stop,
        );
        assert!(ended.is_err());
        assert!(written.is_empty());
    }

    #[test]
    fn retry_keeps_beating_after_a_failed_write() {
        let (ended, written) = run_plan(
            vec![
                Beat::Refresh(Duration::ZERO),
                Beat::Refresh(Duration::from_millis(3)),
            ],
            OnError::Retry,
        );
        ended.unwrap();
        assert_eq!(written, vec![Duration::from_millis(3)]);
    }

    #[test]
    fn wake_beats_before_the_interval_ends() {
        let guard = Recorded::default();
        let armed = Arc::new(AtomicBool::new(false));
        let flag = armed.clone();
        let beat = Heartbeat::spawn(
            "t",
            guard.clone(),
            Duration::from_secs(3600),
            false,
            OnError::Stop,
            move || {
                if flag.load(Ordering::Relaxed) {
                    Beat::Refresh(Duration::from_millis(5))
                } else {
                    Beat::Skip
                }
            },
        )
        .unwrap();
        armed.store(true, Ordering::Relaxed);
        beat.wake();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while guard.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "woken thread never beat"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        beat.stop().unwrap();
    }

    #[test]
    fn stop_ends_a_thread_that_only_skips() {
        let beat = Heartbeat::spawn(
            "t",
            Recorded::default(),
            Duration::from_millis(1),
            false,
            OnError::Retry,
            || Beat::Skip,
        )
        .unwrap();
        beat.stop().unwrap();
    }
}
