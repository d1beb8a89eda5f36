//! Leader election on a coordination.k8s.io Lease, so that of several controller replicas only
//! one writes. The rules are client-go's: a holder renews every `retry_period`; another
//! candidate takes over only after it has watched the same lease record stay unrenewed for the
//! whole `lease_duration` (measured on its own clock, so clock skew between nodes does not
//! matter); a holder that cannot renew within `renew_deadline` steps down. Updates carry the
//! resourceVersion they read, so two candidates can never both win one round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Timings of the election.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops acting as leader.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseTimings {
    /// client-go's proportions (15 s / 10 s / 2 s) scaled to `lease_duration`.
    pub fn from_duration(lease_duration: Duration) -> Self {
        LeaseTimings {
            lease_duration,
            renew_deadline: lease_duration.mul_f64(2.0 / 3.0),
            retry_period: lease_duration
                .mul_f64(2.0 / 15.0)
                .max(Duration::from_millis(100)),
        }
    }
}

/// Until when this replica may act as leader: its last successful renewal plus the renew
/// deadline. Writes check it at the moment they are sent, so a leader that was frozen (SIGSTOP,
/// a stalled VM) or whose renewals hang writes nothing once another replica may have taken over,
/// even before its election loop notices.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<Mutex<Option<Instant>>>);

impl Leadership {
    fn deadline(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this replica may write as leader now.
    pub fn holds(&self) -> bool {
        self.deadline().is_some_and(|until| Instant::now() < until)
    }

    fn set(&self, until: Option<Instant>) {
        *self.deadline() = until;
    }
}

/// One candidate for the lease `name`.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// The last record seen from another holder, and when (our clock) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
    /// When we last renewed successfully.
    renewed_at: Option<Instant>,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timings: LeaseTimings) -> Self {
        LeaseLock {
            api,
            name: name.into(),
            identity: identity.into(),
            timings,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round: acquires the lease if free or expired, renews it if held. Returns whether we
    /// hold it now. An API error returns `Err`; the caller decides whether leadership is lost
    /// (see [`LeaseLock::still_leading`]).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.record(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.renewed_at = Some(Instant::now());
                    Ok(true)
                }
                Err(e) if super::is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !self.expired(&spec) {
            self.renewed_at = None;
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                spec.acquire_time.clone().map_or(now, |t| t.0),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0).saturating_add(1))
        };
        let mut next = current;
        next.spec = Some(self.record(acquired, now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                self.renewed_at = Some(Instant::now());
                self.observed = None;
                Ok(true)
            }
            // Someone else updated it first: they win this round.
            Err(e) if super::is_conflict(&e) => {
                self.renewed_at = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a leader whose last renewal attempt failed may still act (within renew_deadline).
    pub fn still_leading(&self) -> bool {
        self.renewed_at
            .is_some_and(|at| at.elapsed() < self.timings.renew_deadline)
    }

    /// Until when this candidate may act as leader (`None`: it does not lead).
    fn leading_until(&self) -> Option<Instant> {
        self.renewed_at.map(|at| at + self.timings.renew_deadline)
    }

    /// Gives the lease up (on shutdown), so a successor need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if self.renewed_at.take().is_none() {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    fn record(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Another holder's record has not changed for its whole duration, by our clock.
    fn expired(&mut self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timings.lease_duration, Duration::from_secs);
        match &self.observed {
            Some((seen, since)) if seen == spec => since.elapsed() >= duration,
            _ => {
                self.observed = Some((spec.clone(), Instant::now()));
                false
            }
        }
    }
}

/// Runs the election until `shutdown` fires, publishing whether we lead on `leading` and until
/// when on `leadership`. Every round has a deadline (the renew deadline): a request hung on a
/// half-open connection counts as a failed renewal. On shutdown a held lease is released.
pub async fn run(
    mut lock: LeaseLock,
    leading: watch::Sender<bool>,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = lock.timings.retry_period;
    let round_limit = lock.timings.renew_deadline;
    loop {
        let round = tokio::time::timeout(round_limit, lock.try_acquire_or_renew()).await;
        let is_leader = match round {
            Ok(Ok(held)) => held,
            Ok(Err(error)) => {
                let keep = lock.still_leading();
                tracing::warn!(%error, still_leading = keep, "lease renewal failed");
                keep
            }
            Err(_) => {
                let keep = lock.still_leading();
                tracing::warn!(
                    timeout_ms = round_limit.as_millis() as u64,
                    still_leading = keep,
                    "lease renewal timed out"
                );
                keep
            }
        };
        leadership.set(if is_leader {
            lock.leading_until()
        } else {
            None
        });
        if *leading.borrow() != is_leader {
            tracing::info!(
                identity = lock.identity(),
                leader = is_leader,
                "leadership changed"
            );
        }
        leading.send_if_modified(|current| std::mem::replace(current, is_leader) != is_leader);
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => break,
        }
    }
    leading.send_replace(false);
    leadership.set(None);
    if let Err(error) = lock.release().await {
        tracing::warn!(%error, "releasing the lease failed; the next leader waits for it to expire");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_holds_only_until_its_deadline() {
        let leadership = Leadership::default();
        assert!(!leadership.holds(), "nobody leads at first");
        leadership.set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(leadership.holds());
        let clone = leadership.clone();
        clone.set(Instant::now().checked_sub(Duration::from_millis(1)));
        assert!(
            !leadership.holds(),
            "a deadline passed (a frozen leader) holds nothing"
        );
        leadership.set(None);
        assert!(!clone.holds());
    }
}
