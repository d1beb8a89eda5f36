//! A leader's side writes: the memberlist Secret, ConfigurationState `controller` and pool
//! status, one background task at a time, after the Service writes and never delaying them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::super::Context;
use super::super::plan::{self, ConfigVerdict, PoolStatusWrite, WriteFailed};
use super::{Leader, Retry};
use crate::allocator::PoolCounters;

/// Pool status is written at most once per this interval (the counters of a burst coalesce).
const POOL_STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// What a background side write achieved.
pub(super) struct SideDone {
    secret_done: bool,
    verdict_written: Option<ConfigVerdict>,
    pools_written: Vec<(String, (Option<String>, PoolCounters))>,
    failed: bool,
}

impl Leader<'_> {
    /// Starts the side writes that are due (memberlist Secret, ConfigurationState, pool status)
    /// as one background task; with one already running, once more after it.
    pub(super) fn schedule_side_writes(&mut self) {
        if !self.side_task.is_empty() {
            self.side_again = true;
            return;
        }
        self.side_again = false;
        let ctx = self.ctx;
        let settings = &ctx.settings;
        let secret = (!self.secret_done)
            .then(|| settings.ml_secret_name.clone())
            .flatten();
        let verdict = if self.verdict == self.verdict_written {
            None
        } else {
            self.verdict.clone()
        };
        let mut pools = Vec::new();
        if self.started {
            let counters = self.allocator.pool_counters();
            ctx.metrics.set_pools(&counters);
            self.pool_status_written
                .retain(|name, _| counters.contains_key(name));
            let uids: HashMap<String, Option<String>> = ctx
                .caches
                .pools()
                .iter()
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        p.metadata.uid.clone(),
                    )
                })
                .collect();
            let wanted: BTreeMap<String, (Option<String>, PoolCounters)> = counters
                .iter()
                .map(|(name, c)| (name.clone(), (uids.get(name).cloned().flatten(), *c)))
                .collect();
            let changed = plan::changed_pools(&wanted, &self.pool_status_written);
            let now = Instant::now();
            self.pool_status_due = None;
            match plan::pool_status_write(
                !changed.is_empty(),
                self.pool_status_at,
                now,
                POOL_STATUS_INTERVAL,
            ) {
                PoolStatusWrite::Nothing => {}
                // Coalesce: a burst of Services changes the counters once per interval.
                PoolStatusWrite::At(at) => self.pool_status_due = Some(at),
                PoolStatusWrite::Now => {
                    self.pool_status_at = Some(now);
                    pools = changed
                        .into_iter()
                        .map(|(name, written)| (name.clone(), written.clone()))
                        .collect();
                }
            }
        }
        if secret.is_none() && verdict.is_none() && pools.is_empty() {
            self.side_retry = None;
            return;
        }
        self.side_task
            .push(Box::pin(side_writes(ctx, secret, verdict, pools)));
    }

    /// A background side write finished: remember what was written; retry the rest later.
    pub(super) fn side_done(&mut self, done: SideDone) {
        if done.secret_done {
            self.secret_done = true;
        }
        if done.verdict_written.is_some() {
            self.verdict_written = done.verdict_written;
        }
        self.pool_status_written.extend(done.pools_written);
        self.side_retry = done.failed.then(|| Retry::after_failure(self.side_retry));
        if self.side_again {
            self.schedule_side_writes();
        }
    }
}

/// Memberlist Secret, ConfigurationState and pool status, in that order; what succeeded is
/// reported so that only the rest is retried.
async fn side_writes(
    ctx: &Context,
    secret: Option<String>,
    verdict: Option<ConfigVerdict>,
    pools: Vec<(String, (Option<String>, PoolCounters))>,
) -> SideDone {
    let settings = &ctx.settings;
    let mut done = SideDone {
        secret_done: false,
        verdict_written: None,
        pools_written: Vec::new(),
        failed: false,
    };
    if let Some(name) = &secret {
        match ctx
            .cluster
            .ensure_memberlist_secret(name, settings.deployment.as_deref())
            .await
        {
            Ok(created) => {
                if created {
                    tracing::info!(secret = %name, "created the memberlist secret");
                }
                done.secret_done = true;
            }
            Err(error) => {
                tracing::warn!(secret = %name, %error, "creating the memberlist secret failed");
                done.failed = true;
            }
        }
    }
    if let Some(verdict) = verdict {
        let status = plan::configuration_state_status(&verdict, Timestamp::now());
        match ctx.cluster.write_configuration_state(status).await {
            Ok(()) => done.verdict_written = Some(verdict),
            Err(error) => {
                tracing::warn!(%error, "writing ConfigurationState failed");
                done.failed = true;
            }
        }
    }
    for (name, (uid, counters)) in pools {
        match ctx
            .cluster
            .write_pool_status(&name, plan::pool_status(&counters))
            .await
        {
            Ok(()) => {
                ctx.metrics.api_writes.inc();
                done.pools_written.push((name, (uid, counters)));
            }
            Err(error) => match plan::write_failed(error.kind()) {
                WriteFailed::Gone => {}
                WriteFailed::Retry => {
                    ctx.metrics.update_errors.inc();
                    tracing::warn!(pool = %name, %error, "writing pool status failed");
                    done.failed = true;
                }
            },
        }
    }
    done
}
