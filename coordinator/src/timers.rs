//! The coordinator's timer loop: promotes delayed runs when they fall due, and now and then
//! admits waiting runs of every queue as a safety net.
//!
//! Delayed runs live in Redis (the delayed ZSET), never in this process: the loop sleeps until
//! the earliest due time, but at most [`MAX_SLEEP`], so a run delayed through another
//! coordinator replica is promoted within a second of its due time even if this replica did not
//! see it being submitted (runs delayed through this replica wake the loop at once). Promotion
//! is one Lua script per run, so replicas racing on the same run promote it once.
//!
//! Admission normally happens on events (a submit, a run finishing, a queue resuming); the
//! [`SWEEP_EVERY`] pass over the queues with waiting runs covers a replica that died between a
//! run's finish and the admission pass it owed.

use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::model::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;

/// Longest sleep between two looks at the delayed set.
pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(1000);
/// How often every queue with waiting runs gets an admission pass.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown` is cancelled.
pub(crate) async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
    loop {
        let mut sleep = MAX_SLEEP;
        match store.promote_due(now_ms()).await {
            Ok((_, Some(due))) => {
                let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                sleep = sleep.min(wait);
            }
            Ok((_, None)) => {}
            Err(e) => warn!(cause = %e, "promoting delayed runs failed; will retry"),
        }
        if tokio::time::Instant::now() >= next_sweep {
            if let Err(e) = store.admit_all_waiting().await {
                warn!(cause = %e, "admitting waiting runs failed; will retry");
            }
            next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = store.delayed_added.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
